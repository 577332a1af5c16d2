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

/**
 * Upper bounds (seconds) of the read-to-acknowledgement histogram the metrics endpoint shows
 * (Prometheus `le` labels): from a millisecond to ten minutes, which spans an idle pipeline and
 * an outage a sink held its records through.
 */
export const LATENCY_BUCKETS_S: readonly number[] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600];

/**
 * Read-to-acknowledgement latencies counted in the fixed buckets of LATENCY_BUCKETS_S, with their
 * exact sum: what a Prometheus histogram exposes, kept by the engine itself so that the
 * per-record path stays a few additions (no OpenTelemetry call per record; engine/telemetry.ts
 * reads it at collection).
 */
export class BucketedLatency {
  /** One count per bucket, the last one for values above the largest bound (+Inf). */
  readonly counts = new Float64Array(LATENCY_BUCKETS_S.length + 1);
  count = 0;
  sumS = 0;
  minS = Infinity;
  maxS = -Infinity;

  record(seconds: number): void {
    let i = 0;
    while (i < LATENCY_BUCKETS_S.length && seconds > LATENCY_BUCKETS_S[i]!) i++;
    this.counts[i]!++;
    this.count++;
    this.sumS += seconds;
    if (seconds < this.minS) this.minS = seconds;
    if (seconds > this.maxS) this.maxS = seconds;
  }
}

/** Counters the status line, the summary, /status and /metrics read. */
export class Metrics {
  /** From a record's read to its final acknowledgement (every sink answered or dead letter). */
  readonly latency = new LatencyHistogram();
  /** The same latencies in the metrics endpoint's buckets. */
  readonly latencyBuckets = new BucketedLatency();
  /** Dead letters written, by error code. */
  readonly deadLettersByCode = new Map<string, number>();
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
    const counters = this.countersOf(component);
    counters[name] = (counters[name] ?? 0) + by;
  }

  private countersOf(component: string): Record<string, number> {
    let counters = this.perComponent.get(component);
    if (!counters) {
      counters = {};
      this.perComponent.set(component, counters);
    }
    return counters;
  }

  /** One dead letter written (on disk) for `component`, with `code`. */
  countDeadLetter(component: string, code: string): void {
    this.deadLetters++;
    this.count(component, 'dead_letters');
    this.deadLettersByCode.set(code, (this.deadLettersByCode.get(code) ?? 0) + 1);
  }

  /** A record read and taken into the graph by source (or replay entry) `component`. */
  countReceived(component: string, bytes: number): void {
    this.recordsIn++;
    this.bytesIn += bytes;
    // Per record: one map lookup for both counters.
    const counters = this.countersOf(component);
    counters.received_events = (counters.received_events ?? 0) + 1;
    counters.received_bytes = (counters.received_bytes ?? 0) + bytes;
  }

  /** One record acknowledged by sink `component`, `bytes` its body as the sink was given it. */
  countSent(component: string, bytes: number): void {
    this.recordsOut++;
    const counters = this.countersOf(component);
    counters.delivered = (counters.delivered ?? 0) + 1;
    counters.sent_bytes = (counters.sent_bytes ?? 0) + bytes;
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
