import assert from 'node:assert/strict';
import { setMaxListeners } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import type { z } from 'zod';
import { silentLogger, type Logger } from '../engine/logger.js';
import { Metrics } from '../engine/metrics.js';
import type { ComponentDefinition, Delivery, JsonObject, LogRecord, SinkContext } from '../engine/types.js';
import { SinkState } from '../engine/sink-state.js';
import { contentDigest } from '../records/canonical.js';
import { isErrorCode, LogferryError, type ErrorCode } from '../errors.js';
import { faultPlans, startFaultProxy, type Fault, type FaultPlan, type FaultProxy, type RecordIds } from './fault-proxy.js';
import { startReceiver } from './receiver.js';

/**
 * A sink to put through the conformance cases.
 *
 * The cases inject slow answers and throttling, so `options(url)` should make the sink quick to
 * give up on a request and quick to retry: a request timeout of about 1000 ms (and say so in
 * `requestTimeoutMs`) and an initial backoff of about 10 ms. With production defaults (30 s
 * timeouts, 100 ms backoffs) the cases still hold but exceed their time limits.
 */
export interface SinkUnderTest<S extends z.ZodType = z.ZodType> {
  definition: ComponentDefinition<'sink', S>;
  /** Raw options (before schema parsing) for a sink sending to `url` (the fault proxy in front of the destination). */
  options(url: string): Record<string, unknown>;
  /** Destination to forward to; defaults to a receiver from startReceiver() (200 to everything). */
  destination?: () => Promise<{ url: string; close(): Promise<void> }>;
  /**
   * Builds the record with this id; defaults to jobRecord. The proxy recognises a record by a
   * numeric `id` in the documents it sends (top level, or one level deep inside an envelope), in
   * a JSON, JSON array or NDJSON body, gzip allowed: keep `doc.id` and such a body format.
   */
  record?: (id: number) => LogRecord;
  /**
   * How the proxy reads record ids out of the sink's request bodies, when they are not JSON, JSON
   * array or NDJSON documents with a numeric `id` (e.g. OTLP protobuf). See FaultProxyOptions.recordIds.
   */
  recordIds?: RecordIds;
  /** The request timeout `options()` sets; slow answers are held longer than this. Default 1000. */
  requestTimeoutMs?: number;
  /** Where the sink's log lines go while the cases run; silent by default. */
  log?: Logger;
  /**
   * Multiplies every time limit of the cases (each case's test timeout, how long run() may take,
   * how long held records may go without a retry): 1 (the default) suits a sink with a ~1 s
   * request timeout on a local receiver; give 2 to 10 for a sink whose requests are slow by
   * design (a large minimum batch wait, a slow client library) or a heavily loaded CI machine.
   * From 1 to 100.
   */
  timeScale?: number;
  /**
   * How long run() may take to resolve after ctx.signal aborts (the shutdown case), in ms. Default
   * 5000, from 100 to 600000; keep it below the engine's `shutdown_timeout` your users set.
   * Not multiplied by timeScale: it is the promise the sink makes to the engine.
   */
  shutdownLimitMs?: number;
}

/** The time limits of the cases, as SinkUnderTest's timeScale and shutdownLimitMs set them. */
function conformanceTimes(subject: { timeScale?: number; shutdownLimitMs?: number }): { scaled(ms: number): number; shutdownLimitMs: number } {
  const scale = subject.timeScale ?? 1;
  if (!Number.isFinite(scale) || scale < 1 || scale > 100) throw new LogferryError('LF_TESTKIT_MISUSE', `SinkUnderTest.timeScale must be a number from 1 to 100, got ${scale}`);
  const shutdownLimitMs = subject.shutdownLimitMs ?? 5_000;
  if (!Number.isInteger(shutdownLimitMs) || shutdownLimitMs < 100 || shutdownLimitMs > 600_000) {
    throw new LogferryError('LF_TESTKIT_MISUSE', `SinkUnderTest.shutdownLimitMs must be a whole number of ms from 100 to 600000, got ${shutdownLimitMs}`);
  }
  return { scaled: (ms) => Math.round(ms * scale), shutdownLimitMs };
}

