import { createHash } from 'node:crypto';
import { open, readdir, readFile, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDir, writeFileAtomic, writeFully } from './fs-atomic.js';
import type { Logger } from './logger.js';

/**
 * The files of `{data_dir}/dead_letter/`: `dead-letters.ndjson` first, then
 * `dead-letters.part-0000000001.ndjson`, `...0002...` as each one reaches dead_letter.max_file_bytes.
 * Files are never renamed (a replay's progress names entries by file and offset), and the names sort
 * in write order: `ls`, `cat dead-letters.*` and readers see the entries in the order they were written.
 */
export const FIRST_FILE = 'dead-letters.ndjson';
const PART_FILE = /^dead-letters\.part-(\d{10})\.ndjson$/;

export function deadLetterFileName(number: number): string {
  return number === 0 ? FIRST_FILE : `dead-letters.part-${String(number).padStart(10, '0')}.ndjson`;
}

/** The file's place in write order, or undefined for a name that is not a dead-letter file. */
function fileNumber(name: string): number | undefined {
  if (name === FIRST_FILE) return 0;
  const match = PART_FILE.exec(name);
  return match ? Number(match[1]) : undefined;
}

/** The dead-letter files in write order (none when the folder does not exist). */
export async function listDeadLetterFiles(dir: string): Promise<{ name: string; number: number }[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const files: { name: string; number: number }[] = [];
  for (const name of names) {
    const number = fileNumber(name);
    if (number !== undefined) files.push({ name, number });
  }
  return files.sort((a, b) => a.number - b.number);
}

/** Bytes of every dead-letter file together (what dead_letter.max_bytes bounds). */
export async function deadLetterBytes(dir: string): Promise<number> {
  let total = 0;
  for (const { name } of await listDeadLetterFiles(dir)) {
    try {
      total += (await stat(join(dir, name))).size;
    } catch (err) {
      // Removed since the listing (a replay, an operator): it takes no room.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  return total;
}

/** One complete line of a dead-letter file: where it is, and a hash that tells it from another line at the same place. */
export interface DeadLetterLine {
  file: string;
  offset: number;
  text: string;
  /** The first 16 hex characters of the SHA-256 of the line's bytes. */
  id: string;
}

export function lineId(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex').slice(0, 16);
}

/**
 * The complete lines of one file; a torn last line (a crash during an append: its record was not
 * acknowledged and is dead-lettered again) is left out. A file removed meanwhile has none.
 */
export async function readDeadLetterFile(dir: string, file: string): Promise<DeadLetterLine[]> {
  let data: Buffer;
  try {
    data = await readFile(join(dir, file));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const lines: DeadLetterLine[] = [];
  for (let offset = 0; offset < data.length; ) {
    const end = data.indexOf(0x0a, offset);
    if (end < 0) break;
    const bytes = data.subarray(offset, end);
    if (bytes.length > 0) lines.push({ file, offset, text: bytes.toString('utf8'), id: lineId(bytes) });
    offset = end + 1;
  }
  return lines;
}

/**
 * A replay's record of the entries it confirmed (delivered, or dead-lettered again as a new entry),
 * `{data_dir}/dead_letter/replay-progress.ndjson`: one line per entry, flushed and fdatasynced in
 * small batches. At the end the replay rewrites the dead-letter files without them; a replay killed
 * before that leaves this file, and the next replay or run finishes the rewrite
 * (finishInterruptedReplay) before anything else touches the files. An entry confirmed but not yet
 * flushed when the process died is replayed again: that is the window of duplicates.
 */
export const PROGRESS_FILE = 'replay-progress.ndjson';
const FLUSH_INTERVAL_MS = 100;

export class ReplayProgress {
  private queued: string[] = [];
  private flushing: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private failure: unknown;

  private constructor(private readonly handle: FileHandle) {}

  static async start(dir: string): Promise<ReplayProgress> {
    const handle = await open(join(dir, PROGRESS_FILE), 'a');
    await fsyncDir(dir);
    return new ReplayProgress(handle);
  }

  confirm(line: DeadLetterLine): void {
    this.queued.push(JSON.stringify({ file: line.file, offset: line.offset, id: line.id }) + '\n');
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      // Detached: confirm() is called per record and must not wait for the disk. A failure is kept
      // and thrown by the next flush(), which the replay awaits before it ends.
      void this.flush().catch((err: unknown) => (this.failure ??= err));
    }, FLUSH_INTERVAL_MS);
  }

  /** Writes what was confirmed so far; a failure to write progress is thrown here (the entries stay). */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing;
    if (this.failure !== undefined) throw this.failure;
    if (this.queued.length === 0) return;
    const data = this.queued.join('');
    this.queued = [];
    this.flushing = (async () => {
      await writeFully(this.handle, data);
      await this.handle.datasync();
    })();
    try {
      await this.flushing;
    } finally {
      this.flushing = undefined;
    }
  }

  /** Flushes what is left and closes the file (the rewrite reads it back). */
  async close(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    try {
      await this.flush();
    } finally {
      await this.handle.close();
    }
  }
}

