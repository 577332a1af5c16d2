/** Counters the status line, the summary and (later) the metrics endpoint read. */
export class Metrics {
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
