import { createHash } from 'node:crypto';
import { access, open, readdir, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { accessSync, constants, statSync } from 'node:fs';
import { glob, globSync, isDynamicPattern, type GlobOptions } from 'tinyglobby';
import { z } from 'zod';
import { HOUR_MS, MiB, MINUTE_MS, pathSchema } from '../config/limits.js';
import { OffsetTracker } from '../engine/offsets.js';
import type { ComponentDefinition, LineLimits, PreflightProblem, Source, SourceContext } from '../engine/types.js';
import { DEFAULT_MAX_DEPTH, MAX_MAX_DEPTH } from '../records/structure.js';

/**
 * A line becomes one JavaScript string, and V8 strings stop at about 512 Mi characters; 256 MiB
 * leaves room for the copies parsing makes.
 */
const MAX_LINE_BYTES = 256 * MiB;
/** One Buffer allocated up front; 4 GiB aborted Node (issue 9), and reads above a few MiB gain nothing. */
const MAX_READ_BUFFER_BYTES = 64 * MiB;
import { LineSplitter } from './line-splitter.js';
import { RotationWatch, staticFolderOf } from './rotation-watch.js';

export { staticFolderOf };

export const jobLogTailSchema = z
  .object({
    include: z.array(pathSchema()).min(1).describe('Glob patterns of NDJSON files to follow; new matches are picked up while running.'),
    exclude: z.array(pathSchema()).default([]).describe('Glob patterns to leave out.'),
    start_at: z
      .enum(['beginning', 'end'])
      .default('beginning')
      .describe('Where to start in a file that has no checkpoint and exists at start-up. Files that appear later are read from their beginning.'),
    max_line_bytes: z
      .number()
      .int()
      .positive()
      .max(MAX_LINE_BYTES)
      .default(8 * 1024 * 1024)
      .describe('Longer lines become dead letters; the lines after them keep flowing. At most 256 MiB.'),
    max_depth: z
      .number()
      .int()
      .min(1)
      .max(MAX_MAX_DEPTH)
      .default(DEFAULT_MAX_DEPTH)
      .describe('Deepest nesting of objects and arrays a line may have ({} is 1); deeper lines become dead letters (LF_RECORD_TOO_DEEP) before they are parsed.'),
    poll_interval_ms: z
      .number()
      .int()
      .positive()
      .max(MINUTE_MS)
      .default(250)
      .describe('How often a file at its end is checked for new data (at most 1 minute).'),
    glob_interval_ms: z
      .number()
      .int()
      .positive()
      .max(10 * MINUTE_MS)
      .default(1000)
      .describe('How often the globs are expanded again to find new and rotated files (at most 10 minutes).'),
    rotate_wait_ms: z
      .number()
      .int()
      .nonnegative()
      .max(HOUR_MS)
      .default(5000)
      .describe('How long a file that was rotated away is still read after its last growth, for writers that still hold it open (at most 1 hour).'),
    read_buffer_bytes: z
      .number()
      .int()
      .min(4096)
      .max(MAX_READ_BUFFER_BYTES)
      .default(256 * 1024)
      .describe('Bytes read from a file at a time (4 KiB to 64 MiB).'),
  })
  .strict();

export type JobLogTailOptions = z.output<typeof jobLogTailSchema>;

/** Fingerprint of the first bytes: tells a reused inode from the file that was checkpointed. */
const FINGERPRINT_BYTES = 1024;
/** Files finished and closed, remembered so a later rename of one does not read it again. */
const REMEMBERED_RELEASED = 4096;
const CARRIAGE_RETURN = 0x0d;

interface FileCheckpoint {
  path: string;
  dev: number;
  ino: number;
  fingerprint: string;
  fingerprint_bytes: number;
  offset: number;
}

interface TailCheckpoint {
  version: 1;
  files: FileCheckpoint[];
}

class TailedFile {
  /** Next byte to read. */
  readOffset: number;
  tracker: OffsetTracker;
  /** Cuts what is read into lines; holds the unfinished last line. */
  readonly lines: LineSplitter;
  /** The path now names another file, or nothing: finish this one, then let it go. */
  rotated = false;
  lastGrowth = Date.now();
  size = 0;
  atEof = false;
  /** A rotated-away file that still has to be finished before this one is read (tail -F order). */
  predecessor: TailedFile | undefined;

  constructor(
    public path: string,
    readonly handle: FileHandle,
    readonly dev: number,
    readonly ino: number,
    public fingerprint: string,
    public fingerprintBytes: number,
    start: number,
    maxLineBytes: number,
  ) {
    this.readOffset = start;
    this.lines = new LineSplitter(maxLineBytes, start);
    this.tracker = new OffsetTracker(start);
  }

  get identity(): string {
    return `${this.dev}:${this.ino}`;
  }

  /** Starts over at byte 0 (copytruncate); acknowledgements of the old content no longer move anything. */
  restart(): void {
    this.readOffset = 0;
    this.lines.reset(0);
    this.tracker = new OffsetTracker(0);
    this.atEof = false;
  }

  checkpoint(): FileCheckpoint {
    return {
      path: this.path,
      dev: this.dev,
      ino: this.ino,
      fingerprint: this.fingerprint,
      fingerprint_bytes: this.fingerprintBytes,
      offset: this.tracker.committed,
    };
  }
}

async function fingerprintOf(handle: FileHandle, size: number): Promise<{ fingerprint: string; bytes: number }> {
  const length = Math.min(size, FINGERPRINT_BYTES);
  const buf = Buffer.alloc(length);
  const { bytesRead } = length > 0 ? await handle.read(buf, 0, length, 0) : { bytesRead: 0 };
  return { fingerprint: createHash('sha256').update(buf.subarray(0, bytesRead)).digest('hex'), bytes: bytesRead };
}

async function fingerprintPrefix(handle: FileHandle, bytes: number): Promise<string> {
  const buf = Buffer.alloc(bytes);
  const { bytesRead } = bytes > 0 ? await handle.read(buf, 0, bytes, 0) : { bytesRead: 0 };
  return bytesRead === bytes ? createHash('sha256').update(buf).digest('hex') : '';
}

function isCheckpoint(value: unknown): value is TailCheckpoint {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as { version?: unknown }).version === 1 &&
    Array.isArray((value as { files?: unknown }).files)
  );
}

