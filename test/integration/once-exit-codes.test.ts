import { existsSync } from 'node:fs';
import { appendFile, mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { readDeadLetters } from '../../src/engine/dead-letters.js';
import { startFaultProxy, startReceiver, type Fault, type FaultProxy } from '../../src/testkit/index.js';
import { FIXTURES, jobKey, makeJob, removeAll, runCli, scratch, standardPipeline, startCli, waitFor, writePipeline } from '../helpers/cli.js';

/**
 * Issue 10, items 4 and 5: what `run --once` exits with (0 delivered, 65 dead letters of this run,
 * 75 records left for the next run, 1 an internal failure), and that a stop or a failing sink
 * ends it in bounded time without dead-lettering what a failing destination holds.
 */

const cleanup: string[] = [];
const servers: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
  await removeAll(cleanup);
});

const FIRST = 7_000_000;
const COUNT = 30;

async function jobsFile(dir: string, count = COUNT, first = FIRST, extra = ''): Promise<string> {
  const logs = join(dir, 'logs');
  await mkdir(logs, { recursive: true });
  let text = extra;
  for (let i = 0; i < count; i++) text += JSON.stringify(makeJob(first + i)) + '\n';
  await appendFile(join(logs, 'jobs.ndjson'), text);
  return join(logs, '*.ndjson');
}

function allIds(count = COUNT, first = FIRST): number[] {
  return Array.from({ length: count }, (_v, i) => first + i);
}

function httpSinkYaml(uri: string, timeoutMs = 1000): string {
  return `  collector:
    type: http
    inputs: [keyed]
    uri: ${JSON.stringify(uri)}
    encoding: ndjson
    compression: gzip
    batch: { max_events: 10, max_bytes: 65536, timeout_ms: 50 }
    request: { concurrency: 2, timeout_ms: ${timeoutMs} }
    retry: { initial_backoff_ms: 10, max_backoff_ms: 200 }
`;
}

/** A destination that can be switched between answering, refusing with 503 and never answering. */
async function switchableDestination(): Promise<{ proxy: FaultProxy; set(mode: 'pass' | '503' | 'hang'): void }> {
  let mode: 'pass' | '503' | 'hang' = 'pass';
  const receiver = await startReceiver();
  const proxy = await startFaultProxy({
    upstream: receiver.url,
    plan: (): Fault =>
      mode === '503'
        ? { kind: 'status', status: 503, body: 'service unavailable (test)' }
        : mode === 'hang'
          ? { kind: 'delay', ms: 10 * 60_000 }
          : { kind: 'pass' },
  });
  servers.push(proxy, receiver);
  return { proxy, set: (m) => (mode = m) };
}

/** A port on 127.0.0.1 that nothing listens on (connections are refused). */
async function refusedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function pipeline(dir: string, include: string, sinks: string, settings: { statusIntervalMs?: number; shutdownTimeout?: string; top?: string } = {}): string {
  return standardPipeline({ dataDir: join(dir, 'data'), include, out: join(dir, 'out'), sinks, top: settings.top })
    .replace('status_interval_ms: 60000', `status_interval_ms: ${settings.statusIntervalMs ?? 60000}`)
    .replace('shutdown_timeout: 20s', `shutdown_timeout: ${settings.shutdownTimeout ?? '20s'}`);
}

const fileSinkYaml = (out: string): string => `  archive:
    type: file
    inputs: [keyed]
    path: ${JSON.stringify(out)}
`;

