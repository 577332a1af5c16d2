import { appendFile, mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { readDeadLetters } from '../../src/engine/dead-letters.js';
import { faultPlans, startFaultProxy, startReceiver, type FaultProxy, type Receiver } from '../../src/testkit/index.js';
import { makeJob, removeAll, runCli, scratch, standardPipeline, startCli, writePipeline } from '../helpers/cli.js';

const cleanup: string[] = [];
const servers: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
  await removeAll(cleanup);
});

const FIRST = 3_000_000;
const SUMO_PLUGIN = resolve(import.meta.dirname, '../../plugins/sumologic');

async function jobsFile(dir: string, count: number, first = FIRST): Promise<string> {
  const logs = join(dir, 'logs');
  await mkdir(logs, { recursive: true });
  let text = '';
  for (let i = 0; i < count; i++) text += JSON.stringify(makeJob(first + i)) + '\n';
  await appendFile(join(logs, 'jobs.ndjson'), text);
  return join(logs, '*.ndjson');
}

function httpSinkYaml(uri: string, extra = ''): string {
  return `  collector:
    type: http
    inputs: [keyed]
    uri: ${JSON.stringify(uri)}
    encoding: ndjson
    compression: gzip
    batch: { max_events: 50, max_bytes: 65536, timeout_ms: 50 }
    request: { concurrency: 4, timeout_ms: 1000 }
    retry: { initial_backoff_ms: 10, max_backoff_ms: 200, max_duration_s: 60 }
${extra}`;
}

function missing(ids: Iterable<number>, count: number, first = FIRST): number[] {
  const seen = new Set(ids);
  const out: number[] = [];
  for (let i = 0; i < count; i++) if (!seen.has(first + i)) out.push(first + i);
  return out;
}

async function receiverBehindProxy(plan = faultPlans.none): Promise<{ receiver: Receiver; proxy: FaultProxy }> {
  const receiver = await startReceiver();
  const proxy = await startFaultProxy({ upstream: receiver.url, plan });
  servers.push(proxy, receiver);
  return { receiver, proxy };
}

