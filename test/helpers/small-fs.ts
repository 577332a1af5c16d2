import { execFileSync } from 'node:child_process';
import { mkdir, rm, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * A really full (or read-only) file system for tests, so that write(2) fails or writes short the
 * way it does on a production disk. It is a tmpfs mounted by the test (the tests run as root in
 * CI containers). When mounting is not permitted the helper says so in its error: the full-disk
 * tests then fail loudly rather than skip, because a silently skipped durability test is worse
 * than a red one.
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
      execFileSync('rmdir', [probe]);
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