/**
 * Follows NDJSON files like `tail -F`, with positions that move only when the records are
 * acknowledged end to end. Modelled on Fluent Bit's in_tail: files are tracked by identity
 * (device and inode) rather than by name, so a rename rotation finishes the old file and a
 * copytruncate (the file shrinks) starts the same file over.
 */
class JobLogTail implements Source {
  private readonly files = new Map<string, TailedFile>();
  private readonly readBuffer: Buffer;
  private restored: FileCheckpoint[] = [];
  private ctx!: SourceContext;
  private watch: RotationWatch | undefined;
  /** A watched folder changed: expand the globs at once instead of at the next glob_interval_ms. */
  private rescanRequested = false;
  private wake: (() => void) | undefined;
  /** Files opened on a watch event, one at a time and in event order; ready after the first scan. */
  private adoptions: Promise<void> | undefined;
  /** Identity -> fingerprint (with its length) of files finished and closed. */
  private readonly released = new Map<string, string>();

  /** One object for every line, so handing the limits over costs nothing per line. */
  private readonly lineLimits: LineLimits;

  constructor(private readonly options: JobLogTailOptions) {
    this.readBuffer = Buffer.allocUnsafe(options.read_buffer_bytes);
    this.lineLimits = { maxDepth: options.max_depth };
  }

  checkpoint(): TailCheckpoint {
    const files = [...this.files.values()].map((f) => f.checkpoint());
    // Positions loaded at start for files not open: the checkpoint timer saves while the first scan
    // still runs, and a file may not be openable for a while. Dropping them would make the next
    // start read those files from the beginning again (or, with start_at: end, skip what is new).
    for (const saved of this.restored) if (!this.files.has(`${saved.dev}:${saved.ino}`)) files.push(saved);
    return { version: 1, files };
  }

  bytesBehindByFile(): { file: string; bytes: number }[] {
    return [...this.files.values()].map((f) => ({ file: f.path, bytes: Math.max(0, f.size - f.tracker.committed) }));
  }