/**
 * Finishes a replay: removes the entries its progress file names from the dead-letter files, file by
 * file (temp file, fsync, rename; a file left empty is removed), marks each file done in the progress
 * file, then removes the progress file. Safe to run again after a crash at any point: a file already
 * rewritten is marked done, and an entry is removed only where its line's hash still matches.
 * Returns the number of entries removed.
 */
export async function finishInterruptedReplay(dir: string, log?: Logger): Promise<number> {
  const path = join(dir, PROGRESS_FILE);
  const confirmed = await readReplayProgress(dir);
  if (confirmed.size === 0) {
    await unlink(path).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
    return 0;
  }
  let removed = 0;
  const handle = await open(path, 'a');
  try {
    for (const [file, byOffset] of confirmed) {
      if (fileNumber(file) === undefined) continue;
      removed += await rewriteWithout(dir, file, byOffset);
      await writeFully(handle, JSON.stringify({ done: file }) + '\n');
      await handle.datasync();
    }
  } finally {
    await handle.close();
  }
  await unlink(path);
  await fsyncDir(dir);
  if (removed > 0) log?.info('finished an interrupted dead-letter replay: removed the entries it had confirmed', { removed, dir });
  return removed;
}

/**
 * The entries a replay's progress file names, by file and offset, in files not yet rewritten
 * (empty when there is no progress file).
 */
export async function readReplayProgress(dir: string): Promise<Map<string, Map<number, string>>> {
  const confirmed = new Map<string, Map<number, string>>();
  let text: string;
  try {
    text = await readFile(join(dir, PROGRESS_FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return confirmed;
    throw err;
  }
  const done = new Set<string>();
  for (const line of text.split('\n')) {
    let parsed: { file?: unknown; offset?: unknown; id?: unknown; done?: unknown };
    try {
      parsed = JSON.parse(line) as typeof parsed;
    } catch {
      continue; // An empty or torn last line: that entry was not confirmed on disk and stays.
    }
    if (typeof parsed.done === 'string') done.add(parsed.done);
    else if (typeof parsed.file === 'string' && typeof parsed.offset === 'number' && typeof parsed.id === 'string') {
      const byOffset = confirmed.get(parsed.file) ?? new Map<number, string>();
      byOffset.set(parsed.offset, parsed.id);
      confirmed.set(parsed.file, byOffset);
    }
  }
  for (const file of done) confirmed.delete(file);
  return confirmed;
}

async function rewriteWithout(dir: string, file: string, byOffset: Map<number, string>): Promise<number> {
  const path = join(dir, file);
  let data: Buffer;
  try {
    data = await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
  const kept: Buffer[] = [];
  let removed = 0;
  let offset = 0;
  while (offset < data.length) {
    const newline = data.indexOf(0x0a, offset);
    const end = newline < 0 ? data.length : newline + 1;
    const id = byOffset.get(offset);
    // A torn last line (no newline) is kept as it is: the writer cuts it off when it opens the file.
    if (newline < 0 || id === undefined || lineId(data.subarray(offset, newline)) !== id) kept.push(data.subarray(offset, end));
    else removed++;
    offset = end;
  }
  if (removed === 0) return 0;
  const rest = Buffer.concat(kept);
  if (rest.length === 0) await unlink(path);
  else await writeFileAtomic(path, rest, { fsync: true });
  await fsyncDir(dir);
  return removed;
}
