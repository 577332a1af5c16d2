import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';

/** Integration tests run the built CLI (npm test builds first), as an operator would. */
export const CLI = resolve(import.meta.dirname, '../../dist/src/cli/main.js');
export const FIXTURES = resolve(import.meta.dirname, '../fixtures');
export const EXAMPLES = resolve(import.meta.dirname, '../../examples/logs');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface Running {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<CliResult>;
}

export interface CliOptions {
  cwd: string;
  env?: NodeJS.ProcessEnv;
  /** Run as this user and group (a test run as root that needs permissions to apply). */
  uid?: number;
  gid?: number;
}

export function startCli(args: string[], options: CliOptions): Running {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: options.cwd,
    uid: options.uid,
    gid: options.gid,
    // Follow-mode runs of tests in parallel must not all want the API's default port: any free one,
    // unless the test sets LOGFERRY_API_ADDRESS (undefined removes it, to test api.address itself).
    env: { ...process.env, LOGFERRY_API_ADDRESS: '127.0.0.1:0', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<CliResult>((resolveExit) => {
    child.on('close', (code, signal) => resolveExit({ code, signal, stdout, stderr }));
  });
  return { child, stdout: () => stdout, stderr: () => stderr, exited };
}

export async function runCli(
  args: string[],
  options: CliOptions & { timeoutMs?: number },
): Promise<CliResult> {
  const running = startCli(args, options);
  const timer = setTimeout(() => running.child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
  try {
    return await running.exited;
  } finally {
    clearTimeout(timer);
  }
}

/** A scratch folder per test, removed afterwards by the caller's cleanup list. */
export async function scratch(cleanup: string[]): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'logferry-it-'));
  cleanup.push(dir);
  return dir;
}

export async function removeAll(cleanup: string[]): Promise<void> {
  await Promise.all(cleanup.splice(0).map((d) => rm(d, { recursive: true, force: true })));
}

export async function writePipeline(dir: string, yaml: string): Promise<string> {
  const file = join(dir, 'pipeline.yaml');
  await writeFile(file, yaml);
  return file;
}

/** Every file under a folder, as relative path -> content. */
export async function readTree(root: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  async function walk(dir: string): Promise<void> {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      return;
    }
    for (const name of names) {
      const path = join(dir, name);
      if ((await stat(path)).isDirectory()) await walk(path);
      else out.set(relative(root, path), await readFile(path));
    }
  }
  await walk(root);
  return out;
}

export async function waitFor<T>(probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 20_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A job document in the shape of the seed samples, keyed by its id. */
export function makeJob(id: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id,
    flow_id: 1002398,
    parent_id: null,
    calling_job_id: null,
    status: 'succeeded',
    error_type: null,
    error: null,
    title: `job ${id}`,
    is_poll_error: false,
    started_at: '2019-09-13T12:22:18-07:00',
    completed_at: '2019-09-13T12:22:18-07:00',
    report: { workato: { job_context: { user_id: 4848, recipe_id: 1002398, job_id: id } } },
    lines: [
      { recipe_line_number: 0, adapter_name: 'clock', adapter_operation: 'timer', input: { interval: '5' }, output: { n: id }, error: null, mask_data: false },
    ],
    ...extra,
  };
}

export function jobKey(id: number): string {
  const formatted = String(id).padStart(21, '0').match(/.{3}/g)!.join('/');
  return `4848/jobs/1002398/20190913/${formatted}/4848-1002398-${id}-20190913192218-succeeded.json`;
}

/** A pipeline that tails `include` into `out` with the usual transforms. */
export function standardPipeline(opts: {
  dataDir: string;
  include: string;
  out: string;
  extraSource?: string;
  userId?: number | null;
  /** YAML of the entries under `sinks:` (indented by two spaces), instead of the file sink at `out`. */
  sinks?: string;
  /** Top-level lines, e.g. `plugins: [...]`. */
  top?: string;
}): string {
  // api on any free port: follow-mode runs of tests in parallel must not all want 127.0.0.1:9598.
  return `data_dir: ${JSON.stringify(opts.dataDir)}
${opts.top ?? ''}
${opts.top?.includes('api:') ? '' : 'api: { address: "127.0.0.1:0" }'}
checkpoint_interval_ms: 100
status_interval_ms: 60000
shutdown_timeout: 20s
sources:
  jobs:
    type: job_log_tail
    include: [${JSON.stringify(opts.include)}]
    poll_interval_ms: 20
    glob_interval_ms: 100
    rotate_wait_ms: 300
${opts.extraSource ?? ''}
transforms:
  redacted:
    type: redact
    inputs: [jobs]
  keyed:
    type: path_format
    inputs: [redacted]
${opts.userId === null ? '' : `    user_id: ${opts.userId ?? 5234}\n`}sinks:
${
  opts.sinks ??
  `  archive:
    type: file
    inputs: [keyed]
    path: ${JSON.stringify(opts.out)}
`
}`;
}

/**
 * The pipeline of the hostile-input tests: `{dir}/logs/*.ndjson` through `transforms` (YAML of the
 * entries under `transforms:`, indented by two spaces) to a file sink at `{dir}/out`, fed by the
 * transform `last`, with the worker pool on (one thread) or off. Lines that are optional here are
 * left out when not given, so the options a test does not name keep their defaults.
 */
export function poolPipeline(opts: {
  dir: string;
  pool: boolean;
  transforms: string;
  last: string;
  thresholdBytes?: number;
  checkpointIntervalMs?: number;
  shutdownTimeout?: string;
  pollIntervalMs?: number;
  plugins?: readonly string[];
  /** Lines added to the source (indented by four spaces). */
  extraSource?: string;
}): string {
  const optional = (line: string, value: unknown): string => (value === undefined ? '' : `${line}\n`);
  return `data_dir: ${JSON.stringify(join(opts.dir, 'data'))}
api: { address: "127.0.0.1:0" }
${opts.plugins ? `plugins: [${opts.plugins.map((p) => JSON.stringify(p)).join(', ')}]\n` : ''}checkpoint_interval_ms: ${opts.checkpointIntervalMs ?? 100}
status_interval_ms: 60000
${optional(`shutdown_timeout: ${opts.shutdownTimeout}`, opts.shutdownTimeout)}pool:
  threads: ${opts.pool ? 1 : 0}
  threshold_bytes: ${opts.thresholdBytes ?? 1024}
sources:
  jobs:
    type: job_log_tail
    include: [${JSON.stringify(join(opts.dir, 'logs', '*.ndjson'))}]
${optional(`    poll_interval_ms: ${opts.pollIntervalMs}`, opts.pollIntervalMs)}${opts.extraSource ?? ''}transforms:
${opts.transforms}sinks:
  archive:
    type: file
    inputs: [${opts.last}]
    path: ${JSON.stringify(join(opts.dir, 'out'))}
`;
}
