import { appendFile, mkdir, readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { makeJob, removeAll, runCli, scratch, standardPipeline, writePipeline } from '../helpers/cli.js';

/*
 * Start-up cost (issue 11), guarded without a clock: what a command imports decides most of its
 * start-up time, and unlike a timing it does not change on a busy machine. The record-imports
 * hook lists every module the spawned CLI resolves. bench/startup.mjs measures the time itself.
 */
const REGISTER_IMPORTS = pathToFileURL(resolve(import.meta.dirname, '../helpers/register-imports.mjs')).href;

/** Client libraries of sinks and the record pool: loaded only by a pipeline that builds them. */
const HEAVY = ['@aws-sdk/', '@smithy/', '/undici/', '/piscina/', '@opentelemetry/'];

const cleanup: string[] = [];
afterEach(() => removeAll(cleanup));

async function filePipeline(dir: string): Promise<string> {
  const logs = join(dir, 'logs');
  await mkdir(logs, { recursive: true });
  await appendFile(join(logs, 'jobs.ndjson'), [1, 2, 3].map((i) => JSON.stringify(makeJob(7_000_000 + i)) + '\n').join(''));
  // pool off: `threads: auto` starts workers on a machine with more than two cores, and the pool is piscina.
  return writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include: join(logs, '*.ndjson'), out: join(dir, 'out'), top: 'pool: { threads: 0 }' }));
}

/** Runs the CLI with the hook; resolves to the module URLs it loaded. */
async function imported(dir: string, args: string[]): Promise<{ urls: string[]; stdout: string }> {
  const log = join(dir, `imports-${args[0]!.replace(/\W/g, '')}.log`);
  const result = await runCli(args, { cwd: dir, env: { NODE_OPTIONS: `--import=${REGISTER_IMPORTS}`, LOGFERRY_IMPORT_LOG: log } });
  expect(result.code, result.stderr).toBe(0);
  const urls = [...new Set((await readFile(log, 'utf8')).split('\n').filter((url) => url !== ''))];
  return { urls, stdout: result.stdout };
}

const packagesIn = (urls: string[]): string[] => urls.filter((url) => url.includes('/node_modules/'));
const heavyIn = (urls: string[]): string[] => urls.filter((url) => HEAVY.some((name) => url.includes(name)));

describe('start-up: what each command loads', () => {
  it('--version and --help load no package and none of the configuration or the engine', async () => {
    const dir = await scratch(cleanup);
    for (const args of [['--version'], ['--help']]) {
      const { urls, stdout } = await imported(dir, args);
      expect(stdout).toMatch(args[0] === '--version' ? /^logferry \d+\.\d+\.\d+/ : /Usage:/);
      expect(urls.some((url) => url.endsWith('/src/cli/main.js'))).toBe(true); // the hook saw the CLI's own imports
      expect(packagesIn(urls)).toEqual([]);
      expect(urls.filter((url) => /\/src\/(config|sinks|sources|transforms|records|plugin)\/|\/builtins\.js$|\/engine\/pipeline\.js$/.test(url))).toEqual([]);
    }
  });

  it('validate of a file pipeline loads the schemas (zod, yaml) but no sink client, pool or OpenTelemetry', async () => {
    const dir = await scratch(cleanup);
    const config = await filePipeline(dir);
    const { urls, stdout } = await imported(dir, ['validate', '-c', config]);
    expect(stdout).toContain(': ok (');
    expect(urls.some((url) => url.includes('/node_modules/zod/'))).toBe(true);
    expect(urls.some((url) => url.includes('/node_modules/yaml/'))).toBe(true);
    expect(heavyIn(urls)).toEqual([]);
    expect(urls.filter((url) => url.endsWith('/engine/pipeline.js'))).toEqual([]);
  });

  it('run --once of a file pipeline ships without loading a sink client, the pool or OpenTelemetry', async () => {
    const dir = await scratch(cleanup);
    const config = await filePipeline(dir);
    const { urls } = await imported(dir, ['run', '-c', config, '--once']);
    expect(urls.some((url) => url.endsWith('/engine/pipeline.js'))).toBe(true);
    expect(heavyIn(urls)).toEqual([]);
    expect((await readdir(join(dir, 'out'), { recursive: true })).filter((name) => name.endsWith('.json'))).toHaveLength(3);
  });

  it('run --once with the pool on loads piscina: the guard above sees a dynamic import', async () => {
    const dir = await scratch(cleanup);
    const config = await filePipeline(dir);
    const text = (await readFile(config, 'utf8')).replace('pool: { threads: 0 }', 'pool: { threads: 1 }');
    await writePipeline(dir, text);
    const { urls } = await imported(dir, ['run', '-c', config, '--once']);
    expect(heavyIn(urls).some((url) => url.includes('/piscina/'))).toBe(true);
  });
});
