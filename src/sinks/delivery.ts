import { z } from 'zod';
import { HOUR_MS, MINUTE_MS } from '../config/limits.js';
import { waitOrAbort } from '../engine/retry.js';
import { errorMessage, type ErrorCode } from '../errors.js';
import type { SinkState } from '../engine/sink-state.js';
import type { Delivery } from '../engine/types.js';

/** A limit an operator may set on how long a record is held through an outage (at most 7 days). */
const MAX_RETRY_DURATION_S = 7 * 24 * 3600;

export const retrySchema = z
  .object({
    initial_backoff_ms: z
      .number()
      .int()
      .positive()
      .max(MINUTE_MS)
      .default(100)
      .describe('First retry delay; it doubles per attempt, with full jitter (at most 1 minute).'),
    max_backoff_ms: z.number().int().positive().max(HOUR_MS).default(30_000).describe('Largest delay between two attempts (at most 1 hour).'),
    max_duration_s: z
      .number()
      .positive()
      .max(MAX_RETRY_DURATION_S)
      .optional()
      .describe(
        'Unset (the default): a record is held for as long as its destination fails. Set: a record whose destination still fails after this long goes to the dead letters with LF_SINK_RETRY_EXPIRED (at most 7 days).',
      ),
  })
  .strict();

/** The longest Retry-After honoured when max_backoff_ms is smaller. */
const MAX_RETRY_AFTER_MS = 5 * 60_000;
/** setTimeout fires at once beyond this. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * `healthcheck: { enabled }` of a sink whose check has no options of its own; `what` says what it
 * checks (shown in the JSON Schema and the docs).
 */
export function healthcheckEnabledSchema(what: string) {
  return z
    .object({ enabled: z.boolean().default(true).describe(what) })
    .strict()
    .prefault({});
}

export type RetryOptions = z.output<typeof retrySchema>;

export const retryDefaults = (overrides: Partial<RetryOptions> = {}): RetryOptions => ({
  initial_backoff_ms: 100,
  max_backoff_ms: 30_000,
  ...overrides,
});

/**
 * What one attempt's answer means, decided per answer:
 * - `ok`: delivered;
 * - `record`: only this record can never be accepted (a 400 about its body, an S3 key too long):
 *   it goes to the dead letters, with `code` (default LF_SINK_REJECTED);
 * - `destination`: every record would fail the same way (credentials, a missing bucket, 5xx,
 *   timeouts): the record is held and the destination probed until it answers. `blocked` says
 *   only an operator can fix it; `advice` what to check; `afterMs` the server's Retry-After.
 */
export type Verdict =
  | { kind: 'ok' }
  | {
      kind: 'record';
      reason: string;
      code?: ErrorCode;
      /**
       * For a batch, how to find the records at fault: `halves` (the default) splits it like a
       * refused body; `singly` sends each record once more on its own, for a server that accepted
       * part of the batch (so an accepted record reaches it at most twice).
       */
      resend?: 'halves' | 'singly';
    }
  | { kind: 'destination'; reason: string; afterMs?: number; blocked?: boolean; advice?: string };

/** The verdicts a record ends with: destination-level failures are retried, never final (unless max_duration_s expires). */
export type FinalVerdict = Exclude<Verdict, { kind: 'destination' }>;

/** How a destination's failing HTTP status is handled: see statusFailureClass. */
export type StatusFailureClass = 'record' | 'transient' | 'blocked';

/**
 * The statuses with a class of their own. 400 Bad Request, 409 Conflict, 413 Content Too Large and
 * 422 Unprocessable Content are about the request's body, so about this record (or batch) only.
 * 408, 425 and 429 say the destination cannot take it now and will pass by themselves, as 5xx do.
 * Every other failing status (401, 403, 404, 405, 407, 3xx) says the destination refuses
 * everything until an operator acts: blocked.
 */
const STATUS_FAILURE_CLASS: ReadonlyMap<number, StatusFailureClass> = new Map([
  [400, 'record'],
  [409, 'record'],
  [413, 'record'],
  [422, 'record'],
  [408, 'transient'],
  [425, 'transient'],
  [429, 'transient'],
]);

/** The failure class of an HTTP status that is not 2xx. */
export function statusFailureClass(status: number): StatusFailureClass {
  return STATUS_FAILURE_CLASS.get(status) ?? (status >= 500 ? 'transient' : 'blocked');
}

/** 408, 425, 429 and 5xx pass by themselves; kept for plugin sinks that use it. */
export function isRetryableStatus(status: number): boolean {
  return statusFailureClass(status) === 'transient';
}

/** `Retry-After` as seconds or an HTTP date, in milliseconds from now (undefined when absent or bad). */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (!text) return undefined;
  if (/^\d+(\.\d+)?$/.test(text.trim())) return Math.round(Number(text) * 1000);
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/**
 * Runs tasks with at most `limit` at a time: `run` returns once its task has started, after waiting
 * for a free slot (awaiting it is the backpressure on the input), and `drain` waits for every task.
 *
 * A task names the deliveries it settles. Tasks turn every destination failure into a verdict, so
 * an exception out of one is a bug in the sink's handling of those records: they go to the dead
 * letters (LF_SINK_REJECTED, the exception in the reason) and the sink goes on. No rejection ever
 * leaves the limit, where nobody would await it and it would end the process.
 */
