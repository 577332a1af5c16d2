import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI, jobKey, makeJob, removeAll, scratch, standardPipeline, waitFor, writePipeline, type CliResult } from '../helpers/cli.js';

/**
 * Finding 11 of issue 9: `run --once` exited 0 after an input could not be read. The input here is
 * a file with mode 000. Root reads any file (CAP_DAC_OVERRIDE), so when the tests run as root the
 * CLI is started through `setpriv --bounding-set -dac_override,-dac_read_search`: still uid 0, and
 * still able to write its own folders, but open(2) of the file fails with EACCES as it would for
 * any other user. As another user no wrapper is needed.
 */

const cleanup: string[] = [];
const started: { kill: (s: NodeJS.Signals) => void }[] = [];
afterEach(async () => {
  for (const c of started.splice(0)) c.kill('SIGKILL');
  await removeAll(cleanup);
});

function withoutRootBypass(): { command: string; prefix: string[]; method: string } {
  if (process.getuid?.() !== 0) return { command: process.execPath, prefix: [], method: 'not root: mode 000 is unreadable' };
  if (spawnSync('setpriv', ['--version']).status !== 0) {
    // Never skip silently: without a real EACCES this test proves nothing.
    throw new Error('running as root without setpriv: cannot make a file unreadable to the CLI');
  }
  return { command: 'setpriv', prefix: ['--bounding-set', '-dac_override,-dac_read_search', process.execPath], method: 'root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (setpriv)' };
}

function startUnprivileged(args: string[], cwd: string): { stderr: () => string; exited: Promise<CliResult>; kill: (s: NodeJS.Signals) => void } {
  const how = withoutRootBypass();
  const child = spawn(how.command, [...how.prefix, CLI, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<CliResult>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  const handle = { stderr: () => stderr, exited, kill: (s: NodeJS.Signals) => child.kill(s) };
  started.push(handle);
  return handle;
}

async function setup(): Promise<{ dir: string; out: string; config: string; unreadable: string; readableIds: number[]; unreadableIds: number[] }> {
  const dir = await scratch(cleanup);
  const logs = join(dir, 'logs');
  const out = join(dir, 'out');
  await mkdir(logs);
  const readableIds = [9_300_001, 9_300_002, 9_300_003];
  const unreadableIds = [9_300_101, 9_300_102];
  await writeFile(join(logs, 'a.ndjson'), readableIds.map((id) => JSON.stringify(makeJob(id))).join('\n') + '\n');
  const unreadable = join(logs, 'b.ndjson');
  await writeFile(unreadable, unreadableIds.map((id) => JSON.stringify(makeJob(id))).join('\n') + '\n');
  await chmod(unreadable, 0o000);
  const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include: join(logs, '*.ndjson'), out }));
  return { dir, out, config, unreadable, readableIds, unreadableIds };
}

