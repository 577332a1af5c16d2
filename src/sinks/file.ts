import { rm, stat } from 'node:fs/promises';
import { relative, resolve, sep } from 'node:path';
import { z } from 'zod';
import { pathSchema } from '../config/limits.js';
import { ioErrorText } from '../errors.js';
import { writeFileAtomic } from '../engine/fs-atomic.js';
import type { ComponentDefinition, Delivery, HealthcheckResult, Sink, SinkContext } from '../engine/types.js';
import { ConcurrencyLimit, healthcheckEnabledSchema, retrySchema, retryUntilFinal, settleAll, type Verdict } from './delivery.js';
import { serializeRecord } from './serialize.js';
import { plural } from '../plural.js';

export const fileSinkSchema = z
  .object({
    path: pathSchema().describe('Folder that receives each record at {path}/{key}.'),
    pretty: z.boolean().default(false).describe('Indent the JSON documents.'),
    fsync: z
      .boolean()
      .default(false)
      .describe('fsync each document before acknowledging it: survives power loss, not only process crashes, at a large cost in throughput.'),
    concurrency: z.number().int().min(1).max(1024).default(16).describe('Documents written at the same time.'),
    retry: retrySchema
      .prefault({})
      .describe('Backoff while writes fail for every document (disk full, read-only, permissions): records are held and retried.'),
    healthcheck: healthcheckEnabledSchema('At start, check that the folder can be created and written.'),
  })
  .strict();

export type FileSinkOptions = z.output<typeof fileSinkSchema>;

/** Errors about this record's path only (its key names a folder, is too long): the record is dead-lettered. */
const RECORD_LEVEL_CODES = new Set(['ENAMETOOLONG', 'EISDIR', 'ENOTDIR', 'EINVAL', 'EEXIST']);
/** Errors every write would get until an operator acts: the sink is `blocked`. Others (EMFILE, EIO) pass by themselves. */
const BLOCKING_CODES = new Set(['ENOSPC', 'EDQUOT', 'EACCES', 'EPERM', 'EROFS']);

/**
 * Writes each record to `{path}/{key}` with a temp file and a rename, so a reader never sees half
 * a document and a redelivery replaces the file with the same bytes.
 */
class FileSink implements Sink {
  private readonly root: string;
  private readonly limit: ConcurrencyLimit;
  private written = 0;
  private firstPath: string | undefined;

  constructor(
    private readonly options: FileSinkOptions,
    private readonly ctx: SinkContext,
  ) {
    this.root = resolve(options.path);
    this.limit = new ConcurrencyLimit(options.concurrency);
  }

  async run(input: AsyncIterable<Delivery[]>): Promise<void> {
    for await (const batch of input) {
      for (const delivery of batch) await this.limit.run([delivery], () => this.deliver(delivery));
    }
    await this.limit.drain();
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
    const verdict = await retryUntilFinal(() => this.write(target, body), {
      retry: this.options.retry,
      signal: this.ctx.signal,
      state: this.ctx.state,
      onRetry: (reason, attempt, delayMs) => this.ctx.log.debug('write failed; retrying', { path: target, reason, attempt, retry_in_ms: delayMs }),
    });
    // On shutdown the record stays unacknowledged: it is read again after the restart.
    if (verdict === 'aborted') return;
    if (verdict.kind === 'ok') {
      this.written++;
      this.firstPath ??= target;
      this.ctx.metrics.bytesOut += body.length;
    }
    settleAll([delivery], verdict);
  }

  private async write(target: string, body: Buffer | string): Promise<Verdict> {
    try {
      // Every byte or an error (a short write on a full disk is an error): never a partial document acknowledged.
      await writeFileAtomic(target, body, { fsync: this.options.fsync, mkdir: true });
      return { kind: 'ok' };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'unknown';
      const reason = `cannot write ${target}: ${ioErrorText(err)}`;
      // ENOTDIR/EEXIST when `path` itself is a file would refuse every record: that is the destination's.
      if (RECORD_LEVEL_CODES.has(code) && (await isFolder(this.root))) return { kind: 'record', reason };
      if (RECORD_LEVEL_CODES.has(code)) {
        return { kind: 'destination', reason, blocked: true, advice: `path: ${this.root} is not a folder` };
      }
      return { kind: 'destination', reason, blocked: BLOCKING_CODES.has(code), advice: `free space, or fix permissions and mounts under ${this.root}` };
    }
  }

  /** Creates the folder and a file in it, then removes the file: what every write will need. */
  async healthcheck(): Promise<HealthcheckResult | undefined> {
    if (!this.options.healthcheck.enabled) return undefined;
    const probe = resolve(this.root, `.logferry-healthcheck-${process.pid}`);
    const verdict = await this.write(probe, '');
    if (verdict.kind === 'ok') {
      await rm(probe, { force: true }).catch(() => {});
      return { status: 'ok', message: `${this.root} is writable` };
    }
    const advice = verdict.kind === 'destination' && verdict.advice ? `; check ${verdict.advice}` : '';
    return { status: 'failed', message: `${verdict.reason}${advice}` };
  }

  async close(): Promise<void> {
    if (this.written > 0) {
      this.ctx.log.info(`wrote ${plural(this.written, 'document')} under ${relative(process.cwd(), this.root) || '.'}/`, {
        example: this.firstPath ? relative(process.cwd(), this.firstPath) : undefined,
      });
    }
  }
}

async function isFolder(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
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
