import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseApiAddress } from '../../src/config/load.js';
import { silentLogger, type LogFields, type Logger } from '../../src/engine/logger.js';
import { BucketedLatency, LATENCY_BUCKETS_S } from '../../src/engine/metrics.js';
import { METRIC_FAMILIES, otlpMetricsWanted } from '../../src/engine/telemetry-names.js';
import { exportTiming, FilesBehindProducer, otlpMetricsEndpoint } from '../../src/engine/telemetry.js';
import type { Pipeline } from '../../src/engine/pipeline.js';
import type { PipelineConfig } from '../../src/config/types.js';

const ROOT = resolve(import.meta.dirname, '../..');

/** The rows of the README's metric table: name, type, labels. */
function readmeMetricRows(): { name: string; type: string; labels: string }[] {
  const readme = readFileSync(resolve(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Observability'), readme.indexOf('\n## ', readme.indexOf('## Observability') + 1));
  return [...section.matchAll(/^\| `(logferry_[a-z0-9_]+)` \| (\w+) \| ([^|]*) \|/gm)].map((m) => ({
    name: m[1]!,
    type: m[2]!,
    labels: m[3]!.replaceAll('`', '').trim(),
  }));
}

describe('the documented metrics', () => {
  it('the README table lists exactly the metric families logferry makes, with their type and labels', () => {
    const documented = readmeMetricRows();
    const made = Object.values(METRIC_FAMILIES).map((f) => ({ name: f.exposed, type: f.type, labels: f.labels }));
    expect(documented).toEqual(made);
  });

  it('the Grafana dashboard queries only metrics that exist', () => {
    const dashboard = readFileSync(resolve(ROOT, 'docs/grafana-dashboard.json'), 'utf8');
    const exposed = new Set(Object.values(METRIC_FAMILIES).map((f) => f.exposed));
    const used = new Set([...dashboard.matchAll(/\b(logferry_[a-z0-9_]+?)(?:_bucket|_count|_sum)?\b/g)].map((m) => m[1]!));
    expect(used.size).toBeGreaterThan(10);
    for (const name of used) expect(exposed, name).toContain(name);
  });
});

describe('api.address', () => {
  it('takes host:port and [v6]:port with ports 0 to 65535, and nothing else', () => {
    expect(parseApiAddress('127.0.0.1:9598')).toEqual({ host: '127.0.0.1', port: 9598 });
    expect(parseApiAddress('0.0.0.0:0')).toEqual({ host: '0.0.0.0', port: 0 });
    expect(parseApiAddress('[::1]:65535')).toEqual({ host: '::1', port: 65535 });
    expect(parseApiAddress('localhost:80')).toEqual({ host: 'localhost', port: 80 });
    for (const bad of ['127.0.0.1', ':9598', '127.0.0.1:65536', '127.0.0.1:-1', '::1:9598', 'http://127.0.0.1:9598', '127.0.0.1:95 98', '']) {
      expect(parseApiAddress(bad), bad).toBeUndefined();
    }
  });
});

describe('OTLP export settings', () => {
  it('is wanted only when an endpoint is set and the SDK or metrics exporter is not turned off', () => {
    expect(otlpMetricsWanted({})).toBe(false);
    expect(otlpMetricsWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: ' ' })).toBe(false);
    expect(otlpMetricsWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' })).toBe(true);
    expect(otlpMetricsWanted({ OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'http://c:4318/v1/metrics' })).toBe(true);
    expect(otlpMetricsWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_SDK_DISABLED: 'true' })).toBe(false);
    expect(otlpMetricsWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_METRICS_EXPORTER: 'none' })).toBe(false);
  });

  it('sends to the metrics endpoint as given, or the base endpoint plus /v1/metrics', () => {
    expect(otlpMetricsEndpoint({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318/' })).toBe('http://c:4318/v1/metrics');
    expect(otlpMetricsEndpoint({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'http://m:9/x' })).toBe('http://m:9/x');
  });

  it('reads the export interval and timeout within bounds, warning about and ignoring a bad value', () => {
    const warnings: LogFields[] = [];
    const log: Logger = { ...silentLogger, warn: (msg, fields) => warnings.push({ msg, ...fields }) };
    expect(exportTiming({}, log)).toEqual({ intervalMs: 60_000, timeoutMs: 30_000 });
    expect(exportTiming({ OTEL_METRIC_EXPORT_INTERVAL: '5000' }, log)).toEqual({ intervalMs: 5000, timeoutMs: 5000 });
    expect(exportTiming({ OTEL_METRIC_EXPORT_INTERVAL: '1000', OTEL_METRIC_EXPORT_TIMEOUT: '400' }, log)).toEqual({ intervalMs: 1000, timeoutMs: 400 });
    expect(warnings).toEqual([]);
    for (const bad of ['0', '99', '1.5', 'soon', '86400001']) {
      expect(exportTiming({ OTEL_METRIC_EXPORT_INTERVAL: bad }, log).intervalMs, bad).toBe(60_000);
    }
    expect(warnings).toHaveLength(5);
    expect(warnings[0]).toMatchObject({ msg: expect.stringContaining('OTEL_METRIC_EXPORT_INTERVAL must be a whole number of milliseconds') as unknown, value: '0' });
  });
});

describe('BucketedLatency', () => {
  it('counts each value in the first bucket whose bound it does not pass, with the exact sum, min and max', () => {
    const latency = new BucketedLatency();
    for (const seconds of [0.0005, 0.001, 0.002, 0.7, 1000]) latency.record(seconds);
    expect(latency.count).toBe(5);
    expect(latency.sumS).toBeCloseTo(1000.7035, 9);
    expect(latency.minS).toBe(0.0005);
    expect(latency.maxS).toBe(1000);
    const counts = [...latency.counts];
    expect(counts).toHaveLength(LATENCY_BUCKETS_S.length + 1);
    expect(counts[0]).toBe(2); // le 0.001 is inclusive, as Prometheus buckets are
    expect(counts[LATENCY_BUCKETS_S.indexOf(0.005)]).toBe(1);
    expect(counts[LATENCY_BUCKETS_S.indexOf(1)]).toBe(1);
    expect(counts.at(-1)).toBe(1); // above 600 s: +Inf only
  });
});

describe('logferry_source_file_bytes_behind', () => {
  it('shows the files of this collection only: a file gone or caught up out of the top has no series left, and there are at most 50', async () => {
    let files: { source: string; file: string; bytes: number }[] = [];
    // Only what the producer reads of the pipeline and its configuration.
    const pipeline = { bytesBehindByFile: () => files } as unknown as Pipeline;
    const config = { sources: [{ id: 'jobs', kind: 'source', type: 'job_log_tail' }] } as unknown as PipelineConfig;
    const producer = new FilesBehindProducer(pipeline, config);
    const points = async (): Promise<{ file: unknown; value: unknown }[]> => {
      const { resourceMetrics } = await producer.collect();
      return resourceMetrics.scopeMetrics[0]!.metrics[0]!.dataPoints.map((p) => ({ file: p.attributes.file, value: p.value }));
    };

    files = [
      { source: 'jobs', file: '/logs/a.ndjson', bytes: 100 },
      { source: 'jobs', file: '/logs/b.ndjson', bytes: 7 },
    ];
    expect(await points()).toEqual([
      { file: '/logs/a.ndjson', value: 100 },
      { file: '/logs/b.ndjson', value: 7 },
    ]);
    // a.ndjson was rotated away and closed: it is gone from the next collection, not left at 100.
    files = [{ source: 'jobs', file: '/logs/b.ndjson', bytes: 0 }];
    expect(await points()).toEqual([{ file: '/logs/b.ndjson', value: 0 }]);
    // A folder of thousands of files: the 50 furthest behind.
    files = Array.from({ length: 3000 }, (_, i) => ({ source: 'jobs', file: `/logs/${i}.ndjson`, bytes: i }));
    const top = await points();
    expect(top).toHaveLength(50);
    expect(top[0]).toEqual({ file: '/logs/2999.ndjson', value: 2999 });
    expect(top[49]).toEqual({ file: '/logs/2950.ndjson', value: 2950 });
  });
});