export class ConcurrencyLimit {
  private readonly running = new Set<Promise<void>>();
  constructor(private readonly limit: number) {}

  async run(settles: readonly Delivery[], task: () => Promise<void>): Promise<void> {
    while (this.running.size >= this.limit) await Promise.race(this.running);
    const promise: Promise<void> = guarded(settles, task).finally(() => this.running.delete(promise));
    this.running.add(promise);
  }

  async drain(): Promise<void> {
    await Promise.all(this.running);
  }
}

async function guarded(settles: readonly Delivery[], task: () => Promise<void>): Promise<void> {
  try {
    await task();
  } catch (err) {
    const count = settles.length;
    const reason = `the sink failed while handling ${count === 1 ? 'this record' : `a batch of ${count} records`} (a bug: please report it with this message): ${errorMessage(err)}`;
    // Deliveries the task settled before it threw keep their first answer (settling is idempotent).
    for (const delivery of settles) delivery.rejected(reason, 'LF_SINK_REJECTED');
  }
}

/** Settles deliveries with a final verdict: delivered, or dead-lettered with the verdict's code. */
export function settleAll(deliveries: readonly Delivery[], verdict: FinalVerdict): void {
  if (verdict.kind === 'ok') for (const d of deliveries) d.delivered();
  else for (const d of deliveries) d.rejected(verdict.reason, verdict.code ?? 'LF_SINK_REJECTED');
}

/**
 * Removes credentials and tokens from a URL before it is logged. Any path segment may be a token
 * (a webhook's is often the first), so each shows as `…`, which keeps the path's shape readable:
 * `https://host/…/…/…?…`.
 */
export function safeUrl(url: string | URL): string {
  try {
    const u = new URL(url);
    const path = u.pathname
      .split('/')
      .map((segment) => (segment === '' ? '' : '…'))
      .join('/');
    return `${u.protocol}//${u.host}${path}${u.search ? '?…' : ''}`;
  } catch {
    return '(invalid url)';
  }
}

export interface RetryLoopOptions {
  retry: RetryOptions;
  signal: AbortSignal;
  /** The sink's state (ctx.state): the gate deliveries wait at while the destination fails. */
  state: SinkState;
  /** Called before each wait, for a debug line (the sink state logs what the operator needs). */
  onRetry?: (reason: string, attempt: number, delayMs: number) => void;
}

/**
 * Calls `attempt` until it gives a final verdict. A destination-level failure holds the record:
 * the sink's state turns `retrying` or `blocked`, this delivery becomes the probe (or waits at the
 * gate behind the one that is), and it tries again with capped backoff and full jitter (or the
 * server's Retry-After, whichever is longer) for as long as the destination fails. Only when the
 * operator set `retry.max_duration_s` does a record held longer than that end as a dead letter
 * (LF_SINK_RETRY_EXPIRED). Returns 'aborted' on shutdown: the records stay unacknowledged and are
 * read again after the restart, which is what at-least-once delivery needs.
 */
export async function retryUntilFinal(attempt: () => Promise<Verdict>, options: RetryLoopOptions): Promise<FinalVerdict | 'aborted'> {
  const { state, signal, retry } = options;
  const caller = {};
  const started = Date.now();
  const deadline = retry.max_duration_s === undefined ? Infinity : started + retry.max_duration_s * 1000;
  let lastReason: string | undefined;
  const expired = (): FinalVerdict => ({
    kind: 'record',
    code: 'LF_SINK_RETRY_EXPIRED',
    reason: `the destination still failed after retry.max_duration_s (${retry.max_duration_s}s): ${lastReason ?? state.status().reason ?? 'no answer'}`,
  });
  try {
    for (let tries = 0; ; tries++) {
      const turn = await state.turn(caller, signal, deadline);
      if (turn === 'aborted') return 'aborted';
      if (turn === 'expired') return expired();
      const verdict = await attempt();
      if (verdict.kind !== 'destination') {
        state.answered(caller);
        return verdict;
      }
      // A request cut off by the shutdown says nothing about the destination.
      if (signal.aborted) return 'aborted';
      lastReason = verdict.reason;
      const backoff = state.failed(caller, verdict, retry);
      const remaining = deadline - Date.now();
      if (remaining <= 0) return expired();
      // A server's Retry-After is honoured up to 5 minutes (or max_backoff_ms when larger): an hour
      // would hold every record behind one sleeping probe, and beyond 2^31-1 ms a timer fires at once.
      const asked = Math.min(verdict.afterMs ?? 0, Math.max(retry.max_backoff_ms, MAX_RETRY_AFTER_MS));
      const delay = Math.min(remaining, Math.max(backoff, asked), MAX_TIMER_MS);
      options.onRetry?.(verdict.reason, tries + 1, delay);
      if (!(await waitOrAbort(delay, signal))) return 'aborted';
    }
  } finally {
    state.leave(caller);
  }
}
