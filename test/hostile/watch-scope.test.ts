import type { ChildProcess } from 'node:child_process';
import { existsSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { jobKey, makeJob, removeAll, scratch, standardPipeline, startCli, waitFor, writePipeline } from '../helpers/cli.js';

const cleanup: string[] = [];
const processes: ChildProcess[] = [];
afterEach(async () => {
  for (const child of processes.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await removeAll(cleanup);
});

const line = (id: number): string => JSON.stringify(makeJob(id)) + '\n';

/**
 * The watch that follows rotations (src/sources/rotation-watch.ts) opens files from inotify events,
 * outside the glob expansion: it must never read what the globs would not. Each case ends with a
 * marker job in a matching file: inotify events arrive in order, so once the marker is shipped,
 * every event before it was handled.
 */
describe('the rotation watch reads only what the globs would', () => {
  it('does not read a hidden or excluded file that appears right after a followed file is deleted, nor a new file under an excluded folder', async () => {
    const dir = await scratch(cleanup);
    const logs = join(dir, 'logs');
    const out = join(dir, 'out');
    await mkdir(join(logs, 'held'), { recursive: true });
    const live = join(logs, 'jobs.ndjson');
    writeFileSync(live, line(7_000_000));
    const yaml = standardPipeline({ dataDir: join(dir, 'data'), include: join(logs, '**/*.ndjson'), out }).replace(
      '    poll_interval_ms: 20',
      `    exclude: [${JSON.stringify(join(logs, 'secret-*.ndjson'))}, ${JSON.stringify(join(logs, 'held'))}]\n    poll_interval_ms: 20`,
    );
    const config = await writePipeline(dir, yaml);
    const running = startCli(['run', '-c', config], { cwd: dir });
    processes.push(running.child);
    await waitFor(() => existsSync(join(out, jobKey(7_000_000))), 30_000, 'the first job');

    // A delete, then a rename into the folder: two consecutive events, like the halves of a rename.
    writeFileSync(join(dir, 'plain.prep'), line(7_000_006));
    writeFileSync(join(dir, 'hidden.prep'), line(7_000_001));
    writeFileSync(join(dir, 'excluded.prep'), line(7_000_002));
    rmSync(live);
    renameSync(join(dir, 'plain.prep'), join(logs, 'notes.txt'));
    renameSync(join(dir, 'hidden.prep'), join(logs, '.env.ndjson'));
    writeFileSync(join(logs, 'jobs2.ndjson'), line(7_000_003));
    rmSync(join(logs, 'jobs2.ndjson'));
    renameSync(join(dir, 'excluded.prep'), join(logs, 'secret-1.ndjson'));
    // A file created under an excluded folder while running.
    writeFileSync(join(logs, 'held', 'late.ndjson'), line(7_000_004));
    writeFileSync(join(logs, 'marker.ndjson'), line(7_000_005));
    await waitFor(() => existsSync(join(out, jobKey(7_000_005))), 30_000, 'the marker job');
    running.child.kill('SIGTERM');
    const result = await running.exited;
    expect(result.code).toBe(0);
    for (const id of [7_000_001, 7_000_002, 7_000_004, 7_000_006]) expect([id, existsSync(join(out, jobKey(id)))]).toEqual([id, false]);
    expect(result.stderr).not.toContain('following a file renamed out of the include globs');
  }, 120_000);
});
