import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { GetObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { LogFields, Logger } from '../../src/engine/logger.js';
import { silentLogger } from '../../src/engine/logger.js';
import { Metrics } from '../../src/engine/metrics.js';
import type { Delivery, JsonObject, LogRecord, SinkContext } from '../../src/engine/types.js';
import { SinkState } from '../../src/engine/sink-state.js';
import { s3Sink, s3SinkSchema } from '../../src/sinks/s3.js';
import { closedPort, startS3, startS3Proxy, type ProxyAnswer, type S3Proxy, type S3Server } from '../helpers/s3.js';

const SEEDS = resolve(import.meta.dirname, '../fixtures/seeds');
const BUCKET = 'logferry-test';

// The sink takes its credentials from the SDK's default chain, so the test sets that chain up.
const ENV = {
  AWS_ACCESS_KEY_ID: 'S3RVER',
  AWS_SECRET_ACCESS_KEY: 'S3RVER',
  AWS_REGION: 'us-east-1',
  // Never reach for an instance role (169.254.169.254) if the environment chain comes up empty.
  AWS_EC2_METADATA_DISABLED: 'true',
};
const savedEnv: Record<string, string | undefined> = {};

beforeAll(() => {
  for (const [name, value] of Object.entries(ENV)) {
    savedEnv[name] = process.env[name];
    process.env[name] = value;
  }
});

afterAll(() => {
  for (const [name, value] of Object.entries(savedEnv)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
});

let s3: S3Server;
const proxies: S3Proxy[] = [];

beforeAll(async () => {
  s3 = await startS3([BUCKET]);
});

afterAll(async () => {
  await s3?.stop();
});

afterEach(async () => {
  await Promise.all(proxies.splice(0).map((p) => p.stop()));
});

interface Outcome {
  delivered: string[];
  rejected: { key: string; reason: string; code: string | undefined }[];
}

interface LogLine {
  level: string;
  msg: string;
  fields: LogFields | undefined;
}

function captureLogger(lines: LogLine[]): Logger {
  const logger: Logger = {
    debug: (msg, fields) => lines.push({ level: 'debug', msg, fields }),
    info: (msg, fields) => lines.push({ level: 'info', msg, fields }),
    warn: (msg, fields) => lines.push({ level: 'warn', msg, fields }),
    error: (msg, fields) => lines.push({ level: 'error', msg, fields }),
    child: () => logger,
  };
  return logger;
}

function record(doc: JsonObject, key: string | undefined): LogRecord {
  return { kind: typeof doc.event === 'string' ? 'activity' : 'job', doc, origin: { source: 'test' }, key };
}

/** Deliveries that note how they were settled, and fail the test if one is settled twice. */
function deliveriesFor(records: LogRecord[], outcome: Outcome): Delivery[] {
  return records.map((rec, i) => {
    const name = rec.key ?? `#${i}`;
    let settled = false;
    const settle = (): void => {
      if (settled) throw new Error(`delivery ${name} settled twice`);
      settled = true;
    };
    return {
      record: rec,
      delivered: () => {
        settle();
        outcome.delivered.push(name);
      },
      rejected: (reason, code) => {
        settle();
        outcome.rejected.push({ key: name, reason, code });
      },
    };
  });
}

async function* inBatches(deliveries: Delivery[], size = 5): AsyncIterable<Delivery[]> {
  for (let i = 0; i < deliveries.length; i += size) yield deliveries.slice(i, i + size);
}

interface RunResult {
  outcome: Outcome;
  metrics: Metrics;
  logs: LogLine[];
  elapsedMs: number;
}

/** Builds the sink through its definition, as the pipeline does, and feeds it the records. */
async function runSink(options: Record<string, unknown>, records: LogRecord[], signal = new AbortController().signal): Promise<RunResult> {
  const outcome: Outcome = { delivered: [], rejected: [] };
  const logs: LogLine[] = [];
  const metrics = new Metrics();
  const log = captureLogger(logs);
  const ctx: SinkContext = {
    id: 'archive',
    log,
    metrics,
    signal,
    dataDir: join(tmpdir(), 'logferry-s3-test-unused'),
    state: new SinkState('archive', log),
  };
  const parsed = s3SinkSchema.parse({ bucket: BUCKET, endpoint: s3.endpoint, force_path_style: true, ...options });
  const sink = await s3Sink.build(parsed, ctx);
  const started = Date.now();
  try {
    await sink.run(inBatches(deliveriesFor(records, outcome)));
  } finally {
    await sink.close?.();
  }
  return { outcome, metrics, logs, elapsedMs: Date.now() - started };
}

async function getObject(client: S3Client, key: string, bucket = BUCKET) {
  const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return {
    body: Buffer.from(await res.Body!.transformToByteArray()),
    contentType: res.ContentType,
    contentEncoding: res.ContentEncoding,
    etag: res.ETag,
  };
}

async function listKeys(client: S3Client, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix, ContinuationToken: token }));
    keys.push(...(page.Contents ?? []).map((o) => o.Key!));
    token = page.NextContinuationToken;
  } while (token);
  return keys.sort();
}

