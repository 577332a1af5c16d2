/**
 * logferry's own logs as OpenTelemetry log records, over OTLP/HTTP (protobuf), when the standard
 * OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_LOGS_ENDPOINT variable is set. The logger is
 * the bridge: every line it writes (after its level filter) becomes one record here. The CLI
 * imports this module dynamically, only then, so a run without those variables loads no
 * OpenTelemetry code at all.
 *
 * The exporter reads the rest of the standard variables itself (OTEL_EXPORTER_OTLP_HEADERS,
 * ..._TIMEOUT, ..._COMPRESSION, ..._CERTIFICATE...), and the resource takes OTEL_SERVICE_NAME and
 * OTEL_RESOURCE_ATTRIBUTES over its defaults (service.name logferry, service.version).
 */
import { SeverityNumber, type Attributes, type AttributeValue, type Logger as OtelLogger } from '@opentelemetry/api';
import { OTLPLogExporter } from '@opentelemetry/exporter-logs-otlp-proto';
import { defaultResource, detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import { BatchLogRecordProcessor, LoggerProvider, type LogRecordExporter, type ReadableLogRecord } from '@opentelemetry/sdk-logs';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import { plural } from '../plural.js';
import type { LogEntry, LogFields, LogLevel } from './logger.js';

/** How long the end of a run waits for the last records to reach the collector before it exits without them. */
export const OTEL_LOGS_SHUTDOWN_WAIT_MS = 5_000;
/**
 * The longest one export may take, retries included (the exporter's own default is 10 s). Below
 * the shutdown wait, so that the last export ends, and says why it failed, before logferry gives
 * up on it: otherwise its retries would keep the process alive after the run. An
 * OTEL_EXPORTER_OTLP_(LOGS_)TIMEOUT lower than this is used instead.
 */
export const OTEL_LOGS_EXPORT_TIMEOUT_MS = 4_000;

const SEVERITY: Record<LogLevel, SeverityNumber> = {
  debug: SeverityNumber.DEBUG,
  info: SeverityNumber.INFO,
  warn: SeverityNumber.WARN,
  error: SeverityNumber.ERROR,
};

/** Nested fields become dotted attribute keys down to this depth; deeper values are JSON text. */
const MAX_FLATTEN_DEPTH = 3;

export interface OtelLogsOptions {
  /** logferry's version: the resource's service.version. */
  version: string;
  /** The same scrubber as the log lines: a secret never leaves in a record either. */
  scrub: (text: string) => string;
  /**
   * Writes a line to the local log about the export itself (failing, working again). Such lines
   * are not exported: a collector that is down would otherwise be sent news of itself forever.
   */
  report: (level: 'warn' | 'info', msg: string, fields: LogFields) => void;
  /** Bounds the final flush; OTEL_LOGS_SHUTDOWN_WAIT_MS by default. */
  shutdownWaitMs?: number;
}

/** The export timeout: OTEL_LOGS_EXPORT_TIMEOUT_MS, or a lower one the standard variables set. */
export function exportTimeoutMs(env: NodeJS.ProcessEnv): number {
  const set = Number(env.OTEL_EXPORTER_OTLP_LOGS_TIMEOUT?.trim() || env.OTEL_EXPORTER_OTLP_TIMEOUT?.trim());
  return Number.isFinite(set) && set > 0 ? Math.min(set, OTEL_LOGS_EXPORT_TIMEOUT_MS) : OTEL_LOGS_EXPORT_TIMEOUT_MS;
}

type ExportCallback = Parameters<LogRecordExporter['export']>[1];
type ExportResult = Parameters<ExportCallback>[0];
/** ExportResultCode.SUCCESS of @opentelemetry/core (not a dependency of logferry's own). */
const EXPORT_SUCCESS = 0;

export class OtelLogExport {
  private readonly provider: LoggerProvider;
  private readonly logger: OtelLogger;
  private reporting = false;
  private failing = false;
  /** After shutdown: an export that ends later says nothing, the run's last lines are written. */
  private closed = false;
  private readonly endpoint: string;

  constructor(private readonly options: OtelLogsOptions) {
    const exporter = new OTLPLogExporter({ timeoutMillis: exportTimeoutMs(process.env) });
    this.endpoint = logsEndpoint(process.env) ?? 'the OTLP endpoint';
    const resource = defaultResource()
      .merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: 'logferry', [ATTR_SERVICE_VERSION]: options.version }))
      .merge(detectResources({ detectors: [envDetector] }));
    this.provider = new LoggerProvider({
      resource,
      processors: [new BatchLogRecordProcessor({ exporter: this.watched(exporter) })],
    });
    this.logger = this.provider.getLogger('logferry', options.version);
  }

  /** The logger's `forward` hook: one log line becomes one log record. */
  emit(entry: LogEntry): void {
    if (this.reporting) return;
    const scrub = this.options.scrub;
    this.logger.emit({
      timestamp: entry.time,
      severityNumber: SEVERITY[entry.level],
      severityText: entry.level,
      body: scrub(entry.msg),
      attributes: toAttributes(entry.fields, scrub),
    });
  }

  /** Sends what is queued and stops, waiting at most shutdownWaitMs; says so when records were left. */
  async shutdown(): Promise<void> {
    const waitMs = this.options.shutdownWaitMs ?? OTEL_LOGS_SHUTDOWN_WAIT_MS;
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      this.provider.shutdown().then(() => 'done' as const),
      new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), waitMs);
      }),
    ]).finally(() => clearTimeout(timer));
    this.closed = true;
    if (outcome === 'timeout') {
      this.report('warn', `the last log records did not reach ${this.endpoint} within ${waitMs / 1000} s; logferry exits without them`, {
        code: 'LF_OTLP_LOGS_EXPORT_FAILED',
      });
    }
  }

  /** The exporter, with a local warning when its exports start failing and a note when they work again. */
  private watched(exporter: LogRecordExporter): LogRecordExporter {
    return {
      export: (records: ReadableLogRecord[], done: ExportCallback) => {
        exporter.export(records, (result: ExportResult) => {
          this.noteResult(result, records.length);
          done(result);
        });
      },
      shutdown: () => exporter.shutdown(),
      forceFlush: () => exporter.forceFlush?.() ?? Promise.resolve(),
    };
  }

  private noteResult(result: ExportResult, count: number): void {
    if (this.closed) return;
    if (result.code === EXPORT_SUCCESS) {
      if (this.failing) this.report('info', `logs reach ${this.endpoint} again`, {});
      this.failing = false;
      return;
    }
    // Once per failing spell, not once per batch: a collector that is down for an hour says so once.
    if (this.failing) return;
    this.failing = true;
    this.report('warn', `cannot export logferry's own logs to ${this.endpoint}: ${result.error?.message ?? 'export failed'}; ${plural(count, 'log record was', 'log records were')} dropped (the lines on stderr are complete). Check that the collector is up and OTEL_EXPORTER_OTLP_* are right`, {
      code: 'LF_OTLP_LOGS_EXPORT_FAILED',
    });
  }

  private report(level: 'warn' | 'info', msg: string, fields: LogFields): void {
    this.reporting = true;
    try {
      this.options.report(level, msg, fields);
    } finally {
      this.reporting = false;
    }
  }
}

