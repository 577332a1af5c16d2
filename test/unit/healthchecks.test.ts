import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { anyFailed, checkDestinations } from '../../src/engine/healthchecks.js';
import { createLogger, silentLogger } from '../../src/engine/logger.js';
import { Metrics } from '../../src/engine/metrics.js';
import { SinkState } from '../../src/engine/sink-state.js';
import type { Sink, SinkContext } from '../../src/engine/types.js';
import { httpSink, httpSinkSchema } from '../../src/sinks/http.js';
import { headBucketResult, isBodiless403, nameHeadBucketError } from '../../src/sinks/s3.js';

/** An SDK error as a HEAD answer leaves it: named by status only, the headers kept. */
function headError(status: number, name = 'Unknown', headers: Record<string, string> = {}): object {
  return { name, message: 'UnknownError', $metadata: { httpStatusCode: status }, $response: { headers } };
}

describe('s3 health check: what a HeadBucket failure means', () => {
  const check = (err: unknown): ReturnType<typeof headBucketResult> => headBucketResult(nameHeadBucketError(err, 'us-east-1'), 'logs', 'us-east-1');

  it('a 404 is a missing bucket, named with its region', () => {
    const result = check(headError(404, 'NotFound'));
    expect(result.status).toBe('failed');
    expect(result.message).toMatch(/404 NoSuchBucket.*bucket "logs" does not exist in region us-east-1/);
  });

  it('a 301, or a 400 naming another region, is the wrong region, with the right one when S3 says it', () => {
    expect(check(headError(301, 'Unknown', { 'x-amz-bucket-region': 'eu-west-1' })).message).toMatch(/region: the bucket "logs" is in another region than us-east-1 \(eu-west-1\)/);
    expect(check(headError(400, 'Unknown', { 'x-amz-bucket-region': 'ap-south-1' })).message).toMatch(/another region than us-east-1 \(ap-south-1\)/);
    // A 400 from the bucket's own region is not about the region.
    expect(check(headError(400, 'Unknown', { 'x-amz-bucket-region': 'us-east-1' })).message).not.toMatch(/another region/);
  });

  it('AccessDenied is a warning naming s3:ListBucket; refused or missing credentials fail', () => {
    const denied = check({ ...headError(403), name: 'AccessDenied' });
    expect(denied).toEqual({ status: 'warning', message: expect.stringMatching(/s3:ListBucket on arn:aws:s3:::logs, which the sink does not need to write/) as string });
    for (const name of ['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken']) {
      const result = check({ name, message: 'refused', $metadata: { httpStatusCode: 403 } });
      expect(result.status, name).toBe('failed');
      expect(result.message, name).toMatch(/the credentials were refused; check the credentials: the default chain reads AWS_ACCESS_KEY_ID/);
    }
    expect(check({ name: 'CredentialsProviderError', message: 'Could not load credentials from any providers' }).message).toMatch(/no AWS credentials found/);
  });

  it('a bodiless 403 needs a second look; a named credential refusal does not', () => {
    expect(isBodiless403(headError(403))).toBe(true);
    expect(isBodiless403({ name: 'InvalidAccessKeyId', $metadata: { httpStatusCode: 403 } })).toBe(false);
    expect(isBodiless403(headError(404))).toBe(false);
  });

  it('network errors and timeouts fail with what to check', () => {
    expect(check({ name: 'Error', code: 'ECONNREFUSED', message: 'connect ECONNREFUSED 127.0.0.1:9' }).message).toMatch(/ECONNREFUSED.*check that the endpoint is up and reachable/);
    expect(check({ name: 'Error', code: 'ENOTFOUND', message: 'getaddrinfo ENOTFOUND s3.nowhere' }).message).toMatch(/host name does not resolve/);
    expect(check({ name: 'TimeoutError', message: 'HeadBucket got no answer within 2000 ms' }).message).toMatch(/TimeoutError: HeadBucket got no answer within 2000 ms; check that the endpoint is up/);
  });
});

