/** One stretch of lines in read order: one unfinished record, or a run of finished lines. */
interface Span {
  /** Offset just after the span's last line. */
  end: number;
  finished: boolean;
  prev: Span | undefined;
  next: Span | undefined;
}

/**
 * Tracks which lines of one input are finished and gives the position up to which everything is
 * finished. Sinks answer out of order; the checkpoint may only move over a contiguous prefix, or a
 * crash would skip a record that was never delivered.
 *
 * Memory is proportional to the records in flight, never to the lines read: finished lines that
 * follow each other coalesce into one span (a blank line after a finished span extends it), so one
 * record stuck at a sink followed by millions of blank or delivered lines costs two spans. The
 * spans alternate unfinished / finished and the first one is unfinished (a finished first span is
 * committed at once), so there are at most 2 x unfinished spans.
 */
export class OffsetTracker {
  private first: Span | undefined;
  private last: Span | undefined;
  private spans = 0;
  private unfinished = 0;
  private committedOffset: number;

  constructor(start: number) {
    this.committedOffset = start;
  }

  /** Everything before this offset has been delivered or dead-lettered. */
  get committed(): number {
    return this.committedOffset;
  }

  /** Records tracked and not finished yet. */
  get pending(): number {
    return this.unfinished;
  }

  /** Spans held (for tests of the memory bound). */
  get size(): number {
    return this.spans;
  }

  /** Registers a line ending at `end`; call the returned function once it is finished (again: no effect). */
  track(end: number): () => void {
    const span: Span = { end, finished: false, prev: this.last, next: undefined };
    if (this.last) this.last.next = span;
    else this.first = span;
    this.last = span;
    this.spans++;
    this.unfinished++;
    return () => this.finish(span);
  }

  /** A line that needs no delivery (blank) moves the position once everything before it is done. */
  skip(end: number): void {
    const last = this.last;
    if (!last) {
      this.committedOffset = end;
    } else if (last.finished) {
      last.end = end;
    } else {
      const span: Span = { end, finished: true, prev: last, next: undefined };
      last.next = span;
      this.last = span;
      this.spans++;
    }
  }

  private finish(span: Span): void {
    if (span.finished) return;
    span.finished = true;
    this.unfinished--;
    // Absorb a finished neighbour after, then merge into a finished neighbour before.
    const after = span.next;
    if (after?.finished) {
      span.end = after.end;
      this.unlink(after);
    }
    const before = span.prev;
    if (before?.finished) {
      before.end = span.end;
      this.unlink(span);
      span = before;
    }
    if (span === this.first) {
      this.committedOffset = span.end;
      this.unlink(span);
    }
  }

  private unlink(span: Span): void {
    if (span.prev) span.prev.next = span.next;
    else this.first = span.next;
    if (span.next) span.next.prev = span.prev;
    else this.last = span.prev;
    span.prev = undefined;
    span.next = undefined;
    this.spans--;
  }
}
