/**
 * Tracks which lines of one input are finished and gives the position up to which everything is
 * finished. Sinks answer out of order; the checkpoint may only move over a contiguous prefix, or a
 * crash would skip a record that was never delivered.
 */
export class OffsetTracker {
  private ends: number[] = [];
  private done: boolean[] = [];
  /** Sequence number of ends[0]; sequence numbers stay valid across compaction. */
  private base = 0;
  private head = 0;
  private committedOffset: number;

  constructor(start: number) {
    this.committedOffset = start;
  }

  /** Everything before this offset has been delivered or dead-lettered. */
  get committed(): number {
    return this.committedOffset;
  }

  get pending(): number {
    return this.ends.length - this.head;
  }

  /** Registers a line ending at `end`; call the returned function once it is finished. */
  track(end: number): () => void {
    const seq = this.base + this.ends.length;
    this.ends.push(end);
    this.done.push(false);
    return () => this.finish(seq);
  }

  /** A line that needs no delivery (blank) moves the position once everything before it is done. */
  skip(end: number): void {
    this.track(end)();
  }

  private finish(seq: number): void {
    const index = seq - this.base;
    if (index < this.head || this.done[index]) return;
    this.done[index] = true;
    while (this.head < this.ends.length && this.done[this.head]) {
      this.committedOffset = this.ends[this.head]!;
      this.head++;
    }
    // Compact now and then so a long-running tail does not keep every offset it ever saw.
    if (this.head > 4096 && this.head * 2 > this.ends.length) {
      this.ends = this.ends.slice(this.head);
      this.done = this.done.slice(this.head);
      this.base += this.head;
      this.head = 0;
    }
  }
}
