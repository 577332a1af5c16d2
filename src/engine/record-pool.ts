import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Piscina } from 'piscina';
import { z } from 'zod';
import { LogferryError } from '../errors.js';
import { transferable, type PoolBroken, type PoolOutcome, type PoolSetup, type PoolTask } from './pool-protocol.js';
import type { RecordOrigin } from './types.js';

const KiB = 1024;

/**
 * Measured (bench/RESULTS.md, cut-over): on the main thread a job document costs about 1 ms per
 * MiB, because unchanged text is copied instead of serialized. Below 512 KiB a record blocks the
 * event loop for under half a millisecond and handing it over costs more CPU than it saves; above,
 * the loop stays free for acknowledgements and sends, and spare cores add throughput.
 */
export const DEFAULT_THRESHOLD_BYTES = 512 * KiB;

/**
 * Each worker is a V8 isolate that loads the pipeline's modules (tens of MiB before it holds a
 * record, more with the 64 MiB semi-space) and does CPU-bound work, so threads beyond the cores
 * only add memory and start-up time: a run with 256 threads on a 2-core machine did not finish
 * (issue 9). 64 leaves room for large machines; `auto` never goes above it either.
 */
export const MAX_THREADS = 64;
/** Above the largest line a source accepts (max_line_bytes) the pool would never be used. */
const MAX_THRESHOLD_BYTES = 256 * KiB * KiB;
/** Lines held for the pool; the buffer budget bounds their bytes, this bounds their count. */
const MAX_QUEUE = 100_000;

export const poolSchema = z
  .object({
    threads: z
      .union([z.literal('auto'), z.number().int().min(0).max(MAX_THREADS)], {
        error: `expected auto or a number of threads from 0 (pool off) to ${MAX_THREADS}`,
      })
      .default('auto')
      .describe(
        'Worker threads that parse, mask, key and serialize large records. auto: one per core beyond two, which the ' +
          'main thread and the system (network stack, file I/O, garbage collection) keep, so off on two cores; ' +
          `0 turns the pool off; at most ${MAX_THREADS}.`,
      ),
    threshold_bytes: z
      .number()
      .int()
      .min(1024)
      .max(MAX_THRESHOLD_BYTES)
      .default(DEFAULT_THRESHOLD_BYTES)
      .describe(
        'Lines of at least this many bytes go to the pool; smaller ones stay on the main thread, where handing them over ' +
          'costs more than the work (bench/RESULTS.md has the cut-over measured with npm run bench:micro).',
      ),
    max_queue: z
      .union([z.literal('auto'), z.number().int().min(1).max(MAX_QUEUE)], { error: `expected auto or a number of lines from 1 to ${MAX_QUEUE}` })
      .default('auto')
      .describe(`Lines waiting for or inside a worker at most (up to ${MAX_QUEUE}); reading pauses beyond it. auto: four per thread.`),
  })
  .strict();

export type PoolOptions = z.output<typeof poolSchema>;

/**
 * Measured on two cores (bench/RESULTS.md): a worker there only competes with the main thread and
 * the kernel for the same two cores, and 1 MB documents move at about 0.8x of pool off. So `auto`
 * leaves two cores to the main thread and the system and gives the pool the rest.
 */
export function poolThreads(options: PoolOptions): number {
  return options.threads === 'auto' ? autoThreads() : options.threads;
}

export function autoThreads(cores = availableParallelism()): number {
  return Math.min(MAX_THREADS, Math.max(0, cores - 2));
}

/**
 * Runs the expensive part of large records (parse, transforms, serialize, gzip) on worker threads,
 * so a 1 MB document does not block the event loop that moves everyone's bytes and answers. The
 * main thread keeps the order, the acknowledgements and the checkpoints; a worker only turns a
 * line into bodies. Lines go over transferred, not copied, and bodies come back the same way.
 */
export class RecordPool {
  readonly threads: number;
  readonly threshold: number;
  readonly maxQueue: number;
  private readonly piscina: Piscina;
  private queued = 0;
  private waiters: (() => void)[] = [];

  /**
   * `onError` is called when the pool fails outside any line: a worker that errors with no task
   * running (a plugin's timer that throws, an unhandled rejection in the worker). Piscina emits
   * 'error' then, which would end the process without a listener.
   */
  /**
   * Starts a pool. piscina is imported here, by the first pool a run starts: the configuration
   * imports this module for its schema, and `validate` or a run without a pool needs no piscina.
   */
  static async start(options: PoolOptions, setup: PoolSetup, onError: (err: unknown) => void): Promise<RecordPool> {
    const { Piscina } = await import('piscina');
    return new RecordPool(Piscina, options, setup, onError);
  }

  private constructor(PiscinaClass: typeof Piscina, options: PoolOptions, setup: PoolSetup, onError: (err: unknown) => void) {
    this.threads = poolThreads(options);
    if (this.threads <= 0) throw new LogferryError('LF_CONFIG_INVALID', 'a record pool needs at least one thread');
    this.threshold = options.threshold_bytes;
    this.maxQueue = options.max_queue === 'auto' ? this.threads * 4 : options.max_queue;
    this.piscina = new PiscinaClass({
      filename: workerFile(),
      minThreads: this.threads,
      maxThreads: this.threads,
      // The queue is bounded here, before lines are handed over, so piscina's own never refuses.
      maxQueue: Infinity,
      idleTimeout: Infinity,
      workerData: setup,
    });
    this.piscina.on('error', onError);
  }

  /**
   * Waits until every worker has loaded its modules and built the transforms, so a plugin that
   * fails in a worker fails the start, and the first records do not pay for the start-up.
   */
  async warmUp(): Promise<void> {
    await Promise.all(Array.from({ length: this.threads }, () => this.piscina.run('warm-up')));
  }

  /** Resolves when the pool can take another line: a full pool pauses the source like a full buffer. */
  async capacity(): Promise<void> {
    while (this.queued >= this.maxQueue) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  /**
   * Hands a line to a worker. The line's memory moves to the worker: the caller must not use it
   * again. A line that shares its ArrayBuffer with other data (a view of a read buffer) is copied.
   */
  prepare(sourceId: string, line: Uint8Array, origin: RecordOrigin, maxDepth?: number): Promise<PoolOutcome> {
    const bytes = transferable(line).buffer;
    const task: PoolTask = { sourceId, bytes, offset: 0, length: line.byteLength, origin, maxDepth };
    this.queued++;
    return (this.piscina.run(task, { transferList: [bytes] }) as Promise<PoolOutcome | PoolBroken>)
      .then((outcome) => {
        if ('broken' in outcome) throw new PoolBrokenError(outcome.broken);
        return outcome;
      })
      .finally(() => {
        this.queued--;
        this.waiters.shift()?.();
      });
  }

  async close(): Promise<void> {
    await this.piscina.destroy();
  }
}

/** The worker could not handle any line (see PoolBroken): the pipeline stops; the line is not its dead letter. */
export class PoolBrokenError extends LogferryError {
  constructor(message: string) {
    super('LF_POOL_FAILED', message);
    this.name = 'PoolBrokenError';
  }
}

/** Workers need JavaScript: from the TypeScript sources (tests), the built worker is used. */
function workerFile(): string {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.js')) return join(dirname(here), 'pool-worker.js');
  return resolve(dirname(here), '../../dist/src/engine/pool-worker.js');
}
