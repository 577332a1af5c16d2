import { Buffer } from 'node:buffer';
import { createServer } from 'node:net';
import { appendFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { METRIC_FAMILIES } from '../../src/engine/telemetry-names.js';
import { startReceiver, type ReceivedRequest } from '../../src/testkit/index.js';
import { makeJob, removeAll, runCli, scratch, standardPipeline, startCli, waitFor, writePipeline, type Running } from '../helpers/cli.js';
import { attributesOf, metricsOf, pointValue, startOtlpReceiver, type DecodedMetric } from '../helpers/otlp-metrics-receiver.js';

/**
 * The operators' API and the metrics, end to end: a real `run` follows a file into the http sink
 * of a real 127.0.0.1 server that fails (503, then 403) and recovers; /ready, /health, /status and
 * /metrics are read while it runs, and every documented metric family is checked against what the
 * run really did. Then the OTLP export of the same metrics to a receiver that decodes them with the
 * official OTLP definitions, and the start-up error of an API port in use.
 */

const cleanup: string[] = [];
const stoppers: (() => Promise<void>)[] = [];
const children: Running[] = [];
afterEach(async () => {
  for (const running of children.splice(0)) if (running.child.exitCode === null && running.child.signalCode === null) running.child.kill('SIGKILL');
  await Promise.all(stoppers.splice(0).map((stop) => stop()));
  await removeAll(cleanup);
});

const FIRST = 7_000_000;
/** Records that reach the sink. */
const N = 40;
/** Lines that are dead letters, by the code each gets. */
const BAD_LINES: readonly { line: string; code: string }[] = [
  { line: '{"id": 1, broken', code: 'LF_RECORD_BAD_JSON' },
  { line: 'not json at all', code: 'LF_RECORD_BAD_JSON' },
  { line: '[1, 2, 3]', code: 'LF_RECORD_NOT_OBJECT' },
];
const M = BAD_LINES.length;
const BUFFER_BYTES = 8 * 1024 * 1024;

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a Prometheus text exposition (comments skipped). */
function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]!] = pair[2]!;
    samples.push({ name: match[1]!, labels, value: match[3] === '+Inf' ? Infinity : Number(match[3]) });
  }
  return samples;
}

/** The one sample of `name` whose labels include `labels`; fails when there is none or more than one. */
function sample(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length !== 1) throw new Error(`expected one sample ${name} ${JSON.stringify(labels)}, found ${found.length}`);
  return found[0]!.value;
}

async function get(url: string): Promise<{ status: number; text: string }> {
  const response = await fetch(url);
  return { status: response.status, text: await response.text() };
}

