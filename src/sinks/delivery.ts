import { z } from 'zod';
import { HOUR_MS, MINUTE_MS } from '../config/limits.js';
import { backoffDelay, waitOrAbort } from '../engine/retry.js';
import type { Delivery } from '../engine/types.js';

/** A week of retries outlasts any outage worth waiting for; the records hold the buffer meanwhile. */
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
      .default(600)
      .describe('After this long a record that still fails goes to the dead letters (at most 7 days).'),
  })
  .strict();

export type RetryOptions = z.output<typeof retrySchema>;

export const retryDefaults = (overrides: Partial<RetryOptions> = {}): RetryOptions => ({
  initial_backoff_ms: 100,
  max_backoff_ms: 30_000,
  max_duration_s: 600,
  ...overrides,
});

/** What a sink does with an answer: deliver, try again later, or give up (dead letter). */
export type Verdict = { kind: 'ok' } | { kind: 'retry'; reason: string; afterMs?: number } | { kind: 'permanent'; reason: string };

/** 408, 429 and 5xx are worth another try; any other 4xx will fail the same way again. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

/** `Retry-After` as seconds or an HTTP date, in milliseconds from now (undefined when absent or bad). */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (!text) return undefined;
  if (/^\d+(\.\d+)?$/.test(text.trim())) return Math.round(Number(text) * 1000);
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** Runs tasks with at most `limit` at a time; `run` waits for a free slot (backpressure on the input). */
export class ConcurrencyLimit {
  private readonly running = new Set<Promise<void>>();
  constructor(private readonly limit: number) {}

  async run(task: () => Promise<void>): Promise<void> {
    while (this.running.size >= this.limit) await Promise.race(this.running);
    const promise: Promise<void> = task().finally(() => this.running.delete(promise));
    this.running.add(promise);
  }

  async drain(): Promise<void> {
    await Promise.all(this.running);
  }
}

export function settleAll(deliveries: readonly Delivery[], verdict: Verdict, code = 'LF_SINK_REJECTED'): void {
  if (verdict.kind === 'ok') for (const d of deliveries) d.delivered();
  else if (verdict.kind === 'permanent') for (const d of deliveries) d.rejected(verdict.reason, code);
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
  /** Called before each wait, for the log line. */
  onRetry?: (reason: string, attempt: number, delayMs: number) => void;
}

/**
 * Calls `attempt` until it gives a final verdict, waiting with backoff and full jitter (or the
 * server's Retry-After, whichever is longer) between tries. After `max_duration_s` a retryable
 * failure becomes permanent. Returns 'aborted' on shutdown: the records stay unacknowledged and
 * are read again after the restart, which is what at-least-once delivery needs.
 */
export async function retryUntilFinal(attempt: () => Promise<Verdict>, options: RetryLoopOptions): Promise<Verdict | 'aborted'> {
  const started = Date.now();
  const deadline = started + options.retry.max_duration_s * 1000;
  for (let tries = 0; ; tries++) {
    if (options.signal.aborted) return 'aborted';
    const verdict = await attempt();
    if (verdict.kind !== 'retry') return verdict;
    const remaining = deadline - Date.now();
    if (remaining <= 0) {
      return { kind: 'permanent', reason: `gave up after ${Math.round((Date.now() - started) / 1000)}s and ${tries + 1} attempts: ${verdict.reason}` };
    }
    const delay = Math.min(remaining, Math.max(backoffDelay(tries, options.retry), verdict.afterMs ?? 0));
    options.onRetry?.(verdict.reason, tries + 1, delay);
    if (!(await waitOrAbort(delay, options.signal))) return 'aborted';
  }
}
