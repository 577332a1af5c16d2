import type { ReadableLogRecord } from '@opentelemetry/sdk-logs';
import type { IExportLogsServiceResponse, ISerializer } from '@opentelemetry/otlp-transformer';
import type { Resource } from '@opentelemetry/resources';
import { z } from 'zod';
import type { ComponentDefinition, JsonObject, JsonValue, LogRecord, SinkContext } from '../engine/types.js';
import { LogferryError } from '../errors.js';
import { documentBody } from '../records/body.js';
import type { Verdict } from './delivery.js';
import { buildHttpSink, httpSecrets, httpSinkSchema, preflightTls, type BatchFormat, type HttpSink, type HttpSinkOptions } from './http.js';

/** The OTLP/HTTP path of the logs signal, appended to `endpoint` as the OpenTelemetry exporters do. */
const LOGS_PATH = '/v1/logs';

/** OpenTelemetry severity numbers (logs data model): INFO is 9, ERROR 17. */
const SEVERITY_INFO = 9;
const SEVERITY_ERROR = 17;

/** Attribute name -> field path, for the fields that job documents and audit events have. */
export const DEFAULT_OTLP_ATTRIBUTES: Readonly<Record<string, string>> = {
  'job.id': 'id',
  'recipe.id': 'flow_id',
  'job.status': 'status',
  'event.name': 'event',
  'team.id': 'team.id',
};

const FIELD_PATH = /^[^.\s]+(\.[^.\s]+)*$/;
const attributeName = z.string().min(1).max(256);
/** Attributes and resource attributes an operator may configure: enough for any mapping, bounded per record. */
const MAX_ATTRIBUTE_ENTRIES = 128;

const http = httpSinkSchema.shape;

export const otlpSinkSchema = z
  .object({
    endpoint: z
      .url({ protocol: /^https?$/, error: 'expected the http:// or https:// base URL of an OTLP/HTTP receiver, e.g. http://collector:4318' })
      .describe(
        'Base URL of the OTLP/HTTP receiver (the value of OTEL_EXPORTER_OTLP_ENDPOINT, e.g. http://collector:4318): /v1/logs is appended. A URL whose path already ends in /v1/logs is used as it is.',
      ),
    protocol: z
      .enum(['http/protobuf', 'http/json'])
      .default('http/protobuf')
      .describe('http/protobuf (binary protobuf, what every OTLP receiver takes) or http/json (the OTLP JSON mapping), as OTEL_EXPORTER_OTLP_PROTOCOL names them.'),
    body: z
      .enum(['map', 'json_text'])
      .default('map')
      .describe(
        'map: the document as a structured body (kvlist AnyValue), so its fields can be queried at the destination. json_text: the document as one JSON string, as the other sinks write it (numbers exactly as written; for backends that only index text bodies).',
      ),
    attributes: z
      .record(attributeName, z.string().max(1024).regex(FIELD_PATH, 'expected a dotted field path such as team.id'))
      .refine((map) => Object.keys(map).length <= MAX_ATTRIBUTE_ENTRIES, `at most ${MAX_ATTRIBUTE_ENTRIES} attributes`)
      .default({ ...DEFAULT_OTLP_ATTRIBUTES })
      .describe(
        'Log record attributes: name -> dotted field path in the document. A field that is missing or null adds no attribute. Setting it replaces the default list.',
      ),
    key_attribute: z
      .string()
      .max(256)
      .default('logferry.key')
      .describe("Attribute that carries the record's key (set by path_format), when it has one; empty: no such attribute."),
    resource: z
      .record(attributeName, z.string().max(4096))
      .refine((map) => Object.keys(map).length <= MAX_ATTRIBUTE_ENTRIES, `at most ${MAX_ATTRIBUTE_ENTRIES} resource attributes`)
      .default({})
      .describe('Resource attributes of every record; service.name is logferry unless set here.'),
    batch: http.batch.describe('Records per request, uncompressed bytes per request (counted as the documents\' JSON text), and how long a batch that is not full waits.'),
    compression: z.enum(['none', 'gzip']).default('gzip').describe('gzip sets Content-Encoding: gzip (the OpenTelemetry Collector takes it); none for a receiver that does not.'),
    headers: http.headers,
    secret_headers: http.secret_headers,
    auth: http.auth,
    tls: http.tls,
    request: http.request,
    retry: http.retry,
    healthcheck: http.healthcheck,
  })
  .strict();