  bytesBehind(): number {
    let behind = 0;
    for (const f of this.files.values()) behind += Math.max(0, f.size - f.tracker.committed);
    return behind;
  }

  async run(ctx: SourceContext): Promise<void> {
    this.ctx = ctx;
    this.restored = isCheckpoint(ctx.restored) ? ctx.restored.files : [];
    try {
      if (!ctx.once) this.watchFolders();
      await this.scan(true);
      await this.resumeRotatedAway();
      if (!ctx.once) this.adoptions = Promise.resolve();
      let lastScan = Date.now();
      while (!ctx.signal.aborted) {
        if (!ctx.once && (this.rescanRequested || Date.now() - lastScan >= this.options.glob_interval_ms)) {
          this.rescanRequested = false;
          await this.scan(false);
          lastScan = Date.now();
        }
        let progressed = false;
        for (const file of [...this.files.values()]) {
          if (ctx.signal.aborted) break;
          if (this.waitsForPredecessor(file)) continue;
          try {
            if (await this.readAvailable(file)) progressed = true;
            ctx.inputReadable(file.path);
          } catch (err) {
            // Tried again on the next turn; --once ends when nothing else progresses (then exits 74).
            if (ctx.signal.aborted) throw err;
            ctx.inputUnreadable(file.path, err);
          }
        }
        await this.releaseFinished();
        if (ctx.once && !progressed) {
          for (const file of this.files.values()) await this.flushPartialAtEnd(file);
          return;
        }
        if (!progressed && !this.rescanRequested) await this.idle();
      }
    } catch (err) {
      if (!ctx.signal.aborted) throw err;
    } finally {
      this.watch?.close();
      this.adoptions = undefined;
      // Handles are closed only after the engine has drained; positions stay in memory for the
      // final checkpoint, which the engine writes after this returns.
      // Not awaited, and a failing close is ignored: the positions are in memory already, and a
      // handle that will not close costs nothing the process exit does not reclaim.
      for (const file of this.files.values()) void file.handle.close().catch(() => {});
    }
  }

  /**
   * Polling alone misses a file that is created and renamed away between two glob expansions;
   * inotify (through fs.watch) tells us about it within milliseconds, while we can still open it.
   * Once open, a rename no longer matters: the handle follows the inode.
   */
  private watchFolders(): void {
    this.watch = new RotationWatch(this.options.include, ignorePatterns(this.options.exclude), {
      matching: (path) => this.adopt(path, false),
      renamedAway: (path, from) => this.adopt(path, true, from),
      changed: () => {
        this.rescanRequested = true;
        this.wake?.();
      },
      grew: () => this.wake?.(),
    });
    this.watch.start();
  }

  /**
   * Opens a file named in a watch event. `renamed`: it was renamed out of the globs, maybe before
   * we ever opened it, so it is read to its end as a rotated file; only a file we do not know yet,
   * that is not empty, starts like NDJSON and is not a copy of a file we follow (copytruncate) is
   * taken, so an archive written later (`jobs.ndjson.1.gz`) is never read.
   */
  private adopt(path: string, renamed: boolean, from?: string): void {
    if (!this.adoptions) return;
    this.adoptions = this.adoptions.then(() => this.adoptNow(path, renamed, from)).catch((err: unknown) => {
      this.ctx.log.debug('could not open a file named in a watch event; the next scan looks again', { path, error: err });
    });
  }

  private async adoptNow(path: string, renamed: boolean, from?: string): Promise<void> {
    if (this.ctx.signal.aborted || !this.adoptions) return;
    const info = await stat(path).catch(() => undefined);
    if (!info?.isFile()) return;
    const identity = `${info.dev}:${info.ino}`;
    const known = this.files.get(identity);
    if (known) {
      if (renamed && known.path !== path) known.path = path;
      return;
    }
    if (renamed && info.size === 0) return;
    // The name that disappeared held a file we follow that is now deleted: the two events were a
    // delete and an unrelated new name, not one rename. (A followed file still at that name says
    // nothing: the watch may already have opened the next live file there.)
    if (renamed && (await this.followedAndDeleted(from))) {
      this.ctx.log.debug('a file appeared right after a rename but is not the renamed file (the name that disappeared holds a file we follow); not read', { was: from, path });
      return;
    }
    const file = await this.openFile(path, info.dev, info.ino, info.size, false);
    if (!file) return;
    // A file we finished and closed, renamed once more: already read.
    const finished = renamed && this.released.get(identity) === `${file.fingerprintBytes}:${file.fingerprint}`;
    if (this.files.has(identity) || finished || (renamed && !(await this.looksRenamedAway(file)))) {
      if (renamed && !finished && !this.files.has(identity)) {
        this.ctx.log.debug('a file appeared right after a rename but is not the renamed file (an archive, a copy); not read', { path });
      }
      await file.handle.close().catch(() => {});
      return;
    }
    if (renamed) {
      file.rotated = true;
      this.ctx.log.info('following a file renamed out of the include globs; reading it to its end', { path });
    } else {
      this.follow(file);
    }
    this.files.set(identity, file);
    this.wake?.();
  }