/** The API's base URL, from the start-up log line (the port is random: api.address port 0). */
async function apiUrl(running: Running): Promise<string> {
  return waitFor(() => /operators' API listening address=(http:\/\/127\.0\.0\.1:\d+)/.exec(running.stderr())?.[1], 20_000, 'the API address in the log');
}

async function jobsWithDeadLetters(dir: string): Promise<{ include: string; file: string; goodBytes: number }> {
  const logs = join(dir, 'logs');
  await mkdir(logs, { recursive: true });
  const file = join(logs, 'jobs.ndjson');
  let text = '';
  let goodBytes = 0;
  for (let i = 0; i < N; i++) {
    const line = JSON.stringify(makeJob(FIRST + i));
    goodBytes += Buffer.byteLength(line);
    text += line + '\n';
    // The bad lines are spread among the good ones.
    if (i % 10 === 5 && BAD_LINES[Math.floor(i / 10)]) text += BAD_LINES[Math.floor(i / 10)]!.line + '\n';
  }
  await writeFile(file, text);
  return { include: join(logs, '*.ndjson'), file, goodBytes };
}

/**
 * A long request timeout: an attempt that timed out on a busy machine although the receiver
 * answered would be counted by the receiver and retried by the sink, and the exact comparisons
 * of retries and sent bytes below would be off by it.
 */
function httpSinkYaml(uri: string): string {
  return `  ship:
    type: http
    inputs: [keyed]
    uri: ${JSON.stringify(uri)}
    auth: { strategy: bearer, token: ${SINK_TOKEN} }
    encoding: ndjson
    compression: gzip
    batch: { max_events: 10, max_bytes: 65536, timeout_ms: 20 }
    request: { concurrency: 2, timeout_ms: 30000 }
    retry: { initial_backoff_ms: 10, max_backoff_ms: 100 }
`;
}

/** The http sink's token; the failing destination quotes it in its answer, which /ready must not show. */
const SINK_TOKEN = 'obs-token-5f1e9a7c3b';

describe("the operators' API", () => {
  it('serves /health, /ready (503 naming a failing sink, 200 once it recovers), /status and /metrics with exact figures', async () => {
    const dir = await scratch(cleanup);
    const { include, file, goodBytes } = await jobsWithDeadLetters(dir);
    let answer = 503;
    const failures = { 503: 0, 403: 0 };
    let sentBodyBytes = 0;
    const receiver = await startReceiver({
      respond: (request: ReceivedRequest) => {
        if (answer !== 200) {
          failures[answer as 503 | 403]++;
          return { status: answer, body: answer === 503 ? 'down for maintenance' : `forbidden: token ${SINK_TOKEN} is revoked` };
        }
        // The sink sends each record's body as one NDJSON line: what logferry_component_sent_bytes counts.
        for (const line of request.body.toString('utf8').split('\n')) sentBodyBytes += Buffer.byteLength(line);
        return undefined;
      },
    });
    stoppers.push(() => receiver.close());
    const config = await writePipeline(
      dir,
      standardPipeline({ dataDir: join(dir, 'data'), include, out: '', sinks: httpSinkYaml(`${receiver.url}/ingest`), top: `buffer: { max_bytes: ${BUFFER_BYTES} }` }),
    );
    const running = startCli(['run', '-c', config], { cwd: dir });
    children.push(running);
    const api = await apiUrl(running);

    expect(await get(`${api}/health`)).toEqual({ status: 200, text: '{"status":"ok"}\n' });

    // 503: the sink is retrying, and /ready names it with its state and the destination's answer.
    const retrying = await waitFor(async () => {
      const ready = await get(`${api}/ready`);
      return ready.status === 503 && (JSON.parse(ready.text) as { components: { component_id: string; state: string; reason?: string }[] });
    }, 30_000, '/ready to answer 503');
    expect(retrying.components).toHaveLength(1);
    expect(retrying.components[0]).toMatchObject({ component_id: 'ship', component_kind: 'sink', state: 'retrying' });
    expect(retrying.components[0]!.reason).toContain('503');
    const whileFailing = parseExposition((await get(`${api}/metrics`)).text);
    expect(sample(whileFailing, 'logferry_sink_state', { component_id: 'ship', state: 'retrying' })).toBe(1);
    expect(sample(whileFailing, 'logferry_sink_state', { component_id: 'ship', state: 'healthy' })).toBe(0);
    expect(sample(whileFailing, 'logferry_component_sent_events_total', { component_id: 'ship' })).toBe(0);

    // 403: blocked, which needs an operator.
    answer = 403;
    const blocked = await waitFor(async () => {
      const ready = await get(`${api}/ready`);
      return ready.status === 503 && ready.text.includes('"state":"blocked"') && ready.text.includes('403') && ready.text;
    }, 30_000, '/ready to name the sink blocked');
    // The destination's answer quotes the token: /ready and /status show it scrubbed, as the logs do.
    expect(blocked).toContain('forbidden: token *** is revoked');
    const statusWhileBlocked = (await get(`${api}/status`)).text;
    expect(statusWhileBlocked).not.toContain(SINK_TOKEN);

    answer = 200;
    await waitFor(async () => (await get(`${api}/ready`)).status === 200, 30_000, '/ready to answer 200 again');
    expect(JSON.parse((await get(`${api}/ready`)).text)).toEqual({ status: 'ready' });

    // Every record delivered or dead-lettered, and the checkpoint past all of them.
    const final = await waitFor(async () => {
      const samples = parseExposition((await get(`${api}/metrics`)).text);
      const done =
        sample(samples, 'logferry_component_sent_events_total', { component_id: 'ship' }) === N &&
        sample(samples, 'logferry_component_dead_letters_total', { component_id: 'jobs' }) === M &&
        sample(samples, 'logferry_source_bytes_behind', { component_id: 'jobs' }) === 0 &&
        sample(samples, 'logferry_buffer_records') === 0;
      return done && samples;
    }, 30_000, 'every record to be delivered or dead-lettered');

    // Every documented family is there.
    const names = new Set(final.map((s) => s.name.replace(/_(bucket|count|sum)$/, '')));
    for (const family of Object.values(METRIC_FAMILIES)) expect(names, family.exposed).toContain(family.exposed);

    const labels = (id: string, kind: string, type: string): Record<string, string> => ({ component_id: id, component_kind: kind, component_type: type });
    const jobs = labels('jobs', 'source', 'job_log_tail');
    const ship = labels('ship', 'sink', 'http');
    expect(sample(final, 'logferry_component_received_events_total', jobs)).toBe(N);
    expect(sample(final, 'logferry_component_received_bytes_total', jobs)).toBe(goodBytes);
    expect(sample(final, 'logferry_component_sent_events_total', ship)).toBe(N);
    expect(sample(final, 'logferry_component_sent_bytes_total', ship)).toBe(sentBodyBytes);
    expect(sample(final, 'logferry_component_discarded_events_total', labels('redacted', 'transform', 'redact'))).toBe(0);
    expect(sample(final, 'logferry_component_discarded_events_total', labels('keyed', 'transform', 'path_format'))).toBe(0);
    expect(sample(final, 'logferry_component_dead_letters_total', jobs)).toBe(M);
    expect(sample(final, 'logferry_component_dead_letters_total', ship)).toBe(0);
    expect(sample(final, 'logferry_dead_letters_total', { code: 'LF_RECORD_BAD_JSON' })).toBe(2);
    expect(sample(final, 'logferry_dead_letters_total', { code: 'LF_RECORD_NOT_OBJECT' })).toBe(1);
    expect(final.filter((s) => s.name === 'logferry_dead_letters_total')).toHaveLength(2);
    // One retry per failing answer the destination gave, by class.
    expect(failures[503]).toBeGreaterThan(0);
    expect(failures[403]).toBeGreaterThan(0);
    expect(sample(final, 'logferry_sink_retries_total', { ...ship, reason: 'transient' })).toBe(failures[503]);
    expect(sample(final, 'logferry_sink_retries_total', { ...ship, reason: 'blocked' })).toBe(failures[403]);
    // Every line read (records and dead letters) has its latency; the ones held through the outage took longer than the first buckets.
    expect(sample(final, 'logferry_delivery_latency_seconds_count')).toBe(N + M);
    expect(sample(final, 'logferry_delivery_latency_seconds_bucket', { le: '+Inf' })).toBe(N + M);
    expect(sample(final, 'logferry_delivery_latency_seconds_sum')).toBeGreaterThan(0);
    expect(sample(final, 'logferry_delivery_latency_seconds_bucket', { le: '0.001' })).toBeLessThan(N + M);
    expect(sample(final, 'logferry_sink_state', { ...ship, state: 'healthy' })).toBe(1);
    expect(sample(final, 'logferry_sink_state', { ...ship, state: 'retrying' })).toBe(0);
    expect(sample(final, 'logferry_sink_state', { ...ship, state: 'blocked' })).toBe(0);
    expect(sample(final, 'logferry_sink_pending_records', ship)).toBe(0);
    expect(sample(final, 'logferry_buffer_bytes')).toBe(0);
    expect(sample(final, 'logferry_buffer_max_bytes')).toBe(BUFFER_BYTES);
    expect(sample(final, 'logferry_buffer_records')).toBe(0);
    expect(sample(final, 'logferry_source_bytes_behind', jobs)).toBe(0);
    expect(sample(final, 'logferry_source_file_bytes_behind', { ...jobs, file })).toBe(0);
    // Saved every 100 ms (checkpoint_interval_ms): far less than a few seconds old, even on a busy machine.
    const age = sample(final, 'logferry_checkpoint_age_seconds', jobs);
    expect(age).toBeGreaterThanOrEqual(0);
    expect(age).toBeLessThan(10);
    expect(sample(final, 'logferry_process_resident_memory_bytes')).toBeGreaterThan(10 * 1024 * 1024);
    expect(sample(final, 'logferry_process_heap_used_bytes')).toBeGreaterThan(1024 * 1024);
    expect(sample(final, 'logferry_process_cpu_seconds_total')).toBeGreaterThan(0);
    expect(sample(final, 'logferry_process_gc_seconds_total')).toBeGreaterThanOrEqual(0);
    expect(sample(final, 'logferry_process_event_loop_delay_p99_seconds')).toBeGreaterThanOrEqual(0);

    // /status: the same figures per component.
    const status = JSON.parse((await get(`${api}/status`)).text) as Record<string, unknown> & { components: Record<string, Record<string, unknown>> };
    expect(status).toMatchObject({ records_in: N, bytes_in: goodBytes, records_out: N, dead_letters: M, skipped: 0, in_flight: 0, buffer_max_bytes: BUFFER_BYTES, bytes_behind: 0 });
    expect(status.components.jobs).toMatchObject({ kind: 'source', type: 'job_log_tail', state: 'reading', received_events: N, dead_letters: M, bytes_behind: 0 });
    expect(status.components.ship).toMatchObject({ kind: 'sink', type: 'http', state: 'healthy', delivered: N, pending_records: 0 });
    expect((await get(`${api}/nowhere`)).status).toBe(404);

    // More input while it runs: the counters follow.
    await appendFile(file, JSON.stringify(makeJob(FIRST + N)) + '\n');
    await waitFor(async () => sample(parseExposition((await get(`${api}/metrics`)).text), 'logferry_component_sent_events_total', ship) === N + 1, 30_000, 'the appended record');

    running.child.kill('SIGTERM');
    const result = await running.exited;
    expect(result.code, result.stderr).toBe(0);
    // The server went away with the run.
    await expect(fetch(`${api}/health`)).rejects.toThrow();
  }, 120_000);

  it('refuses to start when api.address is in use (LF_API_ADDRESS_IN_USE, exit 78), before reading anything', async () => {
    const dir = await scratch(cleanup);
    const { include } = await jobsWithDeadLetters(dir);
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    stoppers.push(() => new Promise((resolve) => taken.close(() => resolve())));
    const port = (taken.address() as { port: number }).port;
    const out = join(dir, 'out');
    const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include, out, top: `api: { address: "127.0.0.1:${port}" }` }));
    const result = await runCli(['run', '-c', config], { cwd: dir, timeoutMs: 60_000, env: { LOGFERRY_API_ADDRESS: undefined } });
    expect(result.code, result.stderr).toBe(78);
    expect(result.stderr).toContain('LF_API_ADDRESS_IN_USE');
    expect(result.stderr).toContain(`api.address 127.0.0.1:${port}`);
    expect(result.stderr).toContain('EADDRINUSE');
    expect(result.stderr).not.toContain('running; stop with');

    // LOGFERRY_API_ADDRESS replaces api.address, and messages name it; a bad one is a usage error.
    const fromEnv = await runCli(['run', '-c', config], { cwd: dir, timeoutMs: 60_000, env: { LOGFERRY_API_ADDRESS: `127.0.0.1:${port}` } });
    expect(fromEnv.code, fromEnv.stderr).toBe(78);
    expect(fromEnv.stderr).toContain(`LOGFERRY_API_ADDRESS 127.0.0.1:${port}`);
    const bad = await runCli(['run', '-c', config], { cwd: dir, timeoutMs: 60_000, env: { LOGFERRY_API_ADDRESS: 'localhost' } });
    expect(bad.code, bad.stderr).toBe(2);
    expect(bad.stderr).toMatch(/logferry: LOGFERRY_API_ADDRESS must be host:port .* got "localhost"/);
  }, 60_000);

  it('rejects an api.address that is not host:port, with its position', async () => {
    const dir = await scratch(cleanup);
    const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include: join(dir, '*.ndjson'), out: join(dir, 'out'), top: 'api: { address: "localhost:99999" }' }));
    const result = await runCli(['validate', '-c', config], { cwd: dir });
    expect(result.code).toBe(78);
    expect(result.stderr).toMatch(/:\d+:\d+: api\.address: expected host:port/);
  });
});