/** Where the logs go, as the exporter works it out: the logs variable as is, or the base variable with /v1/logs. */
export function logsEndpoint(env: NodeJS.ProcessEnv): string | undefined {
  const specific = env.OTEL_EXPORTER_OTLP_LOGS_ENDPOINT?.trim();
  if (specific) return specific;
  const base = env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim();
  return base ? `${base.replace(/\/$/, '')}/v1/logs` : undefined;
}

/**
 * Log fields as OpenTelemetry attributes, which hold strings, numbers, booleans and arrays of one
 * of them: nested objects become dotted keys (`error.message`, `error.code`), other values JSON
 * text. Every string goes through the scrubber.
 */
export function toAttributes(fields: LogFields, scrub: (text: string) => string): Attributes {
  const out: Attributes = {};
  const put = (key: string, value: unknown, depth: number): void => {
    const simple = attributeValue(value, scrub);
    if (simple !== undefined) out[key] = simple;
    else if (value !== null && typeof value === 'object' && !Array.isArray(value) && depth < MAX_FLATTEN_DEPTH) {
      for (const [k, v] of Object.entries(value)) put(`${key}.${k}`, v, depth + 1);
    } else if (value !== undefined && value !== null) out[key] = scrub(JSON.stringify(value) ?? String(value));
  };
  for (const [key, value] of Object.entries(fields)) put(key, value, 0);
  return out;
}

function attributeValue(value: unknown, scrub: (text: string) => string): AttributeValue | undefined {
  if (typeof value === 'string') return scrub(value);
  if (typeof value === 'number' || typeof value === 'boolean') return value;
  if (typeof value === 'bigint') return value.toString();
  if (!Array.isArray(value) || value.length === 0) return undefined;
  if (value.every((v): v is string => typeof v === 'string')) return value.map(scrub);
  if (value.every((v): v is number => typeof v === 'number')) return value;
  if (value.every((v): v is boolean => typeof v === 'boolean')) return value;
  return undefined;
}
