import { relative, resolve, sep } from 'node:path';
import { z } from 'zod';
import { HOUR_MS, MINUTE_MS, pathSchema } from '../config/limits.js';
import { writeFileAtomic } from '../engine/fs-atomic.js';
import { backoffDelay, waitOrAbort } from '../engine/retry.js';
import type { ComponentContext, ComponentDefinition, Delivery, Sink } from '../engine/types.js';
import { serializeRecord } from './serialize.js';

export const fileSinkSchema = z
  .object({
    path: pathSchema().describe('Folder that receives each record at {path}/{key}.'),
    pretty: z.boolean().default(false).describe('Indent the JSON documents.'),
    fsync: z
      .boolean()
      .default(false)
      .describe('fsync each document before acknowledging it: survives power loss, not only process crashes, at a large cost in throughput.'),
    concurrency: z.number().int().min(1).max(1024).default(16).describe('Documents written at the same time.'),
    retry: z
      .object({
        initial_backoff_ms: z.number().int().positive().max(MINUTE_MS).default(100).describe('First retry delay (at most 1 minute).'),
        max_backoff_ms: z.number().int().positive().max(HOUR_MS).default(30_000).describe('Largest delay between two attempts (at most 1 hour).'),
      })
      .strict()
      .default({ initial_backoff_ms: 100, max_backoff_ms: 30_000 })
      .describe('Backoff for transient write errors (disk full, too many open files); they are retried until shutdown.'),
  })
  .strict();

export type FileSinkOptions = z.output<typeof fileSinkSchema>;

/** Errors that no retry can fix: the record is rejected (dead letter) instead. */
const PERMANENT_CODES = new Set(['ENAMETOOLONG', 'EISDIR', 'ENOTDIR', 'EINVAL', 'EEXIST']);

/**
 * Writes each record to `{path}/{key}` with a temp file and a rename, so a reader never sees half
 * a document and a redelivery replaces the file with the same bytes.
 */
class FileSink implements Sink {
  private readonly root: string;
  private written = 0;
  private firstPath: string | undefined;
  /** Set while writes fail (disk full): logged once when it starts and once when writes work again. */
  private failing: { since: number; error: string; retried: number } | undefined;

  constructor(
    private readonly options: FileSinkOptions,
    private readonly ctx: ComponentContext,
  ) {
    this.root = resolve(options.path);
  }

  async run(input: AsyncIterable<Delivery[]>): Promise<void> {
    const inFlight = new Set<Promise<void>>();
    for await (const batch of input) {
      for (const delivery of batch) {
        while (inFlight.size >= this.options.concurrency) await Promise.race(inFlight);
        const write: Promise<void> = this.deliver(delivery).finally(() => inFlight.delete(write));
        inFlight.add(write);
      }
    }
    await Promise.all(inFlight);
  }

  private async deliver(delivery: Delivery): Promise<void> {
    const key = delivery.record.key;
    if (!key) {
      delivery.rejected('record has no key: put a path_format transform before this sink', 'LF_RECORD_NO_KEY');
      return;
    }
    const target = resolve(this.root, key);
    // path_format already confines keys; this is the last line of defence for keys set by plugins.
    if (!target.startsWith(this.root + sep)) {
      delivery.rejected(`key ${JSON.stringify(key)} would write outside ${this.root}`, 'LF_RECORD_UNSAFE_KEY');
      return;
    }
    const body = serializeRecord(delivery.record, this.options.pretty);
    for (let attempt = 0; ; attempt++) {
      try {
        // Every byte or an error (a short write on a full disk is an error): never a partial document acknowledged.
        await writeFileAtomic(target, body, { fsync: this.options.fsync, mkdir: true });
        if (this.failing) this.recovered();
        this.written++;
        this.firstPath ??= target;
        this.ctx.metrics.bytesOut += body.length;
        delivery.delivered();
        return;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? 'unknown';
        if (PERMANENT_CODES.has(code)) {
          delivery.rejected(`cannot write ${target}: ${code}: ${(err as Error).message}`);
          return;
        }
        const delay = backoffDelay(attempt, this.options.retry);
        this.failed(target, code, err);
        this.ctx.log.debug('write failed; retrying', { path: target, code, attempt: attempt + 1, retry_in_ms: delay });
        // On shutdown the record stays unacknowledged: it is read again after the restart.
        if (!(await waitOrAbort(delay, this.ctx.signal))) return;
      }
    }
  }

  /** One warning when writes start failing (ENOSPC, EACCES, EMFILE...), not one per document and attempt. */
  private failed(path: string, code: string, err: unknown): void {
    const message = (err as Error).message;
    const error = message.startsWith(code) ? message : `${code}: ${message}`;
    if (this.failing) {
      this.failing.retried++;
      this.failing.error = error;
      return;
    }
    this.failing = { since: Date.now(), error, retried: 1 };
    this.ctx.log.warn(
      `cannot write documents (${error}); they are not acknowledged and are retried with backoff until the write works or logferry stops. Free space or fix permissions under ${this.root}`,
      { path },
    );
  }

  private recovered(): void {
    const failing = this.failing!;
    this.failing = undefined;
    this.ctx.log.info('documents are written again', { failed_attempts: failing.retried, failing_ms: Date.now() - failing.since, last_error: failing.error });
  }

  async close(): Promise<void> {
    if (this.written > 0) {
      this.ctx.log.info(`wrote ${this.written} documents under ${relative(process.cwd(), this.root) || '.'}/`, {
        example: this.firstPath ? relative(process.cwd(), this.firstPath) : undefined,
      });
    }
  }
}

export const fileSink: ComponentDefinition<'sink', typeof fileSinkSchema> = {
  kind: 'sink',
  type: 'file',
  description: 'Writes each record to {path}/{key} atomically (temp file and rename).',
  schema: fileSinkSchema,
  requiresKey: true,
  build: (options, ctx) => new FileSink(options, ctx),
};