describe('OTLP export of the metrics', () => {
  it('pushes the same metrics to OTEL_EXPORTER_OTLP_ENDPOINT/v1/metrics, the last export at the end of run --once', async () => {
    const dir = await scratch(cleanup);
    const { include, goodBytes } = await jobsWithDeadLetters(dir);
    const otlp = await startOtlpReceiver();
    stoppers.push(() => otlp.close());
    const out = join(dir, 'out');
    const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include, out }));
    const result = await runCli(['run', '-c', config, '--once'], {
      cwd: dir,
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_METRIC_EXPORT_INTERVAL: '60000', OTEL_SERVICE_NAME: 'logferry-test' },
    });
    // 65: the run had dead letters, as planned.
    expect(result.code, result.stderr).toBe(65);
    expect(result.stderr).toContain(`exporting metrics over OTLP endpoint=${otlp.url}/v1/metrics`);
    // --once: no API unless asked for.
    expect(result.stderr).not.toContain("operators' API listening");
    expect(otlp.metricRequests.length).toBeGreaterThan(0);
    const last = otlp.metricRequests.at(-1)!;
    const resource = (last.resourceMetrics as { resource: { attributes: { key: string; value: { stringValue?: string } }[] } }[])[0]!.resource;
    expect(resource.attributes).toContainEqual({ key: 'service.name', value: expect.objectContaining({ stringValue: 'logferry-test' }) as unknown });
    const byName = new Map<string, DecodedMetric>(metricsOf(last).map((m) => [m.name, m]));
    for (const name of Object.keys(METRIC_FAMILIES)) expect([...byName.keys()], name).toContain(name);
    const point = (name: string, labels: Record<string, string>): number => {
      const metric = byName.get(name)!;
      const points = (metric.sum ?? metric.gauge)!.dataPoints.filter((p) => Object.entries(labels).every(([k, v]) => attributesOf(p)[k] === v));
      expect(points, name).toHaveLength(1);
      return pointValue(points[0]!);
    };
    expect(point('logferry_component_received_events', { component_id: 'jobs', component_kind: 'source', component_type: 'job_log_tail' })).toBe(N);
    expect(point('logferry_component_received_bytes', { component_id: 'jobs' })).toBe(goodBytes);
    expect(point('logferry_component_sent_events', { component_id: 'archive', component_type: 'file' })).toBe(N);
    expect(point('logferry_dead_letters', { code: 'LF_RECORD_BAD_JSON' })).toBe(2);
    expect(point('logferry_dead_letters', { code: 'LF_RECORD_NOT_OBJECT' })).toBe(1);
    expect(point('logferry_sink_state', { component_id: 'archive', state: 'healthy' })).toBe(1);
    expect(byName.get('logferry_component_sent_events')!.sum!.isMonotonic).toBe(true);
    const histogram = byName.get('logferry_delivery_latency_seconds')!.histogram!.dataPoints[0]!;
    expect(Number(histogram.count)).toBe(N + M);
    expect(histogram.bucketCounts.reduce((sum, n) => sum + Number(n), 0)).toBe(N + M);
  }, 60_000);

  it('loads no OpenTelemetry for --version, validate, or run --once without OTEL_* variables', async () => {
    const dir = await scratch(cleanup);
    const { include } = await jobsWithDeadLetters(dir);
    const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include, out: join(dir, 'out') }));
    // A module hook that says when anything under @opentelemetry is resolved.
    const hooks = join(dir, 'hooks.mjs');
    await writeFile(hooks, `export async function resolve(specifier, context, next) {\n  if (specifier.includes('@opentelemetry')) process.stderr.write('LOADED ' + specifier + '\\n');\n  return next(specifier, context);\n}\n`);
    const register = join(dir, 'register.mjs');
    await writeFile(register, `import { register } from 'node:module';\nimport { pathToFileURL } from 'node:url';\nregister(pathToFileURL(${JSON.stringify(hooks)}));\n`);
    const env = { NODE_OPTIONS: `--import ${register}`, OTEL_EXPORTER_OTLP_ENDPOINT: '', OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: '' };
    for (const args of [['--version'], ['validate', '-c', config], ['run', '-c', config, '--once']]) {
      const result = await runCli(args, { cwd: dir, env });
      expect(result.code, `${args.join(' ')}: ${result.stderr}`).not.toBe(1);
      expect(result.stderr, args.join(' ')).not.toContain('LOADED');
    }
    // The hook does see it when the API is on (the control).
    const withApi = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data2'), include, out: join(dir, 'out2'), top: 'api: { enabled: true, address: "127.0.0.1:0" }' }));
    const result = await runCli(['run', '-c', withApi, '--once'], { cwd: dir, env });
    expect(result.stderr).toContain('LOADED @opentelemetry');
  }, 60_000);
});
