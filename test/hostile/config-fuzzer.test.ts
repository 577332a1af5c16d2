/**
 * Config fuzzer (issue 9): hundreds of mutated pipeline files, made with a fixed seed from the
 * example pipeline and the shapes the tests use. Each must end with exit 0 or 78 and a message,
 * never a stack trace, an abort, an exit 1 or a hang.
 *
 * Spawning the CLI costs about a second (it loads the AWS SDK), so most cases run `main()` in
 * this process with its output captured; a sample of them also runs through the built CLI
 * (`validate` and `run --once`), which must agree with the in-process result.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { isMap, isScalar, isSeq, parseDocument, visit, type Document, type Pair, type YAMLMap } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { mulberry32 } from '../../src/testkit/random.js';
import { removeAll, runCli, scratch, standardPipeline } from '../helpers/cli.js';

const SEED = 20261123;
const CASES = 400;
/** Every how many cases one also runs through the spawned CLI (20 of 400). */
const SPAWN_EVERY = 20;
const SPAWN_PARALLEL = 3;
const IN_PROCESS_TIMEOUT_MS = 20_000;
const SPAWN_TIMEOUT_MS = 60_000;

const STACK_FRAME = /^\s{4}at /m;
const REPO = resolve(import.meta.dirname, '../..');

/** Variables the mutations reference; FUZZ_UNSET is never set. */
const FUZZ_ENV: Record<string, string> = {
  FUZZ_SET: './fuzz-out',
  FUZZ_NUMBER: '250',
  FUZZ_YAML_MAP: '{a: 1, b: [2]}',
  FUZZ_YAML_LIST: '[1, 2, 3]',
  FUZZ_NEWLINE: 'line one\nline two: x',
  FUZZ_ANCHOR: '&x *y # not a comment',
};

const cleanup: string[] = [];