async function seedRecords(): Promise<LogRecord[]> {
  const expected = JSON.parse(await readFile(join(SEEDS, 'expected-keys.json'), 'utf8')) as Record<string, string>;
  const files = (await readdir(SEEDS)).filter((f) => f.endsWith('.json') && f !== 'expected-keys.json').sort();
  expect(files.length).toBeGreaterThan(0);
  return Promise.all(
    files.map(async (file) => {
      const key = expected[file];
      if (!key) throw new Error(`expected-keys.json has no key for ${file}`);
      return record(JSON.parse(await readFile(join(SEEDS, file), 'utf8')) as JsonObject, key);
    }),
  );
}

const md5Hex = (body: Buffer): string => createHash('md5').update(body).digest('hex');
const fast = { initial_backoff_ms: 10, max_backoff_ms: 50, max_duration_s: 1 };

describe('s3 sink against s3rver', () => {
  it('puts every seed document at prefix+key with the exact bytes, and a redelivery changes nothing', async () => {
    const records = await seedRecords();
    const prefix = 'seeds/';
    const before = s3.requests.length;
    const first = await runSink({ prefix }, records);
    expect(first.outcome.rejected).toEqual([]);
    expect(first.outcome.delivered).toHaveLength(records.length);
    const totalBytes = records.reduce((sum, r) => sum + Buffer.byteLength(JSON.stringify(r.doc)), 0);
    expect(first.metrics.bytesOut).toBe(totalBytes);
    expect(first.logs).toContainEqual(expect.objectContaining({ level: 'info', msg: `uploaded ${records.length} objects to s3://${BUCKET}/${prefix}` }));
    // One PUT per record, carrying Content-MD5 as its only checksum (the SDK adds no CRC32 of its own).
    const puts = s3.requests.slice(before).filter((r) => r.method === 'PUT');
    expect(puts).toHaveLength(records.length);
    for (const put of puts) {
      // The SDK adds ?x-id=PutObject to the path.
      const rec = records.find((r) => put.url.split('?')[0] === `/${BUCKET}/${prefix}${r.key!}`)!;
      expect(put.headers['content-md5']).toBe(createHash('md5').update(JSON.stringify(rec.doc)).digest('base64'));
      expect(put.headers['content-type']).toBe('application/json');
      expect(put.headers['x-amz-checksum-crc32']).toBeUndefined();
    }

    const snapshot = async () => {
      const keys = await listKeys(s3.client, prefix);
      const objects = await Promise.all(keys.map(async (key) => ({ key, ...(await getObject(s3.client, key)) })));
      return { keys, objects };
    };
    const afterFirst = await snapshot();
    expect(afterFirst.keys).toEqual(records.map((r) => prefix + r.key).sort());
    for (const rec of records) {
      const object = afterFirst.objects.find((o) => o.key === prefix + rec.key)!;
      const expected = Buffer.from(JSON.stringify(rec.doc));
      expect(object.body.equals(expected), rec.key).toBe(true);
      expect(object.contentType).toBe('application/json');
      expect(object.contentEncoding).toBeUndefined();
      // s3rver's ETag is the MD5 of what it stored: the same digest the sink sent as Content-MD5.
      expect(object.etag).toBe(`"${md5Hex(expected)}"`);
    }

    const second = await runSink({ prefix }, records);
    expect(second.outcome.delivered).toHaveLength(records.length);
    const afterSecond = await snapshot();
    expect(afterSecond.keys).toEqual(afterFirst.keys);
    for (const [i, object] of afterSecond.objects.entries()) expect(object.body.equals(afterFirst.objects[i]!.body)).toBe(true);
  });

  it('stores gzip-compressed objects with Content-Encoding gzip, with ".gz" only when asked', async () => {
    const doc: JsonObject = { id: 42, flow_id: 7, status: 'succeeded', lines: ['a', 'b'.repeat(2000)] };
    const plain = await runSink({ prefix: 'gz/', compression: 'gzip' }, [record(doc, 'jobs/42.json')]);
    const suffixed = await runSink({ prefix: 'gz/', compression: 'gzip', gzip_suffix: true }, [record(doc, 'jobs/43.json')]);
    expect(plain.outcome.delivered).toEqual(['jobs/42.json']);
    expect(suffixed.outcome.delivered).toEqual(['jobs/43.json']);
    expect(await listKeys(s3.client, 'gz/')).toEqual(['gz/jobs/42.json', 'gz/jobs/43.json.gz']);
    for (const key of ['gz/jobs/42.json', 'gz/jobs/43.json.gz']) {
      const object = await getObject(s3.client, key);
      expect(object.contentEncoding).toBe('gzip');
      expect(object.contentType).toBe('application/json');
      expect(JSON.parse(gunzipSync(object.body).toString('utf8'))).toEqual(doc);
    }
    // bytesOut counts what went over the wire: the compressed body.
    expect(plain.metrics.bytesOut).toBeLessThan(Buffer.byteLength(JSON.stringify(doc)));
  });

  it('uploads a 20 MiB document in parts and reads it back byte for byte', async () => {
    const lines = Array.from({ length: 20 }, (_, i) => `line ${i} `.padEnd(1024 * 1024, String.fromCharCode(97 + i)));
    const doc: JsonObject = { id: 994209784, flow_id: 1, status: 'succeeded', lines };
    const expected = Buffer.from(JSON.stringify(doc));
    expect(expected.length).toBeGreaterThan(20 * 1024 * 1024);
    const before = s3.requests.length;
    const { outcome } = await runSink({ prefix: 'big/' }, [record(doc, 'job.json')]);
    expect(outcome).toEqual({ delivered: ['job.json'], rejected: [] });

    // s3rver answers a completed multipart upload with a plain MD5 ETag (no "-N" suffix as S3
    // gives), so the parts are counted on the wire: 8 MiB + 8 MiB + the rest.
    const seen = s3.requests.slice(before).filter((r) => r.url.startsWith(`/${BUCKET}/big/job.json`));
    const parts = seen.filter((r) => r.method === 'PUT' && /[?&]partNumber=\d+/.test(r.url));
    expect(parts).toHaveLength(Math.ceil(expected.length / (8 * 1024 * 1024)));
    // Content-MD5 of the whole body would be wrong for a part: parts carry their own CRC32 instead.
    for (const part of parts) {
      expect(part.headers['content-md5']).toBeUndefined();
      expect(part.headers['x-amz-checksum-crc32']).toMatch(/^[A-Za-z0-9+/]{6}==$/);
    }
    expect(seen.filter((r) => r.method === 'POST' && r.url.includes('uploads'))).toHaveLength(1);
    expect(seen.filter((r) => r.method === 'POST' && r.url.includes('uploadId='))).toHaveLength(1);

    const object = await getObject(s3.client, 'big/job.json');
    expect(object.body.length).toBe(expected.length);
    expect(object.body.equals(expected)).toBe(true);
    expect(object.contentType).toBe('application/json');
  });

  it('retries a multipart upload whose part failed, aborting the failed upload first', async () => {
    let failed = 0;
    const seen: string[] = [];
    const proxy = await startS3Proxy(s3.endpoint, (req): ProxyAnswer => {
      seen.push(`${req.method} ${req.url}`);
      if (req.method !== 'PUT' || !req.url.includes('partNumber=2') || failed >= 1) return 'pass';
      failed++;
      return { status: 500, code: 'InternalError', message: 'We encountered an internal error. Please try again.' };
    });
    proxies.push(proxy);
    const doc: JsonObject = { id: 5, flow_id: 1, lines: Array.from({ length: 12 }, (_, i) => String(i).repeat(1024 * 1024)) };
    const { outcome, logs } = await runSink({ endpoint: proxy.endpoint, prefix: 'big/', retry: { initial_backoff_ms: 10, max_backoff_ms: 50, max_duration_s: 30 } }, [
      record(doc, 'retried.json'),
    ]);
    expect(outcome).toEqual({ delivered: ['retried.json'], rejected: [] });
    // s3rver has no AbortMultipartUpload (405): the sink warns and still judges the part's 500, which is retried.
    expect(logs.find((l) => l.msg.startsWith('could not abort'))?.fields).toMatchObject({ key: 'big/retried.json', error: '405 MethodNotAllowed' });
    expect(failed).toBe(1);
    expect(seen.filter((r) => r.startsWith('POST') && r.includes('?uploads'))).toHaveLength(2);
    expect(seen.filter((r) => r.startsWith('DELETE') && r.includes('uploadId='))).toHaveLength(1);
    expect((await getObject(s3.client, 'big/retried.json')).body.equals(Buffer.from(JSON.stringify(doc)))).toBe(true);
  });

  it('holds every record for a bucket that does not exist, saying once to check bucket and region; with max_duration_s set they expire', async () => {
    const records = [record({ id: 1, flow_id: 1 }, 'a.json'), record({ id: 2, flow_id: 1 }, 'b.json')];
    const { outcome, logs } = await runSink({ bucket: 'no-such-bucket', retry: fast }, records);
    expect(outcome.delivered).toEqual([]);
    expect(outcome.rejected).toHaveLength(2);
    for (const r of outcome.rejected) {
      expect(r.code).toBe('LF_SINK_RETRY_EXPIRED');
      expect(r.reason).toBe('the destination still failed after retry.max_duration_s (1s): 404 NoSuchBucket: The specified bucket does not exist');
    }
    // The explanation is logged once for the outage, not once per record or attempt.
    const failing = logs.filter((l) => l.fields?.code === 'LF_DESTINATION_FAILING');
    expect(failing).toHaveLength(1);
    expect(failing[0]!.msg).toContain('bucket and region: bucket "no-such-bucket" does not exist in region us-east-1');
  });

  it('holds records when the credentials are refused, saying to check them, without logging the key', async () => {
    process.env.AWS_ACCESS_KEY_ID = 'NOT-A-KEY';
    try {
      const { outcome, logs } = await runSink({ retry: fast }, [record({ id: 3, flow_id: 1 }, 'creds.json')]);
      expect(outcome.delivered).toEqual([]);
      expect(outcome.rejected).toEqual([{ key: 'creds.json', code: 'LF_SINK_RETRY_EXPIRED', reason: expect.stringContaining('403 InvalidAccessKeyId') }]);
      const failing = logs.filter((l) => l.fields?.code === 'LF_DESTINATION_FAILING');
      expect(failing).toHaveLength(1);
      expect(failing[0]!.msg).toMatch(/the credentials were refused.*AWS_ACCESS_KEY_ID/);
      expect(JSON.stringify(logs)).not.toContain('NOT-A-KEY');
      expect(JSON.stringify(logs)).not.toContain(ENV.AWS_SECRET_ACCESS_KEY);
    } finally {
      process.env.AWS_ACCESS_KEY_ID = ENV.AWS_ACCESS_KEY_ID;
    }
  });

  it('rejects only the objects S3 refuses for themselves and delivers the rest', async () => {
    const proxy = await startS3Proxy(s3.endpoint, (req): ProxyAnswer =>
      req.url.includes('refused') ? { status: 400, code: 'KeyTooLongError', message: 'Your key is too long' } : 'pass',
    );
    proxies.push(proxy);
    const records = [
      record({ id: 10, flow_id: 1 }, 'mixed/ok-1.json'),
      record({ id: 11, flow_id: 1 }, 'mixed/refused-1.json'),
      record({ id: 12, flow_id: 1 }, undefined),
      record({ id: 13, flow_id: 1 }, 'mixed/ok-2.json'),
      record({ id: 14, flow_id: 1 }, 'mixed/refused-2.json'),
      record({ id: 15, flow_id: 1 }, 'mixed/ok-3.json'),
    ];
    const { outcome } = await runSink({ endpoint: proxy.endpoint, retry: fast }, records);
    expect(outcome.delivered.sort()).toEqual(['mixed/ok-1.json', 'mixed/ok-2.json', 'mixed/ok-3.json']);
    expect(outcome.rejected.sort((a, b) => a.key.localeCompare(b.key))).toEqual([
      { key: '#2', code: 'LF_RECORD_NO_KEY', reason: expect.stringContaining('path_format') },
      { key: 'mixed/refused-1.json', code: 'LF_SINK_REJECTED', reason: '400 KeyTooLongError: the key mixed/refused-1.json is longer than 1024 bytes: shorten prefix or the path_format template' },
      { key: 'mixed/refused-2.json', code: 'LF_SINK_REJECTED', reason: expect.stringContaining('400 KeyTooLongError: the key mixed/refused-2.json') },
    ]);
    expect(await listKeys(s3.client, 'mixed/')).toEqual(['mixed/ok-1.json', 'mixed/ok-2.json', 'mixed/ok-3.json']);
  });

  it('retries 503 SlowDown after the Retry-After the server asks for', async () => {
    let refused = 0;
    const proxy = await startS3Proxy(s3.endpoint, (req): ProxyAnswer => {
      if (req.method !== 'PUT' || refused >= 2) return 'pass';
      refused++;
      return { status: 503, code: 'SlowDown', message: 'Please reduce your request rate.', headers: { 'retry-after': '0.3' } };
    });
    proxies.push(proxy);
    const { outcome, logs, elapsedMs, metrics } = await runSink(
      { endpoint: proxy.endpoint, retry: { initial_backoff_ms: 1, max_backoff_ms: 5, max_duration_s: 30 } },
      [record({ id: 20, flow_id: 1 }, 'slow/down.json')],
    );
    expect(outcome).toEqual({ delivered: ['slow/down.json'], rejected: [] });
    expect(refused).toBe(2);
    expect(elapsedMs).toBeGreaterThanOrEqual(600);
    expect(metrics.perComponent.get('archive')).toMatchObject({ attempts: 3, retries: 2 });
    const retryLine = logs.find((l) => l.msg.includes('retrying'));
    expect(retryLine?.fields).toMatchObject({ bucket: BUCKET, key: 'slow/down.json', reason: '503 SlowDown: Please reduce your request rate.', attempt: 1, retry_in_ms: 300 });
    expect((await getObject(s3.client, 'slow/down.json')).body.toString()).toBe(JSON.stringify({ id: 20, flow_id: 1 }));
  });

  it('gives a request that gets no answer up after request_timeout_ms and tries again', async () => {
    let hung = 0;
    const proxy = await startS3Proxy(s3.endpoint, (req): ProxyAnswer => {
      if (req.method !== 'PUT' || hung >= 1) return 'pass';
      hung++;
      return 'hang';
    });
    proxies.push(proxy);
    const { outcome, logs } = await runSink(
      { endpoint: proxy.endpoint, request_timeout_ms: 300, retry: { initial_backoff_ms: 10, max_backoff_ms: 50, max_duration_s: 30 } },
      [record({ id: 21, flow_id: 1 }, 'slow/timeout.json')],
    );
    expect(outcome).toEqual({ delivered: ['slow/timeout.json'], rejected: [] });
    expect(logs.find((l) => l.msg.includes('retrying'))?.fields?.reason).toMatch(/TimeoutError.*300 ms/);
  });

  it('with max_duration_s set, gives up on a server that is down after it (LF_SINK_RETRY_EXPIRED)', async () => {
    const endpoint = `http://127.0.0.1:${await closedPort()}`;
    const { outcome, elapsedMs } = await runSink({ endpoint, retry: fast }, [record({ id: 30, flow_id: 1 }, 'down.json')]);
    expect(outcome.delivered).toEqual([]);
    expect(outcome.rejected).toEqual([
      { key: 'down.json', code: 'LF_SINK_RETRY_EXPIRED', reason: expect.stringMatching(/^the destination still failed after retry.max_duration_s \(1s\): ECONNREFUSED/) },
    ]);
    expect(elapsedMs).toBeGreaterThanOrEqual(900);
    expect(elapsedMs).toBeLessThan(5000);
  });

  it('stops retrying on shutdown and leaves the delivery unsettled', async () => {
    const endpoint = `http://127.0.0.1:${await closedPort()}`;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), 300);
    try {
      const { outcome, elapsedMs } = await runSink(
        { endpoint, retry: { initial_backoff_ms: 10, max_backoff_ms: 50, max_duration_s: 600 } },
        [record({ id: 31, flow_id: 1 }, 'stopped.json')],
        controller.signal,
      );
      expect(outcome).toEqual({ delivered: [], rejected: [] });
      expect(elapsedMs).toBeLessThan(2000);
    } finally {
      clearTimeout(timer);
    }
  });

  it('ends an upload in flight on shutdown, leaving the delivery unsettled', async () => {
    const proxy = await startS3Proxy(s3.endpoint, () => 'hang');
    proxies.push(proxy);
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), 300);
    try {
      const { outcome, elapsedMs } = await runSink({ endpoint: proxy.endpoint }, [record({ id: 32, flow_id: 1 }, 'inflight.json')], controller.signal);
      expect(outcome).toEqual({ delivered: [], rejected: [] });
      expect(elapsedMs).toBeLessThan(2000);
    } finally {
      clearTimeout(timer);
    }
  });
});

describe('s3 sink logging', () => {
  it('works with the silent logger too', async () => {
    const ctx: SinkContext = {
      id: 's3',
      log: silentLogger,
      metrics: new Metrics(),
      signal: new AbortController().signal,
      dataDir: tmpdir(),
      state: new SinkState('s3', silentLogger),
    };
    const sink = await s3Sink.build(s3SinkSchema.parse({ bucket: BUCKET, endpoint: s3.endpoint, force_path_style: true }), ctx);
    const outcome: Outcome = { delivered: [], rejected: [] };
    await sink.run(inBatches(deliveriesFor([record({ id: 40, flow_id: 1 }, 'silent.json')], outcome)));
    await sink.close?.();
    expect(outcome.delivered).toEqual(['silent.json']);
  });
});