  private async followedAndDeleted(path: string | undefined): Promise<boolean> {
    for (const file of this.files.values()) {
      if (file.path !== path) continue;
      const info = await file.handle.stat().catch(() => undefined);
      if (info?.nlink === 0) return true;
    }
    return false;
  }

  /** A file renamed away is text that starts with a JSON object, and no copy of a file we follow or finished. */
  private async looksRenamedAway(file: TailedFile): Promise<boolean> {
    const head = Buffer.alloc(64);
    const { bytesRead } = await file.handle.read(head, 0, head.length, 0);
    let i = 0;
    while (i < bytesRead && (head[i] === 0x20 || head[i] === 0x09 || head[i] === 0x0a || head[i] === CARRIAGE_RETURN)) i++;
    if (i >= bytesRead || head[i] !== 0x7b) return false;
    const fingerprint = `${file.fingerprintBytes}:${file.fingerprint}`;
    for (const other of this.files.values()) if (`${other.fingerprintBytes}:${other.fingerprint}` === fingerprint) return false;
    for (const done of this.released.values()) if (done === fingerprint) return false;
    return true;
  }

  /** A new file at a path we follow: the file that had that path was rotated away; finish it first. */
  private follow(file: TailedFile): void {
    const before = [...this.files.values()].find((f) => f.path === file.path && f.identity !== file.identity);
    if (before) {
      before.rotated = true;
      file.predecessor = before;
      this.ctx.log.info('file rotated: finishing the old file before reading the new one', { path: file.path });
    }
  }

  private idle(): Promise<void> {
    return new Promise<void>((done) => {
      const finish = (): void => {
        clearTimeout(timer);
        this.ctx.signal.removeEventListener('abort', finish);
        this.wake = undefined;
        done();
      };
      const timer = setTimeout(finish, this.options.poll_interval_ms);
      this.ctx.signal.addEventListener('abort', finish, { once: true });
      this.wake = finish;
    });
  }

  /** tail -F order: the file that replaced a rotated one is read once the old one is at its end. */
  private waitsForPredecessor(file: TailedFile): boolean {
    const before = file.predecessor;
    if (!before) return false;
    if (before.rotated && !before.atEof && this.files.has(before.identity)) return true;
    file.predecessor = undefined;
    return false;
  }

  private async scan(initial: boolean): Promise<void> {
    // Files opened on a watch event while the glob runs are not in its result: only the files
    // known before it can have stopped matching.
    const knownBefore = new Set(this.files.keys());
    await this.checkFolders();
    const paths = await glob(this.options.include, globOptions(this.options));
    const seen = new Set<string>();
    for (const path of paths.sort()) {
      let info;
      try {
        info = await stat(path);
      } catch {
        continue; // removed between the glob and the stat
      }
      const identity = `${info.dev}:${info.ino}`;
      seen.add(identity);
      const known = this.files.get(identity);
      if (known) {
        if (known.path !== path) {
          // Renamed to a name that still matches: same file, keep reading it.
          known.path = path;
        }
        known.rotated = false;
        try {
          await this.checkTruncatedByContent(known);
        } catch (err) {
          this.ctx.inputUnreadable(path, err);
        }
        continue;
      }
      const file = await this.openFile(path, info.dev, info.ino, info.size, initial);
      if (!file) continue;
      if (this.files.has(identity)) {
        // Opened meanwhile on a watch event.
        await file.handle.close().catch(() => {});
        continue;
      }
      this.follow(file);
      this.files.set(identity, file);
    }
    for (const file of this.files.values()) {
      if (!seen.has(file.identity) && !file.rotated && knownBefore.has(file.identity)) {
        file.rotated = true;
        this.ctx.log.info('file no longer matches the include globs (rotated or removed); reading it to its end', { path: file.path });
      }
    }
  }