export type OtlpSinkOptions = z.output<typeof otlpSinkSchema>;

/**
 * `endpoint` with /v1/logs appended to its path (trailing slashes dropped first, as the OpenTelemetry
 * exporters join them), unless it already ends in /v1/logs: an operator who pasted the full logs URL
 * (OTEL_EXPORTER_OTLP_LOGS_ENDPOINT) means that URL, never .../v1/logs/v1/logs. Query kept.
 */
export function logsUrl(endpoint: string): string {
  const url = new URL(endpoint);
  const path = url.pathname.replace(/\/+$/, '');
  url.pathname = path.endsWith(LOGS_PATH) ? path : `${path}${LOGS_PATH}`;
  return url.toString();
}

/** The http sink's options that carry an otlp sink: batches (ndjson mode) to the logs URL. */
export function httpOptionsOf(options: OtlpSinkOptions): HttpSinkOptions {
  return httpSinkSchema.parse({
    uri: logsUrl(options.endpoint),
    method: 'POST',
    encoding: 'ndjson',
    batch: options.batch,
    compression: options.compression,
    headers: options.headers,
    secret_headers: options.secret_headers,
    auth: options.auth,
    tls: options.tls,
    request: options.request,
    retry: options.retry,
    healthcheck: options.healthcheck,
  });
}

function valueAt(doc: JsonObject, path: string): JsonValue | undefined {
  let value: JsonValue | undefined = doc;
  for (const part of path.split('.')) {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
    value = value[part];
  }
  return value;
}

/** Milliseconds since the epoch as OpenTelemetry's HrTime: [seconds, nanoseconds]. */
function hrTime(ms: number): [number, number] {
  const seconds = Math.floor(ms / 1000);
  return [seconds, Math.round((ms - seconds * 1000) * 1e6)];
}

/** When the record happened: `started_at` of a job, `timestamp` of an audit event; undefined when absent or unreadable. */
export function recordTime(record: LogRecord): number | undefined {
  const text = record.doc[record.kind === 'job' ? 'started_at' : 'timestamp'];
  if (typeof text !== 'string') return undefined;
  // A time of day without a zone is UTC, as workflow platforms write it, not the host's zone.
  const ms = Date.parse(ZONELESS_TIME.test(text) ? `${text}Z` : text);
  // Before 1970 (a Go zero time, 0001-01-01) or past int64 nanoseconds (2262): not a time OTLP can
  // carry (it would wrap around); the log record then has only its observed time.
  return Number.isNaN(ms) || ms < 0 || ms > MAX_OTLP_TIME_MS ? undefined : ms;
}

/** `2026-12-06T01:02:03`, `2026-12-06 01:02:03.456`: a date and time of day with no zone after it. */
const ZONELESS_TIME = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/i;
/** The largest time in signed 64-bit nanoseconds (the OTLP JSON mapping's limit), in ms. */
const MAX_OTLP_TIME_MS = 9_223_372_036_854;

type Serializer = ISerializer<ReadableLogRecord[], IExportLogsServiceResponse>;

/**
 * Turns records into OpenTelemetry log records (the sdk-logs data model) and lets the
 * OpenTelemetry serializers encode the request and decode the answer.
 */
export class OtlpLogsFormat implements BatchFormat {
  readonly contentType: string;
  private readonly scope = { name: 'logferry' };
  /** Fields the attribute list reads, resolved once. */
  private readonly attributePaths: [string, string][];

  constructor(
    private readonly options: OtlpSinkOptions,
    private readonly serializer: Serializer,
    private readonly resource: Resource,
  ) {
    this.contentType = options.protocol === 'http/json' ? 'application/json' : 'application/x-protobuf';
    this.attributePaths = Object.entries(options.attributes);
  }

