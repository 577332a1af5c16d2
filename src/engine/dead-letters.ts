import { mkdir, open, readdir, readFile, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { errorMessage, ioErrorText } from '../errors.js';
import { applyMaskData, DEFAULT_MASK } from '../records/mask.js';
import { lineReference } from '../records/parse.js';
import { fsyncDir, writeFully } from './fs-atomic.js';
import type { Logger } from './logger.js';
import type { DeadLetterInput, JsonObject } from './types.js';

export interface DeadLetterEntry {
  time: string;
  code: string;
  reason: string;
  component: string;
  source: string;
  file?: string;
  offset?: number;
  /** Bytes of the line at `offset` (without its line end), for a line that is not a record. */
  length?: number;
  /** SHA-256 (hex) of those bytes: `logferry dead-letter show` checks it before printing the line. */
  sha256?: string;
  /** A record's JSON with its masks applied, or the line itself with `dead_letter.keep_text`. */
  text?: string;
  raw_base64?: string;
}

export interface DeadLetterOptions {
  /** Keep the text (or bytes) of lines that are not records (`dead_letter.keep_text`). */
  keepText?: boolean;
  /**
   * Applied to every record's document: mask_data (always, at any depth) and the redact fields and
   * patterns of the pipeline (see deadLetterRedactor). Without it, mask_data alone.
   */
  redact?: (doc: JsonObject) => JsonObject;
  /** Replaces configured secrets in the reason and the text (see secrets.ts). */
  scrub?: (text: string) => string;
}

/** How long the writer waits between attempts while dead letters cannot be written (capped backoff). */
const RETRY_INITIAL_MS = 100;
const RETRY_MAX_MS = 2000;
/** Bytes written per append at most, so one write call stays reasonable whatever the backlog. */
const MAX_APPEND_BYTES = 4 * 1024 * 1024;

export interface DeadLetterWriterOptions extends DeadLetterOptions {
  log?: Logger;
  /** Aborted when the pipeline stops: the writer stops retrying and rejects what it still holds. */
  signal?: AbortSignal;
  /** Backoff between attempts while blocked (tests shorten it). */
  retry?: { initialMs: number; maxMs: number };
}

/** Rejection of the writes still pending when the writer stops: their records are not acknowledged. */
export class DeadLetterWriterStopped extends Error {
  constructor() {
    super('the dead-letter writer stopped before the entry was written');
    this.name = 'DeadLetterWriterStopped';
  }
}

interface PendingEntry {
  line: Buffer;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/**
 * Appends rejected lines and records to `{data_dir}/dead_letter/dead-letters.ndjson`. A write
 * resolves only after every byte is written and fdatasync returned, because the source position
 * moves past the record right after: a dead letter lost in a crash would be a record lost.
 *
 * When the file cannot be written (disk full, read-only, permissions) nothing is counted as
 * written: the entries wait in memory (their records stay unacknowledged, so the source position
 * is held and the budget they take pauses reading), a partly written batch is cut off again so
 * the file never holds a torn entry in its middle, and the writer retries with capped backoff
 * until it succeeds or the pipeline stops. It logs once when it gets blocked and once when it
 * recovers, never a line per entry.
 */
export class DeadLetterWriter {
  private handle: FileHandle | undefined;
  /** Length of the file up to its last complete entry; the file is cut back to it after a failure. */
  private goodLength = 0;
  /** A failed attempt may have left bytes after goodLength. */
  private dirty = false;
  private pending: PendingEntry[] = [];
  private flushing: Promise<void> | undefined;
  private stopped = false;
  private wakeRetry: (() => void) | undefined;
  /** Set while writes fail; cleared (with an info line) once every waiting entry is written. */
  private blocked: { since: number; waited: number; error: string } | undefined;

  constructor(
    private readonly dir: string,
    private readonly options: DeadLetterWriterOptions = {},
  ) {
    options.signal?.addEventListener('abort', () => this.stop(), { once: true });
  }

  static dirFor(dataDir: string): string {
    return join(dataDir, 'dead_letter');
  }

  get file(): string {
    return join(this.dir, DEAD_LETTER_FILE);
  }

  write(input: DeadLetterInput): Promise<void> {
    if (this.stopped) return Promise.reject(new DeadLetterWriterStopped());
    const entry = toEntry(input, this.options);
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ line: Buffer.from(JSON.stringify(entry) + '\n'), resolve, reject });
      if (this.blocked) this.blocked.waited++;
      this.flushing ??= this.flush();
    });
  }

  private async flush(): Promise<void> {
    try {
      for (let attempt = 0; this.pending.length > 0 && !this.stopped; ) {
        // While blocked, one entry at a time: what fits in the space left is written (and its
        // position released) instead of waiting for room for the whole backlog.
        const batch = this.takeBatch(this.blocked ? 1 : this.pending.length);
        try {
          await this.append(batch);
        } catch (err) {
          this.noteFailure(err);
          // Cut off what the batch wrote in part now, so the file never keeps a torn entry while
          // blocked (if this fails too, the next attempt cuts it first).
          await this.cutBack();
          if (!(await this.backoff(attempt++))) break;
          continue;
        }
        attempt = 0;
        this.pending.splice(0, batch.length);
        for (const p of batch) p.resolve();
        if (this.pending.length === 0 && this.blocked) this.noteRecovered();
      }
    } finally {
      this.flushing = undefined;
      if (this.stopped) this.rejectPending();
      else if (this.pending.length > 0) this.flushing = this.flush();
    }
  }

  private takeBatch(max: number): PendingEntry[] {
    let bytes = 0;
    let n = 0;
    while (n < this.pending.length && n < max && (n === 0 || bytes + this.pending[n]!.line.length <= MAX_APPEND_BYTES)) {
      bytes += this.pending[n]!.line.length;
      n++;
    }
    return this.pending.slice(0, n);
  }

  private async cutBack(): Promise<void> {
    if (!this.dirty || !this.handle) return;
    try {
      await this.handle.truncate(this.goodLength);
      this.dirty = false;
    } catch {
      // Retried before the next append.
    }
  }

  private async append(batch: PendingEntry[]): Promise<void> {
    const handle = await this.open();
    if (this.dirty) {
      // A failed attempt may have written part of its batch: cut it off before appending again.
      await handle.truncate(this.goodLength);
      this.dirty = false;
    }
    const data = batch.length === 1 ? batch[0]!.line : Buffer.concat(batch.map((p) => p.line));
    this.dirty = true;
    await writeFully(handle, data);
    await handle.datasync();
    this.goodLength += data.length;
    this.dirty = false;
  }

  /**
   * Opens the file for appending, first cutting off a torn last entry left by a crash in the middle
   * of an append. Its record was not acknowledged (the position moves only after the write), so it
   * is read again and dead-lettered again: dropping the fragment loses nothing.
   */
  private async open(): Promise<FileHandle> {
    if (this.handle) return this.handle;
    const created = await mkdir(this.dir, { recursive: true });
    const handle = await open(this.file, 'a+');
    try {
      // The file (and the folder, when it was just made) must survive a crash like the entries:
      // fdatasync of the file does not make its name durable.
      await fsyncDir(this.dir);
      if (created !== undefined) await fsyncDir(dirname(this.dir));
      const size = (await handle.stat()).size;
      const complete = await completeLength(handle, size);
      if (complete < size) {
        await handle.truncate(complete);
        await handle.datasync();
        this.options.log?.warn('cut off a torn last dead letter left by an interrupted write; its record is dead-lettered again', {
          file: this.file,
          bytes: size - complete,
        });
      }
      this.goodLength = complete;
      this.dirty = false;
    } catch (err) {
      await handle.close().catch(() => {});
      throw err;
    }
    this.handle = handle;
    return handle;
  }

  private noteFailure(err: unknown): void {
    const error = ioErrorText(err);
    if (this.blocked) {
      this.blocked.error = error;
      return;
    }
    this.blocked = { since: Date.now(), waited: this.pending.length, error };
    this.options.log?.warn(
      `cannot write dead letters (${error}); the records wait, unacknowledged, and reading pauses when the buffer is full. Free space or fix permissions under ${this.dir}: the writes are retried and the pipeline resumes by itself`,
      { code: 'LF_DEAD_LETTER_BLOCKED', file: this.file, waiting: this.pending.length },
    );
  }

  private noteRecovered(): void {
    const blocked = this.blocked!;
    this.blocked = undefined;
    this.options.log?.info('dead letters are written again', {
      code: 'LF_DEAD_LETTER_BLOCKED',
      waited: blocked.waited,
      blocked_ms: Date.now() - blocked.since,
    });
  }

  private backoff(attempt: number): Promise<boolean> {
    const retry = this.options.retry ?? { initialMs: RETRY_INITIAL_MS, maxMs: RETRY_MAX_MS };
    const delay = Math.min(retry.maxMs, retry.initialMs * 2 ** Math.min(attempt, 20));
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        this.wakeRetry = undefined;
        resolve(!this.stopped);
      }, delay);
      this.wakeRetry = () => {
        clearTimeout(timer);
        this.wakeRetry = undefined;
        resolve(false);
      };
    });
  }

  /** Stops retrying: entries not yet written are rejected (their records stay unacknowledged). */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.wakeRetry?.();
    if (!this.flushing) this.rejectPending();
  }

  private rejectPending(): void {
    const pending = this.pending;
    this.pending = [];
    for (const p of pending) p.reject(new DeadLetterWriterStopped());
  }

  /** Waits for the writes in progress (use stop() first to give up on a blocked writer), then closes. */
  async close(): Promise<void> {
    while (this.flushing) await this.flushing;
    await this.handle?.close();
    this.handle = undefined;
  }
}

