import { LogferryError } from '../errors.js';

/**
 * An unbounded FIFO between the engine and one sink, read as batches of whatever is queued. It
 * needs no bound of its own: everything in it holds a share of the ByteBudget, which is the bound.
 */
export class Channel<T> implements AsyncIterable<T[]> {
  private items: T[] = [];
  private closed = false;
  private wake: (() => void) | undefined;

  constructor(private readonly maxBatch = 1024) {}

  get size(): number {
    return this.items.length;
  }

  push(item: T): void {
    if (this.closed) throw new LogferryError('LF_INTERNAL', 'a record was pushed to a sink channel after it was closed (a bug in logferry; please report it)');
    this.items.push(item);
    this.wake?.();
  }

  /** No more items will come; readers finish what is queued and then end. */
  close(): void {
    this.closed = true;
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T[]> {
    for (;;) {
      if (this.items.length > 0) {
        let batch: T[];
        if (this.items.length <= this.maxBatch) {
          batch = this.items;
          this.items = [];
        } else {
          batch = this.items.splice(0, this.maxBatch);
        }
        yield batch;
        continue;
      }
      if (this.closed) return;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = undefined;
    }
  }
}
