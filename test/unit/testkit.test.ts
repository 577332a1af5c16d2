import { gzipSync } from 'node:zlib';
import { Agent, request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { ComponentDefinition, Delivery, Sink, SinkContext } from '../../src/engine/types.js';
import type { ErrorCode } from '../../src/errors.js';
import { ConcurrencyLimit, parseRetryAfter, retryDefaults, retryUntilFinal, settleAll, statusFailureClass, type Verdict } from '../../src/sinks/delivery.js';
import {
  driveSink,
  faultPlans,
  jobRecord,
  sinkConformanceCases,
  startFaultProxy,
  startReceiver,
  type FaultProxy,
  type Receiver,
  type SinkUnderTest,
} from '../../src/testkit/index.js';

/** Everything a test opens, closed after it whether it passed or not, so the run exits by itself. */
const openedThings: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(openedThings.splice(0).map((t) => t.close()));
});
const track = <T extends { close(): Promise<void> }>(thing: T): T => {
  openedThings.push(thing);
  return thing;
};
const client = (): Agent => {
  const agent = new Agent();
  track({ close: () => agent.destroy() });
  return agent;
};

const referenceSchema = z
  .object({
    url: z.string().url(),
    timeout_ms: z.number().int().positive().default(30_000),
    initial_backoff_ms: z.number().int().positive().default(100),
  })
  .strict();
type ReferenceOptions = z.output<typeof referenceSchema>;

/**
 * The smallest correct HTTP sink: one JSON document per POST, acknowledged once a 2xx answer has
 * been read, rejected on an answer about its body (400, 413, 422), held and retried on anything
 * else (the destination fails for every record). `ackFirst` breaks it on purpose: it acknowledges
 * before sending.
 */
class ReferenceHttpSink implements Sink {
  private readonly agent = new Agent();

  constructor(
    private readonly options: ReferenceOptions,
    private readonly ctx: SinkContext,
    private readonly ackFirst = false,
  ) {}

  async run(input: AsyncIterable<Delivery[]>): Promise<void> {
    const limit = new ConcurrencyLimit(32);
    for await (const batch of input) for (const d of batch) await limit.run([d], () => this.deliver(d));
    await limit.drain();
  }

  private async deliver(delivery: Delivery): Promise<void> {
    if (this.ackFirst) delivery.delivered();
    const body = JSON.stringify(delivery.record.doc);
    const verdict = await retryUntilFinal(() => this.attempt(body), {
      // A short ceiling: the cases' throttling would otherwise grow the backoff past their time limits.
      retry: retryDefaults({ initial_backoff_ms: this.options.initial_backoff_ms, max_backoff_ms: 1000 }),
      signal: this.ctx.signal,
      state: this.ctx.state,
    });
    if (verdict !== 'aborted' && !this.ackFirst) settleAll([delivery], verdict);
  }

  private async attempt(body: string): Promise<Verdict> {
    try {
      const res = await request(this.options.url, {
        method: 'POST',
        body,
        headers: { 'content-type': 'application/json' },
        dispatcher: this.agent,
        signal: AbortSignal.any([this.ctx.signal, AbortSignal.timeout(this.options.timeout_ms)]),
      });
      // Read to the end: the answer is only complete, and the connection reusable, after the body.
      const text = await res.body.text();
      if (res.statusCode >= 200 && res.statusCode < 300) return { kind: 'ok' };
      const reason = `HTTP ${res.statusCode}: ${text.slice(0, 200)}`;
      const failure = statusFailureClass(res.statusCode);
      if (failure === 'record') return { kind: 'record', reason };
      return { kind: 'destination', reason, blocked: failure === 'blocked', afterMs: parseRetryAfter(res.headers['retry-after']) };
    } catch (err) {
      return { kind: 'destination', reason: (err as Error).message };
    }
  }

  async close(): Promise<void> {
    await this.agent.destroy();
  }
}

const referenceSink: ComponentDefinition<'sink', typeof referenceSchema> = {
  kind: 'sink',
  type: 'reference_http',
  description: 'POSTs each record as one JSON document (testkit self-test).',
  schema: referenceSchema,
  build: (options, ctx) => new ReferenceHttpSink(options, ctx),
};