describe('http sink, end to end through the CLI', () => {
  it('delivers every job through 503s with Retry-After, dropped connections and slow answers', async () => {
    const dir = await scratch(cleanup);
    const include = await jobsFile(dir, 1500);
    const { receiver, proxy } = await receiverBehindProxy(faultPlans.mixed({ unavailable: 0.3, drop: 0.05, slow: 0.05, slowMs: 1500, seed: 7 }));
    const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include, out: '', sinks: httpSinkYaml(proxy.url + '/ingest') }));
    const result = await runCli(['run', '-c', config, '--once'], { cwd: dir });
    expect(result.code, result.stderr).toBe(0);
    expect(missing(receiver.ids(), 1500)).toEqual([]);
    expect(proxy.faultsByKind.status ?? 0).toBeGreaterThan(0);
    expect(proxy.faultsByKind.drop ?? 0).toBeGreaterThan(0);
    expect(proxy.faultsByKind.delay ?? 0).toBeGreaterThan(0);
    expect(await readDeadLetters(join(dir, 'data'))).toEqual([]);
  });

  it('sends batches refused for their body (400) to the dead letters with the status and keeps shipping the rest', async () => {
    const dir = await scratch(cleanup);
    const include = await jobsFile(dir, 200);
    const poisoned = FIRST + 42;
    const { receiver } = await receiverBehindProxy();
    const proxy = await startFaultProxy({
      upstream: receiver.url,
      plan: faultPlans.rejectWhen((request) => request.ids.includes(poisoned), 400, '{"error":"malformed record"}'),
    });
    servers.push(proxy);
    const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include, out: '', sinks: httpSinkYaml(proxy.url + '/ingest') }));
    const result = await runCli(['run', '-c', config, '--once'], { cwd: dir });
    expect(result.code, result.stderr).toBe(65);
    const dead = await readDeadLetters(join(dir, 'data'));
    const deadIds = dead.map((d) => (JSON.parse(d.text!) as { id: number }).id);
    expect(deadIds).toContain(poisoned);
    expect(dead[0]!.reason).toContain('400');
    expect(dead[0]!.reason).toContain('malformed record');
    // The refused batch is sent again in halves down to single records: only the refused record is a dead letter.
    expect(deadIds).toEqual([poisoned]);
    expect(missing([...receiver.ids(), ...deadIds], 200)).toEqual([]);
  });

  it('never logs the token in the URI or the auth header', async () => {
    const dir = await scratch(cleanup);
    const include = await jobsFile(dir, 20);
    const receiver = await startReceiver({ respond: () => ({ status: 500, body: 'boom' }) });
    servers.push(receiver);
    const token = 'tok3n-SECRET-abc123';
    const yaml = standardPipeline({
      dataDir: join(dir, 'data'),
      include,
      out: '',
      sinks: httpSinkYaml(`${receiver.url}/receiver/v1/http/\${SINK_TOKEN}`, `    auth: { strategy: bearer, token: "\${SINK_TOKEN}" }\n`).replace(
        'max_duration_s: 60',
        'max_duration_s: 1',
      ),
    });
    const config = await writePipeline(dir, yaml);
    const result = await runCli(['run', '-c', config, '--once', '--log-level', 'debug'], { cwd: dir, env: { SINK_TOKEN: token } });
    expect(result.code).toBe(65);
    expect(receiver.requests.length).toBeGreaterThan(0);
    expect(receiver.requests[0]!.headers.authorization).toBe(`Bearer ${token}`);
    expect(result.stderr).toContain('LF_SINK_RETRY_EXPIRED');
    expect(result.stderr).not.toContain(token);
    const dead = await readDeadLetters(join(dir, 'data'));
    expect(dead.length).toBe(20);
    expect(JSON.stringify(dead)).not.toContain(token);
  });

  it('loses no job across repeated SIGKILL while shipping over HTTP', async () => {
    const dir = await scratch(cleanup);
    const { receiver, proxy } = await receiverBehindProxy(faultPlans.mixed({ unavailable: 0.2, drop: 0, slow: 0, slowMs: 0, seed: 3 }));
    const logs = join(dir, 'logs');
    await mkdir(logs);
    const config = await writePipeline(
      dir,
      standardPipeline({ dataDir: join(dir, 'data'), include: join(logs, '*.ndjson'), out: '', sinks: httpSinkYaml(proxy.url + '/ingest') }),
    );
    const total = 3000;
    let written = 0;
    const writer = (async () => {
      while (written < total) {
        const n = Math.min(total - written, 100);
        let text = '';
        for (let i = 0; i < n; i++) text += JSON.stringify(makeJob(FIRST + written + i)) + '\n';
        written += n;
        await appendFile(join(logs, 'jobs.ndjson'), text);
        await new Promise((r) => setTimeout(r, 60));
      }
    })();
    for (let k = 0; k < 4; k++) {
      const running = startCli(['run', '-c', config], { cwd: dir });
      await new Promise((r) => setTimeout(r, 400 + Math.floor(Math.random() * 500)));
      running.child.kill('SIGKILL');
      expect((await running.exited).signal).toBe('SIGKILL');
    }
    await writer;
    const final = await runCli(['run', '-c', config, '--once'], { cwd: dir });
    expect(final.code, final.stderr).toBe(0);
    expect(missing(receiver.ids(), total)).toEqual([]);
  });

  it('ships through the Sumo Logic plugin with its headers, gzipped NDJSON under 1 MiB', async () => {
    const dir = await scratch(cleanup);
    const include = await jobsFile(dir, 300);
    const receiver = await startReceiver();
    servers.push(receiver);
    const sinks = `  sumo:
    type: sumo_logic
    inputs: [keyed]
    url: ${JSON.stringify(receiver.url + '/receiver/v1/http/TOKEN')}
    category: prod/workato/jobs
    name: job-history
    host: ferry-01
    fields: { environment: prod, team: data }
`;
    const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include, out: '', sinks, top: `plugins: [${JSON.stringify(SUMO_PLUGIN)}]` }));
    const result = await runCli(['run', '-c', config, '--once'], { cwd: dir });
    expect(result.code, result.stderr).toBe(0);
    expect(missing(receiver.ids(), 300)).toEqual([]);
    const first = receiver.requests[0]!;
    expect(first.headers['x-sumo-category']).toBe('prod/workato/jobs');
    expect(first.headers['x-sumo-name']).toBe('job-history');
    expect(first.headers['x-sumo-host']).toBe('ferry-01');
    expect(first.headers['x-sumo-fields']).toBe('environment=prod,team=data');
    expect(first.headers['content-encoding']).toBe('gzip');
    for (const r of receiver.requests) expect(r.body.length).toBeLessThanOrEqual(1024 * 1024);
  });
});
