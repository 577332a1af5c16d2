import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import { ValueType, type Attributes, type HrTime, type ObservableResult } from '@opentelemetry/api';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-proto';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  DataPointType,
  MeterProvider,
  PeriodicExportingMetricReader,
  type CollectionResult,
  type IMetricReader,
  type MetricData,
  type MetricProducer,
} from '@opentelemetry/sdk-metrics';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ComponentConfig, PipelineConfig } from '../config/types.js';
import type { Logger } from './logger.js';
import { LATENCY_BUCKETS_S } from './metrics.js';
import type { Pipeline } from './pipeline.js';
import type { SinkStateName } from './sink-state.js';
import { METRIC_FAMILIES, MAX_FILES_BEHIND, otlpMetricsWanted, type MetricFamilyName } from './telemetry-names.js';

/**
 * logferry's own metrics through the OpenTelemetry API on an sdk-metrics MeterProvider, read by
 * the Prometheus exporter (served on the operators' API, not a server of its own) and, when the
 * standard OTEL_EXPORTER_OTLP_* variables ask for it, pushed over OTLP/HTTP.
 *
 * Every instrument is observable: it reads the counters the engine keeps anyway (Metrics, the
 * sink states, the budget) when a reader collects, so the per-record path makes no OpenTelemetry
 * call. This module is imported only when the API or OTLP export is on (cli/main.ts imports it
 * dynamically), so `--version`, `validate` and a plain `run --once` never load OpenTelemetry.
 */
export interface Telemetry {
  /** Answers a scrape with the Prometheus text exposition; undefined when Prometheus is not on. */
  readonly serveMetrics?: (request: IncomingMessage, response: ServerResponse) => void;
  /** Where metrics are pushed over OTLP (undefined when that is off), for the start-up log line. */
  readonly otlpEndpoint?: string;
  /** Flushes a last OTLP export and stops the readers. */
  shutdown(): Promise<void>;
}

export interface TelemetryOptions {
  pipeline: Pipeline;
  config: PipelineConfig;
  version: string;
  log: Logger;
  /** Build the Prometheus reader (the API is on). */
  prometheus: boolean;
  env?: NodeJS.ProcessEnv;
}

/** Where OTLP metrics go, as the exporter will compute it from the standard variables (for the log line). */
export function otlpMetricsEndpoint(env: NodeJS.ProcessEnv): string | undefined {
  const specific = env.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT?.trim();
  if (specific) return specific;
  const base = env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim();
  if (base) return `${base.replace(/\/+$/, '')}/v1/metrics`;
  return undefined;
}

/** OTEL_METRIC_EXPORT_INTERVAL and _TIMEOUT (ms), as the specification defines them; a bad value is warned about and the default used. */
export function exportTiming(env: NodeJS.ProcessEnv, log: Logger): { intervalMs: number; timeoutMs: number } {
  const read = (name: string, fallback: number): number => {
    const text = env[name]?.trim();
    if (!text) return fallback;
    const value = Number(text);
    // Bounds: at least 100 ms (a tighter loop would export more than it measures), at most a day.
    if (!Number.isInteger(value) || value < 100 || value > 86_400_000) {
      log.warn(`${name} must be a whole number of milliseconds from 100 to 86400000; using ${fallback}`, { value: text });
      return fallback;
    }
    return value;
  };
  const intervalMs = read('OTEL_METRIC_EXPORT_INTERVAL', 60_000);
  // The reader refuses a timeout longer than the interval.
  const timeoutMs = Math.min(read('OTEL_METRIC_EXPORT_TIMEOUT', 30_000), intervalMs);
  return { intervalMs, timeoutMs };
}

/** The longest one OTLP export of metrics may take (OTEL_METRIC_EXPORT_TIMEOUT is honoured below it). */
const EXPORT_TIMEOUT_CAP_MS = 4_000;
/** The longest shutdown waits for the last export (and the readers) before the process goes on to exit. */
const SHUTDOWN_WAIT_MS = 5_000;

