import type { Pipeline } from '../engine/pipeline.js';
import type { LogFields, LogFormat, Logger } from '../engine/logger.js';
import type { SinkStatus } from '../engine/sink-state.js';
import { plural } from '../plural.js';

const MiB = 1024 * 1024;

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < MiB) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1024 * MiB) return `${(bytes / MiB).toFixed(1)} MiB`;
  return `${(bytes / 1024 / MiB).toFixed(2)} GiB`;
}

/** `12:03:04` (local time) when `ms` is within the last day, else `2026-12-04 12:03:04`. */
export function formatSince(ms: number, now = Date.now()): string {
  const d = new Date(ms);
  const pad = (n: number): string => String(n).padStart(2, '0');
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (now - ms < 24 * 3600_000) return time;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

/** The sinks that are not healthy, in the order of the pipeline file. */
function failing(states: readonly SinkStatus[]): SinkStatus[] {
  return states.filter((s) => s.state !== 'healthy');
}

/** `s3=blocked(403 AccessDenied) since 12:03:04, http=retrying(503 Service Unavailable) since 12:04:00`, for the status line. */
export function describeSinks(states: readonly SinkStatus[], now = Date.now()): string {
  return failing(states)
    .map((s) => `${s.sink}=${s.state}${s.reason ? `(${s.reason})` : ''} since ${formatSince(s.sinceMs, now)}`)
    .join(', ');
}

/**
 * For the final summary: each sink that was not healthy when the run ended. Its probes have
 * stopped by then, so it says `failing` rather than `retrying`.
 */
export function describeSinksAtEnd(states: readonly SinkStatus[], now = Date.now()): string {
  return failing(states)
    .map(
      (s) =>
        `sink ${s.sink} ${s.state === 'blocked' ? 'blocked' : 'failing'} since ${formatSince(s.sinceMs, now)}${s.reason ? ` (${s.reason})` : ''}, ` +
        `${plural(s.pendingRecords, 'record')} held for the next run`,
    )
    .join('; ');
}

/** The sinks that are not healthy as JSON log fields, with times in ISO 8601. */
export function sinkFields(states: readonly SinkStatus[]): Record<string, unknown>[] {
  return failing(states).map((s) => ({
    sink: s.sink,
    state: s.state,
    reason: s.reason,
    advice: s.advice,
    since: new Date(s.sinceMs).toISOString(),
    failed_attempts: s.failedAttempts,
    held_records: s.pendingRecords,
  }));
}

/** Every sink's state by its id (`{ archive: 'healthy', collector: 'retrying' }`), for JSON logs. */
export function sinkStateFields(states: readonly SinkStatus[]): Record<string, string> {
  return Object.fromEntries(states.map((s) => [s.sink, s.state]));
}

/**
 * The input rate over a window that starts where the previous one ended: the periodic status line
 * and the live terminal line each keep their own, so neither shortens the other's.
 */
export class RateWindow {
  private bytes = 0;
  private at = Date.now();

  /** MiB/s since the last call (or since creation), and the seconds that covers. */
  next(bytesIn: number, now = Date.now()): { mibPerS: number; seconds: number } {
    const seconds = Math.max(0.001, (now - this.at) / 1000);
    const mibPerS = (bytesIn - this.bytes) / MiB / seconds;
    this.bytes = bytesIn;
    this.at = now;
    return { mibPerS, seconds };
  }
}

/** Records the failing sinks hold (handed to them, without an answer yet). */
function heldRecords(states: readonly SinkStatus[]): number {
  return failing(states).reduce((sum, s) => sum + s.pendingRecords, 0);
}

export interface StatusReporterOptions {
  /** Redraw a live line on stderr (a terminal, text logs). */
  tty: boolean;
  /** With `json`, sink states are log fields (an array of objects); with `text`, one readable string. */
  format: LogFormat;
}

/**
 * What an operator watches: a status log line every status_interval_ms, and on a TTY a live line
 * redrawn every second (cleared before any log line so the two never interleave).
 */
export class StatusReporter {
  private timer: NodeJS.Timeout | undefined;
  private liveTimer: NodeJS.Timeout | undefined;
  private readonly statusRate = new RateWindow();
  private readonly liveRate = new RateWindow();
  private liveShown = false;
  private readonly startedAt = Date.now();

  constructor(
    private readonly pipeline: Pipeline,
    private readonly log: Logger,
    private readonly intervalMs: number,
    private readonly options: StatusReporterOptions,
  ) {}

  start(): void {
    this.timer = setInterval(() => this.report(), this.intervalMs);
    this.timer.unref();
    if (this.options.tty) {
      this.liveTimer = setInterval(() => this.drawLive(), 1000);
      this.liveTimer.unref();
    }
  }

  stop(): void {
    clearInterval(this.timer);
    clearInterval(this.liveTimer);
    this.clearLive();
  }

  /** Called by the logger before it writes, so the live line does not garble log lines. */
  clearLive(): void {
    if (this.liveShown) {
      process.stderr.write('\r\x1b[2K');
      this.liveShown = false;
    }
  }

  /** The figures of a status line; `mib_per_s` covers `seconds`, the time since the previous line of `window`. */
  private figures(window: RateWindow): Record<string, string | number> {
    const m = this.pipeline.metrics;
    const rate = window.next(m.bytesIn);
    return {
      records_in: m.recordsIn,
      records_out: m.recordsOut,
      mib_per_s: Number(rate.mibPerS.toFixed(2)),
      seconds: Number(rate.seconds.toFixed(1)),
      dead_letters: m.deadLetters,
      skipped: m.skipped,
      in_flight: this.pipeline.recordsInFlight,
      bytes_behind: this.pipeline.bytesBehind(),
    };
  }

  /** The sink fields of the status line: none while every sink is healthy. */
  private sinkStatusFields(states: readonly SinkStatus[]): LogFields {
    const all = this.options.format === 'json' ? { sink_states: sinkStateFields(states) } : {};
    if (failing(states).length === 0) return all;
    const sinks = this.options.format === 'json' ? sinkFields(states) : describeSinks(states);
    return { ...all, held_records: heldRecords(states), sinks };
  }

  private report(): void {
    this.log.info('status', { ...this.figures(this.statusRate), ...this.sinkStatusFields(this.pipeline.sinkStates()) });
  }

  private drawLive(): void {
    const f = this.figures(this.liveRate);
    const states = this.pipeline.sinkStates();
    const down = failing(states).map((s) => `${s.sink} ${s.state} since ${formatSince(s.sinceMs)}`);
    const sinks = down.length > 0 ? ` · ${down.join(', ')} (${heldRecords(states)} held)` : '';
    const line = `in ${f.records_in} · out ${f.records_out} · ${f.mib_per_s} MiB/s · dead letters ${f.dead_letters} · behind ${formatBytes(Number(f.bytes_behind))}${sinks}`;
    process.stderr.write(`\r\x1b[2K${line}`);
    this.liveShown = true;
  }

  /**
   * The final summary, once the run has ended: its text (the `done:` message) and, for JSON logs,
   * the same figures as fields (a text line says them already). The rate covers the whole run.
   */
  summary(): { text: string; fields: LogFields } {
    const m = this.pipeline.metrics;
    const seconds = Math.max((Date.now() - this.startedAt) / 1000, 0.001);
    const mibPerS = m.bytesIn / MiB / seconds;
    const states = this.pipeline.sinkStates();
    const atEnd = describeSinksAtEnd(states);
    const text =
      `${plural(m.recordsIn, 'record')} in (${formatBytes(m.bytesIn)}, ${mibPerS.toFixed(1)} MiB/s), ${m.recordsOut} delivered, ` +
      `${plural(m.deadLetters, 'dead letter')}, ${m.skipped} skipped, in ${seconds.toFixed(1)} s${atEnd ? `; ${atEnd}` : ''}`;
    if (this.options.format !== 'json') return { text, fields: {} };
    const sinks = sinkFields(states);
    const fields: LogFields = {
      records_in: m.recordsIn,
      bytes_in: m.bytesIn,
      delivered: m.recordsOut,
      dead_letters: m.deadLetters,
      skipped: m.skipped,
      seconds: Number(seconds.toFixed(3)),
      mib_per_s: Number(mibPerS.toFixed(3)),
      sink_states: sinkStateFields(states),
      ...(sinks.length > 0 && { held_records: heldRecords(states), sinks }),
    };
    return { text, fields };
  }
}
