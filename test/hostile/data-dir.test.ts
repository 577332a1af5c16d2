import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { jobKey, makeJob, removeAll, runCli, scratch, standardPipeline, startCli, waitFor, writePipeline, type Running } from '../helpers/cli.js';
import { SmallFs } from '../helpers/small-fs.js';

/**
 * Findings 7 and 10 of issue 9: two processes on one data_dir both ran (every record delivered
 * twice); `data_dir: /proc/self` hung. Real CLIs on real folders.
 */

const cleanup: string[] = [];
const mounts: SmallFs[] = [];
const children: Running[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) c.child.kill('SIGKILL');
  SmallFs.unmountAll(mounts);
  await removeAll(cleanup);
});

function start(args: string[], cwd: string): Running {
  const running = startCli(args, { cwd });
  children.push(running);
  return running;
}

async function setup(jobCount: number): Promise<{ dir: string; dataDir: string; out: string; config: string; ids: number[] }> {
  const dir = await scratch(cleanup);
  const logs = join(dir, 'logs');
  const dataDir = join(dir, 'data');
  const out = join(dir, 'out');
  await mkdir(logs);
  const ids = Array.from({ length: jobCount }, (_, i) => 9_100_001 + i);
  await writeFile(join(logs, 'jobs.ndjson'), ids.map((id) => JSON.stringify(makeJob(id))).join('\n') + '\n');
  const config = await writePipeline(dir, standardPipeline({ dataDir, include: join(logs, '*.ndjson'), out }));
  return { dir, dataDir, out, config, ids };
}

/** A pid that is certainly not running: a child that has exited (and been reaped). */
async function deadPid(cwd: string): Promise<number> {
  const child = startCli(['--version'], { cwd });
  await child.exited;
  return child.child.pid!;
}

describe('data_dir lock', () => {
  it('a second run on the same data_dir exits 75 at once, naming the holder; the first delivers everything once', async () => {
    const { dir, dataDir, out, config, ids } = await setup(50);
    const first = start(['run', '-c', config], dir);
    await waitFor(() => existsSync(join(out, jobKey(ids.at(-1)!))), 30_000, 'the first run to deliver');
    const lock = JSON.parse(await readFile(join(dataDir, 'lock'), 'utf8')) as { pid: number; host: string; started_at: string };
    expect(lock).toMatchObject({ pid: first.child.pid, host: hostname() });
    expect(Number.isNaN(Date.parse(lock.started_at))).toBe(false);

    const second = await runCli(['run', '-c', config, '--once'], { cwd: dir, timeoutMs: 20_000 });
    expect(second.code, second.stderr).toBe(75);
    expect(second.stderr).toContain('LF_DATA_DIR_LOCKED');
    expect(second.stderr).toContain(`pid ${first.child.pid} on ${hostname()}`);
    // The second process did nothing: no dead letters, and the lock is still the first one's.
    expect(JSON.parse(await readFile(join(dataDir, 'lock'), 'utf8'))).toEqual(lock);

    first.child.kill('SIGTERM');
    const result = await first.exited;
    expect(result.code, result.stderr).toBe(0);
    expect(existsSync(join(dataDir, 'lock')), 'released on a clean exit').toBe(false);
    expect(result.stderr).toContain('wrote 50 documents');
    // Read-only commands take no lock (and do not mind one).
    const listed = await runCli(['dead-letter', 'list', '-c', config], { cwd: dir });
    expect(listed.code).toBe(0);
  });

  it('takes over a lock left by a SIGKILLed process', async () => {
    const { dir, dataDir, out, config, ids } = await setup(5);
    const killed = start(['run', '-c', config], dir);
    await waitFor(() => existsSync(join(out, jobKey(ids.at(-1)!))), 30_000, 'the run to deliver');
    killed.child.kill('SIGKILL');
    await killed.exited;
    expect(existsSync(join(dataDir, 'lock')), 'a SIGKILL leaves the lock behind').toBe(true);

    const next = await runCli(['run', '-c', config, '--once'], { cwd: dir });
    expect(next.code, next.stderr).toBe(0);
    expect(next.stderr).toContain('took over the data_dir lock of a logferry that is no longer running');
    expect(existsSync(join(dataDir, 'lock'))).toBe(false);
  });

  it('of several runs started at once on a stale lock, exactly one runs', async () => {
    const { dir, dataDir, config } = await setup(5);
    await mkdir(dataDir, { recursive: true });
    const pid = await deadPid(dir);
    await writeFile(join(dataDir, 'lock'), JSON.stringify({ pid, host: hostname(), started_at: '2026-01-01T00:00:00.000Z' }) + '\n');
    const runs = Array.from({ length: 5 }, () => start(['run', '-c', config], dir));
    const locked: number[] = [];
    // Four exit 75; one keeps running (follow mode never ends by itself).
    await waitFor(
      () => {
        locked.length = 0;
        runs.forEach((r, i) => r.child.exitCode === 75 && locked.push(i));
        return locked.length === 4 || runs.some((r) => r.child.exitCode !== null && r.child.exitCode !== 75);
      },
      60_000,
      'four of five runs to exit 75',
    );
    const running = runs.filter((r) => r.child.exitCode === null);
    expect(locked).toHaveLength(4);
    expect(running).toHaveLength(1);
    // The stale lock was removed once, by one of them.
    const tookOver = runs.filter((r) => r.stderr().includes('took over the data_dir lock'));
    expect(tookOver).toHaveLength(1);
    for (const i of locked) expect(runs[i]!.stderr()).toContain('LF_DATA_DIR_LOCKED');
    const owner = JSON.parse(await readFile(join(dataDir, 'lock'), 'utf8')) as { pid: number };
    expect(owner.pid).toBe(running[0]!.child.pid);
    running[0]!.child.kill('SIGTERM');
    expect((await running[0]!.exited).code).toBe(0);
    // No takeover guard or temp file is left behind.
    expect((await readdir(dataDir)).filter((n) => n.includes('lock'))).toEqual([]);
  });

  it('never takes over a lock from another host, and says how to remove it', async () => {
    const { dir, dataDir, config } = await setup(1);
    await mkdir(dataDir, { recursive: true });
    await writeFile(join(dataDir, 'lock'), JSON.stringify({ pid: 1, host: 'some-other-host', started_at: '2026-01-01T00:00:00.000Z' }));
    const result = await runCli(['run', '-c', config, '--once'], { cwd: dir });
    expect(result.code).toBe(75);
    expect(result.stderr).toContain('some-other-host');
    expect(result.stderr).toContain(`delete ${join(dataDir, 'lock')}`);
  });
});