  /**
   * The glob skips a folder it cannot list without a word, so a folder that lost its permissions
   * would look like one with no files: it is reported like an unreadable file (--once exits 74).
   */
  private async checkFolders(): Promise<void> {
    for (const folder of new Set(this.options.include.map(staticFolderOf))) {
      try {
        await access(folder, constants.R_OK | constants.X_OK);
        this.ctx.inputReadable(folder);
      } catch (err) {
        // A folder that does not exist yet is fine: files that appear later are picked up.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.ctx.inputUnreadable(folder, err);
      }
    }
  }

  private async openFile(path: string, dev: number, ino: number, size: number, initial: boolean): Promise<TailedFile | undefined> {
    let handle: FileHandle | undefined;
    let current: { fingerprint: string; bytes: number };
    try {
      handle = await open(path, 'r');
      current = await fingerprintOf(handle, size);
    } catch (err) {
      await handle?.close().catch(() => {});
      // Renamed or removed since the caller's stat (a rotation): the next scan or the watch finds it.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      // Logged once by the engine; tried again at the next scan; `run --once` exits 74.
      this.ctx.inputUnreadable(path, err);
      return undefined;
    }
    this.ctx.inputReadable(path);
    // The name can move to another file between the caller's stat and this open (a rotation): a
    // handle on the new file under the old one's identity would read the new lines twice and the
    // old ones never. Let the next scan (or the watch) find each file by what it is.
    const opened = await handle.stat();
    if (opened.dev !== dev || opened.ino !== ino) {
      await handle.close().catch(() => {});
      this.rescanRequested = true;
      return undefined;
    }
    let start = initial && this.options.start_at === 'end' ? size : 0;
    const saved = this.restored.find((c) => c.dev === dev && c.ino === ino);
    if (saved) {
      const same = (await fingerprintPrefix(handle, saved.fingerprint_bytes)) === saved.fingerprint;
      if (!same) {
        this.ctx.log.info('inode reused by a different file (fingerprint differs); reading it from the beginning', { path });
        start = 0;
      } else if (size < saved.offset) {
        this.ctx.log.info('file shrank while logferry was stopped (truncated); reading it from the beginning', { path });
        start = 0;
      } else {
        start = saved.offset;
      }
      this.restored = this.restored.filter((c) => c !== saved);
    }
    const file = new TailedFile(path, handle, dev, ino, current.fingerprint, current.bytes, start, this.options.max_line_bytes);
    file.size = size;
    this.ctx.log.debug('following file', { path, offset: start });
    return file;
  }

  /**
   * A checkpointed file that no longer matches the globs may have been rotated away while we were
   * down, with lines still unacknowledged. Rotated files usually stay in the same folder, so look
   * there for the same inode and finish it.
   */
  private async resumeRotatedAway(): Promise<void> {
    for (const saved of this.restored) {
      const dir = dirname(saved.path);
      let names: string[];
      try {
        names = await readdir(dir);
      } catch {
        continue;
      }
      for (const name of names) {
        const path = join(dir, name);
        const info = await stat(path).catch(() => undefined);
        if (!info?.isFile() || info.dev !== saved.dev || info.ino !== saved.ino || info.size <= saved.offset) continue;
        const file = await this.openFile(path, info.dev, info.ino, info.size, false);
        if (!file || file.readOffset !== saved.offset) {
          await file?.handle.close();
          continue;
        }
        file.rotated = true;
        this.files.set(file.identity, file);
        for (const other of this.files.values()) {
          if (other !== file && other.path === saved.path) other.predecessor = file;
        }
        this.ctx.log.info('resuming a file that was rotated away while logferry was stopped', { path, offset: saved.offset, was: basename(saved.path) });
        break;
      }
    }
    // Kept: the files still at their path that could not be opened (unreadable for now); a later
    // scan opens them at their saved position. The others are gone.
    const kept: FileCheckpoint[] = [];
    for (const saved of this.restored) {
      const info = await stat(saved.path).catch(() => undefined);
      if (info?.isFile() && info.dev === saved.dev && info.ino === saved.ino && !this.files.has(`${info.dev}:${info.ino}`)) kept.push(saved);
    }
    this.restored = kept;
  }

