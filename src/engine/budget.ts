/**
 * The memory budget for records in flight (`buffer.max_bytes`). A source waits here before it
 * hands a record on, so a slow or dead sink pauses reading instead of growing memory. One record
 * larger than the whole budget still goes through when nothing else is in flight, so a big
 * document can never deadlock the pipeline.
 */
export class ByteBudget {
  private used = 0;
  private readonly waiters: { bytes: number; resolve: () => void; reject: (e: unknown) => void }[] = [];

  constructor(readonly maxBytes: number) {}

  get inUse(): number {
    return this.used;
  }

  /** Returns true when the bytes were taken at once; otherwise wait on `acquire`. */
  tryAcquire(bytes: number): boolean {
    if (this.waiters.length === 0 && this.fits(bytes)) {
      this.used += bytes;
      return true;
    }
    return false;
  }

  acquire(bytes: number, signal?: AbortSignal): Promise<void> {
    if (this.tryAcquire(bytes)) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const waiter = {
        bytes,
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        reject,
      };
      const onAbort = (): void => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  release(bytes: number): void {
    this.used -= bytes;
    while (this.waiters.length > 0) {
      const next = this.waiters[0]!;
      if (!this.fits(next.bytes)) break;
      this.waiters.shift();
      this.used += next.bytes;
      next.resolve();
    }
  }

  private fits(bytes: number): boolean {
    return this.used === 0 || this.used + bytes <= this.maxBytes;
  }
}

/**
 * Heap bytes a record in flight holds per byte of its line, beyond the line itself: the document
 * JSON.parse made of it (about 1.5 times the text for job documents), the body a sink writes or
 * sends (a new copy when a transform changed the document), a batch's request body. Measured
 * with `npm run bench:memory` (bench/RESULTS.md), so that `buffer.max_bytes` bounds the process
 * and not only the bytes read.
 */
export const HEAP_BYTES_PER_LINE_BYTE = 2;
/** Objects every record carries whatever its size: record, deliveries, finalizer, callbacks, key, offset span. */
export const HEAP_BYTES_PER_RECORD = 2048;

/** What one record of `lineBytes` is charged against `buffer.max_bytes`: an estimate of what it costs the process. */
export function recordCharge(lineBytes: number): number {
  return lineBytes * HEAP_BYTES_PER_LINE_BYTE + HEAP_BYTES_PER_RECORD;
}

/**
 * Whether a record's size, as a plugin source gave it to `ctx.emit`, can be charged: an integer
 * from 0 to 1 TiB. Anything else (undefined, NaN, a fraction, a negative or huge number) would
 * leave the budget's sum wrong for good (NaN, or rounding that never returns to 0).
 */
export function isRecordBytes(bytes: unknown): bytes is number {
  return Number.isSafeInteger(bytes) && (bytes as number) >= 0 && (bytes as number) <= MAX_RECORD_BYTES;
}

const MAX_RECORD_BYTES = 2 ** 40;
