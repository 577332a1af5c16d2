import { mkdir, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';

let tempCounter = 0;

/**
 * A write that wrote nothing. It carries errno ENOSPC, as a full disk would, because that is what
 * it means to the caller: each one reports it under its own code (LF_DEAD_LETTER_BLOCKED,
 * LF_CHECKPOINT_FAILED) with ioErrorText, exactly like the operating system's ENOSPC.
 */
export class WriteMadeNoProgress extends Error implements NodeJS.ErrnoException {
  readonly code = 'ENOSPC';
  constructor(done: number, total: number) {
    super(`write made no progress after ${done} of ${total} bytes`);
    this.name = 'WriteMadeNoProgress';
  }
}

/**
 * Writes every byte of `data`, looping over short writes. write(2) may write less than asked (a
 * disk with less room than the data writes what fits and says so); counting that as done is how
 * a full disk loses data without an error. A write that makes no progress is an error too.
 * `position` undefined appends at the current offset (or the end, for a file opened with 'a').
 */
export async function writeFully(handle: FileHandle, data: string | Uint8Array, position?: number): Promise<void> {
  const bytes = typeof data === 'string' ? Buffer.from(data) : data;
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, done, bytes.length - done, position === undefined ? null : position + done);
    if (bytesWritten <= 0) {
      throw new WriteMadeNoProgress(done, bytes.length);
    }
    done += bytesWritten;
  }
}

/**
 * Writes a file so that a reader (or a restart after SIGKILL) sees either the old or the new
 * content, never a torn one: write a temp file in the same folder, optionally fsync, rename.
 * A short write (disk full) is an error, and the temp file is removed.
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  options: { fsync?: boolean; mkdir?: boolean } = {},
): Promise<void> {
  if (options.mkdir) await mkdir(dirname(path), { recursive: true });
  const temp = `${path}.tmp-${process.pid}-${++tempCounter}`;
  const handle = await open(temp, 'w');
  try {
    await writeFully(handle, data, 0);
    if (options.fsync) await handle.sync();
  } catch (err) {
    await handle.close().catch(() => {});
    await unlink(temp).catch(() => {});
    throw err;
  }
  try {
    // close(2) can report a deferred write error (NFS): the file is not known to be complete then.
    await handle.close();
    await rename(temp, path);
  } catch (err) {
    await unlink(temp).catch(() => {});
    throw err;
  }
  if (options.fsync) await fsyncDir(dirname(path));
}

/** Makes a folder's entries (a file created or renamed in it) durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } catch {
    // Some file systems refuse fsync on a directory; the rename is still atomic there.
  } finally {
    await handle.close();
  }
}
