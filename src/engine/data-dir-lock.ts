import { existsSync, readFileSync, statfsSync, statSync, unlinkSync, realpathSync } from 'node:fs';
import { link, mkdir, open, stat, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { LogferryError, ioErrorText } from '../errors.js';
import { writeFully } from './fs-atomic.js';
import type { Logger } from './logger.js';

/**
 * One running logferry per data_dir. Two processes on one data_dir would each deliver every
 * record and write every dead letter, and their checkpoints would overwrite each other.
 *
 * The lock is the file `{data_dir}/lock`, holding the owner's pid, host and start time as JSON.
 * It is created complete and exclusively: the content is written to a temp file, which is then
 * hard-linked to `lock` (link(2) fails with EEXIST when the name exists, like O_EXCL, and the lock
 * never appears half written). Creating it is also the probe that data_dir can be written.
 *
 * A lock whose owner died (same host, pid not alive, or alive but a different process than the
 * one that wrote the lock, or written before the last boot) is taken over. Two processes may find
 * the same stale lock at once, so removing it is guarded: the remover first hard-links the lock to
 * `lock.takeover` (only one process can create that name) and checks that the inode it linked is
 * the stale lock it read; only then does it unlink `lock`, and every process then competes again
 * on the exclusive creation, which exactly one wins. A lock from another host is never taken over
 * (its pid means nothing here); the message says how to remove it.
 */

export const LOCK_FILE = 'lock';

/** Folders of kernel pseudo file systems: writes there do not store files (or hang). */
const PSEUDO_PREFIXES = ['/proc', '/sys', '/dev'];

/** statfs f_type of pseudo file systems, for a data_dir that reaches one through a mount elsewhere. */
const PSEUDO_FS_TYPES = new Map<number, string>([
  [0x9fa0, 'proc'],
  [0x62656572, 'sysfs'],
  [0x64626720, 'debugfs'],
  [0x74726163, 'tracefs'],
  [0x73636673, 'securityfs'],
  [0x27e0eb, 'cgroup'],
  [0x63677270, 'cgroup2'],
  [0x1cd1, 'devpts'],
  [0x62656570, 'configfs'],
  [0x6165676c, 'pstore'],
  [0xcafe4a11, 'bpf'],
  [0xde5e81e4, 'efivarfs'],
]);

/** A lock left by a failed takeover (its process died within milliseconds) is removed after this. */
const TAKEOVER_STALE_MS = 10_000;
/** An unreadable lock file younger than this may still be being written (non-link fallback). */
const GARBAGE_GRACE_MS = 5_000;
/** How long to keep trying while other processes change the lock (a takeover guard may need TAKEOVER_STALE_MS to expire). */
const CONTENTION_LIMIT_MS = 3 * TAKEOVER_STALE_MS;

export interface LockOwner {
  pid: number;
  host: string;
  started_at: string;
  /** Linux: /proc/sys/kernel/random/boot_id, to tell pids of an earlier boot. */
  boot_id?: string;
  /** Linux: the process's start time in clock ticks since boot, to tell a reused pid. */
  proc_start?: number;
}

/**
 * Why data_dir cannot be used, without writing anything (for `validate` and before `run`):
 * it lies on a pseudo file system, or it (or a folder above it) is a file. Undefined when it looks
 * usable; whether it can be written is only known by writing (the lock does that).
 */
export function dataDirProblem(dataDir: string): string | undefined {
  const absolute = resolve(dataDir);
  let existing = absolute;
  let info;
  for (;;) {
    try {
      info = statSync(existing);
      break;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOTDIR') return `${absolute} cannot be created: a part of its path is a file; point data_dir at a folder`;
      if (code !== 'ENOENT') return `${absolute} cannot be used (${code ?? (err as Error).message}); point data_dir at a writable folder on a real disk`;
      const parent = dirname(existing);
      if (parent === existing) return undefined;
      existing = parent;
    }
  }
  let real = existing;
  try {
    real = realpathSync(existing);
  } catch {
    // Keep the path as written; the checks below still apply to it.
  }
  const target = join(real, relative(existing, absolute));
  const prefix = PSEUDO_PREFIXES.find((p) => target === p || target.startsWith(p + sep));
  if (prefix) {
    return `${absolute}${target !== absolute ? ` (${target})` : ''} is on the kernel's ${prefix} pseudo file system, which cannot hold checkpoints or dead letters; point data_dir at a folder on a real disk, e.g. /var/lib/logferry`;
  }
  try {
    const type = PSEUDO_FS_TYPES.get(Number(statfsSync(existing).type));
    if (type) return `${absolute} is on a ${type} pseudo file system, which cannot hold checkpoints or dead letters; point data_dir at a folder on a real disk`;
  } catch {
    // statfs unavailable: the prefix check above is what we have.
  }
  if (!info.isDirectory()) {
    return existing === absolute
      ? `${absolute} is a file, not a folder; point data_dir at a folder (it is created when missing)`
      : `${absolute} cannot be created: ${existing} is a file; point data_dir at a folder`;
  }
  return undefined;
}

function invalid(message: string, cause?: unknown): LogferryError {
  return new LogferryError('LF_DATA_DIR_INVALID', message, { cause });
}

function readOptional(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** Field 22 of /proc/PID/stat (start time in ticks since boot); the name in field 2 may hold spaces. */
function processStart(pid: number): number | undefined {
  const stat = readOptional(`/proc/${pid}/stat`);
  if (!stat) return undefined;
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const value = Number(fields[19]);
  return Number.isFinite(value) ? value : undefined;
}

function currentOwner(): LockOwner {
  const owner: LockOwner = { pid: process.pid, host: hostname(), started_at: new Date().toISOString() };
  const bootId = readOptional('/proc/sys/kernel/random/boot_id');
  if (bootId) owner.boot_id = bootId;
  const start = processStart(process.pid);
  if (start !== undefined) owner.proc_start = start;
  return owner;
}

function parseOwner(text: string): LockOwner | undefined {
  try {
    const value = JSON.parse(text) as Partial<LockOwner>;
    if (typeof value.pid === 'number' && Number.isInteger(value.pid) && value.pid > 0 && typeof value.host === 'string') return value as LockOwner;
  } catch {
    // Not a lock we wrote (or torn by a power loss): judged by its age.
  }
  return undefined;
}

/** 'live': a process that may be the owner runs; 'dead': the owner is gone. Same host only. */
function ownerState(owner: LockOwner, me: LockOwner): 'live' | 'dead' {
  if (owner.boot_id && me.boot_id && owner.boot_id !== me.boot_id) return 'dead';
  try {
    process.kill(owner.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return 'dead';
    // EPERM: a process of another user has that pid; it may be the owner.
  }
  if (owner.proc_start !== undefined && owner.boot_id && owner.boot_id === me.boot_id) {
    const start = processStart(owner.pid);
    // The pid was reused by a process that started at another time: not the owner.
    if (start !== undefined && start !== owner.proc_start) return 'dead';
  }
  return 'live';
}

function describeOwner(owner: LockOwner): string {
  return `pid ${owner.pid} on ${owner.host}, running since ${owner.started_at}`;
}

export class DataDirLock {
  private released = false;
  private readonly onExit = (): void => this.releaseSync();

  constructor(
    readonly path: string,
    readonly owner: LockOwner,
    private readonly ino: number,
  ) {
    // A process.exit (second signal) skips the caller's finally; the lock still goes.
    process.once('exit', this.onExit);
  }

  /** Removes the lock if it is still ours (never a lock another process took over since). */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    process.off('exit', this.onExit);
    try {
      if ((await stat(this.path)).ino === this.ino) await unlink(this.path);
    } catch {
      // Already gone, or data_dir went away: nothing to release.
    }
  }

  releaseSync(): void {
    if (this.released) return;
    this.released = true;
    process.off('exit', this.onExit);
    try {
      if (statSync(this.path).ino === this.ino) unlinkSync(this.path);
    } catch {
      // As above.
    }
  }
}

/**
 * Checks data_dir (creating it when missing) and takes its lock. Throws LF_DATA_DIR_INVALID (a
 * configuration problem: exit 78) or LF_DATA_DIR_LOCKED (another logferry runs on it: exit 75).
 */
export async function acquireDataDirLock(dataDir: string, log: Logger): Promise<DataDirLock> {
  const problem = dataDirProblem(dataDir);
  if (problem) throw invalid(`data_dir ${problem}`);
  try {
    await mkdir(dataDir, { recursive: true });
  } catch (err) {
    const real = await mkdirError(dataDir, err);
    throw invalid(`data_dir ${dataDir} cannot be created (${ioErrorText(real)}); create it, or point data_dir at a writable folder`, real);
  }
  const path = join(dataDir, LOCK_FILE);
  const me = currentOwner();
  const text = JSON.stringify(me) + '\n';
  for (const deadline = Date.now() + CONTENTION_LIMIT_MS; Date.now() < deadline; ) {
    const ino = await createExclusive(path, text, dataDir);
    if (ino !== undefined) return new DataDirLock(path, me, ino);

    let held: { ino: number; text: string; ctimeMs: number };
    try {
      const handle = await open(path, 'r');
      try {
        const info = await handle.stat();
        held = { ino: info.ino, text: await handle.readFile('utf8'), ctimeMs: info.ctimeMs };
      } finally {
        await handle.close();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // released meanwhile: try again
      throw invalid(`cannot read the data_dir lock ${path} (${ioErrorText(err)}); fix its permissions`, err);
    }
    const owner = parseOwner(held.text);
    if (owner && owner.host !== me.host) {
      throw new LogferryError(
        'LF_DATA_DIR_LOCKED',
        `data_dir ${dataDir} is locked by logferry ${describeOwner(owner)}. A lock from another host is never taken over automatically: stop that process, or, if it no longer runs, delete ${path} and start again`,
      );
    }
    if (owner && ownerState(owner, me) === 'live') {
      throw new LogferryError(
        'LF_DATA_DIR_LOCKED',
        `data_dir ${dataDir} is in use by another logferry (${describeOwner(owner)}); stop it first, or give this pipeline its own data_dir`,
      );
    }
    if (!owner && Date.now() - held.ctimeMs < GARBAGE_GRACE_MS) {
      // Possibly a lock being written right now (file systems without hard links); look again.
      await sleep(20 + Math.random() * 30);
      continue;
    }
    if (await removeStale(path, held.ino, log)) {
      log.warn('took over the data_dir lock of a logferry that is no longer running', {
        code: 'LF_DATA_DIR_LOCKED',
        lock: path,
        previous_owner: owner ? describeOwner(owner) : 'unreadable lock file',
      });
    }
  }
  throw new LogferryError('LF_DATA_DIR_LOCKED', `could not take the data_dir lock ${path}: other processes kept changing it; is another logferry starting on ${dataDir}?`);
}

/**
 * The error of the first folder level that cannot be created: a recursive mkdir reports ENOENT on
 * a read-only file system, which would send the operator looking for the wrong problem.
 */
async function mkdirError(dataDir: string, fallback: unknown): Promise<unknown> {
  const missing: string[] = [];
  for (let dir = resolve(dataDir); !existsSync(dir); dir = dirname(dir)) {
    missing.unshift(dir);
    if (dirname(dir) === dir) break;
  }
  for (const dir of missing) {
    try {
      await mkdir(dir);
    } catch (err) {
      return err;
    }
  }
  return fallback;
}

/** Creates the lock with its full content in one step; returns its inode, or undefined when it exists. */
async function createExclusive(path: string, text: string, dataDir: string): Promise<number | undefined> {
  const temp = join(dataDir, `.lock-${process.pid}-${Math.random().toString(36).slice(2)}.tmp`);
  try {
    const handle = await open(temp, 'wx');
    try {
      // No fsync: after a power loss a lock that lost its content is judged by its age, like any
      // unreadable lock, and its owner is gone anyway.
      await writeFully(handle, text);
    } finally {
      await handle.close();
    }
  } catch (err) {
    await unlink(temp).catch(() => {});
    throw invalid(`data_dir ${dataDir} cannot be written (${ioErrorText(err)}); fix its permissions, free space, or point data_dir at a writable folder`, err);
  }
  try {
    await link(temp, path);
    return (await stat(temp)).ino;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return undefined;
    if (code === 'EPERM' || code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'ENOSYS') return createWithoutLink(path, text);
    throw invalid(`data_dir ${dataDir} cannot be written (${ioErrorText(err)}); fix its permissions or point data_dir at a writable folder`, err);
  } finally {
    await unlink(temp).catch(() => {});
  }
}

/** For file systems without hard links: O_EXCL creation, then the content (readers wait for it). */
async function createWithoutLink(path: string, text: string): Promise<number | undefined> {
  let handle;
  try {
    handle = await open(path, 'wx');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return undefined;
    throw invalid(`cannot create the data_dir lock ${path} (${ioErrorText(err)})`, err);
  }
  try {
    await writeFully(handle, text);
    return (await handle.stat()).ino;
  } catch (err) {
    await unlink(path).catch(() => {});
    throw invalid(`cannot write the data_dir lock ${path} (${ioErrorText(err)})`, err);
  } finally {
    await handle.close();
  }
}

/**
 * Removes the stale lock with inode `ino`, unless another process is doing so or the lock changed
 * since it was read. Returns whether this process removed it.
 */
async function removeStale(path: string, ino: number, log: Logger): Promise<boolean> {
  const guard = `${path}.takeover`;
  try {
    // Only one process can create the guard name; it pins the inode that `lock` names right now.
    await link(path, guard);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return false; // the stale lock is already gone
    if (code === 'EEXIST') {
      // Another process is taking over. A guard that stays was left by one that died mid-takeover.
      const guardInfo = await stat(guard).catch(() => undefined);
      if (guardInfo && Date.now() - guardInfo.ctimeMs > TAKEOVER_STALE_MS) {
        log.warn('removing a data_dir lock takeover guard left by a process that died', { guard });
        await unlink(guard).catch(() => {});
      } else {
        await sleep(20 + Math.random() * 30);
      }
      return false;
    }
    throw new LogferryError(
      'LF_DATA_DIR_LOCKED',
      `the data_dir lock ${path} was left by a process that no longer runs, but it cannot be taken over here (${ioErrorText(err)}); delete ${path} and start again`,
      { cause: err },
    );
  }
  try {
    if ((await stat(guard)).ino !== ino) return false; // a new lock replaced the stale one meanwhile
    // We hold the guard on the stale inode: nobody else can remove `lock`, and nobody can create
    // it while it exists, so `lock` is still the stale file.
    await unlink(path);
    return true;
  } finally {
    await unlink(guard).catch(() => {});
  }
}
