import { createServer, type Server } from 'node:http';
import { appendFile, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { readDeadLetters } from '../../src/engine/dead-letters.js';
import { closeServer, decodeBody, documentIds, listenLocal, parseDocuments, readBody } from '../../src/testkit/receiver.js';
import { jobKey, makeJob, readTree, removeAll, runCli, scratch, standardPipeline, startCli, waitFor, writePipeline } from '../helpers/cli.js';

const cleanup: string[] = [];
const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => closeServer(s)));
  await removeAll(cleanup);
});

const FIRST = 7_000_000;

/**
 * An HTTP destination whose behaviour the test changes while logferry runs: `refuse` answers 403 to
 * everything, `ok` takes every request, `slow` takes them after `slowMs`. `delivered` holds the ids
 * of every document it answered 200 to (duplicates included).
 */
async function startDestination(): Promise<{ url: string; mode: 'refuse' | 'ok' | 'slow'; slowMs: number; delivered: number[]; refused: number }> {
  const state = { url: '', mode: 'refuse' as 'refuse' | 'ok' | 'slow', slowMs: 300, delivered: [] as number[], refused: 0 };
  const server = createServer((req, res) => {
    void (async () => {
      let raw: Buffer;
      try {
        raw = await readBody(req);
      } catch {
        return;
      }
      if (state.mode === 'refuse') {
        state.refused++;
        res.writeHead(403, { 'content-type': 'text/plain' }).end('forbidden: the token expired');
        return;
      }
      if (state.mode === 'slow') await new Promise((r) => setTimeout(r, state.slowMs));
      const ids = documentIds(parseDocuments(decodeBody(raw, req.headers['content-encoding'])));
      res.writeHead(200).end('', () => state.delivered.push(...ids));
    })().catch((err: unknown) => {
      // Detached (a request handler cannot be awaited): a body this test cannot read is answered
      // 500 with the reason, so the run fails visibly instead of with an unhandled rejection.
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`test destination failed: ${(err as Error).message}`);
    });
  });
  servers.push(server);
  state.url = `http://127.0.0.1:${await listenLocal(server)}/ingest`;
  return state;
}

async function jobsFile(dir: string, jobs: Record<string, unknown>[], extraLines: string[] = []): Promise<string> {
  const logs = join(dir, 'logs');
  await mkdir(logs, { recursive: true });
  await appendFile(join(logs, 'jobs.ndjson'), [...jobs.map((j) => JSON.stringify(j)), ...extraLines].map((l) => l + '\n').join(''));
  return join(logs, '*.ndjson');
}

const ids = (count: number): number[] => Array.from({ length: count }, (_, i) => FIRST + i);

function httpSink(uri: string, extra = ''): string {
  return `  collector:
    type: http
    inputs: [keyed]
    uri: ${JSON.stringify(uri)}
    encoding: ndjson
    batch: { max_events: 5, max_bytes: 65536, timeout_ms: 20 }
    request: { concurrency: 2, timeout_ms: 5000 }
    retry: { initial_backoff_ms: 20, max_backoff_ms: 100, max_duration_s: 1 }
${extra}`;
}

/** Runs --once against a destination that refuses everything: every record expires into the dead letters. */
async function deadLetterEverything(dir: string, count: number): Promise<{ config: string; destination: Awaited<ReturnType<typeof startDestination>> }> {
  const include = await jobsFile(dir, ids(count).map((id) => makeJob(id)));
  const destination = await startDestination();
  const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include, out: '', sinks: httpSink(destination.url) }));
  const run = await runCli(['run', '-c', config, '--once'], { cwd: dir });
  expect(run.stderr).toContain('LF_SINK_RETRY_EXPIRED');
  const dead = await readDeadLetters(join(dir, 'data'));
  expect(dead).toHaveLength(count);
  expect(destination.delivered).toEqual([]);
  return { config, destination };
}

const deadLetterDir = (dir: string): string => join(dir, 'data', 'dead_letter');

