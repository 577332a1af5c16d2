import { readFileSync } from 'node:fs';
import { appendFile, mkdir, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterEach, describe, expect, it } from 'vitest';
import { readDeadLetters } from '../../src/engine/dead-letters.js';
import { decodeBody, documentIds, parseDocuments } from '../../src/testkit/index.js';
import { closeServer, readBody } from '../../src/testkit/receiver.js';
import { jobKey, makeJob, removeAll, scratch, standardPipeline, startCli, waitFor, writePipeline, type Running } from '../helpers/cli.js';
import { closedPort, S3RVER_CREDENTIALS, startS3 } from '../helpers/s3.js';

/**
 * Destinations that refuse every record (no credentials, no bucket, 403, a closed port, 503) and
 * are fixed while `run` follows its input: the records are held, not dead-lettered, and all arrive
 * once the destination answers, with one log line on entry and one on recovery, and a memory
 * footprint bounded by buffer.max_bytes while they are held.
 */

const cleanup: string[] = [];
const stoppers: (() => Promise<void>)[] = [];
const children: Running[] = [];
afterEach(async () => {
  for (const running of children.splice(0)) if (running.child.exitCode === null && running.child.signalCode === null) running.child.kill('SIGKILL');
  await Promise.all(stoppers.splice(0).map((stop) => stop()));
  await removeAll(cleanup);
});

const FIRST = 6_000_000;
/** Enough records, each large enough, that reading them all into memory would show in the RSS. */
const COUNT = 2500;
const PADDING = 'p'.repeat(8 * 1024);
/**
 * A small buffer: each 8 KiB record is charged about 18 KiB, so reading pauses after some 55
 * records while the sink holds them (with the 64 KiB minimum only 3 fit, and delivery after the
 * fix would crawl at one short batch per batch.timeout_ms).
 */
const BUFFER_BYTES = 1024 * 1024;
/** How long each destination keeps failing once the sink said so. */
const HOLD_MS = 3000;
/**
 * The RSS of the whole process while it holds. Held behind the buffer it stays near 100 MB; with
 * the default 64 MiB buffer the whole 20 MiB input is read (parsed, two bytes per character) and
 * the process grows past 170 MB before the first probe, which the bound catches.
 */
const RSS_BOUND_BYTES = 150 * 1024 * 1024;
/** Held records do not grow: past the first second of the hold, the RSS moves less than this. */
const RSS_DRIFT_BYTES = 16 * 1024 * 1024;
/** Start, hold, fix, deliver 2500 records and stop: 5 to 15 s here, more on a busy machine. */
const FOLLOW_CASE_TIMEOUT_MS = 150_000;

/**
 * The s3 cases hold fewer records: s3rver stores some 150 objects a second, and what they prove
 * (held, one probe at a time, all delivered once fixed, RSS flat while held) does not need more;
 * the http cases keep COUNT for the bound on memory.
 */
const S3_COUNT = 800;

const ids = Array.from({ length: COUNT }, (_, i) => FIRST + i);

async function jobsFile(dir: string, count = COUNT): Promise<string> {
  const logs = join(dir, 'logs');
  await mkdir(logs, { recursive: true });
  let text = '';
  for (let i = 0; i < count; i++) text += JSON.stringify(makeJob(FIRST + i, { note: PADDING })) + '\n';
  await appendFile(join(logs, 'jobs.ndjson'), text);
  return join(logs, '*.ndjson');
}

function pipelineYaml(dir: string, include: string, sinks: string): string {
  // userId null: the keys use the jobs' own user, as jobKey() does.
  return standardPipeline({ dataDir: join(dir, 'data'), include, out: '', sinks, userId: null, top: `buffer: { max_bytes: ${BUFFER_BYTES} }` });
}

function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = /^VmRSS:\s+(\d+) kB/m.exec(status);
  return kb ? Number(kb[1]) * 1024 : 0;
}

interface LogLine {
  level: string;
  msg: string;
  code?: string;
  state?: string;
  [field: string]: unknown;
}

function logLines(stderr: string): LogLine[] {
  return stderr
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as LogLine);
}