type Random = () => number;
const pick = <T>(random: Random, items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
const int = (random: Random, below: number): number => Math.floor(random() * below);

/** Seeds: the example pipeline and the shapes of the test configs, with relative paths only. */
async function seeds(): Promise<string[]> {
  const base = { dataDir: './data', include: './logs/*.ndjson', out: './out' };
  return [
    await readFile(join(REPO, 'pipeline.example.yaml'), 'utf8'),
    standardPipeline(base),
    standardPipeline({
      ...base,
      top: 'pool: { threads: 0, threshold_bytes: 131072, max_queue: 8 }\nbuffer: { max_bytes: 1048576 }',
      sinks: `  web:
    type: http
    inputs: [keyed]
    uri: http://127.0.0.1:9/ingest
    encoding: ndjson
    compression: gzip
    headers: { X-Source: logferry }
    auth: { strategy: bearer, token: "\${FUZZ_SET}" }
    batch: { max_events: 100, max_bytes: 65536, timeout_ms: 50 }
    request: { concurrency: 2, timeout_ms: 1000 }
    retry: { initial_backoff_ms: 10, max_backoff_ms: 100, max_duration_s: 1 }
    tls: { verify: true }
`,
    }),
    standardPipeline({
      ...base,
      sinks: `  bucket:
    type: s3
    inputs: [keyed]
    bucket: fuzz-bucket
    region: us-east-1
    endpoint: http://127.0.0.1:9
    force_path_style: true
    compression: gzip
    gzip_suffix: true
    concurrency: 4
    multipart_threshold_bytes: 8388608
    request_timeout_ms: 1000
    retry: { initial_backoff_ms: 10, max_backoff_ms: 100, max_duration_s: 1 }
`,
    }),
    `data_dir: ./data
shutdown_timeout: 2s
checkpoint_interval_ms: 100
status_interval_ms: 60000
sources:
  jobs: { type: job_log_tail, include: ["./logs/*.ndjson"], exclude: ["./logs/*.gz"], start_at: end }
transforms:
  chosen: { type: select, inputs: [jobs], activity_events: [user_login], step_details: false }
  masked: { type: redact, inputs: [chosen], fields: [user.email], patterns: [email, { regex: "secret-[0-9]+" }] }
  keyed: { type: path_format, inputs: [masked], user_id: "5234", job_key: "{user_id}/{job_id}.json" }
sinks:
  archive: { type: file, inputs: [keyed], path: ./out, pretty: true, retry: { initial_backoff_ms: 5, max_backoff_ms: 50 } }
  debug: { type: console, inputs: [masked] }
`,
    `plugins: [${JSON.stringify(join(REPO, 'plugins/sumologic'))}]
data_dir: ./data
sources:
  jobs: { type: job_log_tail, include: ["./logs/*.ndjson"] }
transforms:
  masked: { type: redact, inputs: [jobs] }
sinks:
  sumo:
    type: sumo_logic
    inputs: [masked]
    url: http://127.0.0.1:9/receiver/v1/http/token
    category: prod/jobs
    fields: { environment: prod }
    batch: { max_events: 10, timeout_ms: 50 }
    retry: { max_duration_s: 1 }
`,
  ];
}

const NUMBERS = [0, -1, -0.5, 1.5, 2 ** 31, 2 ** 32, 2 ** 53 + 2, 1e308, Infinity, -Infinity, NaN, 1, 7];
/**
 * Values put anywhere, data_dir and sink folders included: the tests run as root on CI machines,
 * so no value names a real folder outside the scratch folder ('/', '..' are only used for include).
 */
const VALUES: unknown[] = ['x', '', true, null, [], {}, [1, 'two'], { a: 1 }, 'x'.repeat(10_000), 'y'.repeat(300), '\u0000', 'a\r\nb', 'a/\u0000/b'];
/** include patterns that name folders, nothing, or the file system root (a folder is a config error). */
const INCLUDES = ['.', '/', '..', '/etc', 'logs/', './nowhere/*.ndjson', './logs', '*.yaml', 'x\u0000y'];
const TYPES = ['nope', 'FILE', 'file ', 's3x', 'job_log_tail2', '', 'http', 'console', 'redact', 'path_format', 'select', 'sumo_logic'];
const REFERENCES = ['${FUZZ_SET}', '${FUZZ_UNSET}', '${FUZZ_UNSET:-5}', '"${FUZZ_NEWLINE}"', '${', '$${FUZZ_SET}', '${FUZZ_YAML_MAP}', '${FUZZ_YAML_LIST}', '${FUZZ_ANCHOR}', '${FUZZ_NUMBER}', '${1BAD}', 'a${FUZZ_SET}b${FUZZ_NUMBER}'];
const PUNCTUATION = ':{}[]&*!|>\'"%@`#-?,\t\\';

/** Every key/value pair with the map it sits in. */
function pairsOf(doc: Document): { pair: Pair; parent: YAMLMap }[] {
  const found: { pair: Pair; parent: YAMLMap }[] = [];
  visit(doc, {
    Pair(_key, pair, path) {
      const parent = path[path.length - 1];
      if (isMap(parent)) found.push({ pair: pair as Pair, parent });
    },
  });
  return found;
}

/** One structural mutation on the parsed document. */
function mutateDocument(doc: Document, random: Random): string {
  const pairs = pairsOf(doc);
  if (pairs.length === 0) return 'no pairs';
  const { pair, parent } = pick(random, pairs);
  const key = isScalar(pair.key) ? String(pair.key.value) : '?';
  switch (int(random, 8)) {
    case 0:
      parent.items.splice(parent.items.indexOf(pair), 1);
      return `drop ${key}`;
    case 1:
      pair.value = doc.createNode(pick(random, VALUES));
      return `retype ${key}`;
    case 2: {
      // Numbers go where numbers are: a numeric value, or any value at random.
      const numeric = pairs.filter((p) => isScalar(p.pair.value) && typeof p.pair.value.value === 'number');
      const target = numeric.length > 0 && random() < 0.8 ? pick(random, numeric) : { pair, parent };
      target.pair.value = doc.createNode(pick(random, NUMBERS));
      return `number ${isScalar(target.pair.key) ? String(target.pair.key.value) : '?'}`;
    }
    case 3: {
      const typed = pairs.filter((p) => isScalar(p.pair.key) && p.pair.key.value === 'type');
      if (typed.length === 0) return 'no type';
      pick(random, typed).pair.value = doc.createNode(pick(random, TYPES));
      return 'type';
    }
    case 4:
      parent.items.push(doc.createPair(pick(random, ['unknown', 'includ', 'max_line_byte', 'sinks', 'type', 'inputs', '<<']), pick(random, VALUES)));
      return `add key near ${key}`;
    case 5:
      if (isSeq(pair.value) && pair.value.items.length > 0) {
        pair.value.items.push(doc.createNode(pick(random, VALUES)));
        return `extend list ${key}`;
      }
      pair.value = doc.createNode([pair.value]);
      return `wrap ${key} in a list`;
    case 7: {
      const include = pairs.find((p) => isScalar(p.pair.key) && p.pair.key.value === 'include');
      if (!include) return 'no include';
      include.pair.value = doc.createNode([pick(random, INCLUDES)]);
      return 'include';
    }
    default:
      pair.key = doc.createNode(pick(random, [key.toUpperCase(), `${key}_`, key.slice(1), '', ' ', '1']));
      return `rename ${key}`;
  }
}

function nested(depth: number, random: Random): string {
  return random() < 0.5 ? `${'['.repeat(depth)}1${']'.repeat(depth)}` : `${'{a: '.repeat(depth)}1${'}'.repeat(depth)}`;
}

const aliasBomb = (levels: number): string => {
  const lines = ['lol0: &lol0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
  for (let i = 1; i <= levels; i++) lines.push(`lol${i}: &lol${i} [${Array(10).fill(`*lol${i - 1}`).join(',')}]`);
  return lines.join('\n') + '\n';
};

/** One mutation of the text (or of its bytes). */
function mutateText(text: string, random: Random): { content: string | Buffer; what: string } {
  const lines = text.split('\n');
  const line = int(random, lines.length);
  const valueLine = (replacement: string): string => {
    const candidates = lines.map((l, i) => [l, i] as const).filter(([l]) => /^\s*[A-Za-z_]+: \S/.test(l));
    if (candidates.length === 0) return text;
    const [l, i] = pick(random, candidates);
    const copy = [...lines];
    copy[i] = l.replace(/^(\s*[A-Za-z_]+: ).*$/, `$1${replacement}`);
    return copy.join('\n');
  };
  switch (int(random, 14)) {
    case 0:
      return { content: [...lines.slice(0, line + 1), lines[line]!, ...lines.slice(line + 1)].join('\n'), what: 'duplicate a line' };
    case 1:
      return { content: [...lines.slice(0, line), `\t${lines[line]}`, ...lines.slice(line + 1)].join('\n'), what: 'tab indent' };
    case 2: {
      const at = int(random, text.length + 1);
      const bytes = pick(random, [[0xff], [0xfe, 0xff], [0xc3], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0x00]]);
      return { content: Buffer.concat([Buffer.from(text.slice(0, at)), Buffer.from(bytes), Buffer.from(text.slice(at))]), what: 'bad UTF-8' };
    }
    case 3:
      return { content: Buffer.from(Array.from({ length: int(random, 2000) }, () => int(random, 256))), what: 'random bytes' };
    case 4:
      return { content: '', what: 'empty file' };
    case 5:
      return { content: text.slice(0, int(random, text.length)), what: 'truncated' };
    case 6: {
      const at = int(random, text.length + 1);
      return { content: text.slice(0, at) + pick(random, [...PUNCTUATION]) + text.slice(at), what: 'punctuation' };
    }
    case 7:
      return { content: valueLine(nested(pick(random, [20, 40, 200, 2000, 20_000]), random)), what: 'deep nesting' };
    case 8:
      return { content: aliasBomb(pick(random, [2, 3, 5, 9])) + text, what: 'alias bomb' };
    case 9:
      return { content: `x-anchor: &anchor {a: 1, b: [1, 2]}\n${valueLine(pick(random, ['*anchor', '*missing', '&self [*self]', '{<<: *anchor}']))}`, what: 'alias' };
    case 10:
      return { content: valueLine(pick(random, REFERENCES)), what: 'env reference' };
    case 11:
      return { content: (random() < 0.5 ? '\uFEFF' : '') + text.replaceAll('\n', '\r\n'), what: 'BOM / CRLF' };
    case 12:
      return { content: valueLine(pick(random, ['.inf', '-.inf', '.nan', '.NaN', '1e400', '-1e400', '0x7fffffff', '0o777', '1_000', '4294967296', '9999999999s', '-1s'])), what: 'YAML number' };
    default:
      return { content: valueLine(`"${'a'.repeat(pick(random, [1000, 100_000]))}"`), what: 'long value' };
  }
}

interface Case {
  index: number;
  file: string;
  what: string;
}

async function makeCases(dir: string): Promise<Case[]> {
  const random = mulberry32(SEED);
  const sources = await seeds();
  const cases: Case[] = [];
  for (let index = 0; index < CASES; index++) {
    const seed = pick(random, sources);
    const what: string[] = [];
    let text = seed;
    // Structural mutations keep the file valid YAML; then at most one text mutation breaks it further.
    const structural = int(random, 3);
    if (structural > 0) {
      const doc = parseDocument(seed);
      for (let i = 0; i < structural; i++) what.push(mutateDocument(doc, random));
      text = doc.toString();
    }
    let content: string | Buffer = text;
    if (structural === 0 || random() < 0.5) {
      const mutated = mutateText(text, random);
      content = mutated.content;
      what.push(mutated.what);
    }
    const file = join(dir, `case-${String(index).padStart(3, '0')}.yaml`);
    await writeFile(file, content);
    cases.push({ index, file, what: what.join(', ') });
  }
  return cases;
}

/** Runs main() in this process with stdout and stderr captured. */
async function runInProcess(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const capture =
    (sink: string[]) =>
    (chunk: unknown, ...rest: unknown[]): boolean => {
      sink.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString());
      const callback = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
      callback?.();
      return true;
    };
  const originalOut = process.stdout.write.bind(process.stdout);
  const originalErr = process.stderr.write.bind(process.stderr);
  process.stdout.write = capture(stdout) as typeof process.stdout.write;
  process.stderr.write = capture(stderr) as typeof process.stderr.write;
  let timer: NodeJS.Timeout | undefined;
  try {
    const code = await Promise.race([
      main(args),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`hang: main(${args.join(' ')}) did not finish within ${IN_PROCESS_TIMEOUT_MS} ms`)), IN_PROCESS_TIMEOUT_MS);
      }),
    ]);
    return { code, stdout: stdout.join(''), stderr: stderr.join('') };
  } finally {
    clearTimeout(timer);
    process.stdout.write = originalOut;
    process.stderr.write = originalErr;
  }
}