describe('logferry dead-letter replay', () => {
  it('sends records a 403 expired into the dead letters to their sink once it is fixed: each delivered once, the dead letters empty', async () => {
    const dir = await scratch(cleanup);
    const { config, destination } = await deadLetterEverything(dir, 30);
    const dead = await readDeadLetters(join(dir, 'data'));
    for (const e of dead) {
      expect(e).toMatchObject({ code: 'LF_SINK_RETRY_EXPIRED', component: 'collector', kind: 'job' });
      expect(e.key).toBe(jobKey((JSON.parse(e.text!) as { id: number }).id));
    }

    // --dry-run says what would go where and changes nothing, even with the destination fixed.
    destination.mode = 'ok';
    const before = await readTree(deadLetterDir(dir));
    const dry = await runCli(['dead-letter', 'replay', '-c', config, '--dry-run'], { cwd: dir });
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain('would send 30 dead letters');
    expect(dry.stdout).toContain('collector (sink) LF_SINK_RETRY_EXPIRED: 30');
    expect(destination.delivered).toEqual([]);
    expect(await readTree(deadLetterDir(dir))).toEqual(before);

    const replay = await runCli(['dead-letter', 'replay', '-c', config], { cwd: dir });
    expect(replay.code, replay.stderr).toBe(0);
    expect(replay.stdout).toContain('30 of 30 sent entries confirmed');
    expect([...destination.delivered].sort((a, b) => a - b)).toEqual(ids(30));
    expect(await readDeadLetters(join(dir, 'data'))).toEqual([]);
    expect(await readdir(deadLetterDir(dir))).toEqual([]);
    const list = await runCli(['dead-letter', 'list', '-c', config], { cwd: dir });
    expect(list.stdout).toBe('no dead letters\n');
  });

  it('gives up after --max-wait on a destination still refusing: exit 75, every entry stays', async () => {
    const dir = await scratch(cleanup);
    const { config, destination } = await deadLetterEverything(dir, 6);
    const before = await readDeadLetters(join(dir, 'data'));
    // Without max_duration_s the replay holds the records like run does, until --max-wait.
    await writeFile(config, (await readFile(config, 'utf8')).replace(', max_duration_s: 1', ''));
    const replay = await runCli(['dead-letter', 'replay', '-c', config, '--max-wait', '1'], { cwd: dir });
    expect(replay.code, replay.stderr).toBe(75);
    expect(replay.stderr).toContain('LF_DESTINATION_HELD');
    expect(destination.refused).toBeGreaterThan(0);
    expect(await readDeadLetters(join(dir, 'data'))).toEqual(before);
  });

  it('replays a record a transform rejected through that transform and what follows it; filters select; lines that never parsed stay', async () => {
    const dir = await scratch(cleanup);
    const noUser = (id: number): Record<string, unknown> => makeJob(id, { report: {} });
    const include = await jobsFile(dir, [noUser(FIRST), noUser(FIRST + 1), noUser(FIRST + 2)], ['{"id": 1, broken', 'not json']);
    const out = join(dir, 'out');
    const yaml = standardPipeline({ dataDir: join(dir, 'data'), include, out, userId: null });
    const config = await writePipeline(dir, yaml);
    const run = await runCli(['run', '-c', config, '--once'], { cwd: dir });
    expect(run.stderr).toContain('LF_RECORD_NO_USER_ID');
    expect((await readDeadLetters(join(dir, 'data'))).map((e) => e.code).sort()).toEqual([
      'LF_RECORD_BAD_JSON',
      'LF_RECORD_BAD_JSON',
      'LF_RECORD_NO_USER_ID',
      'LF_RECORD_NO_USER_ID',
      'LF_RECORD_NO_USER_ID',
    ]);

    // Filters that select nothing send nothing.
    for (const filter of [['--component', 'archive'], ['--code', 'LF_SINK_REJECTED'], ['--since', new Date(Date.now() + 3_600_000).toISOString()]]) {
      const none = await runCli(['dead-letter', 'replay', '-c', config, ...filter], { cwd: dir });
      expect(none.code, none.stderr).toBe(0);
      expect(none.stdout).toContain('sent 0 dead letters');
    }
    // Lines that never parsed cannot be replayed: counted, and kept.
    const bad = await runCli(['dead-letter', 'replay', '-c', config, '--code', 'LF_RECORD_BAD_JSON'], { cwd: dir });
    expect(bad.code, bad.stderr).toBe(0);
    expect(bad.stdout).toContain('2 dead letters of lines that never parsed cannot be replayed');
    expect(bad.stdout).toContain('dead-letter show');

    // Still rejected: each entry is replaced by a new one with the new reason (exit 65).
    const again = await runCli(['dead-letter', 'replay', '-c', config, '--component', 'keyed', '--since', '2000-01-01T00:00:00Z'], { cwd: dir });
    expect(again.code, again.stderr).toBe(65);
    expect(again.stdout).toContain('3 of 3 sent entries confirmed');
    const afterAgain = await readDeadLetters(join(dir, 'data'));
    expect(afterAgain).toHaveLength(5);
    expect(afterAgain.filter((e) => e.code === 'LF_RECORD_NO_USER_ID')).toHaveLength(3);

    // Fixed in the pipeline file: the records go through path_format again and reach the sink.
    await writeFile(config, standardPipeline({ dataDir: join(dir, 'data'), include, out, userId: 5234 }));
    const fixed = await runCli(['dead-letter', 'replay', '-c', config], { cwd: dir });
    expect(fixed.code, fixed.stderr).toBe(0);
    expect(fixed.stdout).toContain('keyed (transform) LF_RECORD_NO_USER_ID: 3');
    expect(fixed.stdout).toContain('2 dead letters of lines that never parsed cannot be replayed');
    const written = [...(await readTree(out)).keys()].sort();
    expect(written).toEqual([FIRST, FIRST + 1, FIRST + 2].map((id) => jobKey(id).replaceAll('4848', '5234')).sort());
    expect((await readDeadLetters(join(dir, 'data'))).map((e) => e.code)).toEqual(['LF_RECORD_BAD_JSON', 'LF_RECORD_BAD_JSON']);
  });

  it('loses nothing when SIGKILLed during a replay: the next replay delivers the rest, and the dead letters end empty', async () => {
    const dir = await scratch(cleanup);
    const count = 40;
    const { config, destination } = await deadLetterEverything(dir, count);
    destination.mode = 'slow';
    destination.slowMs = 500;
    const replay = startCli(['dead-letter', 'replay', '-c', config], { cwd: dir });
    // Two rounds of batches answered (the first ones' progress flushed long since), most not yet: kill it.
    await waitFor(() => destination.delivered.length >= 20, 30_000, 'some deliveries during the replay');
    replay.child.kill('SIGKILL');
    await replay.exited;
    const deliveredBeforeKill = destination.delivered.length;
    expect(deliveredBeforeKill).toBeLessThan(count);

    destination.mode = 'ok';
    const rest = await runCli(['dead-letter', 'replay', '-c', config], { cwd: dir });
    expect(rest.code, rest.stderr).toBe(0);
    // The entries confirmed before the kill are not sent again: only the unconfirmed window is.
    const sentAgain = Number(/(\d+) of (\d+) sent entr(?:y|ies) confirmed/.exec(rest.stdout)?.[2]);
    expect(sentAgain).toBeLessThan(count);
    // Duplicates: at most the entries the second replay sent that the first had delivered already.
    expect(destination.delivered.length - count).toBeLessThanOrEqual(sentAgain);
    expect([...new Set(destination.delivered)].sort((a, b) => a - b)).toEqual(ids(count));
    expect(await readDeadLetters(join(dir, 'data'))).toEqual([]);
    expect(await readdir(deadLetterDir(dir))).toEqual([]);
  });

  it('refuses to run while another logferry holds data_dir (exit 75)', async () => {
    const dir = await scratch(cleanup);
    const include = await jobsFile(dir, [makeJob(FIRST)]);
    const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include, out: join(dir, 'out') }));
    const run = startCli(['run', '-c', config], { cwd: dir });
    try {
      await waitFor(() => run.stderr().includes('running;'), 20_000, 'run to start');
      const replay = await runCli(['dead-letter', 'replay', '-c', config], { cwd: dir });
      expect(replay.code, replay.stderr).toBe(75);
      expect(replay.stderr).toContain('LF_DATA_DIR_LOCKED');
    } finally {
      run.child.kill('SIGTERM');
      await run.exited;
    }
  });
});