export async function startTelemetry(options: TelemetryOptions): Promise<Telemetry> {
  const { pipeline, config, version, log } = options;
  const env = options.env ?? process.env;
  // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are honoured; service.name defaults to logferry.
  const detected = detectResources({ detectors: [envDetector] });
  await detected.waitForAsyncAttributes?.();
  const resource = resourceFromAttributes({ 'service.name': 'logferry', 'service.version': version }).merge(detected);

  const latency = new LatencyProducer(pipeline);
  const filesBehind = new FilesBehindProducer(pipeline, config);
  const readers: IMetricReader[] = [];
  let prometheus: PrometheusExporter | undefined;
  if (options.prometheus) {
    // Served by the operators' API (one server, one port): the exporter's own server is not started.
    prometheus = new PrometheusExporter({ preventServerStart: true, withoutScopeInfo: true, metricProducers: [latency, filesBehind] });
    readers.push(prometheus);
  }
  const otlpEndpoint = otlpMetricsWanted(env) ? otlpMetricsEndpoint(env) : undefined;
  if (otlpEndpoint !== undefined) {
    const { intervalMs, timeoutMs } = exportTiming(env, log);
    // The exporter reads the other standard variables itself (headers, timeout, compression, certificates, temporality).
    readers.push(
      new PeriodicExportingMetricReader({
        // Each export bounded (as the log export is), so the last one at shutdown cannot hold the
        // process and its data_dir lock for the exporter's 10 s default and retries.
        exporter: new OTLPMetricExporter({ timeoutMillis: Math.min(timeoutMs, EXPORT_TIMEOUT_CAP_MS) }),
        exportIntervalMillis: intervalMs,
        exportTimeoutMillis: Math.min(timeoutMs, EXPORT_TIMEOUT_CAP_MS),
        metricProducers: [latency, filesBehind],
      }),
    );
  }
  const provider = new MeterProvider({ resource, readers });
  const figures = new ProcessFigures();
  registerInstruments(provider, pipeline, config, figures);
  return {
    serveMetrics: prometheus ? (request, response) => prometheus.getMetricsRequestHandler(request, response) : undefined,
    otlpEndpoint,
    async shutdown() {
      let timer: NodeJS.Timeout | undefined;
      const gaveUp = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), SHUTDOWN_WAIT_MS);
        timer.unref();
      });
      try {
        const ended = await Promise.race([provider.shutdown(), gaveUp]);
        if (ended === 'timeout') log.warn(`the last export of metrics did not finish within ${SHUTDOWN_WAIT_MS / 1000} s; logferry exits without it`, { endpoint: otlpEndpoint });
      } catch (err) {
        log.warn('the last export of metrics failed', { error: err instanceof Error ? err.message : String(err) });
      } finally {
        clearTimeout(timer);
        figures.stop();
      }
    },
  };
}

/** The labels every per-component metric carries, as Vector names them. */
function componentLabels(c: ComponentConfig): Attributes {
  return { component_id: c.id, component_kind: c.kind, component_type: c.type };
}

const SINK_STATES: readonly SinkStateName[] = ['healthy', 'retrying', 'blocked'];

