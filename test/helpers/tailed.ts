import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { appendFile, mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { jobKey, makeJob, scratch, standardPipeline, startCli, writePipeline, type Running } from './cli.js';

/**
 * What the tests of tailing and rotation share: a folder the CLI follows, jobs appended to it, the
 * processes they start (the CLI, a rotating writer, CPU spinners) stopped after each test, and the
 * count of the jobs that have not reached the file sink yet.
 */

/** A scratch folder with `logs/` followed by the standard pipeline into the file sink at `out/`. */
export interface TailedFolder {
  readonly dir: string;
  readonly logs: string;
  readonly out: string;
  /** The pipeline file. */
  readonly config: string;
}

/**
 * Makes the folders and writes the pipeline. `include` is the source's glob, relative to `logs/`;
 * `edit` changes the pipeline's YAML (a source option) before it is written.
 */
export async function tailedFolder(cleanup: string[], options: { include: string; edit?: (yaml: string) => string }): Promise<TailedFolder> {
  const dir = await scratch(cleanup);
  const logs = join(dir, 'logs');
  const out = join(dir, 'out');
  await mkdir(logs);
  const yaml = standardPipeline({ dataDir: join(dir, 'data'), include: join(logs, options.include), out });
  const config = await writePipeline(dir, options.edit ? options.edit(yaml) : yaml);
  return { dir, logs, out, config };
}

/** `count` jobs with ids from `first`, one NDJSON line each. */
export function jobLines(first: number, count: number): string {
  let text = '';
  for (let i = 0; i < count; i++) text += JSON.stringify(makeJob(first + i)) + '\n';
  return text;
}

export async function appendJobs(file: string, first: number, count: number): Promise<void> {
  await appendFile(file, jobLines(first, count));
}

/**
 * The ids from `first` (`count` of them) whose file is not in `out` yet. It remembers the ones
 * found (files are never removed from the sink), so each poll only looks at the rest.
 */
export function missingJobs(out: string, first: number, count: number): () => number[] {
  let missing = Array.from({ length: count }, (_, i) => first + i);
  return () => {
    missing = missing.filter((id) => !existsSync(join(out, jobKey(id))));
    return missing;
  };
}

/** The processes a test starts; `stopAll` (in afterEach) kills the ones still running, also after a failure. */
export class TestProcesses {
  private readonly children: ChildProcess[] = [];

  track<T extends ChildProcess>(child: T): T {
    this.children.push(child);
    return child;
  }

  /** `logferry ARGS` in `cwd`, stopped after the test. */
  cli(args: string[], cwd: string): Running {
    const running = startCli(args, { cwd });
    this.track(running.child);
    return running;
  }

  /** CPU-bound processes beside the CLI: what is tested must hold on a loaded machine too. */
  loadTheMachine(spinners = 2): void {
    for (let i = 0; i < spinners; i++) this.track(spawn(process.execPath, ['-e', 'for(;;){}'], { stdio: 'ignore' }));
  }

  stopAll(): void {
    for (const child of this.children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}

const ROTATING_WRITER = resolve(import.meta.dirname, 'rotating-writer.mjs');

/** What the rotating writer wrote: jobs `first` to `first + count - 1`, in `files` renamed files and the live one. */
export interface WriterReport {
  readonly first: number;
  readonly count: number;
  readonly files: number;
}

/**
 * Runs rotating-writer.mjs as its own process, like an application that logs: jobs appended to
 * `logs/jobs.ndjson`, renamed out of the include glob every `rotateMs`, for `durationMs`.
 * Resolves with its report once it exited; rejects when it failed.
 */
export async function runRotatingWriter(processes: TestProcesses, logs: string, options: { durationMs: number; rotateMs: number; first: number }): Promise<WriterReport> {
  const template = JSON.stringify(makeJob(777777777));
  const args = [ROTATING_WRITER, logs, String(options.durationMs), String(options.rotateMs), String(options.first), template];
  const writer = processes.track(spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] }));
  let report = '';
  writer.stdout!.setEncoding('utf8').on('data', (d: string) => (report += d));
  const code = await new Promise<number | null>((done) => writer.on('close', done));
  if (code !== 0) throw new Error(`the rotating writer exited with ${code}`);
  return JSON.parse(report) as WriterReport;
}
