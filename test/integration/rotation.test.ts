import { spawn, type ChildProcess } from 'node:child_process';
import { appendFile, copyFile, mkdir, rename, truncate } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { jobKey, makeJob, removeAll, scratch, standardPipeline, startCli, waitFor, writePipeline } from '../helpers/cli.js';

const cleanup: string[] = [];
/** Spinners and CLIs: killed after each test, also when it failed half-way. */
const children: ChildProcess[] = [];
afterEach(async () => {
  for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await removeAll(cleanup);
});

/** Two CPU-bound processes beside the CLI: rotation must hold on a loaded machine too. */
function loadTheMachine(): void {
  for (let i = 0; i < 2; i++) children.push(spawn(process.execPath, ['-e', 'for(;;){}'], { stdio: 'ignore' }));
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function writeJobs(file: string, first: number, count: number): Promise<void> {
  let text = '';
  for (let i = 0; i < count; i++) text += JSON.stringify(makeJob(first + i)) + '\n';
  await appendFile(file, text);
}

function missingKeys(out: string, first: number, total: number): number[] {
  const missing: number[] = [];
  for (let i = 0; i < total; i++) if (!existsSync(join(out, jobKey(first + i)))) missing.push(first + i);
  return missing;
}

describe('rotation under load', () => {
  it('rename rotation: finishes the renamed file, then follows the new one', async () => {
    const dir = await scratch(cleanup);
    const logs = join(dir, 'logs');
    const out = join(dir, 'out');
    await mkdir(logs);
    const live = join(logs, 'app.ndjson');
    const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include: join(logs, '*.ndjson'), out }));
    loadTheMachine();
    const first = 2_000_000;
    // A file created and renamed away before logferry follows the folder cannot be known to it:
    // start once a first job went through.
    await writeJobs(live, first - 1, 1);
    const running = startCli(['run', '-c', config], { cwd: dir });
    children.push(running.child);
    await waitFor(() => missingKeys(out, first - 1, 1).length === 0, 30_000, 'the first job in the sink');
    const total = 3000;
    let next = first;
    for (let round = 0; round < 6; round++) {
      for (let b = 0; b < 10; b++) {
        await writeJobs(live, next, 50);
        next += 50;
        await sleep(3);
      }
      // logrotate's default: rename the live file away (the name no longer matches), start a new one.
      await rename(live, join(logs, `app.ndjson.${round}.old`));
    }
    await writeJobs(live, next, first + total - next);
    await waitFor(() => missingKeys(out, first, total).length === 0, 60_000, 'every job in the sink');
    running.child.kill('SIGTERM');
    const result = await running.exited;
    expect(result.code).toBe(0);
    expect(result.stderr).toContain('file rotated');
    expect(missingKeys(out, first, total)).toEqual([]);
  }, 90_000);

  it('copytruncate: a file that shrinks is read again from 0, the copy is read as a new file', async () => {
    const dir = await scratch(cleanup);
    const logs = join(dir, 'logs');
    const out = join(dir, 'out');
    await mkdir(logs);
    const live = join(logs, 'app.ndjson');
    // The copies keep the base name, so they match too: what the live file lost, its copy still has.
    const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include: join(logs, 'app.ndjson*'), out }));
    const running = startCli(['run', '-c', config], { cwd: dir });
    children.push(running.child);
    await waitFor(() => running.stderr().includes('running'), 10_000, 'the CLI to start');
    const first = 3_000_000;
    const total = 3000;
    let next = first;
    for (let round = 0; round < 6; round++) {
      for (let b = 0; b < 10; b++) {
        await writeJobs(live, next, 50);
        next += 50;
        await sleep(3);
      }
      // A truncate is only visible to a reader that had read something: wait for the first job of the round.
      const roundStart = next - 500;
      await waitFor(() => missingKeys(out, roundStart, 1).length === 0, 20_000, 'the round to be read');
      await copyFile(live, join(logs, `app.ndjson.${round}`));
      await truncate(live, 0);
    }
    await writeJobs(live, next, first + total - next);
    await waitFor(() => missingKeys(out, first, total).length === 0, 60_000, 'every job in the sink');
    running.child.kill('SIGTERM');
    const result = await running.exited;
    expect(result.code).toBe(0);
    expect(result.stderr).toMatch(/truncat/);
    expect(result.stderr).not.toContain('LF_RECORD_BAD_JSON');
  }, 90_000);
});