function registerInstruments(provider: MeterProvider, pipeline: Pipeline, config: PipelineConfig, figures: ProcessFigures): void {
  const meter = provider.getMeter('logferry');
  const components = [...config.sources, ...config.transforms, ...config.sinks];
  const byId = new Map(components.map((c) => [c.id, c]));
  const counter = (name: MetricFamilyName, unit: string, observe: (result: ObservableResult) => void): void => {
    meter.createObservableCounter(name, { description: METRIC_FAMILIES[name].help, unit, valueType: ValueType.INT }).addCallback(observe);
  };
  const gauge = (name: MetricFamilyName, unit: string, observe: (result: ObservableResult) => void, valueType = ValueType.INT): void => {
    meter.createObservableGauge(name, { description: METRIC_FAMILIES[name].help, unit, valueType }).addCallback(observe);
  };
  /** A per-component counter of `Metrics.perComponent[id][key]`, for the components of `kinds`. */
  const perComponent = (name: MetricFamilyName, unit: string, key: string, kinds: readonly ComponentConfig['kind'][]): void =>
    counter(name, unit, (result) => {
      const counts = pipeline.metrics.perComponent;
      for (const c of components) if (kinds.includes(c.kind)) result.observe(counts.get(c.id)?.[key] ?? 0, componentLabels(c));
    });

  perComponent('logferry_component_received_events', '{record}', 'received_events', ['source']);
  perComponent('logferry_component_received_bytes', 'By', 'received_bytes', ['source']);
  perComponent('logferry_component_sent_events', '{record}', 'delivered', ['sink']);
  perComponent('logferry_component_sent_bytes', 'By', 'sent_bytes', ['sink']);
  perComponent('logferry_component_discarded_events', '{record}', 'dropped', ['transform']);
  perComponent('logferry_component_dead_letters', '{record}', 'dead_letters', ['source', 'transform', 'sink']);
  counter('logferry_dead_letters', '{record}', (result) => {
    for (const [code, n] of pipeline.metrics.deadLettersByCode) result.observe(n, { code });
  });
  counter('logferry_sink_retries', '{attempt}', (result) => {
    for (const { sink, counts } of pipeline.sinkRetryCounts()) {
      const c = byId.get(sink);
      if (!c) continue;
      for (const [reason, n] of Object.entries(counts)) result.observe(n, { ...componentLabels(c), reason });
    }
  });
  gauge('logferry_sink_state', '1', (result) => {
    for (const status of pipeline.sinkStates()) {
      const c = byId.get(status.sink);
      if (!c) continue;
      for (const state of SINK_STATES) result.observe(status.state === state ? 1 : 0, { ...componentLabels(c), state });
    }
  });
  gauge('logferry_sink_pending_records', '{record}', (result) => {
    for (const status of pipeline.sinkStates()) {
      const c = byId.get(status.sink);
      if (c) result.observe(status.pendingRecords, componentLabels(c));
    }
  });
  gauge('logferry_buffer_bytes', 'By', (result) => result.observe(pipeline.bytesInFlight));
  gauge('logferry_buffer_max_bytes', 'By', (result) => result.observe(pipeline.bufferMaxBytes));
  gauge('logferry_buffer_records', '{record}', (result) => result.observe(pipeline.recordsInFlight));
  gauge('logferry_source_bytes_behind', 'By', (result) => {
    const totals = new Map<string, number>();
    for (const f of pipeline.bytesBehindByFile()) totals.set(f.source, (totals.get(f.source) ?? 0) + f.bytes);
    for (const c of config.sources) result.observe(totals.get(c.id) ?? 0, componentLabels(c));
  });
  gauge(
    'logferry_checkpoint_age_seconds',
    's',
    (result) => {
      const now = Date.now();
      for (const [source, at] of pipeline.checkpointSavedAt()) {
        const c = byId.get(source);
        if (c) result.observe((now - at) / 1000, componentLabels(c));
      }
    },
    ValueType.DOUBLE,
  );
  gauge('logferry_process_resident_memory_bytes', 'By', (result) => result.observe(process.memoryUsage.rss()));
  gauge('logferry_process_heap_used_bytes', 'By', (result) => result.observe(process.memoryUsage().heapUsed));
  gauge('logferry_process_event_loop_delay_p99_seconds', 's', (result) => result.observe(figures.eventLoopDelayP99S()), ValueType.DOUBLE);
  meter
    .createObservableCounter('logferry_process_cpu_seconds', { description: METRIC_FAMILIES.logferry_process_cpu_seconds.help, unit: 's', valueType: ValueType.DOUBLE })
    .addCallback((result) => {
      const { user, system } = process.cpuUsage();
      result.observe((user + system) / 1e6);
    });
  meter
    .createObservableCounter('logferry_process_gc_seconds', { description: METRIC_FAMILIES.logferry_process_gc_seconds.help, unit: 's', valueType: ValueType.DOUBLE })
    .addCallback((result) => result.observe(figures.gcSeconds));
}

/**
 * Event-loop delay and garbage collection time, measured by Node itself (perf_hooks) only while
 * telemetry is on. The delay's p99 covers the current window, which restarts every minute so an
 * old stall does not stay in the figure for good.
 */
class ProcessFigures {
  private static readonly WINDOW_MS = 60_000;
  private readonly delay = monitorEventLoopDelay({ resolution: 10 });
  private readonly windowTimer: NodeJS.Timeout;
  private readonly gc = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) this.gcSeconds += entry.duration / 1000;
  });
  gcSeconds = 0;

  constructor() {
    this.delay.enable();
    this.windowTimer = setInterval(() => this.delay.reset(), ProcessFigures.WINDOW_MS).unref();
    this.gc.observe({ entryTypes: ['gc'] });
  }

  eventLoopDelayP99S(): number {
    // No sample yet (the first 10 ms of a window): the histogram reports its initial huge minimum.
    if (this.delay.count === 0) return 0;
    return this.delay.percentile(99) / 1e9;
  }

  stop(): void {
    this.delay.disable();
    clearInterval(this.windowTimer);
    this.gc.disconnect();
  }
}

