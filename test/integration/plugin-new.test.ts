import { spawn } from 'node:child_process';
import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { delimiter, join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startReceiver, type Receiver } from '../../src/testkit/index.js';
import { jobKey, makeJob, removeAll, runCli, scratch, writePipeline } from '../helpers/cli.js';

/**
 * `logferry plugin new` makes a plugin that builds, passes its own test and runs in a pipeline
 * outside this repository, against logferry as `npm pack` ships it. Long by nature (a pack, a
 * tsc build and the conformance kit: about 40 s on an idle 2-core machine, longer under load).
 *
 * Installing offline: npm's cache on this machine holds tarballs but not the registry's package
 * documents, so `npm install --offline` cannot resolve typescript or vitest (ENOTCACHED). The test
 * therefore does by hand what the install would: it unpacks the logferry tarball into the
 * plugin's node_modules/logferry and links every other package (typescript, vitest, @types/node,
 * logferry's own dependencies) from this repository's node_modules. No network is used.
 */
const REPO = resolve(import.meta.dirname, '../..');
const STEP_MS = 240_000;

interface Exec {
  code: number | null;
  output: string;
}

function exec(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): Promise<Exec> {
  return new Promise((resolveExec, reject) => {
    const child = spawn(command, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), STEP_MS);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolveExec({ code, output });
    });
  });
}

const cleanup: string[] = [];
let work: string;
let plugin: string;
let packedCli: string;
let pathWithBin: NodeJS.ProcessEnv;
const timings: Record<string, number> = {};

async function timed<T>(step: string, body: () => Promise<T>): Promise<T> {
  const started = Date.now();
  try {
    return await body();
  } finally {
    timings[step] = Date.now() - started;
  }
}

beforeAll(async () => {
  work = await scratch(cleanup);
  const packed = await timed('npm pack', () => exec('npm', ['pack', '--pack-destination', work, '--silent'], REPO));
  expect(packed.code, packed.output).toBe(0);
  const tarball = join(work, packed.output.trim().split('\n').pop()!);

  plugin = join(work, 'acme');
  const made = await runCli(['plugin', 'new', 'acme-store', '--dir', plugin], { cwd: work });
  expect(made.code, made.stderr).toBe(0);
  expect(made.stdout).toContain('wrote logferry-plugin-acme-store');

  // The install npm would do (see above): logferry from the tarball, the rest linked.
  const modules = join(plugin, 'node_modules');
  await mkdir(join(modules, 'logferry'), { recursive: true });
  const untar = await exec('tar', ['-xzf', tarball, '-C', join(modules, 'logferry'), '--strip-components=1'], work);
  expect(untar.code, untar.output).toBe(0);
  for (const name of await readdir(join(REPO, 'node_modules'))) {
    if (name.startsWith('.') || name === 'logferry') continue;
    await symlink(join(REPO, 'node_modules', name), join(modules, name));
  }
  await mkdir(join(modules, '.bin'));
  await symlink('../typescript/bin/tsc', join(modules, '.bin', 'tsc'));
  await symlink('../vitest/vitest.mjs', join(modules, '.bin', 'vitest'));
  packedCli = join(modules, 'logferry', 'dist', 'src', 'cli', 'main.js');
  // NO_COLOR: vitest's summary line is matched as text.
  pathWithBin = { NO_COLOR: '1', PATH: `${join(modules, '.bin')}${delimiter}${process.env.PATH ?? ''}` };
}, STEP_MS);

afterAll(async () => {
  // The duration of each step, for whoever wonders why this file is slow.
  process.stdout.write(`plugin-new.test steps (ms): ${JSON.stringify(timings)}\n`);
  await removeAll(cleanup);
});

describe('logferry plugin new, outside the repository', () => {
  it('writes a package that declares logferry as a peer dependency and builds with its own dist as main', async () => {
    const manifest = JSON.parse(await readFile(join(plugin, 'package.json'), 'utf8')) as Record<string, Record<string, string> | string>;
    const own = JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')) as { version: string; devDependencies: Record<string, string> };
    expect(manifest.name).toBe('logferry-plugin-acme-store');
    expect(manifest.main).toBe('./dist/index.js');
    expect(manifest.peerDependencies).toEqual({ logferry: `^${own.version}` });
    expect(manifest.devDependencies).toMatchObject({ logferry: `^${own.version}`, typescript: own.devDependencies.typescript, vitest: own.devDependencies.vitest });

    const built = await timed('npm run build', () => exec('npm', ['run', 'build'], plugin, pathWithBin));
    expect(built.code, built.output).toBe(0);
    expect((await readdir(join(plugin, 'dist'))).sort()).toEqual(expect.arrayContaining(['index.d.ts', 'index.js']));
  }, STEP_MS);

  it("passes its own test (the conformance kit from logferry/testkit)", async () => {
    const tested = await timed('npm test', () => exec('npm', ['test'], plugin, pathWithBin));
    expect(tested.code, tested.output).toBe(0);
    expect(tested.output).toMatch(/Tests\s+7 passed \(7\)/);
  }, STEP_MS);

  it('runs in a pipeline under the packed logferry, and a second --once run says nothing was new', async () => {
    const receiver: Receiver = await startReceiver();
    try {
      await writeFile(join(work, 'jobs.ndjson'), [1, 2, 3].map((id) => JSON.stringify(makeJob(id))).join('\n') + '\n');
      const pipeline = await writePipeline(
        work,
        `data_dir: ./state
plugins: ["./acme"]
sources:
  jobs: { type: job_log_tail, include: ["./jobs.ndjson"] }
transforms:
  keyed: { type: path_format, inputs: [jobs] }
sinks:
  store: { type: acme_store_put, inputs: [keyed], url: "${receiver.url}/store", token: "a-token-for-the-test" }
`,
      );
      const first = await timed('logferry run --once', () => exec(process.execPath, [packedCli, 'run', '-c', pipeline, '--once'], work));
      expect(first.code, first.output).toBe(0);
      expect(receiver.requests.map((r) => `${r.method} ${r.url}`).sort()).toEqual([1, 2, 3].map((id) => `PUT /store/${jobKey(id)}`).sort());
      expect(receiver.requests.every((r) => r.headers.authorization === 'Bearer a-token-for-the-test')).toBe(true);

      const second = await exec(process.execPath, [packedCli, 'run', '-c', pipeline, '--once'], work);
      expect(second.code, second.output).toBe(0);
      expect(second.output).toContain('nothing new since the last run');
      expect(second.output).toContain(join('state', 'checkpoints'));
      expect(receiver.requests).toHaveLength(3);
    } finally {
      await receiver.close();
    }
  }, STEP_MS);
});