export interface ConformanceCase {
  name: string;
  /** Resolves when the sink conforms; otherwise rejects with an Error that says what went wrong. */
  run(): Promise<void>;
  timeoutMs: number;
}

export interface RejectedRecord {
  record: LogRecord;
  reason: string;
  /** As the sink passed it: a sink written in JavaScript may pass a code that is not an ErrorCode (assertContract fails then). */
  code: string | undefined;
}

export interface DriveResult {
  /** Records acknowledged with delivered(), in that order (first settlement of each delivery only). */
  delivered: LogRecord[];
  rejected: RejectedRecord[];
  /** Records neither delivered nor rejected when run() resolved. */
  unsettled: LogRecord[];
  /** Calls to delivered()/rejected() on a delivery that was already settled. */
  settledTwice: number;
  /** Settlements after run() had resolved: run() must wait for every delivery it took. */
  settledAfterRun: number;
  /** Date.now() when run() resolved. */
  runEndedAt: number;
  metrics: Metrics;
}

export interface DriveOptions {
  /** Becomes ctx.signal; abort it to stop the sink as the engine does on shutdown. */
  signal?: AbortSignal;
  log?: Logger;
  /**
   * Runs synchronously inside each first delivered() call, so it sees the world as it is when the
   * sink acknowledges. It should record, not throw: a throw lands in the sink's own code.
   */
  onDelivered?: (record: LogRecord) => void;
  /** How many batches the records are split into. Default 4. */
  batches?: number;
}

/** Progress of a drive still under way, for messages when a sink hangs. */
interface DriveProgress {
  delivered: number;
  rejected: number;
  total: number;
}

const JOB_EPOCH = Date.UTC(2026, 0, 1);

/** A finished job, as the job_log_tail source would emit it, with a key set as by path_format. */
export function jobRecord(id: number, extra: JsonObject = {}): LogRecord {
  const started = JOB_EPOCH + id * 60_000;
  const doc: JsonObject = {
    id,
    flow_id: 1000 + (id % 17),
    status: 'succeeded',
    started_at: new Date(started).toISOString(),
    finished_at: new Date(started + 1500 + (id % 7) * 100).toISOString(),
    steps: [{ name: 'build', status: 'succeeded', duration_ms: 1200 + (id % 5) * 10 }],
    ...extra,
  };
  doc.id = id;
  return {
    kind: 'job',
    doc,
    origin: { source: 'conformance', file: 'conformance.ndjson', offset: id * 256 },
    key: `conformance/${id}.json`,
    receivedDigest: contentDigest(doc),
  };
}