/**
 * The read-to-acknowledgement histogram, produced from the buckets the engine counts
 * (Metrics.latencyBuckets) instead of an OpenTelemetry Histogram instrument: that instrument
 * takes one record() call per value, which is the per-record cost this design keeps off the
 * hot path, and the API has no observable histogram. Cumulative, as Prometheus expects.
 */
class LatencyProducer implements MetricProducer {
  private readonly startTime: HrTime = hrNow();

  constructor(private readonly pipeline: Pipeline) {}

  collect(): Promise<CollectionResult> {
    const buckets = this.pipeline.metrics.latencyBuckets;
    const family = METRIC_FAMILIES.logferry_delivery_latency_seconds;
    return Promise.resolve(
      oneMetric({
        descriptor: { name: 'logferry_delivery_latency_seconds', description: family.help, unit: 's', valueType: ValueType.DOUBLE },
        aggregationTemporality: AggregationTemporality.CUMULATIVE,
        dataPointType: DataPointType.HISTOGRAM,
        dataPoints: [
          {
            startTime: this.startTime,
            endTime: hrNow(),
            attributes: {},
            value: {
              buckets: { boundaries: [...LATENCY_BUCKETS_S], counts: [...buckets.counts] },
              count: buckets.count,
              sum: buckets.sumS,
              ...(buckets.count > 0 ? { min: buckets.minS, max: buckets.maxS } : {}),
            },
          },
        ],
      }),
    );
  }
}

/**
 * logferry_source_file_bytes_behind, made fresh at each collection: the MAX_FILES_BEHIND files
 * furthest behind now (the per-source total covers every file). An observable gauge would not do:
 * the SDK keeps every label set it has seen, so a file rotated away, deleted or out of the top
 * would go on showing its last value, and the series would grow to the SDK's limit.
 */
export class FilesBehindProducer implements MetricProducer {
  private readonly byId: Map<string, ComponentConfig>;

  constructor(
    private readonly pipeline: Pipeline,
    config: PipelineConfig,
  ) {
    this.byId = new Map(config.sources.map((c) => [c.id, c]));
  }

  collect(): Promise<CollectionResult> {
    const files = new Map<string, { source: string; file: string; bytes: number }>();
    for (const f of this.pipeline.bytesBehindByFile()) {
      // A rotated-away file and its successor can share a path while both are open: one series, their sum.
      const key = `${f.source}\0${f.file}`;
      const known = files.get(key);
      files.set(key, known ? { ...known, bytes: known.bytes + f.bytes } : f);
    }
    const top = [...files.values()].sort((a, b) => b.bytes - a.bytes || a.file.localeCompare(b.file)).slice(0, MAX_FILES_BEHIND);
    const now = hrNow();
    const dataPoints = top.flatMap((f) => {
      const c = this.byId.get(f.source);
      return c ? [{ startTime: now, endTime: now, attributes: { ...componentLabels(c), file: f.file }, value: f.bytes }] : [];
    });
    return Promise.resolve(
      oneMetric({
        descriptor: { name: 'logferry_source_file_bytes_behind', description: METRIC_FAMILIES.logferry_source_file_bytes_behind.help, unit: 'By', valueType: ValueType.INT },
        aggregationTemporality: AggregationTemporality.CUMULATIVE,
        dataPointType: DataPointType.GAUGE,
        dataPoints,
      }),
    );
  }
}

/** What a MetricProducer hands the readers for one metric of logferry's own scope. */
function oneMetric(metric: MetricData): CollectionResult {
  return {
    resourceMetrics: {
      resource: resourceFromAttributes({}),
      scopeMetrics: [{ scope: { name: 'logferry' }, metrics: [metric] }],
    },
    errors: [],
  };
}

function hrNow(): HrTime {
  const ms = performance.timeOrigin + performance.now();
  return [Math.floor(ms / 1000), Math.round((ms % 1000) * 1e6)];
}
