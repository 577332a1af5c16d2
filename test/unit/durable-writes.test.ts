import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { link, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { acquireDataDirLock, dataDirProblem } from '../../src/engine/data-dir-lock.js';
import { writeFully } from '../../src/engine/fs-atomic.js';
import { silentLogger } from '../../src/engine/logger.js';

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'logferry-durable-'));
  dirs.push(dir);
  return dir;
}
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

/** A handle whose write(2) writes at most `step` bytes a call (0: no progress at all). */
function shortWriter(step: number): { handle: FileHandle; written: Buffer[] } {
  const written: Buffer[] = [];
  const handle = {
    write: (buf: Uint8Array, offset: number, length: number) => {
      const n = Math.min(step, length);
      written.push(Buffer.from(buf.subarray(offset, offset + n)));
      return Promise.resolve({ bytesWritten: n, buffer: buf });
    },
  } as unknown as FileHandle;
  return { handle, written };
}

/** A pid that is not running: a child that has exited. */
function deadPid(): number {
  return spawnSync(process.execPath, ['-e', '0']).pid!;
}

describe('writeFully', () => {
  it('loops over short writes until every byte is written', async () => {
    const { handle, written } = shortWriter(3);
    await writeFully(handle, 'hello, world');
    expect(Buffer.concat(written).toString()).toBe('hello, world');
    expect(written.length).toBe(4);
  });

  it('fails when a write makes no progress instead of counting it as written', async () => {
    const { handle } = shortWriter(0);
    await expect(writeFully(handle, 'data')).rejects.toThrow(/no progress/);
  });
});

describe('data_dir checks', () => {
  it('names pseudo file systems and files, and accepts a missing folder under a real one', async () => {
    const dir = await tempDir();
    expect(dataDirProblem('/proc/self')).toMatch(/pseudo file system/);
    expect(dataDirProblem('/sys/kernel/x/y')).toMatch(/pseudo file system/);
    expect(dataDirProblem('/dev/shm/x')).toMatch(/pseudo file system/);
    await writeFile(join(dir, 'file'), 'x');
    expect(dataDirProblem(join(dir, 'file'))).toMatch(/is a file/);
    expect(dataDirProblem(join(dir, 'file', 'below'))).toMatch(/is a file/);
    expect(dataDirProblem(join(dir, 'new', 'data'))).toBeUndefined();
  });
});

describe('data_dir lock', () => {
  it('is exclusive while held, released on release, and refuses a live owner', async () => {
    const dir = await tempDir();
    const lock = await acquireDataDirLock(dir, silentLogger);
    const owner = JSON.parse(await readFile(join(dir, 'lock'), 'utf8')) as { pid: number; host: string };
    expect(owner).toMatchObject({ pid: process.pid, host: hostname() });
    // This process is alive, and it is the process that wrote the lock: a second acquire is refused.
    await expect(acquireDataDirLock(dir, silentLogger)).rejects.toMatchObject({ code: 'LF_DATA_DIR_LOCKED' });
    await lock.release();
    expect(existsSync(join(dir, 'lock'))).toBe(false);
  });

  it('takes over a lock whose pid is alive but belongs to another process (pid reused)', async () => {
    const dir = await tempDir();
    const bootId = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
    // pid 1 runs, but it did not start at tick 1 of this boot... unless it did: use a start that cannot match.
    await writeFile(join(dir, 'lock'), JSON.stringify({ pid: 1, host: hostname(), started_at: 'x', boot_id: bootId, proc_start: -5 }));
    const lock = await acquireDataDirLock(dir, silentLogger);
    expect(JSON.parse(await readFile(join(dir, 'lock'), 'utf8'))).toMatchObject({ pid: process.pid });
    await lock.release();
  });

  it('takes over a lock from an earlier boot, and a lock left by a dead pid', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'lock'), JSON.stringify({ pid: 1, host: hostname(), started_at: 'x', boot_id: 'another-boot' }));
    (await acquireDataDirLock(dir, silentLogger)).releaseSync();
    await writeFile(join(dir, 'lock'), JSON.stringify({ pid: deadPid(), host: hostname(), started_at: 'x' }));
    (await acquireDataDirLock(dir, silentLogger)).releaseSync();
    expect(existsSync(join(dir, 'lock'))).toBe(false);
  });

  it('an unreadable lock file is given time to be completed, then taken over', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'lock'), '{"pid": 12');
    const started = Date.now();
    const lock = await acquireDataDirLock(dir, silentLogger);
    expect(Date.now() - started).toBeGreaterThanOrEqual(4_000);
    await lock.release();
  }, 30_000);

  it('a takeover guard left by a process that died mid-takeover does not block forever', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'lock'), JSON.stringify({ pid: deadPid(), host: hostname(), started_at: 'x' }));
    await link(join(dir, 'lock'), join(dir, 'lock.takeover'));
    // The guard is fresh: another process may be taking over right now, so the acquire retries
    // until the guard is older than its limit (10 s), then removes it.
    const started = Date.now();
    const lock = await acquireDataDirLock(dir, silentLogger);
    expect(Date.now() - started).toBeGreaterThanOrEqual(9_000);
    expect(existsSync(join(dir, 'lock.takeover'))).toBe(false);
    await lock.release();
  }, 30_000);
});