function startDrive<S extends z.ZodType>(
  definition: ComponentDefinition<'sink', S>,
  rawOptions: Record<string, unknown>,
  records: readonly LogRecord[],
  opts: DriveOptions = {},
): { progress: DriveProgress; done: Promise<DriveResult> } {
  const kind: string = definition.kind;
  if (kind !== 'sink') throw new LogferryError('LF_TESTKIT_MISUSE', `driveSink: "${definition.type}" is a ${kind}, not a sink; pass a definition made with defineSink`);
  const delivered: LogRecord[] = [];
  const rejected: RejectedRecord[] = [];
  const settled = new Set<number>();
  const progress: DriveProgress = { delivered: 0, rejected: 0, total: records.length };
  let settledTwice = 0;
  let settledAfterRun = 0;
  let runEnded = false;

  const settle = (index: number): boolean => {
    if (settled.has(index)) {
      settledTwice++;
      return false;
    }
    if (runEnded) settledAfterRun++;
    settled.add(index);
    return true;
  };
  const deliveries: Delivery[] = records.map((record, index) => ({
    record,
    delivered() {
      if (!settle(index)) return;
      opts.onDelivered?.(record);
      delivered.push(record);
      progress.delivered++;
    },
    rejected(reason: string, code?: ErrorCode) {
      if (!settle(index)) return;
      rejected.push({ record, reason, code });
      progress.rejected++;
    },
  }));

  const batchCount = Math.max(1, opts.batches ?? 4);
  const size = Math.max(1, Math.ceil(deliveries.length / batchCount));
  async function* input(): AsyncGenerator<Delivery[]> {
    for (let i = 0; i < deliveries.length; i += size) {
      // Later batches arrive while the sink works on earlier ones, as from the engine's channel.
      await nextTurn();
      yield deliveries.slice(i, i + size);
    }
  }

  const done = (async (): Promise<DriveResult> => {
    const dataDir = await mkdtemp(join(tmpdir(), 'logferry-testkit-'));
    try {
      const options = definition.schema.parse(rawOptions) as z.output<S>;
      const metrics = new Metrics();
      const log = opts.log ?? silentLogger;
      const ctx: SinkContext = {
        id: 'sink-under-test',
        log,
        metrics,
        signal: opts.signal ?? new AbortController().signal,
        dataDir,
        state: new SinkState('sink-under-test', log),
      };
      const sink = await definition.build(options, ctx);
      let unsettled: LogRecord[];
      let runEndedAt: number;
      try {
        await sink.run(input());
        runEnded = true;
        runEndedAt = Date.now();
        unsettled = records.filter((_, i) => !settled.has(i));
      } finally {
        await sink.close?.();
      }
      return { delivered, rejected, unsettled, settledTwice, settledAfterRun, runEndedAt, metrics };
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  })();
  return { progress, done };
}

/**
 * Builds the sink as the engine does (schema.parse, then build with a context), feeds it the
 * records as a few Delivery batches, awaits run(), then close(), and reports how each record settled.
 */
export function driveSink<S extends z.ZodType>(
  definition: ComponentDefinition<'sink', S>,
  rawOptions: Record<string, unknown>,
  records: readonly LogRecord[],
  opts: DriveOptions = {},
): Promise<DriveResult> {
  return startDrive(definition, rawOptions, records, opts).done;
}

const idOf = (record: LogRecord): number => {
  const id = record.doc.id;
  if (typeof id !== 'number') throw new LogferryError('LF_TESTKIT_MISUSE', `conformance records need a numeric doc.id, got ${JSON.stringify(id)}: a subject's record(id) must return a record whose doc.id is that id`);
  return id;
};

const sample = (values: readonly (string | number)[], max = 10): string =>
  values.slice(0, max).join(', ') + (values.length > max ? `, … (${values.length} in all)` : '');

/** Polls `condition` until it holds (true) or `timeoutMs` passes (false). */
async function waitUntil(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

const range = (from: number, count: number): number[] => Array.from({ length: count }, (_, i) => from + i);

interface Rig {
  proxy: FaultProxy;
  /** Stops the sink as the engine does on shutdown (aborts ctx.signal). */
  abort(): void;
  records: LogRecord[];
  /** Runs the sink with a deadline, so a hanging sink fails with a message instead of a test timeout. */
  drive(opts?: Pick<DriveOptions, 'onDelivered'>, deadlineMs?: number): Promise<DriveResult>;
  /** For a case's onDelivered: ids acknowledged before the proxy had passed their 2xx answer on. */
  earlyAcks: number[];
  checkEarlyAck(record: LogRecord): void;
}

function describeExchanges(proxy: FaultProxy, max = 8): string {
  return proxy.exchanges
    .slice(-max)
    .map((e) => `#${e.index} ${e.method} ${e.url} ids=[${sample(e.ids, 5)}] fault=${e.fault.kind} status=${e.status ?? '-'} ${e.outcome}`)
    .join('\n  ');
}

async function withRig<S extends z.ZodType>(subject: SinkUnderTest<S>, plan: FaultPlan, count: number, body: (rig: Rig) => Promise<void>): Promise<void> {
  const destination = await (subject.destination ?? startReceiver)();
  let proxy: FaultProxy | undefined;
  const controller = new AbortController();
  // A sink with 32 requests in flight rightly has 32 abort listeners on ctx.signal; Node warns past 10.
  setMaxListeners(1000, controller.signal);
  try {
    proxy = await startFaultProxy({ upstream: destination.url, plan, ...(subject.recordIds ? { recordIds: subject.recordIds } : {}) });
    const makeRecord = subject.record ?? ((id: number) => jobRecord(id));
    const records = range(1, count).map(makeRecord);
    records.forEach(idOf);
    const p = proxy;
    const earlyAcks: number[] = [];
    const rig: Rig = {
      proxy: p,
      abort: () => controller.abort(),
      records,
      earlyAcks,
      checkEarlyAck(record) {
        const id = idOf(record);
        if (!p.acknowledgedIds.has(id)) earlyAcks.push(id);
      },
      async drive(opts = {}, deadlineMs = 20_000) {
        const { progress, done } = startDrive(subject.definition, subject.options(p.url), records, {
          ...opts,
          signal: controller.signal,
          log: subject.log ?? silentLogger,
        });
        const deadline = new AbortController();
        const timedOut = sleep(deadlineMs, 'timeout' as const, { signal: deadline.signal }).catch(() => 'cancelled' as const);
        // The drive goes on in the background after a timeout; its failure must not go unhandled.
        done.catch(() => undefined);
        const first = await Promise.race([done, timedOut]);
        deadline.abort();
        if (first === 'timeout' || first === 'cancelled') {
          assert.fail(
            `run() did not resolve within ${deadlineMs / 1000}s: ${progress.delivered} delivered, ${progress.rejected} rejected, ` +
              `${progress.total - progress.delivered - progress.rejected} of ${progress.total} still unsettled. Last requests:\n  ${describeExchanges(p)}`,
          );
        }
        return first;
      },
    };
    await body(rig);
  } finally {
    // Stops a sink that is still retrying after a failed case, so nothing outlives the case.
    controller.abort();
    await proxy?.close();
    await destination.close();
  }
}

/** What every case checks: the Delivery contract itself. */
function assertContract(result: DriveResult): void {
  assert.equal(result.settledTwice, 0, `${result.settledTwice} deliveries were settled more than once: call exactly one of delivered()/rejected() per delivery, once`);
  assert.equal(
    result.settledAfterRun,
    0,
    `${result.settledAfterRun} deliveries were settled after run() had resolved: run() must wait for every delivery it took`,
  );
  const unknownCodes = [...new Set(result.rejected.map((r) => r.code).filter((code) => code !== undefined && !isErrorCode(code)))];
  assert.deepEqual(
    unknownCodes,
    [],
    `rejected() was called with codes that are not logferry error codes: ${unknownCodes.join(', ')}; pass an ErrorCode (usually LF_SINK_REJECTED, or none), the pipeline would dead-letter these as LF_SINK_REJECTED`,
  );
}

function assertAllDelivered(result: DriveResult, records: readonly LogRecord[]): void {
  assert.equal(
    result.rejected.length,
    0,
    `${result.rejected.length} records were rejected, none should be: ${sample(result.rejected.map((r) => `${idOf(r.record)} (${r.reason})`), 3)}`,
  );
  assert.equal(result.unsettled.length, 0, `${result.unsettled.length} records were left unsettled: ids ${sample(result.unsettled.map(idOf))}`);
  const deliveredIds = new Set(result.delivered.map(idOf));
  const missing = records.map(idOf).filter((id) => !deliveredIds.has(id));
  assert.equal(missing.length, 0, `${missing.length} records were never delivered: ids ${sample(missing)}`);
  assert.equal(result.delivered.length, records.length, `expected ${records.length} deliveries, got ${result.delivered.length}`);
}

function assertNoEarlyAck(rig: Rig): void {
  if (rig.earlyAcks.length === 0) return;
  // Otherwise a body format the proxy cannot read would pass for early acknowledgements.
  const unreadable = rig.proxy.exchanges.filter((e) => e.acknowledged && e.ids.length === 0).length;
  const hint =
    unreadable > 0
      ? ` (${unreadable} successful requests carried no record id the proxy could read: the kit needs JSON, JSON array or NDJSON bodies whose documents keep the numeric \`id\`)`
      : '';
  assert.fail(
    `${rig.earlyAcks.length} records were acknowledged before the destination's 2xx answer had reached the sink (ids ${sample(rig.earlyAcks)}): ` +
      `call delivered() only after reading a success answer to the request that carried the record${hint}`,
  );
}

/**
 * The cases every sink must pass, whatever its destination: run each one as a test, e.g. with
 * vitest `for (const c of sinkConformanceCases(subject)) it(c.name, c.run, c.timeoutMs)`.
 */
export function sinkConformanceCases<S extends z.ZodType>(subject: SinkUnderTest<S>): ConformanceCase[] {
  const timeoutMs = subject.requestTimeoutMs ?? 1000;
  // Past any client timeout that is really `timeoutMs`, even with coarse timers (undici's tick is ~0.5 s).
  const slowMs = timeoutMs + 1500;
  const { scaled, shutdownLimitMs } = conformanceTimes(subject);

  return [
    {
      name: 'delivers every record and acknowledges each exactly once, only after a success answer',
      timeoutMs: scaled(30_000),
      run: () =>
        withRig(subject, faultPlans.none, 200, async (rig) => {
          const result = await rig.drive({ onDelivered: (r) => rig.checkEarlyAck(r) }, scaled(25_000));
          assertContract(result);
          assertNoEarlyAck(rig);
          assertAllDelivered(result, rig.records);
        }),
    },
    {
      name: 'retries throttling, dropped connections and slow answers until every record arrives',
      timeoutMs: scaled(60_000),
      run: () => {
        const unavailable: Fault = { kind: 'status', status: 503, retryAfter: '1', body: 'service unavailable (fault proxy)' };
        // One fault of each kind first, so the case holds for a sink that sends all records in a few requests.
        const plan = faultPlans.sequence([unavailable, { kind: 'drop' }, { kind: 'delay', ms: slowMs }], faultPlans.mixed({ unavailable: 0.3, drop: 0.05, slow: 0.05, slowMs, seed: 20260101 }));
        return withRig(subject, plan, 200, async (rig) => {
          const result = await rig.drive({ onDelivered: (r) => rig.checkEarlyAck(r) }, scaled(55_000));
          assertContract(result);
          assertNoEarlyAck(rig);
          assertAllDelivered(result, rig.records);
          const { status, drop, delay } = rig.proxy.faultsByKind;
          assert.ok(status > 0 && drop > 0 && delay > 0, `the proxy should have injected each kind of fault, saw 503: ${status}, drop: ${drop}, delay: ${delay}`);
        });
      },
    },
    {
      name: 'a record-level refusal (400 about the body) rejects only the records it concerns',
      timeoutMs: scaled(30_000),
      run: () =>
        withRig(subject, faultPlans.rejectWhen((r) => r.ids.includes(7), 400, 'record 7 is malformed'), 30, async (rig) => {
          const result = await rig.drive({}, scaled(25_000));
          assertContract(result);
          assert.equal(result.unsettled.length, 0, `${result.unsettled.length} records were left unsettled: ids ${sample(result.unsettled.map(idOf))}`);
          const seven = result.rejected.find((r) => idOf(r.record) === 7);
          assert.ok(seven, `record 7 got a 400 answer but was not rejected${result.delivered.some((r) => idOf(r) === 7) ? ' (it was delivered)' : ''}`);
          assert.match(seven.reason, /400/, `record 7's rejection reason should name the status 400, got ${JSON.stringify(seven.reason)}`);
          // Records that shared a request with 7 may go down with it (one answer covers the batch), others may not.
          const sharedWith7 = new Set(rig.proxy.exchanges.filter((e) => e.ids.includes(7)).flatMap((e) => e.ids));
          assert.ok(sharedWith7.size > 0, 'no request carried record 7: the proxy found no numeric `id` 7 in any body');
          const wronglyRejected = result.rejected.map((r) => idOf(r.record)).filter((id) => !sharedWith7.has(id));
          assert.equal(
            wronglyRejected.length,
            0,
            `records never sent together with record 7 were rejected: ids ${sample(wronglyRejected)} (reason: ${result.rejected.find((r) => idOf(r.record) !== 7)?.reason ?? ''})`,
          );
          const deliveredIds = new Set(result.delivered.map(idOf));
          const notDelivered = rig.records.map(idOf).filter((id) => !sharedWith7.has(id) && !deliveredIds.has(id));
          assert.equal(notDelivered.length, 0, `records never sent together with record 7 were not delivered: ids ${sample(notDelivered)}`);
        }),
    },
    {
      name: 'a destination-level refusal (403 for every request) holds every record: none rejected; delivered once the destination answers',
      timeoutMs: scaled(40_000),
      run: () => {
        let refusing = true;
        const refusedAt: number[] = [];
        const plan: FaultPlan = (request) => {
          if (!refusing) return faultPlans.none(request);
          refusedAt.push(Date.now());
          return { kind: 'status', status: 403, body: 'forbidden: the credentials may not write here (fault proxy)' };
        };
        return withRig(subject, plan, 30, async (rig) => {
          let deliveredWhileRefused = 0;
          const driving = rig.drive(
            {
              onDelivered: (record) => {
                if (refusing) deliveredWhileRefused++;
                rig.checkEarlyAck(record);
              },
            },
            scaled(35_000),
          );
          // Refused for a while: past the first wave of requests, the held records are retried.
          const heldMs = 500;
          const retried = await waitUntil(() => refusedAt.length > 0 && refusedAt[refusedAt.length - 1]! - refusedAt[0]! >= heldMs, scaled(15_000));
          refusing = false;
          const result = await driving;
          assert.ok(
            retried,
            `the sink sent no request ${heldMs} ms or more after its first 403 (${refusedAt.length} requests in ${scaled(15_000) / 1000} s): a held record must be retried until the destination answers`,
          );
          assertContract(result);
          assert.equal(deliveredWhileRefused, 0, `${deliveredWhileRefused} records were acknowledged while every answer was a 403`);
          assert.equal(
            result.rejected.length,
            0,
            `${result.rejected.length} records were rejected on a 403, which refuses every record alike (credentials, permissions): they must be held and retried, not dead-lettered (reason: ${result.rejected[0]?.reason ?? ''})`,
          );
          assertNoEarlyAck(rig);
          assertAllDelivered(result, rig.records);
        });
      },
    },
    {
      name: 'drains on shutdown: stops retrying when aborted, leaving records unacknowledged',
      timeoutMs: scaled(15_000) + shutdownLimitMs,
      run: () =>
        withRig(subject, faultPlans.always({ kind: 'status', status: 503, retryAfter: '0', body: 'service unavailable (fault proxy)' }), 20, async (rig) => {
          let abortedAt = 0;
          const timer = setTimeout(() => {
            abortedAt = Date.now();
            rig.abort();
          }, 300);
          let result: DriveResult;
          try {
            result = await rig.drive({}, 300 + shutdownLimitMs);
          } catch (err) {
            assert.fail(`run() must resolve within ${shutdownLimitMs} ms of the abort (retries must end on ctx.signal; SinkUnderTest.shutdownLimitMs sets the limit): ${(err as Error).message}`);
          } finally {
            clearTimeout(timer);
          }
          assertContract(result);
          assert.ok(abortedAt > 0, 'run() resolved before the abort although every answer was a 503: the sink gave up on its own');
          assert.ok(result.runEndedAt - abortedAt <= shutdownLimitMs, `run() resolved ${result.runEndedAt - abortedAt} ms after the abort; the limit is ${shutdownLimitMs} ms`);
          assert.ok(rig.proxy.requests > 0, 'the sink sent no request at all, so this case proves nothing');
          assert.equal(
            result.delivered.length,
            0,
            `${result.delivered.length} records were acknowledged although every answer was a 503: ids ${sample(result.delivered.map(idOf))}`,
          );
          assert.equal(
            result.rejected.length,
            0,
            `${result.rejected.length} records were rejected on shutdown; they must stay unsettled so they are read again after a restart (reason: ${result.rejected[0]?.reason ?? ''})`,
          );
          const after = rig.proxy.requests;
          await sleep(300);
          assert.equal(rig.proxy.requests, after, `the sink sent ${rig.proxy.requests - after} more requests after run() and close() had resolved`);
        }),
    },
  ];
}