describe('data_dir that cannot be used', () => {
  async function withDataDir(dataDir: string): Promise<{ dir: string; config: string }> {
    const dir = await scratch(cleanup);
    await mkdir(join(dir, 'logs'));
    await writeFile(join(dir, 'logs', 'jobs.ndjson'), JSON.stringify(makeJob(9_200_001)) + '\n');
    return { dir, config: await writePipeline(dir, standardPipeline({ dataDir, include: join(dir, 'logs', '*.ndjson'), out: join(dir, 'out') })) };
  }

  it.each(['/proc/self', '/sys/kernel', '/dev/shm/logferry'])('refuses %s (pseudo file system) in run and validate, at once', async (dataDir) => {
    const { dir, config } = await withDataDir(dataDir);
    const run = await runCli(['run', '-c', config, '--once'], { cwd: dir, timeoutMs: 20_000 });
    expect(run.signal, 'it must not hang').toBeNull();
    expect(run.code, run.stderr).toBe(78);
    expect(run.stderr).toContain('LF_DATA_DIR_INVALID');
    expect(run.stderr).toContain('pseudo file system');
    const validate = await runCli(['validate', '-c', config], { cwd: dir });
    expect(validate.code).toBe(78);
    expect(validate.stderr).toContain('data_dir');
    expect(validate.stderr).toContain('pseudo file system');
  });

  it('refuses a data_dir that is a file, in run and validate', async () => {
    const dir = await scratch(cleanup);
    const file = join(dir, 'not-a-folder');
    await writeFile(file, 'x');
    const { config } = await withDataDir(file);
    const run = await runCli(['run', '-c', config, '--once'], { cwd: dir });
    expect(run.code).toBe(78);
    expect(run.stderr).toContain('LF_DATA_DIR_INVALID');
    expect(run.stderr).toContain('is a file');
    const validate = await runCli(['validate', '-c', config], { cwd: dir });
    expect(validate.code).toBe(78);
    expect(validate.stderr).toContain('is a file');
  });

  it('refuses a data_dir that cannot be written (read-only mount), before reading anything', async () => {
    const dir = await scratch(cleanup);
    const can = SmallFs.canMount();
    let parent: string;
    let expected: RegExp;
    if (can.ok) {
      parent = (await SmallFs.mount(join(dir, 'ro'), 64 * 1024, mounts, ['ro'])).dir;
      expected = /EROFS|read-only/;
    } else if (process.getuid?.() !== 0) {
      // Without mount rights: a folder this user cannot write (root would bypass the mode).
      console.info(`data_dir read-only test: ${can.why}; using a folder with mode 555 instead`);
      parent = join(dir, 'ro');
      await mkdir(parent, { mode: 0o555 });
      expected = /EACCES|permission denied/;
    } else {
      throw new Error(can.why);
    }
    const { config } = await withDataDir(join(parent, 'data'));
    const run = await runCli(['run', '-c', config, '--once'], { cwd: dir });
    expect(run.code).toBe(78);
    expect(run.stderr).toContain('LF_DATA_DIR_INVALID');
    expect(run.stderr).toMatch(expected);
    expect(run.stderr).toContain('point data_dir at a writable folder');
    expect(existsSync(join(dir, 'out')), 'nothing was shipped').toBe(false);
  });
});
