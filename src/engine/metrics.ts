/**
 * Latencies in a fixed set of log-spaced buckets (each 10% wider than the last, 0.01 ms to about
 * 10 min): constant memory and O(1) per record, and percentiles within 10%, which is what a
 * status line or a benchmark needs.
 */
export class LatencyHistogram {
  private static readonly GROWTH = 1.1;
  private static readonly FIRST_MS = 0.01;
  private readonly buckets = new Float64Array(200);
  count = 0;
  maxMs = 0;

  record(ms: number): void {
    const index = ms <= LatencyHistogram.FIRST_MS ? 0 : Math.min(this.buckets.length - 1, Math.ceil(Math.log(ms / LatencyHistogram.FIRST_MS) / Math.log(LatencyHistogram.GROWTH)));
    this.buckets[index]!++;
    this.count++;
    if (ms > this.maxMs) this.maxMs = ms;
  }

  /** Upper bound of the bucket holding the q-th quantile (0 < q <= 1), in ms. */
  quantile(q: number): number {
    if (this.count === 0) return 0;
    const rank = Math.ceil(q * this.count);
    let seen = 0;
    for (let i = 0; i < this.buckets.length; i++) {
      seen += this.buckets[i]!;
      if (seen >= rank) return Math.min(this.maxMs, LatencyHistogram.FIRST_MS * LatencyHistogram.GROWTH ** i);
    }
    return this.maxMs;
  }
}

/** Counters the status line, the summary and (later) the metrics endpoint read. */
export class Metrics {
  /** From a record's read to its final acknowledgement (every sink answered or dead letter). */
  readonly latency = new LatencyHistogram();
  recordsIn = 0;
  bytesIn = 0;
  /** Deliveries confirmed by sinks (a record sent to two sinks counts twice). */
  recordsOut = 0;
  bytesOut = 0;
  deadLetters = 0;
  /** Records dropped on purpose: filtered by select, jobs that are not final. */
  skipped = 0;
  readonly perComponent = new Map<string, Record<string, number>>();

  count(component: string, name: string, by = 1): void {
    let counters = this.perComponent.get(component);
    if (!counters) {
      counters = {};
      this.perComponent.set(component, counters);
    }
    counters[name] = (counters[name] ?? 0) + by;
  }

  snapshot(): MetricsSnapshot {
    return {
      recordsIn: this.recordsIn,
      bytesIn: this.bytesIn,
      recordsOut: this.recordsOut,
      bytesOut: this.bytesOut,
      deadLetters: this.deadLetters,
      skipped: this.skipped,
      components: Object.fromEntries([...this.perComponent].map(([k, v]) => [k, { ...v }])),
    };
  }
}

export interface MetricsSnapshot {
  recordsIn: number;
  bytesIn: number;
  recordsOut: number;
  bytesOut: number;
  deadLetters: number;
  skipped: number;
  components: Record<string, Record<string, number>>;
}