const DEAD_LETTER_FILE = 'dead-letters.ndjson';

/** The length of the file up to and including its last newline (0 when it has none). */
async function completeLength(handle: FileHandle, size: number): Promise<number> {
  const chunk = Buffer.allocUnsafe(64 * 1024);
  let end = size;
  while (end > 0) {
    const start = Math.max(0, end - chunk.length);
    const { bytesRead } = await handle.read(chunk, 0, end - start, start);
    const nl = chunk.subarray(0, bytesRead).lastIndexOf(0x0a);
    if (nl >= 0) return start + nl + 1;
    end = start;
  }
  return 0;
}

const maskOnly = (doc: JsonObject): JsonObject => applyMaskData(doc, () => DEFAULT_MASK, true);
const asIs = (text: string): string => text;

/**
 * Steps marked mask_data never reach a dead letter, whatever the pipeline's redact options; nor
 * does the text of a line that is not a record (it may hold them), unless keep_text asks for it:
 * such a line is named by its file, offset, length and hash.
 */
export function toEntry(input: DeadLetterInput, options: DeadLetterOptions = {}): DeadLetterEntry {
  const scrub = options.scrub ?? asIs;
  const entry: DeadLetterEntry = {
    time: new Date().toISOString(),
    code: input.code,
    reason: scrub(input.reason),
    component: input.component,
    source: input.origin.source,
  };
  if (input.origin.file !== undefined) entry.file = input.origin.file;
  if (input.origin.offset !== undefined) entry.offset = input.origin.offset;
  if (input.doc) {
    // A document built by a plugin is not bounded by max_depth (nor free of cycles or BigInts): if it
    // cannot be written, the entry says so instead of failing, so the record still gets its dead letter.
    try {
      entry.text = scrub(JSON.stringify((options.redact ?? maskOnly)(input.doc)));
    } catch (err) {
      entry.reason += ` (the document could not be written into the dead letter: ${errorMessage(err)})`;
    }
    return entry;
  }
  const raw = input.rawBase64 !== undefined ? Buffer.from(input.rawBase64, 'base64') : input.text;
  const line = input.line ?? (raw !== undefined ? lineReference(raw) : undefined);
  if (line) {
    entry.length = line.length;
    entry.sha256 = line.sha256;
  }
  if (options.keepText) {
    if (input.text !== undefined) entry.text = scrub(input.text);
    if (input.rawBase64 !== undefined) entry.raw_base64 = input.rawBase64;
  }
  return entry;
}

/** Reads every dead letter under a data dir (for `logferry dead-letter list`). */
export async function readDeadLetters(dataDir: string): Promise<DeadLetterEntry[]> {
  const dir = DeadLetterWriter.dirFor(dataDir);
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith('.ndjson')).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const entries: DeadLetterEntry[] = [];
  for (const name of names) {
    const text = await readFile(join(dir, name), 'utf8');
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      try {
        entries.push(JSON.parse(line) as DeadLetterEntry);
      } catch {
        // A torn last line after a crash during append: the record was not acknowledged, so it
        // will be dead-lettered again from the source; skip the fragment.
      }
    }
  }
  return entries;
}