const servers: Server[] = [];
const sinks: Sink[] = [];
afterEach(async () => {
  await Promise.all(sinks.splice(0).map(async (s) => s.close?.()));
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

/** A server on 127.0.0.1 whose answer the test chooses; `null` never answers. */
async function serve(answer: (method: string) => { status: number; headers?: Record<string, string> } | null): Promise<string> {
  const server = createServer((req, res) => {
    const reply = answer(req.method ?? '');
    if (!reply) return;
    res.writeHead(reply.status, reply.headers);
    res.end();
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function buildHttp(options: Record<string, unknown>): Promise<Sink> {
  const ctx: SinkContext = { id: 'http', log: silentLogger, metrics: new Metrics(), signal: new AbortController().signal, dataDir: '/nonexistent', state: new SinkState('http', silentLogger) };
  const sink = (await httpSink.build(httpSinkSchema.parse(options), ctx)) as Sink;
  sinks.push(sink);
  return sink;
}

describe('http health check', () => {
  it('healthcheck.uri: 2xx is healthy, with the configured method; a redirect fails with the sink\'s advice', async () => {
    const methods: string[] = [];
    const url = await serve((method) => {
      methods.push(method);
      return method === 'OPTIONS' ? { status: 204 } : { status: 302, headers: { location: 'https://elsewhere.example/in?token=abc' } };
    });
    const ok = await buildHttp({ uri: `${url}/in`, healthcheck: { uri: `${url}/health`, method: 'OPTIONS' } });
    expect(await ok.healthcheck!(new AbortController().signal)).toEqual({ status: 'ok', message: expect.stringMatching(/^OPTIONS http:\/\/127\.0\.0\.1:\d+\/… answered 204$/) as string });
    const moved = await buildHttp({ uri: `${url}/in`, healthcheck: { uri: `${url}/health` } });
    const result = await moved.healthcheck!(new AbortController().signal);
    expect(result?.status).toBe('failed');
    expect(result?.message).toMatch(/answered HTTP 302; check the uri: the server redirects to https:\/\/elsewhere\.example\/…\?…, which logferry does not follow/);
    expect(methods).toEqual(['OPTIONS', 'GET']);
  });

  it('a server that does not answer fails after healthcheck.timeout_ms', async () => {
    const url = await serve(() => null);
    const sink = await buildHttp({ uri: `${url}/in`, healthcheck: { uri: `${url}/health`, timeout_ms: 200 } });
    expect((await sink.healthcheck!(new AbortController().signal))?.message).toMatch(/no answer within healthcheck\.timeout_ms \(200 ms\)/);
  });

  it('the connection check does the TLS handshake: an https uri at a plain HTTP port fails with the TLS advice', async () => {
    const url = await serve(() => ({ status: 200 }));
    const sink = await buildHttp({ uri: `${url.replace('http:', 'https:')}/in` });
    const result = await sink.healthcheck!(new AbortController().signal);
    expect(result?.status).toBe('failed');
    expect(result?.message).toMatch(/^connection to https:\/\/127\.0\.0\.1:\d+ failed: .*check tls\.ca_file, the certificate and the uri/);
  });

  it('healthcheck.enabled: false checks nothing', async () => {
    const sink = await buildHttp({ uri: 'http://127.0.0.1:9/in', healthcheck: { enabled: false } });
    expect(await sink.healthcheck!(new AbortController().signal)).toBeUndefined();
  });
});

describe('checkDestinations', () => {
  it('runs every check, logs each once by level, and counts a throwing or endless check as failed', async () => {
    const lines: string[] = [];
    const log = createLogger({ format: 'json', write: (line) => lines.push(line) });
    const stop = new AbortController();
    const checks = checkDestinations(
      [
        { id: 'good', sink: { run: async () => {}, healthcheck: () => Promise.resolve({ status: 'ok', message: 'fine' }) } },
        { id: 'meh', sink: { run: async () => {}, healthcheck: () => Promise.resolve({ status: 'warning', message: 'half' }) } },
        { id: 'broken', sink: { run: async () => {}, healthcheck: () => Promise.reject(new Error('bug')) } },
        { id: 'endless', sink: { run: async () => {}, healthcheck: () => new Promise(() => {}) } },
        { id: 'none', sink: { run: async () => {} } },
      ],
      log,
      stop.signal,
    );
    // The settled checks finish in microtasks; then the stop ends the one that never would.
    await new Promise((resolve) => setImmediate(resolve));
    stop.abort();
    const results = await checks;
    expect(results.map((r) => [r.sink, r.result?.status])).toEqual([
      ['good', 'ok'],
      ['meh', 'warning'],
      ['broken', 'failed'],
      ['endless', 'failed'],
      ['none', undefined],
    ]);
    expect(anyFailed(results)).toBe(true);
    expect(anyFailed(results.slice(0, 2))).toBe(false);
    const logged = lines.map((line) => JSON.parse(line) as { level: string; component: string; code?: string });
    expect(logged.map((l) => [l.component, l.level, l.code])).toEqual(
      expect.arrayContaining([
        ['good', 'info', undefined],
        ['meh', 'warn', undefined],
        ['broken', 'error', 'LF_HEALTHCHECK_FAILED'],
        ['endless', 'error', 'LF_HEALTHCHECK_FAILED'],
      ]),
    );
    expect(logged).toHaveLength(4);
  });
});
