import { appendFile, mkdir, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { makeJob, removeAll, runCli, scratch, standardPipeline, writePipeline } from '../helpers/cli.js';

/** Issue 12, item 5: log lines a person can read (timestamps, grammar) and a machine can parse (fields). */

const cleanup: string[] = [];
afterEach(() => removeAll(cleanup));

/** ISO 8601 in UTC with milliseconds, at the start of each text line. */
const TEXT_LINE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info |warn |error) \S/;

async function jobs(dir: string, count: number): Promise<{ include: string; file: string }> {
  const logs = join(dir, 'logs');
  await mkdir(logs, { recursive: true });
  const file = join(logs, 'jobs.ndjson');
  await appendFile(file, Array.from({ length: count }, (_v, i) => JSON.stringify(makeJob(9_100_000 + i)) + '\n').join(''));
  return { include: join(logs, '*.ndjson'), file };
}

/** A port nothing listens on: a destination that refuses every connection. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

type JsonLine = Record<string, unknown> & { time: string; level: string; msg: string };

function jsonLines(stderr: string): JsonLine[] {
  return stderr
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as JsonLine);
}

describe('log lines of a run', () => {
  it('text: every line starts with the time in UTC; counts of one are singular', async () => {
    const dir = await scratch(cleanup);
    const { include } = await jobs(dir, 1);
    const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include, out: join(dir, 'out') }));
    const started = Date.now();
    const result = await runCli(['run', '-c', config, '--once'], { cwd: dir });
    expect(result.code, result.stderr).toBe(0);
    const lines = result.stderr.trimEnd().split('\n');
    for (const line of lines) {
      expect(line).toMatch(TEXT_LINE);
      const time = Date.parse(line.slice(0, 24));
      expect(time).toBeGreaterThanOrEqual(started - 1000);
      expect(time).toBeLessThanOrEqual(Date.now());
    }
    expect(result.stderr).toMatch(/info {2}done: 1 record in \(\d+ B, [\d.]+ MiB\/s\), 1 delivered, 0 dead letters, 0 skipped, in [\d.]+ s/);
    expect(result.stderr).toMatch(/info {2}wrote 1 document under out\//);

    const validate = await runCli(['validate', '-c', config], { cwd: dir });
    expect(validate.code, validate.stderr).toBe(0);
    expect(validate.stdout).toContain('ok (4 components: 1 source, 2 transforms, 1 sink)');
  });

  it('json: the done summary has its figures as fields, the rate over the whole run', async () => {
    const dir = await scratch(cleanup);
    const { include, file } = await jobs(dir, 25);
    const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include, out: join(dir, 'out') }));
    const result = await runCli(['run', '-c', config, '--once', '--log-format', 'json'], { cwd: dir });
    expect(result.code, result.stderr).toBe(0);
    const done = jsonLines(result.stderr).find((l) => l.msg.startsWith('done: '));
    expect(done, result.stderr).toMatchObject({ level: 'info', records_in: 25, delivered: 25, dead_letters: 0, skipped: 0, sink_states: { archive: 'healthy' } });
    const { size } = await stat(file);
    const bytesIn = done!.bytes_in as number;
    // Each line's bytes, with or without its newline.
    expect(bytesIn).toBeGreaterThanOrEqual(size - 25);
    expect(bytesIn).toBeLessThanOrEqual(size);
    const seconds = done!.seconds as number;
    expect(seconds).toBeGreaterThan(0);
    expect(done!.mib_per_s as number).toBeCloseTo(bytesIn / 1024 / 1024 / seconds, 2);
    expect(done!.msg).toContain(`done: 25 records in`);
    expect(done).not.toHaveProperty('sinks');
  });

  it('json: status lines have their figures, the seconds their rate covers, and every sink state as fields', async () => {
    const dir = await scratch(cleanup);
    const { include } = await jobs(dir, 5);
    const port = await closedPort();
    const sinks = `  collector:
    type: http
    inputs: [keyed]
    uri: "http://127.0.0.1:${port}/ingest"
    encoding: ndjson
    batch: { max_events: 10, max_bytes: 65536, timeout_ms: 50 }
    request: { concurrency: 1, timeout_ms: 1000 }
    retry: { initial_backoff_ms: 10, max_backoff_ms: 200 }
`;
    const yaml = standardPipeline({ dataDir: join(dir, 'data'), include, out: join(dir, 'out'), sinks }).replace('status_interval_ms: 60000', 'status_interval_ms: 300');
    const config = await writePipeline(dir, yaml);
    const result = await runCli(['run', '-c', config, '--once', '--max-wait', '2', '--log-format', 'json'], { cwd: dir });
    expect(result.code, result.stderr).toBe(75);
    const lines = jsonLines(result.stderr);
    const statuses = lines.filter((l) => l.msg === 'status');
    expect(statuses.length, result.stderr).toBeGreaterThan(0);
    for (const status of statuses) {
      expect(status).toMatchObject({ records_in: expect.any(Number), records_out: 0, mib_per_s: expect.any(Number), dead_letters: 0, skipped: 0 });
      // Each line's rate covers the time since the one before (300 ms here; more on a busy machine, never a tiny slice).
      expect(status.seconds as number).toBeGreaterThanOrEqual(0.2);
      expect(Object.keys(status.sink_states as object)).toEqual(['collector']);
    }
    expect(statuses.some((s) => (s.sink_states as Record<string, string>).collector === 'retrying')).toBe(true);
    const done = lines.find((l) => l.msg.startsWith('done: '));
    expect(done).toMatchObject({ records_in: 5, delivered: 0, sink_states: { collector: 'retrying' }, held_records: 5 });
  });
});
