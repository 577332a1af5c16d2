import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { mulberry32 } from '../../src/testkit/random.js';
import { FIXTURES, poolPipeline, removeAll, runCli, scratch, writePipeline } from '../helpers/cli.js';

/**
 * A line fuzzer through the real CLI (issue 9): a few thousand lines made by mutating the seed
 * documents (cut, flipped bytes, stray quotes, deep nesting, huge and odd numbers, invalid UTF-8,
 * CRLF, duplicate keys, unicode) with a fixed seed. The run must exit 0, and every line must be
 * accounted for: delivered, dead-lettered, or skipped as a job that is not final.
 */

const cleanup: string[] = [];
afterEach(() => removeAll(cleanup));

const LINES = 3000;

async function seedLines(): Promise<Buffer[]> {
  const dir = join(FIXTURES, 'seeds');
  const names = (await readdir(dir)).filter((n) => n.endsWith('.json') && n !== 'expected-keys.json').sort();
  return Promise.all(names.map(async (n) => Buffer.from(JSON.stringify(JSON.parse(await readFile(join(dir, n), 'utf8'))))));
}

function fuzzLines(seeds: readonly Buffer[], count: number): Buffer[] {
  const random = mulberry32(42);
  const int = (n: number): number => Math.floor(random() * n);
  const pick = <T>(items: readonly T[]): T => items[int(items.length)]!;
  const at = (line: Buffer): number => int(line.length + 1);
  const splice = (line: Buffer, i: number, insert: Buffer | string, remove = 0): Buffer =>
    Buffer.concat([line.subarray(0, i), Buffer.from(insert), line.subarray(i + remove)]);
  const numbers = ['1e400', '-0', '1E2', '1.0', '9007199254740993', '9'.repeat(400), '-1e-400', '123456789012345678901234567890'];
  const mutations: ((line: Buffer) => Buffer)[] = [
    (line) => line,
    (line) => line.subarray(0, 1 + int(line.length - 1)),
    (line) => {
      const copy = Buffer.from(line);
      for (let n = 1 + int(3); n > 0; n--) {
        const i = int(copy.length);
        copy[i] = (copy[i] ?? 0) ^ (1 + int(255));
      }
      return copy;
    },
    (line) => splice(line, at(line), '"'),
    (line) => {
      const depth = 1 + int(300);
      return splice(line, 1, `"deep":${'['.repeat(depth)}${']'.repeat(depth)},`);
    },
    (line) => {
      const depth = 1 + int(120);
      return splice(line, 1, `"deep":${'{"a":'.repeat(depth)}1${'}'.repeat(depth)},`);
    },
    (line) => Buffer.from(line.toString('latin1').replace(/:(\d+)/, () => `:${pick(numbers)}`), 'latin1'),
    (line) => Buffer.from(line.toString('latin1').replace(/"id":\d+/, () => `"id":${pick(numbers)}`), 'latin1'),
    (line) => splice(line, at(line), pick([Buffer.from([0xff]), Buffer.from([0xc3]), Buffer.from([0xc0, 0xaf]), Buffer.from([0xed, 0xa0, 0x80])])),
    (line) => Buffer.concat([line, Buffer.from('\r')]),
    (line) => splice(line, line.length - 1, `,"id":${int(1000)},"event":${pick(['"user_login"', '1', 'null', '""'])}`),
    (line) => Buffer.from(line.toString('utf8').replace(/"([a-z_]+)":"/, (_m, key: string) => `"${key}":"é🚀\\u00e9\\ud83d\\ude80 `), 'utf8'),
    (line) => Buffer.from(line.toString('utf8').replace('"succeeded"', '"running"').replace('"completed"', '"pending"'), 'utf8'),
    (line) => Buffer.from(line.toString('utf8').replace(/"started_at":"[^"]*"|"timestamp":"[^"]*"/, (m) => m.replace(/\d{4}-\d{2}-\d{2}/, pick(['9999-12-31', '0000-01-01', '2019-02-30']))), 'utf8'),
    (line) => Buffer.from(`[${line.toString('latin1')}]`, 'latin1'),
  ];
  const lines: Buffer[] = [];
  while (lines.length < count) {
    let line = pick(seeds);
    for (let n = 1 + int(2); n > 0; n--) line = pick(mutations)(line);
    // A newline would make two lines; a blank line is not a record. Neither is what is counted here.
    line = Buffer.from(line.map((b) => (b === 0x0a ? 0x20 : b)));
    if (line.toString('latin1').trim() === '') line = Buffer.from('x');
    lines.push(line);
  }
  return lines;
}

function pipelineYaml(dir: string, pool: boolean): string {
  const transforms = `  redacted:
    type: redact
    inputs: [jobs]
    fields: ["details.request.ip_address", "lines.*.input"]
    patterns: [email, ipv4, credit_card]
  keyed:
    type: path_format
    inputs: [redacted]
    user_id: 5234
`;
  return poolPipeline({ dir, pool, transforms, last: 'keyed', thresholdBytes: 2048, checkpointIntervalMs: 200, shutdownTimeout: '30s' });
}

describe.each([
  ['inline', false],
  ['with the pool', true],
])('line fuzzer (%s)', (_name, pool) => {
  it(`accounts for every one of ${LINES} mutated seed lines, and the process exits 65 (its dead letters)`, async () => {
    const dir = await scratch(cleanup);
    await mkdir(join(dir, 'logs'));
    const lines = fuzzLines(await seedLines(), LINES);
    const file = join(dir, 'logs', 'fuzz.ndjson');
    await writeFile(file, Buffer.concat(lines.flatMap((l) => [l, Buffer.from('\n')])));
    const config = await writePipeline(dir, pipelineYaml(dir, pool));

    const result = await runCli(['run', '-c', config, '--once'], { cwd: dir, timeoutMs: 150_000 });
    expect(result.signal).toBeNull();
    expect(result.stderr).not.toMatch(/Maximum call stack|unhandled|TypeError|LF_POOL_FAILED|LF_SINK_FAILED/);
    expect(result.code, result.stderr.slice(-2000)).toBe(65);
    const done = /done: (\d+) records? in .*?, (\d+) delivered, (\d+) dead letters?, (\d+) skipped/.exec(result.stderr);
    expect(done, result.stderr.slice(-2000)).not.toBeNull();
    const [, , delivered, deadLetters, skipped] = done!.map(Number);
    expect(delivered! + deadLetters! + skipped!).toBe(LINES);
    // Each kind of outcome happens, so the mutations reach every path.
    expect(delivered).toBeGreaterThan(100);
    expect(deadLetters).toBeGreaterThan(100);
    expect(skipped).toBeGreaterThan(10);
    const written = (await readFile(join(dir, 'data', 'dead_letter', 'dead-letters.ndjson'), 'utf8')).split('\n').filter((l) => l !== '');
    expect(written).toHaveLength(deadLetters!);
    const codes = new Set(written.map((l) => (JSON.parse(l) as { code: string }).code));
    for (const code of ['LF_RECORD_BAD_JSON', 'LF_RECORD_BAD_UTF8', 'LF_RECORD_TOO_DEEP', 'LF_RECORD_NOT_OBJECT', 'LF_RECORD_INVALID']) expect(codes).toContain(code);

    const checkpoint = JSON.parse(await readFile(join(dir, 'data', 'checkpoints', 'jobs.json'), 'utf8')) as { files: { offset: number }[] };
    expect(checkpoint.files[0]?.offset).toBe((await stat(file)).size);
    const again = await runCli(['run', '-c', config, '--once'], { cwd: dir, timeoutMs: 60_000 });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/done: 0 records in .*, 0 dead letters/);
  }, 240_000);
});