const brokenSink: ComponentDefinition<'sink', typeof referenceSchema> = {
  ...referenceSink,
  type: 'broken_http',
  build: (options, ctx) => new ReferenceHttpSink(options, ctx, true),
};

const subjectOf = (definition: ComponentDefinition<'sink', typeof referenceSchema>): SinkUnderTest<typeof referenceSchema> => ({
  definition,
  options: (url) => ({ url: `${url}/ingest`, timeout_ms: 1000, initial_backoff_ms: 10 }),
  requestTimeoutMs: 1000,
});

/** What `fn` throws (undefined when it returns). */
function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

async function post(agent: Agent, url: string, body: string | Buffer, headers: Record<string, string> = {}, timeoutMs = 5000) {
  const res = await request(url, { method: 'POST', body, headers, dispatcher: agent, signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
}

const ndjson = (...ids: number[]): string => ids.map((id) => JSON.stringify({ id, flow_id: 1 })).join('\n') + '\n';

describe('startReceiver', () => {
  it('stores each request with its body gunzipped, and parses JSON and NDJSON bodies', async () => {
    const receiver = track(await startReceiver());
    const agent = client();
    const gzipped = gzipSync(ndjson(1, 2, 3));
    expect((await post(agent, `${receiver.url}/bulk?tag=a`, gzipped, { 'content-encoding': 'gzip' })).status).toBe(200);
    await post(agent, `${receiver.url}/one`, JSON.stringify({ id: 4, nested: { id: 99 } }));
    await post(agent, `${receiver.url}/many`, JSON.stringify([{ id: 5 }, { event: { id: 6 } }]));

    expect(receiver.requests).toHaveLength(3);
    const [first] = receiver.requests;
    expect(first).toMatchObject({ method: 'POST', url: '/bulk?tag=a' });
    expect(first!.headers['content-encoding']).toBe('gzip');
    expect(first!.rawBody.equals(gzipped)).toBe(true);
    expect(first!.body.toString()).toBe(ndjson(1, 2, 3));
    expect(first!.receivedAt).toBeLessThanOrEqual(Date.now());
    expect(receiver.records()).toHaveLength(6);
    expect(receiver.ids()).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('answers through the respond hook, 400 on a body that does not decode, and names a malformed body', async () => {
    const receiver = track(
      await startReceiver({
        respond: (req) => (req.url === '/busy' ? { status: 429, headers: { 'Retry-After': '3', 'Content-Type': 'application/json' }, body: '{"busy":true}' } : undefined),
      }),
    );
    const agent = client();
    const busy = await post(agent, `${receiver.url}/busy`, '{}');
    expect(busy).toMatchObject({ status: 429, text: '{"busy":true}' });
    expect(busy.headers['retry-after']).toBe('3');
    expect(busy.headers['content-type']).toBe('application/json');
    const corrupt = await post(agent, `${receiver.url}/x`, 'not gzip', { 'content-encoding': 'gzip' });
    expect(corrupt.status).toBe(400);
    expect(receiver.requests[1]!.decodeError).toBeDefined();
    expect(() => receiver.records()).toThrow(/request #1 \(POST \/x\)/);
    expect(thrown(() => receiver.records())).toMatchObject({ code: 'LF_TESTKIT_BAD_BODY' });
  });
});

describe('startFaultProxy', () => {
  async function rig(plan = faultPlans.none, respond?: Parameters<typeof startReceiver>[0]): Promise<{ receiver: Receiver; proxy: FaultProxy; agent: Agent }> {
    const receiver = track(await startReceiver(respond));
    const proxy = track(await startFaultProxy({ upstream: receiver.url, plan }));
    return { receiver, proxy, agent: client() };
  }

  it('forwards method, path, query, headers and body, streams the answer back, and tracks acknowledged ids', async () => {
    const { receiver, proxy, agent } = await rig(faultPlans.none, {
      respond: (req) => (req.url.startsWith('/fail') ? { status: 500, body: 'boom' } : { status: 202, headers: { 'x-request-id': 'r1' }, body: 'accepted' }),
    });
    const answer = await post(agent, `${proxy.url}/ingest?source=a`, gzipSync(ndjson(1, 2)), { 'content-encoding': 'gzip', 'x-api-key': 'k' });
    expect(answer).toMatchObject({ status: 202, text: 'accepted' });
    expect(answer.headers['x-request-id']).toBe('r1');
    const forwarded = receiver.requests[0]!;
    expect(forwarded).toMatchObject({ method: 'POST', url: '/ingest?source=a' });
    expect(forwarded.headers.host).toBe(new URL(receiver.url).host);
    expect(forwarded.headers['x-api-key']).toBe('k');
    expect(forwarded.body.toString()).toBe(ndjson(1, 2));
    expect([...proxy.acknowledgedIds]).toEqual([1, 2]);

    // A failure answer from the destination is passed on, but acknowledges nothing.
    const failed = await post(agent, `${proxy.url}/fail`, ndjson(3));
    expect(failed).toMatchObject({ status: 500, text: 'boom' });
    expect(proxy.acknowledgedIds.has(3)).toBe(false);
    expect(proxy.requests).toBe(2);
    expect(proxy.faultsByKind.pass).toBe(2);
    expect(proxy.exchanges.map((e) => [e.ids, e.status, e.outcome, e.acknowledged])).toEqual([
      [[1, 2], 202, 'answered', true],
      [[3], 500, 'answered', false],
    ]);
  });

  it('answers a status fault itself, with Retry-After, without forwarding', async () => {
    const { receiver, proxy, agent } = await rig(faultPlans.sequence([{ kind: 'status', status: 503, retryAfter: '1' }]));
    const throttled = await post(agent, `${proxy.url}/x`, ndjson(1));
    expect(throttled.status).toBe(503);
    expect(throttled.headers['retry-after']).toBe('1');
    expect(receiver.requests).toHaveLength(0);
    expect((await post(agent, `${proxy.url}/x`, ndjson(1))).status).toBe(200);
    expect(receiver.requests).toHaveLength(1);
    expect(proxy.faultsByKind).toEqual({ pass: 1, status: 1, drop: 0, delay: 0 });
  });

  it('drops the connection without an answer', async () => {
    const { receiver, proxy, agent } = await rig(faultPlans.always({ kind: 'drop' }));
    await expect(post(agent, `${proxy.url}/x`, ndjson(1))).rejects.toThrow();
    expect(receiver.requests).toHaveLength(0);
    expect(proxy.faultsByKind.drop).toBe(1);
    expect(proxy.exchanges[0]!.outcome).toBe('dropped');
    expect(proxy.acknowledgedIds.size).toBe(0);
  });

  it('forwards a delayed request but holds the answer past the client timeout: nothing is acknowledged', async () => {
    const { receiver, proxy, agent } = await rig(faultPlans.always({ kind: 'delay', ms: 400 }));
    await expect(post(agent, `${proxy.url}/x`, ndjson(9), {}, 150)).rejects.toThrow();
    // The destination has it, though the client gave up: the sink must send it again.
    expect(receiver.ids()).toEqual([9]);
    // The proxy settles the exchange once its delay is over and it finds the client gone.
    while (proxy.exchanges[0]?.outcome === 'pending') await new Promise((r) => setTimeout(r, 10));
    expect(proxy.exchanges[0]).toMatchObject({ outcome: 'client-gone', acknowledged: false });
    expect(proxy.acknowledgedIds.size).toBe(0);

    // A client that waits long enough gets the answer, and then it counts.
    expect((await post(agent, `${proxy.url}/x`, ndjson(10), {}, 5000)).status).toBe(200);
    expect([...proxy.acknowledgedIds]).toEqual([10]);
  });

  it('close() ends requests whose answer is being held', async () => {
    const { proxy, agent } = await rig(faultPlans.always({ kind: 'delay', ms: 60_000 }));
    const pending = post(agent, `${proxy.url}/x`, ndjson(1), {}, 30_000);
    while (proxy.requests === 0) await new Promise((r) => setTimeout(r, 10));
    const started = Date.now();
    await proxy.close();
    await expect(pending).rejects.toThrow();
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('mixed plans are deterministic per seed and roughly follow the shares', () => {
    const request = (index: number) => ({ index, method: 'POST', url: '/', headers: {}, body: Buffer.alloc(0), ids: [] });
    const kinds = (seed: number) => Array.from({ length: 2000 }, (_, i) => faultPlans.mixed({ seed, slowMs: 50 })(request(i)));
    const a = kinds(7);
    expect(kinds(7)).toEqual(a);
    expect(kinds(8)).not.toEqual(a);
    const share = (kind: string) => a.filter((f) => f.kind === kind).length / a.length;
    expect(share('status')).toBeGreaterThan(0.25);
    expect(share('status')).toBeLessThan(0.35);
    expect(share('drop')).toBeGreaterThan(0.03);
    expect(share('delay')).toBeGreaterThan(0.03);
    const retryAfters = new Set(a.flatMap((f) => (f.kind === 'status' ? [f.retryAfter, f.status] : [])));
    expect(retryAfters).toEqual(new Set(['0', '1', 503]));
    expect(a.find((f) => f.kind === 'delay')).toEqual({ kind: 'delay', ms: 50 });
  });
});

describe('driveSink', () => {
  it('reports delivered, rejected, unsettled and double settlements', async () => {
    const schema = z.object({}).strict();
    const sloppy: ComponentDefinition<'sink', typeof schema> = {
      kind: 'sink',
      type: 'sloppy',
      description: 'settles some deliveries twice and leaves one unsettled',
      schema,
      build: () => ({
        async run(input) {
          for await (const batch of input) {
            for (const d of batch) {
              const id = d.record.doc.id;
              if (id === 3) continue;
              // What a sink written in JavaScript may pass: the result keeps it as given.
              if (id === 2) d.rejected('nope', 'X' as ErrorCode);
              d.delivered();
              if (id === 1) d.delivered();
            }
          }
        },
      }),
    };
    const result = await driveSink(sloppy, {}, [1, 2, 3, 4].map((id) => jobRecord(id)));
    expect(result.delivered.map((r) => r.doc.id)).toEqual([1, 4]);
    expect(result.rejected).toMatchObject([{ reason: 'nope', code: 'X' }]);
    expect(result.unsettled.map((r) => r.doc.id)).toEqual([3]);
    expect(result.settledTwice).toBe(2);
  });

  it('refuses a definition that is not a sink, with LF_TESTKIT_MISUSE', () => {
    const transform = { kind: 'transform', type: 'pass', description: 'x', schema: z.object({}), build: () => ({ process: (r: unknown) => r }) };
    expect(thrown(() => driveSink(transform as unknown as ComponentDefinition<'sink', z.ZodObject>, {}, []))).toMatchObject({
      code: 'LF_TESTKIT_MISUSE',
      message: expect.stringContaining('"pass" is a transform, not a sink') as unknown,
    });
  });

  it('jobRecord makes a keyed job record', () => {
    expect(jobRecord(5, { status: 'failed' })).toMatchObject({ kind: 'job', key: 'conformance/5.json', doc: { id: 5, status: 'failed' } });
  });
});

describe('sink conformance: reference_http', () => {
  for (const c of sinkConformanceCases(subjectOf(referenceSink))) it(c.name, c.run, c.timeoutMs);
});

describe('sink conformance catches a broken sink', () => {
  it('a sink that rejects with a code that is not a logferry error code fails the refusal case', async () => {
    // Its deliveries pass their own string as the code, as a sink written in JavaScript could.
    const ownCodes: ComponentDefinition<'sink', typeof referenceSchema> = {
      ...referenceSink,
      type: 'own_codes_http',
      build: (options, ctx) => {
        const inner = new ReferenceHttpSink(options, ctx);
        return {
          run: (input) =>
            inner.run(
              (async function* () {
                for await (const batch of input) {
                  yield batch.map((d) => ({ record: d.record, delivered: () => d.delivered(), rejected: (reason: string) => d.rejected(reason, 'E_REFUSED' as ErrorCode) }));
                }
              })(),
            ),
          close: () => inner.close(),
        };
      },
    };
    const refusal = sinkConformanceCases(subjectOf(ownCodes)).find((c) => c.name.startsWith('a record-level refusal'))!;
    await expect(refusal.run()).rejects.toThrow(/rejected\(\) was called with codes that are not logferry error codes: E_REFUSED/);
  }, 30_000);

  it('a sink that acknowledges before sending fails the first case', async () => {
    const [first] = sinkConformanceCases(subjectOf(brokenSink));
    await expect(first!.run()).rejects.toThrow(/acknowledged before the destination's 2xx answer/);
  });
});