describe('dead-letter files by size', () => {
  const badLines = (n: number): string[] => Array.from({ length: n }, (_, i) => `not json ${i}`);

  it('start a new numbered file at dead_letter.max_file_bytes; list reads them all, in write order', async () => {
    const dir = await scratch(cleanup);
    const include = await jobsFile(dir, [], badLines(60));
    const yaml = standardPipeline({ dataDir: join(dir, 'data'), include, out: join(dir, 'out'), top: 'dead_letter: { max_file_bytes: 4096 }' });
    const config = await writePipeline(dir, yaml);
    const run = await runCli(['run', '-c', config, '--once'], { cwd: dir });
    expect(run.stderr).toContain('60 dead letters');
    const names = await readdir(deadLetterDir(dir));
    expect(names.length).toBeGreaterThan(2);
    expect(names[0]).toBe('dead-letters.ndjson');
    expect(names.slice(1)).toEqual(names.slice(1).map((_n, i) => `dead-letters.part-${String(i + 1).padStart(10, '0')}.ndjson`));
    for (const name of names) expect((await stat(join(deadLetterDir(dir), name))).size).toBeLessThanOrEqual(4096);
    // Every entry, in the order the lines were read.
    const offsets = (await readDeadLetters(join(dir, 'data'))).map((e) => e.offset!);
    expect(offsets).toHaveLength(60);
    expect(offsets).toEqual([...offsets].sort((a, b) => a - b));
    const list = await runCli(['dead-letter', 'list', '-c', config], { cwd: dir });
    expect(list.stdout).toContain('60 dead letters');
  });

  it('hold the pipeline at dead_letter.max_bytes (LF_DEAD_LETTER_FULL, nothing acknowledged or dropped) until files are removed', async () => {
    const dir = await scratch(cleanup);
    // About 50 entries fill 16 KiB: the rest fits once the files are removed.
    const total = 80;
    const include = await jobsFile(dir, [], badLines(total));
    const yaml = standardPipeline({ dataDir: join(dir, 'data'), include, out: join(dir, 'out'), top: 'dead_letter: { max_file_bytes: 4096, max_bytes: 16384 }' });
    const config = await writePipeline(dir, yaml);
    const run = startCli(['run', '-c', config], { cwd: dir });
    try {
      await waitFor(() => run.stderr().includes('LF_DEAD_LETTER_FULL'), 20_000, 'the dead letters to be full');
      expect(run.stderr()).toContain('dead-letter replay');
      const held = await readDeadLetters(join(dir, 'data'));
      expect(held.length).toBeLessThan(total);
      // The position is not past the lines still waiting: a restart would read them again.
      const logSize = (await stat(join(dir, 'logs', 'jobs.ndjson'))).size;
      const savedOffset = async (): Promise<number> => {
        const text = await readFile(join(dir, 'data', 'checkpoints', 'jobs.json'), 'utf8').catch(() => '{"files":[]}');
        return (JSON.parse(text) as { files: { offset: number }[] }).files[0]?.offset ?? 0;
      };
      expect(await savedOffset()).toBeLessThan(logSize);

      // The operator moves the files away: the writer measures again and goes on.
      for (const name of await readdir(deadLetterDir(dir))) await rm(join(deadLetterDir(dir), name));
      await waitFor(() => run.stderr().includes('room under dead_letter.max_bytes'), 20_000, 'the writer to go on');
      await waitFor(async () => held.length + (await readDeadLetters(join(dir, 'data'))).length === total, 20_000, 'every line to be dead-lettered');
      await waitFor(async () => (await savedOffset()) === logSize, 20_000, 'the position to move past every line');
    } finally {
      run.child.kill('SIGTERM');
      await run.exited;
    }
  });
});
