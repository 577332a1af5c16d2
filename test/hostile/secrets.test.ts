import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startReceiver, type Receiver } from '../../src/testkit/index.js';
import { makeJob, readTree, removeAll, runCli, scratch, writePipeline } from '../helpers/cli.js';

/**
 * Finding 6: a destination that echoes the request (headers and URL) in its answer must not put
 * the credentials into the log (on every retried 503) or the dead letters (after a 400).
 */

const cleanup: string[] = [];
const servers: Receiver[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
  await removeAll(cleanup);
});

const SUMO_PLUGIN = resolve(import.meta.dirname, '../../plugins/sumologic');

const BEARER = 'bearer-tok-5f1e0c9a7d3b';
const BASIC_PASSWORD = 'basic-pass-Qw8!z/2+x';
const QUERY_TOKEN = 'query-tok-c0ffee123456';
const PATH_TOKEN = 'path-tok-deadbeef9876';
/** A webhook's token as the only path segment: logged on each retry before safeUrl hid it. */
const FIRST_SEGMENT_TOKEN = '3f9a1c7e5b2d4a6f8e0c';
const API_KEY = 'x-api-key-b16b00b5aa11';
const SUMO_TOKEN = 'ZaVnC4dhaV2-sumo-token-Xb6tqw==';

/** 503 on the first two requests of each path (retried and logged), then 400 (dead letters); always echoing. */
async function echoingServer(): Promise<Receiver & { reset(): void }> {
  const seen = new Map<string, number>();
  const receiver = await startReceiver({
    respond: (request) => {
      const path = request.url.split('?')[0]!;
      const count = (seen.get(path) ?? 0) + 1;
      seen.set(path, count);
      const echo = `you sent ${request.method} ${request.url} with headers ${JSON.stringify(request.headers)}`;
      return { status: count <= 2 ? 503 : 400, body: echo };
    },
  });
  servers.push(receiver);
  return Object.assign(receiver, { reset: () => seen.clear() });
}

function pipelineYaml(dir: string, url: string, dataDir: string): string {
  const sink = (name: string, body: string): string => `  ${name}:
    inputs: [redacted]
    batch: { max_events: 10, timeout_ms: 20 }
    request: { concurrency: 1, timeout_ms: 5000 }
    retry: { initial_backoff_ms: 10, max_backoff_ms: 50, max_duration_s: 60 }
${body}`;
  return `data_dir: ${JSON.stringify(dataDir)}
plugins: [${JSON.stringify(SUMO_PLUGIN)}]
checkpoint_interval_ms: 100
status_interval_ms: 60000
sources:
  jobs:
    type: job_log_tail
    include: [${JSON.stringify(join(dir, 'logs', '*.ndjson'))}]
    poll_interval_ms: 20
transforms:
  redacted:
    type: redact
    inputs: [jobs]
sinks:
${sink('bearer', `    type: http
    uri: ${JSON.stringify(`${url}/bearer/${PATH_TOKEN}?token=${QUERY_TOKEN}&format=json`)}
    auth: { strategy: bearer, token: ${JSON.stringify(BEARER)} }
`)}${sink('basic', `    type: http
    uri: ${JSON.stringify(`${url}/basic`)}
    auth: { strategy: basic, user: shipper, password: ${JSON.stringify(BASIC_PASSWORD)} }
    headers: { X-Api-Key: ${JSON.stringify(API_KEY)} }
`)}${sink('webhook', `    type: http
    uri: ${JSON.stringify(`${url}/${FIRST_SEGMENT_TOKEN}`)}
`)}${sink('sumo', `    type: sumo_logic
    url: ${JSON.stringify(`${url}/receiver/v1/http/${SUMO_TOKEN}`)}
    category: prod/jobs
`)}`;
}

/** Every form in which a credential could show. */
const FORBIDDEN = [
  BEARER,
  BASIC_PASSWORD,
  Buffer.from(`shipper:${BASIC_PASSWORD}`).toString('base64'),
  encodeURIComponent(BASIC_PASSWORD),
  QUERY_TOKEN,
  PATH_TOKEN,
  FIRST_SEGMENT_TOKEN,
  API_KEY,
  SUMO_TOKEN,
  encodeURIComponent(SUMO_TOKEN),
];

function expectNoSecret(where: string, text: string): void {
  for (const secret of FORBIDDEN) expect(text.includes(secret), `${secret} in ${where}`).toBe(false);
}

describe('credentials echoed by a destination', () => {
  it('reach no log line (text and json) and no dead letter: bearer, basic, URI tokens (first segment included), secret headers, the Sumo URL', async () => {
    const dir = await scratch(cleanup);
    await mkdir(join(dir, 'logs'));
    await writeFile(join(dir, 'logs', 'jobs.ndjson'), [makeJob(9_100_001), makeJob(9_100_002)].map((j) => JSON.stringify(j)).join('\n') + '\n');
    const server = await echoingServer();

    for (const format of ['text', 'json']) {
      server.reset();
      const dataDir = join(dir, `data-${format}`);
      await rm(dataDir, { recursive: true, force: true });
      const config = await writePipeline(dir, pipelineYaml(dir, server.url, dataDir));
      const result = await runCli(['run', '-c', config, '--once', '--log-format', format, '--log-level', 'debug'], { cwd: dir });
      expect(result.code, result.stderr).toBe(65);
      const output = result.stdout + result.stderr;
      expectNoSecret(`stdout/stderr (${format})`, output);
      // The echo was logged (on the 503 retries) and scrubbed, for every sink.
      expect(output).toMatch(/retrying/);
      expect(output).toContain('Bearer ***');
      expect(output).toContain('Basic ***');

      const data = await readTree(dataDir);
      const deadLetters = [...data].filter(([path]) => path.startsWith('dead_letter')).map(([, content]) => content.toString('utf8')).join('');
      // One dead letter per record per sink, each with the echo in its reason.
      expect(deadLetters.trim().split('\n')).toHaveLength(8);
      expect(deadLetters).toContain('***');
      for (const [path, content] of data) expectNoSecret(`${format}: ${path}`, content.toString('utf8'));

      const listed = await runCli(['dead-letter', 'list', '-c', config, '--json'], { cwd: dir });
      expectNoSecret('dead-letter list', listed.stdout + listed.stderr);
      const shown = await runCli(['dead-letter', 'show', '-c', config, '--all'], { cwd: dir });
      expectNoSecret('dead-letter show', shown.stdout + shown.stderr);
    }

    // The server really saw the credentials: the test would catch an echo that got through.
    const seen = server.requests.map((r) => `${r.url} ${JSON.stringify(r.headers)}`).join('\n');
    for (const secret of [BEARER, QUERY_TOKEN, PATH_TOKEN, FIRST_SEGMENT_TOKEN, API_KEY, SUMO_TOKEN, Buffer.from(`shipper:${BASIC_PASSWORD}`).toString('base64')]) {
      expect(seen).toContain(secret);
    }
  }, 180_000);
});
