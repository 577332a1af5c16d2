import { copyFile, rename, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { removeAll, waitFor } from '../helpers/cli.js';
import { TestProcesses, appendJobs, missingJobs, tailedFolder } from '../helpers/tailed.js';

const cleanup: string[] = [];
/** Spinners and CLIs: killed after each test, also when it failed half-way. */
const processes = new TestProcesses();
afterEach(async () => {
  processes.stopAll();
  await removeAll(cleanup);
});

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

describe('rotation under load', () => {
  it('rename rotation: finishes the renamed file, then follows the new one', async () => {
    const { dir, logs, out, config } = await tailedFolder(cleanup, { include: '*.ndjson' });
    const live = join(logs, 'app.ndjson');
    processes.loadTheMachine();
    const first = 2_000_000;
    // A file created and renamed away before logferry follows the folder cannot be known to it:
    // start once a first job went through.
    await appendJobs(live, first - 1, 1);
    const running = processes.cli(['run', '-c', config], dir);
    await waitFor(() => missingJobs(out, first - 1, 1)().length === 0, 30_000, 'the first job in the sink');
    const total = 3000;
    let next = first;
    for (let round = 0; round < 6; round++) {
      for (let b = 0; b < 10; b++) {
        await appendJobs(live, next, 50);
        next += 50;
        await sleep(3);
      }
      // logrotate's default: rename the live file away (the name no longer matches), start a new one.
      await rename(live, join(logs, `app.ndjson.${round}.old`));
    }
    await appendJobs(live, next, first + total - next);
    const missing = missingJobs(out, first, total);
    await waitFor(() => missing().length === 0, 60_000, 'every job in the sink');
    running.child.kill('SIGTERM');
    const result = await running.exited;
    expect(result.code).toBe(0);
    expect(result.stderr).toContain('file rotated');
    expect(missing()).toEqual([]);
  }, 90_000);

  it('copytruncate: a file that shrinks is read again from 0, the copy is read as a new file', async () => {
    // The copies keep the base name, so they match too: what the live file lost, its copy still has.
    const { dir, logs, out, config } = await tailedFolder(cleanup, { include: 'app.ndjson*' });
    const live = join(logs, 'app.ndjson');
    const running = processes.cli(['run', '-c', config], dir);
    await waitFor(() => running.stderr().includes('running'), 10_000, 'the CLI to start');
    const first = 3_000_000;
    const total = 3000;
    let next = first;
    for (let round = 0; round < 6; round++) {
      for (let b = 0; b < 10; b++) {
        await appendJobs(live, next, 50);
        next += 50;
        await sleep(3);
      }
      // A truncate is only visible to a reader that had read something: wait for the first job of the round.
      const roundStart = next - 500;
      await waitFor(() => missingJobs(out, roundStart, 1)().length === 0, 20_000, 'the round to be read');
      await copyFile(live, join(logs, `app.ndjson.${round}`));
      await truncate(live, 0);
    }
    await appendJobs(live, next, first + total - next);
    const missing = missingJobs(out, first, total);
    await waitFor(() => missing().length === 0, 60_000, 'every job in the sink');
    running.child.kill('SIGTERM');
    const result = await running.exited;
    expect(result.code).toBe(0);
    expect(result.stderr).toMatch(/truncat/);
    expect(result.stderr).not.toContain('LF_RECORD_BAD_JSON');
  }, 90_000);
});
