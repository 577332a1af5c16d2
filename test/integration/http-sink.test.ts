import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { httpSink, httpSinkSchema } from '../../src/sinks/http.js';
import { driveSink, jobRecord, sinkConformanceCases, startReceiver } from '../../src/testkit/index.js';
import { waitFor } from '../helpers/cli.js';

const fast = { request: { timeout_ms: 1000 }, retry: { initial_backoff_ms: 10, max_backoff_ms: 200, max_duration_s: 60 } };

describe('http sink', () => {
  for (const [label, extra] of [
    ['ndjson batches, gzip', { encoding: 'ndjson', compression: 'gzip', batch: { max_events: 25, timeout_ms: 20 } }],
    ['one JSON document per request', { encoding: 'json' }],
  ] as const) {
    const subject = { definition: httpSink, options: (url: string) => ({ uri: url, ...fast, ...extra }) };
    for (const c of sinkConformanceCases(subject)) it(`${label}: ${c.name}`, c.run, c.timeoutMs);
  }

  it('never builds a batch above max_bytes, except a single larger record sent alone', async () => {
    const receiver = await startReceiver();
    try {
      const sizes = [100, 3000, 100, 20_000, 100, 100, 5000, 5000, 5000, 100];
      const records = sizes.map((size, i) => jobRecord(i + 1, { pad: 'y'.repeat(size) }));
      const result = await driveSink(httpSink, { uri: receiver.url, batch: { max_bytes: 8192, max_events: 100, timeout_ms: 20 }, ...fast }, records);
      expect(result.delivered).toHaveLength(sizes.length);
      for (const request of receiver.requests) {
        const lines = request.body.toString().trimEnd().split('\n');
        if (request.body.length > 8192) expect(lines).toHaveLength(1);
      }
      expect(receiver.requests.some((r) => r.body.length > 8192)).toBe(true);
      expect(receiver.ids().sort((a, b) => a - b)).toEqual(records.map((r) => r.doc.id));
    } finally {
      await receiver.close();
    }
  });

  it('sends the configured headers, basic auth and content type, and honours max_events', async () => {
    const receiver = await startReceiver();
    try {
      const records = Array.from({ length: 10 }, (_, i) => jobRecord(i + 1));
      await driveSink(
        httpSink,
        { uri: `${receiver.url}/in`, method: 'PUT', headers: { 'X-Team': 'data' }, auth: { strategy: 'basic', user: 'u', password: 'p w' }, batch: { max_events: 4, timeout_ms: 20 }, ...fast },
        records,
      );
      expect(receiver.requests.map((r) => r.body.toString().trimEnd().split('\n').length).every((n) => n <= 4)).toBe(true);
      const first = receiver.requests[0]!;
      expect(first.method).toBe('PUT');
      expect(first.url).toBe('/in');
      expect(first.headers['x-team']).toBe('data');
      expect(first.headers['content-type']).toBe('application/x-ndjson');
      expect(first.headers.authorization).toBe(`Basic ${Buffer.from('u:p w').toString('base64')}`);
    } finally {
      await receiver.close();
    }
  });

  it('waits as long as Retry-After asks before trying again', async () => {
    let calls = 0;
    const times: number[] = [];
    const receiver = await startReceiver({
      respond: () => {
        times.push(Date.now());
        return calls++ === 0 ? { status: 429, headers: { 'retry-after': '1' }, body: 'slow down' } : undefined;
      },
    });
    try {
      const result = await driveSink(httpSink, { uri: receiver.url, encoding: 'json', ...fast }, [jobRecord(1)]);
      expect(result.delivered).toHaveLength(1);
      expect(times).toHaveLength(2);
      expect(times[1]! - times[0]!).toBeGreaterThanOrEqual(950);
    } finally {
      await receiver.close();
    }
  });

  it('with max_duration_s set, a record held longer is rejected as LF_SINK_RETRY_EXPIRED with the last reason', async () => {
    const receiver = await startReceiver({ respond: () => ({ status: 503, body: 'maintenance' }) });
    try {
      const result = await driveSink(httpSink, { uri: receiver.url, encoding: 'json', request: { timeout_ms: 500 }, retry: { initial_backoff_ms: 10, max_backoff_ms: 50, max_duration_s: 0.5 } }, [jobRecord(1)]);
      expect(result.rejected).toHaveLength(1);
      expect(result.rejected[0]).toMatchObject({ code: 'LF_SINK_RETRY_EXPIRED' });
      expect(result.rejected[0]!.reason).toMatch(/still failed after retry\.max_duration_s \(0\.5s\): HTTP 503 .*maintenance/);
    } finally {
      await receiver.close();
    }
  });

  it('idempotency_header carries the key, else the received digest; only with encoding json, and not also under headers', async () => {
    const receiver = await startReceiver();
    try {
      const keyed = jobRecord(1);
      const { key: _key, ...unkeyed } = jobRecord(2);
      const result = await driveSink(httpSink, { uri: receiver.url, encoding: 'json', idempotency_header: 'Idempotency-Key', ...fast }, [keyed, unkeyed]);
      expect(result.delivered).toHaveLength(2);
      const byId = new Map(receiver.requests.map((r) => [(JSON.parse(r.body.toString()) as { id: number }).id, r.headers['idempotency-key']]));
      expect(byId.get(1)).toBe(keyed.key);
      expect(byId.get(2)).toBe(unkeyed.receivedDigest);
    } finally {
      await receiver.close();
    }
    const problems = (options: Record<string, unknown>): string[] =>
      httpSinkSchema.safeParse({ uri: 'http://127.0.0.1/in', ...options }).error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`) ?? [];
    expect(problems({ idempotency_header: 'Idempotency-Key' })[0]).toMatch(/^idempotency_header: needs encoding: json/);
    expect(problems({ encoding: 'json', idempotency_header: 'Idempotency-Key', headers: { 'idempotency-key': 'x' } })[0]).toMatch(/also set under headers/);
    expect(problems({ encoding: 'json', idempotency_header: 'Idempotency Key' })[0]).toMatch(/not a valid header name/);
    expect(problems({ encoding: 'json', idempotency_header: 'Content-Length' })[0]).toMatch(/set by the HTTP client/);
  });

  it('an exception while sending a batch makes its records dead letters, not an unhandled rejection', async () => {
    const receiver = await startReceiver();
    try {
      // A record whose key cannot be read stands for any bug on the way to a request: the
      // idempotency header reads the key while the request runs in the background.
      const broken = jobRecord(1);
      Object.defineProperty(broken, 'key', {
        get(): never {
          throw new Error('the key cannot be read');
        },
      });
      const result = await driveSink(httpSink, { uri: receiver.url, encoding: 'json', idempotency_header: 'Idempotency-Key', ...fast }, [broken, jobRecord(2)]);
      expect(result.rejected).toHaveLength(1);
      expect(result.rejected[0]).toMatchObject({ code: 'LF_SINK_REJECTED' });
      expect(result.rejected[0]!.reason).toMatch(/the sink failed while handling this record .*: the key cannot be read/);
      expect(result.delivered).toHaveLength(1);
      expect(receiver.ids()).toEqual([2]);
    } finally {
      await receiver.close();
    }
  });

  it('a request in flight when the run stops leaves its records unsettled: the AbortError (whose code is a number) is no bug', async () => {
    // A receiver that takes requests and never answers, so the stop always finds one in flight.
    const waiting: ServerResponse[] = [];
    const server = createServer((_request, response) => void waiting.push(response));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const stop = new AbortController();
      const options = { uri: `http://127.0.0.1:${port}/in`, encoding: 'json', request: { timeout_ms: 60_000 }, retry: fast.retry };
      const driving = driveSink(httpSink, options, [jobRecord(1), jobRecord(2)], { signal: stop.signal, batches: 1 });
      await waitFor(() => waiting.length > 0, 30_000, 'a request to arrive');
      stop.abort();
      const result = await driving;
      expect(result.rejected).toEqual([]);
      expect(result.delivered).toEqual([]);
      expect(result.unsettled).toHaveLength(2);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

