import type { Logger } from './logger.js';
import { backoffDelay, type BackoffOptions } from './retry.js';

/**
 * What a sink's destination is doing, as the engine sees it:
 * - `healthy`: the last answer showed the destination works (a success, or a refusal of one record);
 * - `retrying`: it fails for every record, in a way that may pass by itself (5xx, 429, timeouts,
 *   refused or reset connections, a full disk);
 * - `blocked`: it fails for every record in a way that needs an operator (credentials refused or
 *   missing, no such bucket or uri, TLS, DNS, a redirect to another region, permissions).
 * In both failing states the sink holds its records: nothing is acknowledged or dead-lettered.
 */
export type SinkStateName = 'healthy' | 'retrying' | 'blocked';

/** Why a destination-level attempt failed: `transient` (5xx, 429, timeouts, resets) or `blocked` (credentials, TLS, DNS, permissions). */
export type RetryReasonClass = 'transient' | 'blocked';

/** One sink's state, for the status line, the final summary and (later) /ready and /metrics. */
export interface SinkStatus {
  readonly sink: string;
  readonly state: SinkStateName;
  /** The destination's last failing answer (failing states only). */
  readonly reason?: string;
  /** What the operator should check (failing states only). */
  readonly advice?: string;
  /** When the current state began (ms since the epoch); for `healthy`, when the sink was built or last recovered. */
  readonly sinceMs: number;
  /** Attempts that failed since the current failing state began. */
  readonly failedAttempts: number;
  /** Records handed to the sink that have no answer yet (held ones included). */
  readonly pendingRecords: number;
}

/** A destination-level failure, as a sink's attempt reports it. */
export interface DestinationFailure {
  reason: string;
  /** True when only an operator can fix it (credentials, missing bucket, TLS): the state is `blocked`. */
  blocked?: boolean;
  /** What to check, said once when the sink enters the failing state. */
  advice?: string;
}

/** How often a failing sink reminds the log that it still holds records. */
export const REMINDER_INTERVAL_MS = 3 * 60_000;

/** Backoff between probes of a failing destination when the sink has no retry options of its own. */
export const PROBE_BACKOFF: BackoffOptions = { initial_backoff_ms: 100, max_backoff_ms: 30_000 };

/** Failed probes in a row before a `retrying` (not blocked) destination is logged as failing. */
export const ANNOUNCE_AFTER_PROBES = 3;

type Turn = 'go' | 'aborted' | 'expired';

/**
 * The engine's record of one sink's destination, and the gate its deliveries pass through. While
 * the destination fails, one delivery at a time (the probe) tries again with capped backoff; the
 * others wait at the gate instead of each retrying on its own, so an outage costs one request per
 * backoff step, not one per record in flight. The first answer that shows the destination works
 * opens the gate for all of them.
 *
 * It logs once when the sink starts failing (with the advice), a reminder with counts every
 * `reminderMs`, and once when it recovers: never a line per record or per attempt.
 */
export class SinkState {
  private state: SinkStateName = 'healthy';
  private sinceMs = Date.now();
  private reason: string | undefined;
  private advice: string | undefined;
  private failedAttempts = 0;
  /** Failed attempts of the probe since the state began: the backoff's exponent. */
  private probes = 0;
  /** The current failing state was logged (so its recovery and reminders are too). */
  private announced = false;
  private pending = 0;
  /** The delivery that probes the failing destination; the others wait for it. */
  private prober: object | undefined;
  private waiters = new Set<() => void>();
  private reminder: NodeJS.Timeout | undefined;
  private listeners = new Set<(status: SinkStatus) => void>();
  /** Once the pipeline gives up on the sink (shutdown), nothing more is logged about it. */
  private quiet = false;
  /** Failed attempts that will be tried again, by class: `transient` (may pass by itself) or `blocked` (needs an operator). */
  private readonly retries = { transient: 0, blocked: 0 };

  constructor(
    readonly sink: string,
    private readonly log: Logger,
    private readonly reminderMs = REMINDER_INTERVAL_MS,
  ) {}

  status(): SinkStatus {
    return {
      sink: this.sink,
      state: this.state,
      reason: this.reason,
      advice: this.advice,
      sinceMs: this.sinceMs,
      failedAttempts: this.failedAttempts,
      pendingRecords: this.pending,
    };
  }

  /** Failed attempts (every one is tried again while the destination fails), by reason class, since the sink was built. */
  retryCounts(): Readonly<Record<RetryReasonClass, number>> {
    return { ...this.retries };
  }

  get healthy(): boolean {
    return this.state === 'healthy';
  }