describe('unreadable input', () => {
  it('run --once ships what it can read, then exits 74 and says which input it could not read', async () => {
    console.info(`unreadable-input: method = ${withoutRootBypass().method}`);
    const { dir, out, config, unreadable, readableIds } = await setup();
    const result = await startUnprivileged(['run', '-c', config, '--once'], dir).exited;
    expect(result.code, result.stderr).toBe(74);
    for (const id of readableIds) expect(existsSync(join(out, jobKey(id))), `job ${id}`).toBe(true);
    const lastLine = result.stderr.trim().split('\n').at(-1)!;
    expect(lastLine).toContain('exit 74');
    expect(lastLine).toContain(`cannot read ${unreadable}`);
    expect(lastLine).toContain('EACCES');
    expect(lastLine).toContain('LF_INPUT_UNREADABLE');
  });

  it('a folder of the include globs that cannot be listed is reported the same way (the glob alone would see no file)', async () => {
    const dir = await scratch(cleanup);
    const logs = join(dir, 'logs');
    const locked = join(dir, 'locked');
    await mkdir(logs);
    await mkdir(locked);
    await writeFile(join(logs, 'a.ndjson'), JSON.stringify(makeJob(9_300_201)) + '\n');
    await writeFile(join(locked, 'b.ndjson'), JSON.stringify(makeJob(9_300_202)) + '\n');
    await chmod(locked, 0o000);
    const out = join(dir, 'out');
    const config = await writePipeline(
      dir,
      standardPipeline({ dataDir: join(dir, 'data'), include: join(logs, '*.ndjson'), out }).replace(
        `include: [${JSON.stringify(join(logs, '*.ndjson'))}]`,
        `include: [${JSON.stringify(join(logs, '*.ndjson'))}, ${JSON.stringify(join(locked, '*.ndjson'))}]`,
      ),
    );
    const result = await startUnprivileged(['run', '-c', config, '--once'], dir).exited;
    await chmod(locked, 0o755);
    expect(result.code, result.stderr).toBe(74);
    expect(existsSync(join(out, jobKey(9_300_201)))).toBe(true);
    const lastLine = result.stderr.trim().split('\n').at(-1)!;
    expect(lastLine).toContain(`cannot read ${locked}`);
    expect(lastLine).toContain('EACCES');
    expect(result.stderr).toContain(`the folder ${locked} cannot be listed`);
  });

  it('an input whose read(2) fails (not its open) is reported the same way', async () => {
    // sysfs files have a size of 4096 and may fail on read: the loopback interface has no link
    // speed, so reading /sys/class/net/lo/speed gives EINVAL, for root too. A symlink in the logs
    // folder makes the glob match it.
    const failing = '/sys/class/net/lo/speed';
    let probe: string;
    try {
      probe = (await readFile(failing, 'utf8')).trim();
    } catch (err) {
      probe = (err as NodeJS.ErrnoException).code ?? 'error';
    }
    // Never skip silently: if this kernel reads it, the test cannot show a read error.
    expect(probe, `${failing} must fail to read for this test`).toBe('EINVAL');
    const { dir, out, config, unreadable, readableIds } = await setup();
    await rm(unreadable);
    await symlink(failing, unreadable);
    const result = await startUnprivileged(['run', '-c', config, '--once'], dir).exited;
    expect(result.code, result.stderr).toBe(74);
    for (const id of readableIds) expect(existsSync(join(out, jobKey(id))), `job ${id}`).toBe(true);
    const lastLine = result.stderr.trim().split('\n').at(-1)!;
    expect(lastLine).toContain(`cannot read ${unreadable}`);
    expect(lastLine).toContain('EINVAL');
  });

  it('in follow mode the input is tried again at each scan, logged once, and read once it is readable', async () => {
    const { dir, out, config, unreadable, unreadableIds } = await setup();
    const run = startUnprivileged(['run', '-c', config], dir);
    await waitFor(() => run.stderr().includes('cannot read an input'), 20_000, 'the unreadable warning');
    // /ready names the source and the file while the input cannot be read.
    const api = await waitFor(() => /operators' API listening address=(\S+)/.exec(run.stderr())?.[1], 20_000, 'the API address');
    const ready = await fetch(`${api}/ready`);
    expect(ready.status).toBe(503);
    const body = (await ready.json()) as { components: { component_id: string; state: string; reason: string }[] };
    expect(body.components).toContainEqual({ component_id: 'jobs', component_kind: 'source', state: 'failing', reason: expect.stringContaining(`cannot read ${unreadable}`) as unknown });
    // glob_interval_ms is 100 ms in this pipeline: let a few scans fail before fixing the file.
    await waitFor(() => run.stderr().includes('wrote') || existsSync(join(dir, 'data', 'checkpoints', 'jobs.json')), 20_000, 'a checkpoint');
    await chmod(unreadable, 0o644);
    await waitFor(() => unreadableIds.every((id) => existsSync(join(out, jobKey(id)))), 20_000, 'the jobs of the fixed file');
    await waitFor(() => run.stderr().includes('an input that could not be read is read again'), 5_000, 'the recovery line');
    await waitFor(async () => (await fetch(`${api}/ready`)).status === 200, 20_000, '/ready to answer 200 once the input reads');
    run.kill('SIGTERM');
    const result = await run.exited;
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr.split('cannot read an input').length - 1, 'one warning per state change').toBe(1);
  });
});
