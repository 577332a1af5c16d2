import { mkdir, open, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { errorMessage, ioErrorText, knownCode, LogferryError, type ErrorCode } from '../errors.js';
import { applyMaskData, DEFAULT_MASK } from '../records/mask.js';
import { lineReference } from '../records/parse.js';
import {
  deadLetterBytes,
  deadLetterFileName,
  finishInterruptedReplay,
  listDeadLetterFiles,
  readDeadLetterFile,
  readReplayProgress,
  type DeadLetterLine,
} from './dead-letter-files.js';
import { fsyncDir, writeFully } from './fs-atomic.js';
import type { Logger } from './logger.js';
import type { DeadLetterInput, JsonObject, RecordKind } from './types.js';

export interface DeadLetterEntry {
  time: string;
  /**
   * A documented ErrorCode when logferry wrote the entry (toEntry sees to it); a string here
   * because entries are also read back from files an operator may have edited.
   */
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
  /** With a record's `text`: what `logferry dead-letter replay` needs to send it again as it was. */
  kind?: RecordKind;
  key?: string;
  received_digest?: string;
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
  /** `dead_letter.max_file_bytes`: an entry that would make the current file pass it starts the next file. */
  maxFileBytes?: number;
  /** `dead_letter.max_bytes`: an entry that would make all files together pass it waits (never dropped). */
  maxBytes?: number;
  /** Before the first write, finish a replay that was interrupted (see finishInterruptedReplay). */
  finishInterruptedReplay?: boolean;
}

/** The entries would make the dead-letter files pass dead_letter.max_bytes: they wait like on a full disk. */
class DeadLetterFilesFull extends LogferryError {
  constructor(readonly total: number, readonly limit: number) {
    super('LF_DEAD_LETTER_FULL', `the dead-letter files take ${total} bytes of dead_letter.max_bytes ${limit}`);
    this.name = 'DeadLetterFilesFull';
  }
}

/** Rejection of the writes still pending when the writer stops: their records are not acknowledged. */
export class DeadLetterWriterStopped extends LogferryError {
  constructor() {
    // Entries still pending at the stop are those that could not be written in time (blocked).
    super('LF_DEAD_LETTER_BLOCKED', 'the dead-letter writer stopped before the entry was written; its record is read again after a restart');
    this.name = 'DeadLetterWriterStopped';
  }
}

/** Why dead letters wait: the files reached dead_letter.max_bytes, or the disk refuses the write. */
type BlockedCode = Extract<ErrorCode, 'LF_DEAD_LETTER_FULL' | 'LF_DEAD_LETTER_BLOCKED'>;

interface PendingEntry {
  line: Buffer;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/**
 * Appends rejected lines and records to the dead-letter files under `{data_dir}/dead_letter/`
 * (dead-letters.ndjson, then numbered parts of dead_letter.max_file_bytes each). A write
 * resolves only after every byte is written and fdatasync returned, because the source position
 * moves past the record right after: a dead letter lost in a crash would be a record lost.
 *
 * When the file cannot be written (disk full, read-only, permissions) nothing is counted as
 * written: the entries wait in memory (their records stay unacknowledged, so the source position
 * is held and the budget they take pauses reading), a partly written batch is cut off again so
 * the file never holds a torn entry in its middle, and the writer retries with capped backoff
 * until it succeeds or the pipeline stops. It logs once when it gets blocked and once when it
 * recovers, never a line per entry. The files reaching dead_letter.max_bytes blocks it the same
 * way (LF_DEAD_LETTER_FULL): each retry measures the files again, so a replay or an operator who
 * removes files lets it go on.
 */
export class DeadLetterWriter {
  private handle: FileHandle | undefined;
  /** The current file's name and its place in write order (see dead-letter-files.ts). */
  private current = { name: deadLetterFileName(0), number: 0 };
  /** Bytes of every dead-letter file together, measured at opening and counted since. */
  private totalBytes = 0;
  private interruptedReplayChecked = false;
  /** Length of the file up to its last complete entry; the file is cut back to it after a failure. */
  private goodLength = 0;
  /** A failed attempt may have left bytes after goodLength. */
  private dirty = false;
  private pending: PendingEntry[] = [];
  private flushing: Promise<void> | undefined;
  private stopped = false;
  private wakeRetry: (() => void) | undefined;
  /** Set while writes fail; cleared (with an info line) once every waiting entry is written. */
  private blocked: { since: number; waited: number; error: string; code: BlockedCode } | undefined;

  /** Since when (ms since the epoch) entries cannot be written, and why; undefined while they can. */
  get blockedState(): { since: number; code: BlockedCode; error: string } | undefined {
    return this.blocked && { since: this.blocked.since, code: this.blocked.code, error: this.blocked.error };
  }

  constructor(
    private readonly dir: string,
    private readonly options: DeadLetterWriterOptions = {},
  ) {
    options.signal?.addEventListener('abort', () => this.stop(), { once: true });
  }

  static dirFor(dataDir: string): string {
    return join(dataDir, 'dead_letter');
  }

  /** The file entries are appended to now. */
  get file(): string {
    return join(this.dir, this.current.name);
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
        let batch: PendingEntry[] = [];
        try {
          await this.open();
          // While blocked, one entry at a time: what fits in the space left is written (and its
          // position released) instead of waiting for room for the whole backlog.
          batch = this.takeBatch(this.blocked ? 1 : this.pending.length, this.roomInFile());
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
        // Over once the whole backlog is written: while it is not, entries that find room are written
        // one at a time, and saying "recovered" after each would be a pair of lines per entry.
        if (this.blocked && this.pending.length === 0) this.noteRecovered();
      }
    } finally {
      this.flushing = undefined;
      if (this.stopped) this.rejectPending();
      else if (this.pending.length > 0) this.flushing = this.flush();
    }
  }

  /** Bytes one append may take: what is left of the current file (a whole file after rotating). */
  private roomInFile(): number {
    const maxFile = this.options.maxFileBytes ?? Infinity;
    const room = maxFile - this.goodLength;
    return Math.min(MAX_APPEND_BYTES, room > 0 ? room : maxFile);
  }

  private takeBatch(max: number, maxBytes: number): PendingEntry[] {
    let bytes = 0;
    let n = 0;
    while (n < this.pending.length && n < max && (n === 0 || bytes + this.pending[n]!.line.length <= maxBytes)) {
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
    let handle = await this.open();
    if (this.dirty) {
      // A failed attempt may have written part of its batch: cut it off before appending again.
      await handle.truncate(this.goodLength);
      this.dirty = false;
    }
    const data = batch.length === 1 ? batch[0]!.line : Buffer.concat(batch.map((p) => p.line));
    const maxBytes = this.options.maxBytes;
    if (maxBytes !== undefined && this.totalBytes + data.length > maxBytes) {
      // Measure again: a replay or an operator may have removed files (the current one too) since.
      await this.reopen();
      handle = await this.open();
      // An entry larger than max_bytes on its own is written into empty dead letters: it must not wait for good.
      if (this.totalBytes > 0 && this.totalBytes + data.length > maxBytes) throw new DeadLetterFilesFull(this.totalBytes, maxBytes);
    }
    if (this.goodLength > 0 && this.goodLength + data.length > (this.options.maxFileBytes ?? Infinity)) {
      handle = await this.rotate();
    }
    this.dirty = true;
    await writeFully(handle, data);
    await handle.datasync();
    this.goodLength += data.length;
    this.totalBytes += data.length;
    this.dirty = false;
  }

  /** Starts the next numbered file; the full one is closed as it is (files are never renamed). */
  private async rotate(): Promise<FileHandle> {
    await this.reopen();
    const next = { name: deadLetterFileName(this.current.number + 1), number: this.current.number + 1 };
    const handle = await open(join(this.dir, next.name), 'a+');
    try {
      // The new name must survive a crash like the entries written into it.
      await fsyncDir(this.dir);
    } catch (err) {
      await handle.close().catch(() => {});
      throw err;
    }
    this.handle = handle;
    this.current = next;
    this.goodLength = 0;
    this.dirty = false;
    return handle;
  }

  /** Closes the current file, so the next open() measures the files and picks the current one again. */
  private async reopen(): Promise<void> {
    const handle = this.handle;
    this.handle = undefined;
    await handle?.close();
  }

  /**
   * Opens the file for appending, first cutting off a torn last entry left by a crash in the middle
   * of an append. Its record was not acknowledged (the position moves only after the write), so it
   * is read again and dead-lettered again: dropping the fragment loses nothing.
   */
  private async open(): Promise<FileHandle> {
    if (this.handle) return this.handle;
    const created = await mkdir(this.dir, { recursive: true });
    if (this.options.finishInterruptedReplay && !this.interruptedReplayChecked) {
      await finishInterruptedReplay(this.dir, this.options.log);
      this.interruptedReplayChecked = true;
    }
    // Appends go to the last file in write order (the first one when there is none).
    const last = (await listDeadLetterFiles(this.dir)).at(-1);
    if (last) this.current = last;
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
      this.totalBytes = await deadLetterBytes(this.dir);
    } catch (err) {
      await handle.close().catch(() => {});
      throw err;
    }
    this.handle = handle;
    return handle;
  }

  private noteFailure(err: unknown): void {
    const full = err instanceof DeadLetterFilesFull;
    const error = full ? err.message : ioErrorText(err);
    const code: BlockedCode = full ? 'LF_DEAD_LETTER_FULL' : 'LF_DEAD_LETTER_BLOCKED';
    if (this.blocked?.code === code) {
      this.blocked.error = error;
      return;
    }
    const since = this.blocked?.since ?? Date.now();
    this.blocked = { since, waited: this.pending.length, error, code };
    if (full) {
      this.options.log?.warn(
        `the dead-letter files reached dead_letter.max_bytes (${err.limit} bytes under ${this.dir}); the records wait, unacknowledged, and reading pauses when the buffer is full. Nothing is dropped. Make room: stop this run and send the dead letters again with logferry dead-letter replay once their cause is fixed, or move dead-letter files out of ${this.dir}, or raise dead_letter.max_bytes: the writes are retried and the pipeline resumes by itself`,
        { code, dir: this.dir, bytes: err.total, max_bytes: err.limit, waiting: this.pending.length },
      );
      return;
    }
    this.options.log?.warn(
      `cannot write dead letters (${error}); the records wait, unacknowledged, and reading pauses when the buffer is full. Free space or fix permissions under ${this.dir}: the writes are retried and the pipeline resumes by itself`,
      { code: 'LF_DEAD_LETTER_BLOCKED', file: this.file, waiting: this.pending.length },
    );
  }

  private noteRecovered(): void {
    const blocked = this.blocked!;
    this.blocked = undefined;
    this.options.log?.info(blocked.code === 'LF_DEAD_LETTER_FULL' ? 'dead letters are written again: there is room under dead_letter.max_bytes' : 'dead letters are written again', {
      code: blocked.code,
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
  // The last gate before the disk: a code from a plugin written in JavaScript or a worker message
  // that is not documented becomes LF_INTERNAL, the original kept in the reason.
  const { code, reason } = knownCode(input.code, 'LF_INTERNAL', input.reason);
  const entry: DeadLetterEntry = {
    time: new Date().toISOString(),
    code,
    reason: scrub(reason),
    component: input.component,
    source: input.origin.source,
  };
  if (input.origin.file !== undefined) entry.file = input.origin.file;
  if (input.origin.offset !== undefined) entry.offset = input.origin.offset;
  if (input.doc) {
    if (input.kind !== undefined) entry.kind = input.kind;
    if (input.key !== undefined) entry.key = input.key;
    if (input.receivedDigest !== undefined) entry.received_digest = input.receivedDigest;
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

/** Reads every dead letter under a data dir, in write order (for `logferry dead-letter list` and `show`). */
export async function readDeadLetters(dataDir: string): Promise<DeadLetterEntry[]> {
  const entries: DeadLetterEntry[] = [];
  for (const { entry } of await readDeadLetterEntries(DeadLetterWriter.dirFor(dataDir))) entries.push(entry);
  return entries;
}

/**
 * Every dead letter with the line it is, in write order, without those an interrupted replay
 * already confirmed (they are removed when the next replay or run starts). A line that is not JSON
 * (a torn fragment) is skipped: its record was not acknowledged and is dead-lettered again.
 */
export async function readDeadLetterEntries(dir: string): Promise<{ line: DeadLetterLine; entry: DeadLetterEntry }[]> {
  const confirmed = await readReplayProgress(dir);
  const out: { line: DeadLetterLine; entry: DeadLetterEntry }[] = [];
  for (const { name } of await listDeadLetterFiles(dir)) {
    const gone = confirmed.get(name);
    for (const line of await readDeadLetterFile(dir, name)) {
      if (gone?.get(line.offset) === line.id) continue;
      try {
        out.push({ line, entry: JSON.parse(line.text) as DeadLetterEntry });
      } catch {
        // Not an entry: skipped, as above.
      }
    }
  }
  return out;
}