  /** Called with the new status at every change of state. */
  onChange(listener: (status: SinkStatus) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The engine counts the records it handed to the sink and their answers. */
  recordsQueued(n = 1): void {
    this.pending += n;
  }

  recordsAnswered(n = 1): void {
    this.pending -= n;
  }

  /**
   * Waits until `caller` may try: at once while the destination is healthy; while it fails, when
   * `caller` is (or becomes) the probe or the destination answers again. 'expired' when `deadline`
   * (ms since the epoch) passes first, 'aborted' when `signal` aborts.
   */
  turn(caller: object, signal: AbortSignal, deadline = Infinity): Promise<Turn> {
    if (signal.aborted) return Promise.resolve('aborted');
    if (this.state === 'healthy') return Promise.resolve('go');
    if (this.prober === caller) {
      // The probe failed and waited out its backoff: if others wait, the oldest probes next and
      // this one queues behind them. A record that alone gets a failing answer (a WAF refusing its
      // content) must not keep the probe for good while the others, which would pass, never try.
      const next = this.waiters.values().next();
      if (next.done) return Promise.resolve('go');
      this.prober = undefined;
      next.value();
    }
    if (this.prober === undefined) {
      this.prober = caller;
      return Promise.resolve('go');
    }
    if (Date.now() >= deadline) return Promise.resolve('expired');
    return new Promise<Turn>((resolve) => {
      const finish = (turn: Turn): void => {
        this.waiters.delete(wake);
        signal.removeEventListener('abort', onAbort);
        clearTimeout(timer);
        resolve(turn);
      };
      const wake = (): void => {
        if (this.state === 'healthy') finish('go');
        else if (this.prober === undefined) {
          this.prober = caller;
          finish('go');
        }
      };
      const onAbort = (): void => finish('aborted');
      const timer = deadline === Infinity ? undefined : setTimeout(() => finish('expired'), Math.min(deadline - Date.now(), 2 ** 31 - 1));
      this.waiters.add(wake);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** The destination answered in a way that shows it works (a success, or a refusal of this record only). */
  answered(caller: object): void {
    if (this.prober === caller) this.prober = undefined;
    if (this.state === 'healthy') return;
    // A probe asleep in its backoff while another delivery got through must not keep the role into the next outage.
    this.prober = undefined;
    const failing = { state: this.state, since: this.sinceMs, attempts: this.failedAttempts, reason: this.reason };
    this.state = 'healthy';
    this.sinceMs = Date.now();
    this.reason = undefined;
    this.advice = undefined;
    this.failedAttempts = 0;
    clearInterval(this.reminder);
    this.reminder = undefined;
    if (!this.quiet && this.announced) {
      this.log.info('the destination answers again; held records are being delivered', {
        code: 'LF_DESTINATION_FAILING',
        was: failing.state,
        failing_s: Math.round((Date.now() - failing.since) / 1000),
        failed_attempts: failing.attempts,
        last_reason: failing.reason,
      });
    }
    this.changed();
    this.wakeAll();
  }

  /**
   * An attempt of `caller` failed for a destination-level reason: `caller` becomes (or stays) the
   * probe, and the returned delay is how long it waits before its next attempt.
   */
  failed(caller: object, failure: DestinationFailure, backoff: BackoffOptions = PROBE_BACKOFF): number {
    if (this.prober === undefined) this.prober = caller;
    const state: SinkStateName = failure.blocked ? 'blocked' : 'retrying';
    const entering = this.state === 'healthy';
    if (entering) {
      this.probes = 0;
      this.announced = false;
      this.sinceMs = Date.now();
      this.reminder = setInterval(() => this.remind(), this.reminderMs).unref();
    }
    this.failedAttempts++;
    this.retries[failure.blocked ? 'blocked' : 'transient']++;
    this.reason = failure.reason;
    if (failure.advice !== undefined) this.advice = failure.advice;
    const changed = entering || state !== this.state;
    this.state = state;
    if (this.prober === caller) this.probes++;
    // A lone 503 or dropped connection that the next attempt gets past is routine (a debug line in
    // the sink): the operator hears of an outage once it needs an operator (blocked) or outlasts
    // a few probes, and then once, not per flap of a flaky receiver.
    const worthSaying = state === 'blocked' || this.probes >= ANNOUNCE_AFTER_PROBES;
    if (!this.quiet && worthSaying && (!this.announced || (changed && !entering))) {
      this.announced = true;
      const verb = state === 'blocked' ? 'is blocked' : 'is failing';
      this.log.warn(
        `the destination ${verb}; the sink holds its records (none is acknowledged or dead-lettered), reading pauses when the buffer is full, and it is probed until it answers${this.advice ? `. Check: ${this.advice}` : ''}`,
        { code: 'LF_DESTINATION_FAILING', state, reason: failure.reason, held_records: this.pending },
      );
    }
    if (changed) this.changed();
    // The other deliveries that were in flight when it started failing go and wait at the gate;
    // only the probe's attempts grow the backoff, so a short outage is not waited out for long.
    if (this.prober !== caller) return 0;
    return backoffDelay(this.probes - 1, backoff);
  }


  /** `caller` stops trying (shutdown, or its record expired): another waiting delivery takes the probe. */
  leave(caller: object): void {
    if (this.prober !== caller) return;
    this.prober = undefined;
    this.wakeAll();
  }

  /** Shutdown: no more log lines about this sink (its records are left unacknowledged). */
  silence(): void {
    this.quiet = true;
    clearInterval(this.reminder);
    this.reminder = undefined;
  }

  private remind(): void {
    if (this.quiet || this.state === 'healthy' || !this.announced) return;
    this.log.warn('the destination is still failing; records are held', {
      code: 'LF_DESTINATION_FAILING',
      state: this.state,
      failing_s: Math.round((Date.now() - this.sinceMs) / 1000),
      failed_attempts: this.failedAttempts,
      held_records: this.pending,
      reason: this.reason,
    });
  }

  private wakeAll(): void {
    for (const wake of [...this.waiters]) wake();
  }

  private changed(): void {
    const status = this.status();
    for (const listener of this.listeners) listener(status);
  }
}
