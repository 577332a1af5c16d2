import type { Pipeline } from '../engine/pipeline.js';
import type { Logger } from '../engine/logger.js';

const MiB = 1024 * 1024;

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < MiB) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1024 * MiB) return `${(bytes / MiB).toFixed(1)} MiB`;
  return `${(bytes / 1024 / MiB).toFixed(2)} GiB`;
}

/**
 * What an operator watches: a status log line every status_interval_ms, and on a TTY a live line
 * redrawn every second (cleared before any log line so the two never interleave).
 */
export class StatusReporter {
  private timer: NodeJS.Timeout | undefined;
  private liveTimer: NodeJS.Timeout | undefined;
  private lastBytes = 0;
  private lastAt = Date.now();
  private liveShown = false;
  private readonly startedAt = Date.now();

  constructor(
    private readonly pipeline: Pipeline,
    private readonly log: Logger,
    private readonly intervalMs: number,
    private readonly tty: boolean,
  ) {}

  start(): void {
    this.timer = setInterval(() => this.report(), this.intervalMs);
    this.timer.unref();
    if (this.tty) {
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

  private figures(): Record<string, string | number> {
    const m = this.pipeline.metrics;
    const now = Date.now();
    const rate = ((m.bytesIn - this.lastBytes) / MiB / Math.max(0.001, (now - this.lastAt) / 1000)).toFixed(2);
    this.lastBytes = m.bytesIn;
    this.lastAt = now;
    return {
      records_in: m.recordsIn,
      records_out: m.recordsOut,
      mib_per_s: Number(rate),
      dead_letters: m.deadLetters,
      skipped: m.skipped,
      in_flight: this.pipeline.recordsInFlight,
      bytes_behind: this.pipeline.bytesBehind(),
    };
  }

  private report(): void {
    this.log.info('status', this.figures());
  }

  private drawLive(): void {
    const f = this.figures();
    const line = `in ${f.records_in} · out ${f.records_out} · ${f.mib_per_s} MiB/s · dead letters ${f.dead_letters} · behind ${formatBytes(Number(f.bytes_behind))}`;
    process.stderr.write(`\r\x1b[2K${line}`);
    this.liveShown = true;
  }

  summary(): string {
    const m = this.pipeline.metrics;
    const seconds = (Date.now() - this.startedAt) / 1000;
    const mibs = m.bytesIn / MiB / Math.max(seconds, 0.001);
    return (
      `${m.recordsIn} records in (${formatBytes(m.bytesIn)}, ${mibs.toFixed(1)} MiB/s), ${m.recordsOut} delivered, ` +
      `${m.deadLetters} dead letters, ${m.skipped} skipped, in ${seconds.toFixed(1)} s`
    );
  }
}