  /** A file whose first bytes changed was truncated and rewritten (faster than a size check sees). */
  private async checkTruncatedByContent(file: TailedFile): Promise<void> {
    if (file.fingerprintBytes === 0) return;
    const now = await fingerprintPrefix(file.handle, file.fingerprintBytes);
    if (now === file.fingerprint) return;
    if (now === '' || file.readOffset > 0) {
      this.ctx.log.info('file was truncated (copytruncate); reading it again from the beginning', { path: file.path });
      file.restart();
      const fresh = await fingerprintOf(file.handle, (await file.handle.stat()).size);
      file.fingerprint = fresh.fingerprint;
      file.fingerprintBytes = fresh.bytes;
    }
  }

  /** Reads what is there now; returns whether any byte was read. */
  private async readAvailable(file: TailedFile): Promise<boolean> {
    const info = await file.handle.stat();
    if (info.size < file.readOffset) {
      this.ctx.log.info('file shrank (copytruncate); reading it again from the beginning', { path: file.path });
      file.restart();
    }
    if (info.size !== file.size) {
      file.lastGrowth = Date.now();
      // A truncate followed by fast writes can grow the file past our offset before we look;
      // its first bytes changing gives it away.
      if (file.readOffset > 0) await this.checkTruncatedByContent(file);
    }
    file.size = info.size;
    if (file.fingerprintBytes < FINGERPRINT_BYTES && info.size > file.fingerprintBytes) {
      const fresh = await fingerprintOf(file.handle, info.size);
      file.fingerprint = fresh.fingerprint;
      file.fingerprintBytes = fresh.bytes;
    }
    let progressed = false;
    // Bounded rounds per turn so that one busy file does not starve the others.
    for (let round = 0; round < 64 && file.readOffset < file.size && !this.ctx.signal.aborted; round++) {
      const { bytesRead } = await file.handle.read(this.readBuffer, 0, this.readBuffer.length, file.readOffset);
      if (bytesRead === 0) break;
      const chunkStart = file.readOffset;
      file.readOffset += bytesRead;
      progressed = true;
      await this.consume(file, this.readBuffer.subarray(0, bytesRead), chunkStart);
    }
    file.atEof = file.readOffset >= file.size;
    if (progressed && file.atEof) this.ctx.log.debug('read to the end of the file', { path: file.path, offset: file.readOffset });
    return progressed;
  }

  private async consume(file: TailedFile, chunk: Buffer, chunkStart: number): Promise<void> {
    const lines = file.lines;
    lines.push(chunk, chunkStart);
    while (lines.next()) await this.handleSplit(file);
  }

  /** In --once mode the last line of a file counts as complete even without its newline. */
  private async flushPartialAtEnd(file: TailedFile): Promise<void> {
    if (file.lines.finish(file.readOffset)) await this.handleSplit(file);
  }

  private async handleSplit(file: TailedFile): Promise<void> {
    const { lines } = file;
    if (lines.kind === 'too_long') await this.rejectLongLine(file, lines.start, lines.end);
    else await this.handleLine(file, lines.line, lines.start, lines.end);
  }

  private async rejectLongLine(file: TailedFile, start: number, end: number): Promise<void> {
    const finish = file.tracker.track(end);
    // The text is not kept: holding it is what max_line_bytes protects against. The position lets
    // an operator cut the line out of the file and replay it with a larger limit.
    await this.ctx.deadLetter({
      code: 'LF_RECORD_TOO_LONG',
      reason: `line of ${end - start} bytes is longer than max_line_bytes (${this.options.max_line_bytes}); raise max_line_bytes to ship it (bytes ${start}..${end} of the file)`,
      component: this.ctx.id,
      origin: { source: this.ctx.id, file: file.path, offset: start },
    });
    finish();
  }

