import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, lstat, mkdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { DeadLetterEntry } from '../../src/engine/dead-letters.js';
import { FIXTURES, jobKey, makeJob, poolPipeline, removeAll, runCli, scratch, writePipeline } from '../helpers/cli.js';

const REPO = resolve(import.meta.dirname, '../..');

/**
 * Failures of the engine itself, not of one record, through the real CLI: they stop the pipeline
 * in order (drain, final checkpoint, exit 1) instead of dead-lettering lines that did nothing
 * wrong or ending the process mid-flight.
 */

const cleanup: string[] = [];
afterEach(() => removeAll(cleanup));

function pipelineYaml(dir: string, pool: boolean): string {
  const transforms = `  failing:
    type: throw_on
    inputs: [jobs]
  keyed:
    type: path_format
    inputs: [failing]
`;
  return poolPipeline({ dir, pool, transforms, last: 'keyed', plugins: [join(FIXTURES, 'plugins', 'throwing')], checkpointIntervalMs: 3_600_000, shutdownTimeout: '20s', pollIntervalMs: 20 });
}

/** Writes the jobs as lines; returns the file and the offset where each line starts. */
async function writeJobs(dir: string, jobs: Record<string, unknown>[]): Promise<{ file: string; starts: number[] }> {
  await mkdir(join(dir, 'logs'), { recursive: true });
  const lines = jobs.map((j) => JSON.stringify(j));
  const starts = lines.map((_, i) => lines.slice(0, i).reduce((n, l) => n + Buffer.byteLength(l) + 1, 0));
  const file = join(dir, 'logs', 'jobs.ndjson');
  await writeFile(file, lines.join('\n') + '\n');
  return { file, starts };
}

async function savedOffset(dir: string): Promise<number | undefined> {
  const state = JSON.parse(await readFile(join(dir, 'data', 'checkpoints', 'jobs.json'), 'utf8')) as { files: { offset: number }[] };
  return state.files[0]?.offset;
}

async function deadLetters(dir: string): Promise<DeadLetterEntry[]> {
  const file = join(dir, 'data', 'dead_letter', 'dead-letters.ndjson');
  if (!existsSync(file)) return [];
  return (await readFile(file, 'utf8'))
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as DeadLetterEntry);
}

/** Runs the CLI of a copy of dist/ (runCli runs this checkout's), killed after a minute at most. */
function runCopy(cli: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [cli, ...args], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  return new Promise((resolveExit) => {
    child.on('close', (code) => {
      clearTimeout(timer);
      resolveExit({ code, stderr });
    });
  });
}

const big = (id: number, extra: Record<string, unknown> = {}): Record<string, unknown> => makeJob(id, { title: 'p'.repeat(1500), ...extra });

describe('a pool whose replacement worker cannot build the transforms', () => {
  it('dead-letters only the line its worker died on, then stops (exit 1) without acknowledging the next large line', async () => {
    const dir = await scratch(cleanup);
    const mark = join(dir, 'broken.mark');
    const jobs = [makeJob(9_400_001), big(9_400_002, { fail: 'crash_and_break' }), big(9_400_003), makeJob(9_400_004), big(9_400_005), makeJob(9_400_006)];
    const { starts } = await writeJobs(dir, jobs);
    const config = await writePipeline(dir, pipelineYaml(dir, true));

    const result = await runCli(['run', '-c', config, '--once'], { cwd: dir, env: { LOGFERRY_TEST_BREAK_MARK: mark }, timeoutMs: 60_000 });
    expect(result.code, result.stderr).toBe(1);
    expect(existsSync(mark)).toBe(true);
    expect(result.stderr).toMatch(/LF_POOL_FAILED: the record pool failed: a pool worker could not build the transforms: .*throw_on cannot be built/);

    // The line the worker died on is its dead letter; the next large one is not (the pool's fault, not the line's).
    const entries = await deadLetters(dir);
    expect(entries.map((e) => [e.offset, e.code])).toEqual([[starts[1], 'LF_RECORD_UNPROCESSABLE']]);
    expect(existsSync(join(dir, 'out', jobKey(9_400_001)))).toBe(true);
    expect(existsSync(join(dir, 'out', jobKey(9_400_003)))).toBe(false);
    // The final checkpoint was saved, and it stops before the line that was not acknowledged.
    expect(await savedOffset(dir)).toBe(starts[2]);
  }, 90_000);
});