type Outcome = { code: number | null; stdout: string; stderr: string; signal?: NodeJS.Signals | null };

/** What is wrong with how a case ended, or undefined when it ended cleanly. */
function uncleanEnd(c: Case, result: Outcome, command: string): string | undefined {
  const wrong =
    result.signal
      ? `killed by ${result.signal} (abort or hang)`
      : result.code !== 0 && result.code !== 78
        ? `exit ${result.code}`
        : STACK_FRAME.test(result.stdout + result.stderr)
          ? 'a stack trace'
          : result.stderr.includes('unexpected error')
            ? 'an unexpected error'
            : result.code === 78 && !/case-\d{3}\.yaml/.test(result.stderr)
              ? 'exit 78 without a message naming the file'
              : result.code === 0 && command.startsWith('validate') && !/: ok \(\d+ components/.test(result.stdout)
                ? 'exit 0 without "ok"'
                : undefined;
  return wrong && `case ${c.index} (${c.what}), ${command}: ${wrong}\n${result.stderr.slice(0, 600)}`;
}

describe('config fuzzer', () => {
  let dir: string;
  let cases: Case[];
  const results = new Map<number, number>();
  const savedEnv: Record<string, string | undefined> = {};

  beforeAll(async () => {
    dir = await scratch(cleanup);
    await mkdir(join(dir, 'cases'));
    cases = await makeCases(join(dir, 'cases'));
    for (const [name, value] of Object.entries(FUZZ_ENV)) {
      savedEnv[name] = process.env[name];
      process.env[name] = value;
    }
    delete process.env.FUZZ_UNSET;
  });

  afterAll(async () => {
    for (const [name, value] of Object.entries(savedEnv)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
    await removeAll(cleanup);
  });

  it(`validates ${CASES} mutated pipeline files in process: each ends with exit 0 or 78 and a message`, { timeout: 300_000 }, async () => {
    const outcomes = { ok: 0, config: 0 };
    const failures: string[] = [];
    for (const c of cases) {
      const result = await runInProcess(['validate', '-c', c.file]).catch((err: Error) => ({ code: -1, stdout: '', stderr: err.message }));
      const wrong = uncleanEnd(c, result, 'validate');
      if (wrong) failures.push(wrong);
      results.set(c.index, result.code);
      if (result.code === 0) outcomes.ok++;
      else outcomes.config++;
    }
    expect(failures).toEqual([]);
    // The mutations must cover every kind and exercise both outcomes, or the fuzzer tests less than it claims.
    const kinds = ['alias bomb', 'alias', 'deep nesting', 'bad UTF-8', 'random bytes', 'empty file', 'env reference', 'YAML number', 'tab indent', 'truncated', 'duplicate a line', 'BOM / CRLF', 'long value', 'punctuation', 'drop', 'retype', 'number', 'type', 'include', 'rename'];
    for (const kind of kinds) expect(cases.filter((c) => c.what.split(', ').some((w) => w === kind || w.startsWith(`${kind} `))).length, kind).toBeGreaterThanOrEqual(3);
    expect(outcomes.config).toBeGreaterThan(CASES / 2);
    expect(outcomes.ok).toBeGreaterThan(5);
  });

  it('runs a sample through the built CLI (validate and run --once): same outcome, no stack trace, no hang', { timeout: 600_000 }, async () => {
    const sample = cases.filter((c) => c.index % SPAWN_EVERY === 0);
    expect(sample.length).toBe(CASES / SPAWN_EVERY);
    const queue = [...sample];
    const worker = async (): Promise<void> => {
      for (let c = queue.shift(); c; c = queue.shift()) {
        // Each case runs in a folder of its own: data_dir and sink folders are relative to it.
        const work = join(dir, `run-${c.index}`);
        await mkdir(work);
        const env = { ...FUZZ_ENV, FUZZ_UNSET: undefined };
        const validate = await runCli(['validate', '-c', c.file], { cwd: work, env, timeoutMs: SPAWN_TIMEOUT_MS });
        const run = await runCli(['run', '--once', '-c', c.file], { cwd: work, env, timeoutMs: SPAWN_TIMEOUT_MS });
        for (const wrong of [uncleanEnd(c, validate, 'validate (spawned)'), uncleanEnd(c, run, 'run --once (spawned)')]) if (wrong) failures.push(wrong);
        if (results.has(c.index) && validate.code !== results.get(c.index)) failures.push(`case ${c.index} (${c.what}): in-process and spawned validate disagree`);
        if (run.code !== validate.code) failures.push(`case ${c.index} (${c.what}): run --once exits ${run.code}, validate ${validate.code}\n${run.stderr.slice(0, 600)}`);
      }
    };
    const failures: string[] = [];
    await Promise.all(Array.from({ length: SPAWN_PARALLEL }, worker));
    expect(failures).toEqual([]);
  });
});