describe('run --once exit codes', () => {
  it('exits 0 when every record was delivered', async () => {
    const dir = await scratch(cleanup);
    const include = await jobsFile(dir);
    const config = await writePipeline(dir, pipeline(dir, include, fileSinkYaml(join(dir, 'out'))));
    const result = await runCli(['run', '-c', config, '--once'], { cwd: dir });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/done: 30 records in .*30 delivered, 0 dead letters/);
    expect(result.stderr).not.toMatch(/exit \d+:/);
    expect(allIds().every((id) => existsSync(join(dir, 'out', jobKey(id))))).toBe(true);
  }, 60_000);

  it('exits 65 when records of this run went to the dead letters, and 0 on a next run without new ones', async () => {
    const dir = await scratch(cleanup);
    const include = await jobsFile(dir, 10, FIRST, 'this line is not JSON\n');
    const config = await writePipeline(dir, pipeline(dir, include, fileSinkYaml(join(dir, 'out'))));
    const result = await runCli(['run', '-c', config, '--once'], { cwd: dir });
    expect(result.code, result.stderr).toBe(65);
    expect(result.stderr).toMatch(/exit 65: 1 record of this run went to the dead letters.*LF_RUN_HAD_DEAD_LETTERS/);
    expect(await readDeadLetters(join(dir, 'data'))).toHaveLength(1);
    expect(allIds(10).every((id) => existsSync(join(dir, 'out', jobKey(id))))).toBe(true);

    // The dead letter of the first run is still there, but it is not this run's.
    await jobsFile(dir, 5, FIRST + 10);
    const next = await runCli(['run', '-c', config, '--once'], { cwd: dir });
    expect(next.code, next.stderr).toBe(0);
    expect(next.stderr).toMatch(/done: 5 records in/);
  }, 60_000);

  it('exits 75 when a 503 destination still fails at --max-wait, dead-letters nothing, and the next run delivers every record', async () => {
    const dir = await scratch(cleanup);
    const include = await jobsFile(dir);
    const destination = await switchableDestination();
    destination.set('503');
    const config = await writePipeline(dir, pipeline(dir, include, httpSinkYaml(destination.proxy.url + '/ingest'), { statusIntervalMs: 200 }));
    const started = Date.now();
    const result = await runCli(['run', '-c', config, '--once', '--max-wait', '2'], { cwd: dir, timeoutMs: 60_000 });
    const elapsedMs = Date.now() - started;
    expect(result.code, result.stderr).toBe(75);
    // 2 s of --max-wait, plus the start and the end of a node process on a busy machine.
    expect(elapsedMs).toBeLessThan(20_000);
    expect(destination.proxy.faultsByKind.status).toBeGreaterThan(0);
    // The status line names the failing sink, its state, its reason and since when, and what it holds.
    expect(result.stderr).toMatch(/status .*held_records=[1-9]\d* sinks=collector=retrying\(.*503.*\) since \d\d:\d\d:\d\d/);
    expect(result.stderr).toMatch(/LF_DESTINATION_HELD/);
    expect(result.stderr).toMatch(/done: .*; sink collector failing since \d\d:\d\d:\d\d \(.*503.*\), [1-9]\d* records held for the next run/);
    expect(result.stderr).toMatch(/exit 75: sink collector was still failing \(.*503.*\) when --max-wait ran out: [1-9]\d* records were not acknowledged/);
    expect(await readDeadLetters(join(dir, 'data'))).toEqual([]);

    destination.set('pass');
    const next = await runCli(['run', '-c', config, '--once', '--max-wait', '2'], { cwd: dir });
    expect(next.code, next.stderr).toBe(0);
    expect([...destination.proxy.acknowledgedIds].sort()).toEqual(expect.arrayContaining(allIds()));
    expect(await readDeadLetters(join(dir, 'data'))).toEqual([]);
  }, 90_000);

  it('exits 75 when the destination refuses connections, with the sink states as JSON log fields', async () => {
    const dir = await scratch(cleanup);
    const include = await jobsFile(dir);
    const port = await refusedPort();
    const config = await writePipeline(dir, pipeline(dir, include, httpSinkYaml(`http://127.0.0.1:${port}/ingest`), { statusIntervalMs: 200 }));
    const result = await runCli(['run', '-c', config, '--once', '--max-wait', '1', '--log-format', 'json'], { cwd: dir, timeoutMs: 60_000 });
    expect(result.code, result.stderr).toBe(75);
    const lines = result.stderr
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    type SinkField = { sink: string; state: string; reason: string; since: string; held_records: number };
    const status = lines.find((l) => l.msg === 'status' && Array.isArray(l.sinks));
    expect(status, result.stderr).toBeDefined();
    const [failing] = status!.sinks as SinkField[];
    expect(failing).toMatchObject({ sink: 'collector', state: 'retrying' });
    expect(failing!.reason).toMatch(/ECONNREFUSED|refused/i);
    expect(Date.parse(failing!.since)).not.toBeNaN();
    expect(status!.held_records).toBeGreaterThan(0);
    const done = lines.find((l) => typeof l.msg === 'string' && l.msg.startsWith('done: '));
    expect((done?.sinks as SinkField[] | undefined)?.map((s) => s.sink)).toEqual(['collector']);
    expect(lines.at(-1)).toMatchObject({ level: 'error', code: 'LF_DESTINATION_HELD' });
    expect(await readDeadLetters(join(dir, 'data'))).toEqual([]);
  }, 60_000);

  it('refuses --max-wait that is not a positive number of seconds, or without --once', async () => {
    const dir = await scratch(cleanup);
    for (const value of ['0', '-3', 'soon', '', '604801']) {
      const result = await runCli(['run', '-c', 'pipeline.yaml', '--once', `--max-wait=${value}`], { cwd: dir });
      expect(result.code, value).toBe(2);
      expect(result.stderr).toContain('--max-wait must be a number of seconds above 0 and at most 604800');
    }
    const withoutOnce = await runCli(['run', '-c', 'pipeline.yaml', '--max-wait', '5'], { cwd: dir });
    expect(withoutOnce.code).toBe(2);
    expect(withoutOnce.stderr).toContain('--max-wait applies to run --once and dead-letter replay only');
  }, 60_000);
});