describe('a pool worker that fails while no line is in it', () => {
  /**
   * Piscina emits 'error' when a worker errors with no task running; without a listener that ends
   * the process. With piscina's Atomics.wait an idle worker runs no timers, so the case that
   * happens is a replacement worker that fails to start: here its module was moved away, as an
   * upgrade that replaces the files under a running logferry would. The CLI runs from a copy of
   * dist/ so the test can do that.
   */
  it('stops the pipeline in order (exit 1, final checkpoint saved) instead of crashing the process', async () => {
    const dir = await scratch(cleanup);
    const copy = join(dir, 'install');
    await cp(join(REPO, 'dist'), join(copy, 'dist'), { recursive: true });
    await cp(join(REPO, 'package.json'), join(copy, 'package.json'));
    await symlink(join(REPO, 'node_modules'), join(copy, 'node_modules'));
    const workerModule = join(copy, 'dist', 'src', 'engine', 'pool-worker.js');
    const jobs = [makeJob(9_500_001), big(9_500_002, { fail: 'crash_and_unload' }), makeJob(9_500_003), makeJob(9_500_004)];
    const { file, starts } = await writeJobs(dir, jobs);
    const config = await writePipeline(dir, pipelineYaml(dir, true));

    // Follow mode: the pipeline is still running when the replacement worker fails; it must stop by itself.
    const result = await runCopy(join(copy, 'dist', 'src', 'cli', 'main.js'), ['run', '-c', config], dir, { LOGFERRY_TEST_UNLOAD: workerModule });
    expect(existsSync(`${workerModule}.gone`)).toBe(true);
    expect(result.code, result.stderr).toBe(1);
    expect(result.stderr).toMatch(/LF_POOL_FAILED: the record pool failed: .*pool-worker\.js/);
    expect(result.stderr).not.toMatch(/Unhandled 'error' event|unexpected error/);
    // The worker died under its line: that line is its dead letter, nothing else is.
    expect((await deadLetters(dir)).map((e) => [e.offset, e.code])).toEqual([[starts[1], 'LF_RECORD_UNPROCESSABLE']]);
    // checkpoint_interval_ms is an hour: a checkpoint past the dead letter is the final save, made on the way out.
    expect(await savedOffset(dir)).toBe((await stat(file)).size);
  }, 90_000);
});

describe('a checkpoint file that cannot be read', () => {
  it('fails the source cleanly (exit 1, a message naming the error) and leaves the file as it was', async () => {
    const dir = await scratch(cleanup);
    await writeJobs(dir, [makeJob(9_600_001)]);
    const config = await writePipeline(dir, pipelineYaml(dir, false));
    const checkpoints = join(dir, 'data', 'checkpoints');
    await mkdir(checkpoints, { recursive: true });

    // A folder where the file should be: EISDIR.
    await mkdir(join(checkpoints, 'jobs.json'));
    const eisdir = await runCli(['run', '-c', config, '--once'], { cwd: dir, timeoutMs: 60_000 });
    expect(eisdir.code, eisdir.stderr).toBe(1);
    expect(eisdir.stderr).toMatch(/LF_SOURCE_FAILED: source jobs failed: EISDIR/);
    expect(eisdir.stderr).not.toMatch(/unexpected error/);
    expect((await stat(join(checkpoints, 'jobs.json'))).isDirectory()).toBe(true);
    await removeAll([join(checkpoints, 'jobs.json')]);

    // A link to itself: ELOOP on read, but a save would replace it. The position it may hold must
    // not be overwritten by the state of a source that never started.
    await symlink('jobs.json', join(checkpoints, 'jobs.json'));
    const eloop = await runCli(['run', '-c', config, '--once'], { cwd: dir, timeoutMs: 60_000 });
    expect(eloop.code, eloop.stderr).toBe(1);
    expect(eloop.stderr).toMatch(/LF_SOURCE_FAILED: source jobs failed: ELOOP/);
    expect((await lstat(join(checkpoints, 'jobs.json'))).isSymbolicLink()).toBe(true);
    expect(existsSync(join(dir, 'out', jobKey(9_600_001)))).toBe(false);
  }, 90_000);
});