  /** `line` is without its newline and without a CR before it (LineSplitter). */
  private async handleLine(file: TailedFile, line: Buffer, start: number, end: number): Promise<void> {
    if (isBlank(line)) {
      file.tracker.skip(end);
      return;
    }
    const origin = { source: this.ctx.id, file: file.path, offset: start };
    // The engine parses the line (inline or on the worker pool) and dead-letters what is not a record.
    await this.ctx.emitLine(line, origin, file.tracker.track(end), this.lineLimits);
  }

  /** Closes rotated-away files that are read to their end and fully acknowledged. */
  private async releaseFinished(): Promise<void> {
    for (const [identity, file] of this.files) {
      if (!file.rotated || !file.atEof || file.tracker.pending > 0 || file.lines.holdsPartial) continue;
      const quietFor = Date.now() - file.lastGrowth;
      if (!this.ctx.once && quietFor < this.options.rotate_wait_ms) continue;
      this.files.delete(identity);
      this.released.set(identity, `${file.fingerprintBytes}:${file.fingerprint}`);
      if (this.released.size > REMEMBERED_RELEASED) this.released.delete(this.released.keys().next().value!);
      await file.handle.close().catch(() => {});
      this.ctx.log.info('finished a rotated file', { path: file.path });
    }
  }
}

/**
 * `include` names files. A pattern that names a folder does not read the folder (tinyglobby would
 * expand it to everything below, credentials included), and wildcards skip hidden files and folders
 * (`.aws/`, `.env`) unless the pattern spells the dot out (`logs/.archive/*.ndjson`). An `exclude`
 * that names a folder leaves out everything below it.
 */
/** The `exclude` patterns as the scan and the watch apply them: a folder leaves out everything below it. */
export function ignorePatterns(exclude: readonly string[]): string[] {
  return exclude.flatMap((pattern) => [pattern, `${pattern.replace(/\/+$/, '')}/**`]);
}

export function globOptions(options: Pick<JobLogTailOptions, 'exclude'>): GlobOptions {
  return {
    ignore: ignorePatterns(options.exclude),
    absolute: true,
    onlyFiles: true,
    dot: false,
    expandDirectories: false,
  };
}

/** A folder in `include` is a config error; a pattern that matches nothing yet is a warning. */
function preflightInclude(options: JobLogTailOptions): PreflightProblem[] {
  const problems: PreflightProblem[] = [];
  options.include.forEach((pattern, index) => {
    const path = `include[${index}]`;
    const literal = !isDynamicPattern(pattern);
    let folder = pattern.endsWith('/');
    if (!folder && literal) {
      try {
        folder = statSync(pattern).isDirectory();
      } catch {
        // Missing: reported below as matching nothing.
      }
    }
    if (folder) {
      const base = pattern.replace(/\/+$/, '');
      problems.push({ path, message: `"${pattern}" is a folder; include names files, e.g. "${base}/*.ndjson" (hidden files are only read when the pattern names them)` });
      return;
    }
    const base = staticFolderOf(pattern);
    try {
      accessSync(base, constants.R_OK | constants.X_OK);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') {
        problems.push({ path, warning: true, message: `the folder ${base} cannot be listed (${code ?? (err as Error).message}); its files are not read until it can` });
        return;
      }
    }
    let matches: string[];
    try {
      matches = globSync([pattern], globOptions(options));
    } catch (err) {
      problems.push({ path, message: `cannot expand the pattern: ${(err as Error).message}` });
      return;
    }
    if (matches.length === 0) {
      problems.push({
        path,
        warning: true,
        message: `"${pattern}" matches no file yet (hidden files and folders count only when the pattern names them); files that appear later are picked up`,
      });
    }
  });
  return problems;
}

function isBlank(line: Buffer): boolean {
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c !== 0x20 && c !== 0x09 && c !== CARRIAGE_RETURN) return false;
  }
  return true;
}

export const jobLogTailSource: ComponentDefinition<'source', typeof jobLogTailSchema> = {
  kind: 'source',
  type: 'job_log_tail',
  description: 'Follows NDJSON files of job records and activity events, like tail -F, with checkpoints.',
  schema: jobLogTailSchema,
  preflight: (options) => preflightInclude(options),
  build: (options) => new JobLogTail(options),
};