  toLogRecord(record: LogRecord, observedMs: number): ReadableLogRecord {
    const attributes: Record<string, JsonValue> = {};
    for (const [name, path] of this.attributePaths) {
      const value = valueAt(record.doc, path);
      if (value !== undefined && value !== null) attributes[name] = value;
    }
    if (this.options.key_attribute !== '' && record.key !== undefined) attributes[this.options.key_attribute] = record.key;
    const failed = record.kind === 'job' && record.doc.status === 'failed';
    const event = record.kind === 'activity' ? record.doc.event : undefined;
    return {
      hrTime: hrTime(recordTime(record) ?? observedMs),
      hrTimeObserved: hrTime(observedMs),
      severityNumber: failed ? SEVERITY_ERROR : SEVERITY_INFO,
      severityText: failed ? 'ERROR' : 'INFO',
      // The JSON text as read when the document is unchanged: numbers stay as written (beyond 2^53 too).
      body: this.options.body === 'map' ? record.doc : documentBody(record).toString('utf8'),
      ...(typeof event === 'string' ? { eventName: event } : {}),
      resource: this.resource,
      instrumentationScope: this.scope,
      attributes,
      droppedAttributesCount: 0,
    };
  }

  encode(records: readonly LogRecord[]): Buffer {
    const observedMs = Date.now();
    const bytes = this.serializer.serializeRequest(records.map((record) => this.toLogRecord(record, observedMs)));
    if (!bytes) throw new LogferryError('LF_SINK_FAILED', `the OpenTelemetry ${this.options.protocol} serializer could not encode a batch of ${records.length} log records`);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /**
   * A 2xx answer is a success unless its partial_success rejects records. The server does not say
   * which, and the accepted ones are stored: each record of a batch of several is sent once more
   * on its own (so an accepted one arrives at most twice), and a record refused alone goes to the
   * dead letters with the server's error_message. An answer that does not decode, or decodes to
   * something else than a response, is still a success: the status said the request was accepted.
   */
  readAnswer(body: Buffer, count: number): Verdict {
    let rejected = 0;
    let message: string | undefined;
    try {
      const answer: unknown = this.serializer.deserializeResponse(body);
      const partial = typeof answer === 'object' && answer !== null ? (answer as IExportLogsServiceResponse).partialSuccess : undefined;
      if (typeof partial !== 'object' || partial === null) return { kind: 'ok' };
      rejected = Number(partial.rejectedLogRecords ?? 0);
      message = typeof partial.errorMessage === 'string' ? partial.errorMessage.trim() : undefined;
    } catch {
      return { kind: 'ok' };
    }
    if (!(rejected > 0)) return { kind: 'ok' };
    return {
      kind: 'record',
      resend: 'singly',
      reason: `partial_success: the receiver rejected ${rejected} of ${count} log ${count === 1 ? 'record' : 'records'}${message ? `: ${message.slice(0, 512)}` : ' (it gave no error_message)'}`,
    };
  }
}

/**
 * Builds an otlp sink: the http sink with an OTLP logs body. The OpenTelemetry packages are
 * imported here, when a pipeline has an otlp sink, so other commands do not pay for loading them.
 */
export async function buildOtlpSink(options: OtlpSinkOptions, ctx: SinkContext): Promise<HttpSink> {
  const [transformer, resources] = await Promise.all([import('@opentelemetry/otlp-transformer'), import('@opentelemetry/resources')]);
  const serializer = options.protocol === 'http/json' ? transformer.JsonLogsSerializer : transformer.ProtobufLogsSerializer;
  const resource = resources.resourceFromAttributes({ 'service.name': 'logferry', ...options.resource });
  return buildHttpSink(httpOptionsOf(options), ctx, new OtlpLogsFormat(options, serializer, resource));
}

export const otlpSink: ComponentDefinition<'sink', typeof otlpSinkSchema> = {
  kind: 'sink',
  type: 'otlp',
  description: 'Sends records as OpenTelemetry log records over OTLP/HTTP (protobuf or JSON) to a collector or vendor endpoint, in batches with retries.',
  schema: otlpSinkSchema,
  secrets: (options) => httpSecrets(httpOptionsOf(options)),
  preflight: (options) => preflightTls(options.tls),
  build: (options, ctx) => buildOtlpSink(options, ctx),
};
