import { execFileSync } from 'node:child_process';
import { mkdir, rm, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * A really full (or read-only) file system for tests, so that write(2) fails or writes short the
 * way it does on a production disk: a tmpfs mounted by the test (root or CAP_SYS_ADMIN). Where
 * mounting is not permitted, `fullDiskMethod` falls back to RLIMIT_FSIZE; the tests never skip
 * silently, because a skipped durability test is worse than a red one.
 */
export class SmallFs {
  private constructor(
    readonly dir: string,
    readonly method: string,
  ) {}

  static canMount(): { ok: true } | { ok: false; why: string } {
    const probe = `/tmp/logferry-mount-probe-${process.pid}`;
    try {
      execFileSync('mkdir', ['-p', probe]);
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', probe], { stdio: 'pipe' });
      execFileSync('umount', [probe], { stdio: 'pipe' });
      return { ok: true };
    } catch (err) {
      return { ok: false, why: `mount -t tmpfs failed (${(err as Error).message.split('\n')[0]}): these tests need root (or CAP_SYS_ADMIN) to mount a small tmpfs` };
    } finally {
      try {
        execFileSync('rmdir', [probe], { stdio: 'pipe' });
      } catch {
        // Not created, or still mounted: nothing more to do for a probe.
      }
    }
  }

  /** Mounts a tmpfs of `bytes` at `dir` (created), remembered in `cleanup` for unmount. */
  static async mount(dir: string, bytes: number, cleanup: SmallFs[], options: string[] = []): Promise<SmallFs> {
    await mkdir(dir, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', [`size=${bytes}`, ...options].join(','), 'tmpfs', dir], { stdio: 'pipe' });
    const fs = new SmallFs(dir, `tmpfs of ${bytes} bytes at ${dir}${options.length ? ` (${options.join(',')})` : ''}`);
    cleanup.push(fs);
    return fs;
  }

  /** Bytes still free. */
  async free(): Promise<number> {
    const s = await statfs(this.dir);
    return s.bavail * s.bsize;
  }

  /** Writes a filler file so that only about `leaveBytes` stay free (tmpfs counts whole pages). */
  async fillLeaving(leaveBytes: number, name = 'filler'): Promise<void> {
    const size = Math.max(0, (await this.free()) - leaveBytes);
    await writeFile(join(this.dir, name), Buffer.alloc(size));
  }

  async removeFiller(name = 'filler'): Promise<void> {
    await rm(join(this.dir, name), { force: true });
  }

  remount(options: string): void {
    execFileSync('mount', ['-o', `remount,${options}`, this.dir], { stdio: 'pipe' });
  }

  unmount(): void {
    try {
      execFileSync('umount', ['-l', this.dir], { stdio: 'pipe' });
    } catch {
      // Already unmounted.
    }
  }

  static unmountAll(list: SmallFs[]): void {
    // Innermost first: a mount inside another one must go before it.
    for (const fs of list.splice(0).reverse()) fs.unmount();
  }
}

/**
 * How the full-disk tests make writes fail for lack of room. `tmpfs`: a small tmpfs mounted for the
 * test and filled with a filler file (needs root or CAP_SYS_ADMIN); room is made by removing the
 * filler. `rlimit`: the CLI is started under `prlimit --fsize=N` (RLIMIT_FSIZE, which any user can
 * set): a write past N bytes of a file is cut short and the next fails with EFBIG, as a full disk
 * cuts it short with ENOSPC; room is made by lifting the running process's limit. The tmpfs is
 * preferred; LOGFERRY_TEST_FULL_DISK=tmpfs|rlimit forces one.
 */
export type FullDiskMethod = 'tmpfs' | 'rlimit';

export function fullDiskMethod(): { method: FullDiskMethod; why: string } {
  const forced = process.env.LOGFERRY_TEST_FULL_DISK;
  const hasPrlimit = (): boolean => {
    try {
      execFileSync('prlimit', ['--version'], { stdio: 'pipe' });
      return true;
    } catch {
      return false;
    }
  };
  if (forced === 'rlimit' || forced === 'tmpfs') {
    return { method: forced, why: `LOGFERRY_TEST_FULL_DISK=${forced}` };
  }
  const can = SmallFs.canMount();
  if (can.ok) return { method: 'tmpfs', why: 'a small tmpfs mounted for each test, filled with a filler file' };
  // Never skip silently: without a full disk these tests prove nothing.
  if (!hasPrlimit()) throw new Error(`${can.why}, and prlimit is not installed for the RLIMIT_FSIZE fallback`);
  return { method: 'rlimit', why: `${can.why}; using RLIMIT_FSIZE (prlimit --fsize) on the CLI instead` };
}

/** A folder where the CLI's writes do not fit, and a way to make room while it runs. */
export interface Squeeze {
  readonly dir: string;
  /** The command that starts `node CLI args` under the limit. */
  command(node: string, args: string[]): { command: string; args: string[] };
  /** Makes room: removes the filler, or lifts the file-size limit of the running CLI `pid`. */
  makeRoom(pid: number | undefined): Promise<void>;
}

export async function squeeze(
  method: FullDiskMethod,
  dir: string,
  options: { tmpfsBytes: number; tmpfsLeave: number; fileSizeLimit: number },
  mounts: SmallFs[],
): Promise<Squeeze> {
  if (method === 'tmpfs') {
    const fs = await SmallFs.mount(dir, options.tmpfsBytes, mounts);
    await fs.fillLeaving(options.tmpfsLeave);
    return {
      dir,
      command: (node, args) => ({ command: node, args }),
      makeRoom: () => fs.removeFiller(),
    };
  }
  await mkdir(dir, { recursive: true });
  return {
    dir,
    // Only the soft limit: an unprivileged process may raise it back up to the (unlimited) hard one.
    command: (node, args) => ({ command: 'prlimit', args: [`--fsize=${options.fileSizeLimit}:unlimited`, node, ...args] }),
    makeRoom: (pid) => {
      if (pid === undefined) return Promise.resolve();
      execFileSync('prlimit', ['--pid', String(pid), '--fsize=unlimited:unlimited'], { stdio: 'pipe' });
      return Promise.resolve();
    },
  };
}
