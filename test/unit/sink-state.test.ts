import { setMaxListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/engine/logger.js';
import { SinkState } from '../../src/engine/sink-state.js';
import { retryDefaults, retryUntilFinal, type RetryOptions, type Verdict } from '../../src/sinks/delivery.js';
import { waitFor } from '../helpers/cli.js';

interface LogLine {
  level: string;
  msg: string;
  code?: string;
  state?: string;
  held_records?: number;
  failed_attempts?: number;
  [field: string]: unknown;
}

/** A SinkState whose log lines are kept as parsed JSON objects. */
function recordingState(reminderMs?: number): { state: SinkState; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const log = createLogger({ level: 'debug', format: 'json', write: (line) => void lines.push(JSON.parse(line) as LogLine) });
  return { state: new SinkState('archive', log, reminderMs), lines };
}

const failingLines = (lines: LogLine[]): LogLine[] => lines.filter((l) => l.code === 'LF_DESTINATION_FAILING');
const entries = (lines: LogLine[]): LogLine[] => failingLines(lines).filter((l) => l.level === 'warn' && !l.msg.includes('still failing'));
const reminders = (lines: LogLine[]): LogLine[] => failingLines(lines).filter((l) => l.msg.includes('still failing'));
const recoveries = (lines: LogLine[]): LogLine[] => failingLines(lines).filter((l) => l.level === 'info');

const fast: RetryOptions = retryDefaults({ initial_backoff_ms: 2, max_backoff_ms: 20 });
const refused: Verdict = { kind: 'destination', reason: 'HTTP 403 from http://127.0.0.1/…', blocked: true, advice: 'the token and its permissions' };

/**
 * A fake destination: every attempt fails with `refused` while `failing` is set. It counts the
 * attempts that start while the state is failing and how many of those overlap, which is what the
 * gate promises to keep at one.
 */
function fakeDestination(state: SinkState) {
  const counts = { attempts: 0, whileFailing: 0, probesInFlight: 0, maxProbesInFlight: 0 };
  const destination = {
    failing: true,
    counts,
    attempt: async (): Promise<Verdict> => {
      counts.attempts++;
      const probe = !state.healthy;
      if (probe) {
        counts.whileFailing++;
        counts.probesInFlight++;
        counts.maxProbesInFlight = Math.max(counts.maxProbesInFlight, counts.probesInFlight);
      }
      // An answer takes a moment, so overlapping probes would show.
      await new Promise((resolve) => setTimeout(resolve, 1));
      if (probe) counts.probesInFlight--;
      return destination.failing ? refused : { kind: 'ok' };
    },
  };
  return destination;
}

describe('SinkState: the gate of a failing destination', () => {
  it('lets one probe at a time try while the destination fails, then lets every held delivery through', async () => {
    const { state, lines } = recordingState();
    const destination = fakeDestination(state);
    const stop = new AbortController();
    // Each of the 32 deliveries waiting at the gate listens for the stop, as in a sink.
    setMaxListeners(64, stop.signal);
    state.recordsQueued(32);
    const deliveries = Array.from({ length: 32 }, () =>
      retryUntilFinal(destination.attempt, { retry: fast, signal: stop.signal, state }).finally(() => state.recordsAnswered()),
    );
    // The probe keeps trying with backoff (capped at 20 ms) while the other 31 wait at the gate.
    await waitFor(() => destination.counts.whileFailing >= 20, 10_000, 'twenty probes of the failing destination');
    expect(destination.counts.maxProbesInFlight).toBe(1);
    expect(state.status()).toMatchObject({ sink: 'archive', state: 'blocked', reason: refused.reason, advice: refused.advice, pendingRecords: 32 });
    // 32 deliveries, dozens of failed attempts: one line on entry.
    expect(entries(lines)).toHaveLength(1);
    expect(entries(lines)[0]).toMatchObject({ state: 'blocked', held_records: 32 });
    expect(entries(lines)[0]!.msg).toContain('Check: the token and its permissions');

    destination.failing = false;
    const verdicts = await Promise.all(deliveries);
    expect(verdicts).toEqual(Array.from({ length: 32 }, () => ({ kind: 'ok' })));
    expect(state.status()).toMatchObject({ state: 'healthy', failedAttempts: 0, pendingRecords: 0 });
    expect(recoveries(lines)).toHaveLength(1);
    expect(recoveries(lines)[0]).toMatchObject({ was: 'blocked' });
    expect(recoveries(lines)[0]!.failed_attempts).toBeGreaterThanOrEqual(20);
    expect(entries(lines)).toHaveLength(1);
  });

  it('logs once on entry, a reminder with counts every reminderMs, and once on recovery', async () => {
    const { state, lines } = recordingState(50);
    const changes: string[] = [];
    state.onChange((status) => changes.push(status.state));
    const probe = {};
    state.recordsQueued(5);
    for (let i = 0; i < 10; i++) state.failed(probe, { reason: 'HTTP 503', advice: 'the receiver' });
    expect(entries(lines)).toHaveLength(1);
    expect(entries(lines)[0]).toMatchObject({ level: 'warn', state: 'retrying', reason: 'HTTP 503', held_records: 5 });

    await waitFor(() => reminders(lines).length >= 2, 10_000, 'two reminders');
    expect(reminders(lines)[0]).toMatchObject({ level: 'warn', state: 'retrying', failed_attempts: 10, held_records: 5, reason: 'HTTP 503' });

    // A failure that needs an operator changes the state, and says so once.
    state.failed(probe, refused);
    expect(entries(lines)).toHaveLength(2);
    expect(state.status()).toMatchObject({ state: 'blocked', failedAttempts: 11 });

    state.answered(probe);
    expect(recoveries(lines)).toHaveLength(1);
    expect(recoveries(lines)[0]).toMatchObject({ was: 'blocked', failed_attempts: 11, last_reason: refused.reason });
    expect(changes).toEqual(['retrying', 'blocked', 'healthy']);
    // The reminder stops with the recovery.
    const remindersSoFar = reminders(lines).length;
    const healthySince = state.status().sinceMs;
    await waitFor(() => Date.now() - healthySince >= 150, 5_000, 'three reminder intervals');
    expect(reminders(lines)).toHaveLength(remindersSoFar);
  });

  it('with retry.max_duration_s set, records still held after it end as LF_SINK_RETRY_EXPIRED, the probe and those waiting alike', async () => {
    const { state } = recordingState();
    const destination = fakeDestination(state);
    const retry = { ...fast, max_duration_s: 0.3 };
    const started = Date.now();
    const verdicts = await Promise.all(
      Array.from({ length: 8 }, () => retryUntilFinal(destination.attempt, { retry, signal: new AbortController().signal, state })),
    );
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    for (const verdict of verdicts) {
      expect(verdict).toMatchObject({ kind: 'record', code: 'LF_SINK_RETRY_EXPIRED' });
      expect(verdict !== 'aborted' && verdict.kind === 'record' && verdict.reason).toContain('retry.max_duration_s (0.3s)');
      expect(verdict !== 'aborted' && verdict.kind === 'record' && verdict.reason).toContain('HTTP 403');
    }
    expect(destination.counts.maxProbesInFlight).toBe(1);
  });

  it('without max_duration_s, an abort (shutdown) ends the retries with every record unsettled', async () => {
    const { state } = recordingState();
    const destination = fakeDestination(state);
    const stop = new AbortController();
    // Each of the 32 deliveries waiting at the gate listens for the stop, as in a sink.
    setMaxListeners(64, stop.signal);
    const settled: string[] = [];
    const deliveries = Array.from({ length: 32 }, async () => {
      const verdict = await retryUntilFinal(destination.attempt, { retry: fast, signal: stop.signal, state });
      // What a sink does: settle only a final verdict; 'aborted' leaves the record for the next run.
      if (verdict !== 'aborted') settled.push(verdict.kind);
      return verdict;
    });
    await waitFor(() => destination.counts.whileFailing >= 5, 10_000, 'five probes');
    stop.abort();
    const verdicts = await Promise.all(deliveries);
    expect(verdicts).toEqual(Array.from({ length: 32 }, () => 'aborted'));
    expect(settled).toEqual([]);
    expect(state.status().state).toBe('blocked');
  });
});