const failingEntries = (lines: LogLine[]): LogLine[] => lines.filter((l) => l.code === 'LF_DESTINATION_FAILING' && l.level === 'warn' && !l.msg.includes('still failing'));
const recoveries = (lines: LogLine[]): LogLine[] => lines.filter((l) => l.code === 'LF_DESTINATION_FAILING' && l.level === 'info');

/**
 * An HTTP destination whose answer is chosen per request; it counts the ids of the requests it
 * answered 2xx (what was delivered) apart from those it refused.
 */
interface Destination {
  url: string;
  answer: (ids: number[]) => number;
  accepted: number[];
  refused: number;
  requests: { headers: Record<string, string | string[] | undefined>; ids: number[]; status: number }[];
}

async function startDestination(answer: (ids: number[]) => number, port = 0): Promise<Destination> {
  const destination: Destination = { url: '', answer, accepted: [], refused: 0, requests: [] };
  const server: Server = createServer((req, res) => {
    void readBody(req).then(
      (raw) => {
        const found = documentIds(parseDocuments(decodeBody(raw, req.headers['content-encoding'])));
        const status = destination.answer(found);
        destination.requests.push({ headers: req.headers, ids: found, status });
        if (status >= 200 && status < 300) destination.accepted.push(...found);
        else destination.refused++;
        res.writeHead(status, { 'content-type': 'text/plain' });
        res.end(status >= 300 ? `refused by the test destination (${status})` : '');
      },
      () => res.destroy(),
    ).catch((err: unknown) => {
      // Detached (a request handler cannot be awaited): a body this test cannot read is answered
      // 500 with the reason, so the run fails visibly instead of with an unhandled rejection.
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`test destination failed: ${(err as Error).message}`);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  const { port: bound } = server.address() as { port: number };
  destination.url = `http://127.0.0.1:${bound}`;
  stoppers.push(() => closeServer(server));
  return destination;
}

function httpSinkYaml(uri: string, encoding: 'json' | 'ndjson' = 'ndjson', extra = ''): string {
  return `  collector:
    type: http
    inputs: [keyed]
    uri: ${JSON.stringify(`${uri}/ingest`)}
    encoding: ${encoding}
    batch: { max_events: 20, timeout_ms: 50 }
    request: { concurrency: 4, timeout_ms: 2000 }
    retry: { initial_backoff_ms: 20, max_backoff_ms: 300 }
${extra}`;
}

function s3SinkYaml(endpoint: string, bucket: string): string {
  return `  archive:
    type: s3
    inputs: [keyed]
    bucket: ${bucket}
    region: us-east-1
    endpoint: ${JSON.stringify(endpoint)}
    force_path_style: true
    concurrency: 8
    request_timeout_ms: 2000
    retry: { initial_backoff_ms: 20, max_backoff_ms: 300 }
`;
}

/** The environment of a host without AWS credentials, whose shared files are at `awsDir` (not yet there). */
function noCredentialsEnv(home: string, awsDir: string): NodeJS.ProcessEnv {
  return {
    HOME: home,
    AWS_SHARED_CREDENTIALS_FILE: join(awsDir, 'credentials'),
    AWS_CONFIG_FILE: join(awsDir, 'config'),
    AWS_EC2_METADATA_DISABLED: 'true',
    // Set empty so that nothing the test runner inherited counts as credentials.
    AWS_ACCESS_KEY_ID: '',
    AWS_SECRET_ACCESS_KEY: '',
    AWS_SESSION_TOKEN: '',
    AWS_PROFILE: '',
  };
}

const s3Env: NodeJS.ProcessEnv = { AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey };

/**
 * Counts the jobs' objects by HEAD requests, asking only for those not found yet (s3rver's listing
 * can answer 500 while PUTs are being written). Keys are those of path_format with the jobs' own user.
 */
function objectCounter(client: S3Client, bucket: string): () => Promise<number> {
  const found = new Set<number>();
  return async () => {
    const missing = ids.filter((id) => !found.has(id));
    for (let i = 0; i < missing.length; i += 32) {
      await Promise.all(
        missing.slice(i, i + 32).map((id) =>
          client.send(new HeadObjectCommand({ Bucket: bucket, Key: jobKey(id) })).then(
            () => found.add(id),
            () => undefined,
          ),
        ),
      );
    }
    return found.size;
  };
}

interface HeldRun {
  running: Running;
  /** The RSS sampled while the destination failed, with the ms since the hold began. */
  rss: { atMs: number; bytes: number }[];
}

/**
 * Starts `run` (follow mode), waits for the sink to say the destination fails, keeps it failing
 * for HOLD_MS while sampling the RSS, then calls `fix`.
 */
async function holdThenFix(config: string, dir: string, fix: () => Promise<void>, env: NodeJS.ProcessEnv = {}): Promise<HeldRun> {
  const running = startCli(['run', '-c', config, '--log-format', 'json'], { cwd: dir, env });
  children.push(running);
  const pid = running.child.pid!;
  await waitFor(() => failingEntries(logLines(running.stderr())).length > 0 || running.child.exitCode !== null, 30_000, 'the line that says the destination fails');
  expect(running.child.exitCode, running.stderr()).toBeNull();
  const rss: HeldRun['rss'] = [];
  const heldSince = Date.now();
  await waitFor(
    () => {
      rss.push({ atMs: Date.now() - heldSince, bytes: rssBytes(pid) });
      return Date.now() - heldSince >= HOLD_MS;
    },
    HOLD_MS + 10_000,
    'the hold',
  );
  await fix();
  return { running, rss };
}

/** SIGTERM, then the checks every case shares: a clean exit, no dead letters, one line on entry and one on recovery. */
async function stopAndCheck(held: HeldRun, dir: string): Promise<LogLine[]> {
  held.running.child.kill('SIGTERM');
  const result = await held.running.exited;
  expect(result.code, result.stderr).toBe(0);
  const lines = logLines(result.stderr);
  expect(await readDeadLetters(join(dir, 'data'))).toEqual([]);
  expect(failingEntries(lines), result.stderr).toHaveLength(1);
  expect(recoveries(lines), result.stderr).toHaveLength(1);
  const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
  const samples = held.rss.map((s) => `${s.atMs}ms:${mib(s.bytes)}`).join(' ');
  const peak = Math.max(...held.rss.map((s) => s.bytes));
  expect(peak, `RSS while held: ${samples}`).toBeLessThan(RSS_BOUND_BYTES);
  const settled = held.rss.filter((s) => s.atMs >= 1000).map((s) => s.bytes);
  expect(settled.length).toBeGreaterThan(5);
  expect(Math.max(...settled) - Math.min(...settled), `RSS while held: ${samples}`).toBeLessThan(RSS_DRIFT_BYTES);
  return lines;
}

const sortedUnique = (values: number[]): number[] => [...new Set(values)].sort((a, b) => a - b);

describe('a destination that fails for every record, fixed during a follow-mode run', () => {
  it('s3 without credentials: held until a credentials file is written, then all delivered', async () => {
    const dir = await scratch(cleanup);
    const include = await jobsFile(dir, S3_COUNT);
    const s3 = await startS3(['jobs']);
    stoppers.push(() => s3.stop());
    const home = join(dir, 'home');
    const awsDir = join(home, '.aws');
    await mkdir(home);
    const config = await writePipeline(dir, pipelineYaml(dir, include, s3SinkYaml(s3.endpoint, 'jobs')));
    const held = await holdThenFix(
      config,
      dir,
      async () => {
        expect(s3.requests.filter((r) => r.method === 'PUT')).toEqual([]);
        // As an operator would: the shared credentials file appears after logferry started.
        await mkdir(awsDir, { recursive: true });
        await writeFile(
          join(awsDir, 'credentials'),
          `[default]\naws_access_key_id = ${S3RVER_CREDENTIALS.accessKeyId}\naws_secret_access_key = ${S3RVER_CREDENTIALS.secretAccessKey}\n`,
        );
      },
      noCredentialsEnv(home, awsDir),
    );
    const entry = failingEntries(logLines(held.running.stderr()))[0]!;
    expect(entry).toMatchObject({ state: 'blocked' });
    expect(String(entry.reason)).toContain('no AWS credentials');
    await waitFor(() => s3.requests.filter((r) => r.method === 'PUT').length >= S3_COUNT, 60_000, `${S3_COUNT} PUT requests`);
    const objects = objectCounter(s3.client, 'jobs');
    await waitFor(async () => (await objects()) === S3_COUNT, 60_000, `${S3_COUNT} objects`);
    await stopAndCheck(held, dir);
  }, FOLLOW_CASE_TIMEOUT_MS);

  it('s3 with a bucket that does not exist (NoSuchBucket): held until the bucket is created', async () => {
    const dir = await scratch(cleanup);
    const include = await jobsFile(dir, S3_COUNT);
    const s3 = await startS3([]);
    stoppers.push(() => s3.stop());
    const config = await writePipeline(dir, pipelineYaml(dir, include, s3SinkYaml(s3.endpoint, 'jobs')));
    let putsWhileMissing = 0;
    const held = await holdThenFix(
      config,
      dir,
      () => {
        putsWhileMissing = s3.requests.filter((r) => r.method === 'PUT').length;
        return s3.bucket('jobs');
      },
      s3Env,
    );
    const entry = failingEntries(logLines(held.running.stderr()))[0]!;
    expect(entry).toMatchObject({ state: 'blocked' });
    expect(String(entry.reason)).toContain('NoSuchBucket');
    // One probe at a time while it failed, not a PUT per record and attempt.
    expect(putsWhileMissing).toBeGreaterThan(2);
    expect(putsWhileMissing).toBeLessThan(S3_COUNT / 20);
    await waitFor(() => s3.requests.filter((r) => r.method === 'PUT').length >= S3_COUNT, 60_000, `${S3_COUNT} PUT requests`);
    const objects = objectCounter(s3.client, 'jobs');
    await waitFor(async () => (await objects()) === S3_COUNT, 60_000, `${S3_COUNT} objects`);
    await stopAndCheck(held, dir);
  }, FOLLOW_CASE_TIMEOUT_MS);

  for (const { name, status, state } of [
    { name: 'http 403 (credentials refused)', status: 403, state: 'blocked' },
    { name: 'http 503 (the receiver is down)', status: 503, state: 'retrying' },
  ]) {
    it(`${name}: held until the endpoint answers 200, each record delivered once`, async () => {
      const dir = await scratch(cleanup);
      const include = await jobsFile(dir);
      let failing = true;
      const destination = await startDestination(() => (failing ? status : 200));
      const config = await writePipeline(dir, pipelineYaml(dir, include, httpSinkYaml(destination.url)));
      let refusedWhileFailing = 0;
      const held = await holdThenFix(config, dir, async () => {
        refusedWhileFailing = destination.refused;
        failing = false;
      });
      const entry = failingEntries(logLines(held.running.stderr()))[0]!;
      expect(entry).toMatchObject({ state });
      expect(String(entry.reason)).toContain(`HTTP ${status}`);
      // The probe alone retried while the others waited at the gate: not a request per batch and attempt.
      expect(refusedWhileFailing).toBeGreaterThan(2);
      expect(refusedWhileFailing).toBeLessThan(COUNT / 20);
      await waitFor(() => sortedUnique(destination.accepted).length === COUNT, 60_000, `${COUNT} records accepted`);
      await stopAndCheck(held, dir);
      // Refused requests delivered nothing, and no accepted request was lost: each record once.
      expect(destination.accepted.length).toBe(COUNT);
      expect(sortedUnique(destination.accepted)).toEqual(ids);
    }, FOLLOW_CASE_TIMEOUT_MS);
  }

  it('http refused connections: held until a server listens on the port', async () => {
    const dir = await scratch(cleanup);
    const include = await jobsFile(dir);
    const port = await closedPort();
    const config = await writePipeline(dir, pipelineYaml(dir, include, httpSinkYaml(`http://127.0.0.1:${port}`)));
    let destination: Destination | undefined;
    const held = await holdThenFix(config, dir, async () => {
      destination = await startDestination(() => 200, port);
    });
    const entry = failingEntries(logLines(held.running.stderr()))[0]!;
    expect(entry).toMatchObject({ state: 'retrying' });
    expect(String(entry.reason)).toContain('ECONNREFUSED');
    await waitFor(() => sortedUnique(destination!.accepted).length === COUNT, 60_000, `${COUNT} records accepted`);
    await stopAndCheck(held, dir);
    expect(destination!.accepted.length).toBe(COUNT);
  }, FOLLOW_CASE_TIMEOUT_MS);
});

describe('a record-level refusal among many', () => {
  it('a 400 for the body of one record dead-letters that record only (encoding json); the others are delivered', async () => {
    const dir = await scratch(cleanup);
    const count = 300;
    const include = await jobsFile(dir, count);
    const poisoned = FIRST + 123;
    const destination = await startDestination((found) => (found.includes(poisoned) ? 400 : 200));
    const config = await writePipeline(dir, pipelineYaml(dir, include, httpSinkYaml(destination.url, 'json')));
    const running = startCli(['run', '-c', config, '--log-format', 'json'], { cwd: dir });
    children.push(running);
    const dataDir = join(dir, 'data');
    await waitFor(() => sortedUnique(destination.accepted).length === count - 1, 60_000, `${count - 1} records accepted`);
    await waitFor(async () => (await readDeadLetters(dataDir)).length > 0, 20_000, 'the dead letter');
    running.child.kill('SIGTERM');
    const result = await running.exited;
    expect(result.code, result.stderr).toBe(0);
    const dead = await readDeadLetters(dataDir);
    expect(dead).toHaveLength(1);
    expect(dead[0]).toMatchObject({ code: 'LF_SINK_REJECTED' });
    expect(dead[0]!.reason).toContain('HTTP 400');
    expect(JSON.parse(dead[0]!.text!)).toMatchObject({ id: poisoned });
    expect(sortedUnique(destination.accepted)).toEqual(Array.from({ length: count }, (_, i) => FIRST + i).filter((id) => id !== poisoned));
    // A refusal of one body says nothing about the destination: it never counted as failing.
    expect(logLines(result.stderr).filter((l) => l.code === 'LF_DESTINATION_FAILING')).toEqual([]);
  });
});

describe('http idempotency_header (encoding json)', () => {
  it("carries the record's key, the same on a retry after a 503", async () => {
    const dir = await scratch(cleanup);
    const count = 40;
    const include = await jobsFile(dir, count);
    // Every record's first request is answered 503, its second 200.
    const seen = new Set<number>();
    const destination = await startDestination((found) => {
      const first = found.some((id) => !seen.has(id));
      for (const id of found) seen.add(id);
      return first ? 503 : 200;
    });
    const config = await writePipeline(dir, pipelineYaml(dir, include, httpSinkYaml(destination.url, 'json', '    idempotency_header: Idempotency-Key\n')));
    const running = startCli(['run', '-c', config, '--log-format', 'json'], { cwd: dir });
    children.push(running);
    await waitFor(() => sortedUnique(destination.accepted).length === count, 60_000, `${count} records accepted`);
    running.child.kill('SIGTERM');
    const result = await running.exited;
    expect(result.code, result.stderr).toBe(0);
    const keysById = new Map<number, Set<string>>();
    for (const request of destination.requests) {
      expect(request.ids).toHaveLength(1);
      const key = request.headers['idempotency-key'];
      expect(typeof key).toBe('string');
      const keys = keysById.get(request.ids[0]!) ?? new Set<string>();
      keys.add(key as string);
      keysById.set(request.ids[0]!, keys);
    }
    expect(keysById.size).toBe(count);
    for (const [id, keys] of keysById) {
      // Both requests of a record (the 503 and the 200) carried one value: its path_format key.
      expect([...keys]).toHaveLength(1);
      expect([...keys][0]).toMatch(new RegExp(`-${id}-\\d{14}-succeeded\\.json$`));
      expect(destination.requests.filter((r) => r.ids[0] === id).map((r) => r.status)).toEqual([503, 200]);
    }
  });
});