describe('stopping run --once', () => {
  for (const mode of ['hang', '503'] as const) {
    it(`SIGTERM while the destination ${mode === 'hang' ? 'never answers' : 'answers 503'} ends within shutdown_timeout, dead-letters nothing, and the next run sends every record`, async () => {
      const dir = await scratch(cleanup);
      const include = await jobsFile(dir);
      const destination = await switchableDestination();
      destination.set(mode);
      // The request timeout outlasts shutdown_timeout: a request that never answers is still pending when it runs out.
      const sinks = httpSinkYaml(destination.proxy.url + '/ingest', mode === 'hang' ? 60_000 : 1000);
      const config = await writePipeline(dir, pipeline(dir, include, sinks, { shutdownTimeout: '2s' }));
      const running = startCli(['run', '-c', config, '--once', '--max-wait', '600', '--log-level', 'debug'], { cwd: dir });
      if (mode === 'hang') await waitFor(() => destination.proxy.requests > 0, 20_000, 'a request held by the destination');
      else await waitFor(() => /request failed; retrying/.test(running.stderr()), 20_000, 'the sink retrying the 503');
      const killedAt = Date.now();
      running.child.kill('SIGTERM');
      const result = await running.exited;
      const stopMs = Date.now() - killedAt;
      expect(result.code, result.stderr).toBe(75);
      // shutdown_timeout (2 s) plus a margin for a busy machine; without the bound it waited for the sink to give up.
      expect(stopMs).toBeLessThan(12_000);
      const timedOut = result.stderr.indexOf('shutdown_timeout ran out');
      expect(timedOut, result.stderr).toBeGreaterThan(0);
      // After the timeout nothing says it is still retrying: the probes stopped and the sinks are silenced.
      expect(result.stderr.slice(timedOut)).not.toMatch(/retrying/);
      expect(result.stderr).toMatch(/exit 75: the run was stopped before its records were delivered: [1-9]\d* records were not acknowledged/);
      expect(await readDeadLetters(join(dir, 'data'))).toEqual([]);

      destination.set('pass');
      const next = await runCli(['run', '-c', config, '--once'], { cwd: dir });
      expect(next.code, next.stderr).toBe(0);
      expect([...destination.proxy.acknowledgedIds]).toEqual(expect.arrayContaining(allIds()));
      expect(await readDeadLetters(join(dir, 'data'))).toEqual([]);
    }, 90_000);
  }

  it('a sink that throws ends the run at once with its error (exit 1), without waiting for shutdown_timeout, and leaves the records for the next run', async () => {
    const dir = await scratch(cleanup);
    const include = await jobsFile(dir);
    const plugin = join(FIXTURES, 'plugins', 'throwing-sink');
    const throwing = `  broken:
    type: throwing_sink
    inputs: [keyed]
    message: the sink broke on purpose
`;
    const config = await writePipeline(dir, pipeline(dir, include, throwing, { shutdownTimeout: '60s', top: `plugins: [${JSON.stringify(plugin)}]` }));
    const started = Date.now();
    const result = await runCli(['run', '-c', config, '--once'], { cwd: dir, timeoutMs: 60_000 });
    expect(result.code, result.stderr).toBe(1);
    // Far less than the 60 s shutdown_timeout: the run does not wait for the records the sink took.
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(result.stderr).toContain('LF_SINK_FAILED: sink broken failed: the sink broke on purpose');
    expect(await readDeadLetters(join(dir, 'data'))).toEqual([]);

    // The same inputs to a working sink: every record is still there to be sent.
    const fixed = await writePipeline(dir, pipeline(dir, include, fileSinkYaml(join(dir, 'out'))));
    const next = await runCli(['run', '-c', fixed, '--once'], { cwd: dir });
    expect(next.code, next.stderr).toBe(0);
    expect(allIds().every((id) => existsSync(join(dir, 'out', jobKey(id))))).toBe(true);
  }, 60_000);
  it('a sink that cannot be built stops the start with its own code, or LF_COMPONENT_BUILD_FAILED naming it; the exit code follows the code', async () => {
    const dir = await scratch(cleanup);
    const include = await jobsFile(dir);
    const plugin = join(FIXTURES, 'plugins', 'throwing-sink');
    const failingAtBuild = (code?: string): string => `  broken:
    type: throwing_sink
    inputs: [keyed]
    fail_at: build
    message: no credentials here${code ? `\n    code: ${code}` : ''}
`;
    const top = `plugins: [${JSON.stringify(plugin)}]`;

    const unexpected = await runCli(['run', '-c', await writePipeline(dir, pipeline(dir, include, failingAtBuild(), { top })), '--once'], { cwd: dir });
    expect(unexpected.code, unexpected.stderr).toBe(1);
    expect(unexpected.stderr).toContain('LF_COMPONENT_BUILD_FAILED: cannot build sink broken (type throwing_sink, at sinks.broken): no credentials here;');
    expect(unexpected.stderr).not.toContain('LF_SINK_FAILED');

    // A configuration problem found only when building (an unset variable) is a configuration error: exit 78.
    const config = await runCli(['run', '-c', await writePipeline(dir, pipeline(dir, include, failingAtBuild('LF_CONFIG_ENV'), { top })), '--once'], { cwd: dir });
    expect(config.code, config.stderr).toBe(78);
    expect(config.stderr).toContain('LF_CONFIG_ENV: no credentials here');

    // The same through validate --check-destinations, which builds only the sinks.
    const checked = await runCli(['validate', '-c', await writePipeline(dir, pipeline(dir, include, failingAtBuild('LF_PLUGIN_INVALID'), { top })), '--check-destinations'], { cwd: dir });
    expect(checked.code, checked.stderr).toBe(1);
    expect(checked.stderr).toContain('LF_PLUGIN_INVALID: no credentials here');
    expect(await readDeadLetters(join(dir, 'data'))).toEqual([]);
  }, 60_000);
});
