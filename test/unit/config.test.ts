import { describe, expect, it } from 'vitest';
import { builtinRegistry } from '../../src/builtins.js';
import { pipelineJsonSchema } from '../../src/config/json-schema.js';
import { parseConfigText } from '../../src/config/load.js';
import { closest } from '../../src/config/suggest.js';
import { ConfigError, type ConfigProblem } from '../../src/errors.js';
import { autoThreads, poolThreads, poolSchema } from '../../src/engine/record-pool.js';

const FILE = 'pipeline.yaml';

async function load(text: string, env: NodeJS.ProcessEnv = {}): Promise<Awaited<ReturnType<typeof parseConfigText>>> {
  return parseConfigText(text, FILE, builtinRegistry(), { env, cwd: '/srv/ferry' });
}

async function problemsOf(text: string, env: NodeJS.ProcessEnv = {}): Promise<{ code: string; problems: ConfigProblem[]; message: string }> {
  try {
    await load(text, env);
  } catch (err) {
    if (err instanceof ConfigError) return { code: err.code, problems: err.problems, message: err.message };
    throw err;
  }
  throw new Error('expected a ConfigError');
}

const MINIMAL = `sources:
  jobs: { type: job_log_tail, include: ["./logs/*.ndjson"] }
transforms:
  masked: { type: redact, inputs: [jobs] }
  keyed: { type: path_format, inputs: [masked], user_id: 5234 }
sinks:
  archive: { type: file, inputs: [keyed], path: ./out }
`;

describe('pipeline config', () => {
  it('applies defaults and resolves data_dir against the working directory', async () => {
    const config = await load(MINIMAL);
    expect(config.dataDir).toBe('/srv/ferry/.logferry');
    expect(config.bufferMaxBytes).toBe(64 * 1024 * 1024);
    expect(config.shutdownTimeoutMs).toBe(30_000);
    expect(config.checkpointIntervalMs).toBe(1000);
    expect(config.sources.map((c) => c.id)).toEqual(['jobs']);
    expect(config.transforms.map((c) => [c.id, c.inputs])).toEqual([
      ['masked', ['jobs']],
      ['keyed', ['masked']],
    ]);
    const source = config.sources[0]!.options as { start_at: string; max_line_bytes: number };
    expect(source.start_at).toBe('beginning');
    expect(source.max_line_bytes).toBe(8 * 1024 * 1024);
    // The include glob matches no file in this test's working directory: that is the only warning.
    expect(config.warnings.map((w) => w.message)).toEqual([expect.stringContaining('matches no file yet')]);
  });

  it('reads the pool settings, with auto defaults and errors at their line', async () => {
    const defaults = await load(MINIMAL);
    expect(defaults.pool).toEqual({ threads: 'auto', threshold_bytes: 512 * 1024, max_queue: 'auto' });
    const set = await load(`pool: { threads: 0, threshold_bytes: 131072, max_queue: 8 }\n${MINIMAL}`);
    expect(set.pool).toEqual({ threads: 0, threshold_bytes: 131072, max_queue: 8 });
    const bad = await problemsOf(`data_dir: ./d\npool:\n  threads: many\n  treshold_bytes: 1\n${MINIMAL}`);
    expect(bad.problems).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ path: 'pool.threads', line: 3, message: expect.stringContaining('expected auto or a number of threads') }),
        expect.objectContaining({ path: 'pool.treshold_bytes', line: 4, message: 'unknown option; did you mean "threshold_bytes"?' }),
      ]),
    );
  });

  it('gives pool.threads auto the cores beyond two (off on two cores), and takes a number as it is', () => {
    expect([1, 2, 3, 4, 8, 64].map((cores) => autoThreads(cores))).toEqual([0, 0, 1, 2, 6, 62]);
    expect(poolThreads(poolSchema.parse({ threads: 3 }))).toBe(3);
    expect(poolThreads(poolSchema.parse({ threads: 0 }))).toBe(0);
    expect(poolThreads(poolSchema.parse({}))).toBe(autoThreads());
  });

  it('parses durations in seconds or with a unit', async () => {
    for (const [value, ms] of [['20s', 20_000], ['500ms', 500], ['2m', 120_000], ['5', 5000]] as const) {
      const config = await load(`shutdown_timeout: ${value}\n${MINIMAL}`);
      expect(config.shutdownTimeoutMs).toBe(ms);
    }
    const bad = await problemsOf(`shutdown_timeout: soon\n${MINIMAL}`);
    expect(bad.problems[0]).toMatchObject({ path: 'shutdown_timeout', line: 1 });
  });

  it('substitutes ${VAR} and ${VAR:-default}, keeps $${ literal, and types plain scalars', async () => {
    const text = MINIMAL.replace('./out', '${OUT_DIR}')
      .replace('user_id: 5234', 'user_id: ${USER_ID:-77}')
      .replace('sources:', () => 'data_dir: "$${HOME}/${DATA:-x}"\nsources:');
    const config = await load(text, { OUT_DIR: '/tmp/out' });
    expect((config.sinks[0]!.options as { path: string }).path).toBe('/tmp/out');
    expect((config.transforms[1]!.options as { user_id: number }).user_id).toBe(77);
    expect(config.dataDir).toBe('/srv/ferry/${HOME}/x');
  });

  it('never lets a variable inject YAML structure', async () => {
    const config = await load(MINIMAL.replace('./out', '${OUT_DIR}'), { OUT_DIR: 'x\n  evil: true' });
    expect((config.sinks[0]!.options as { path: string }).path).toBe('x\n  evil: true');
  });

  it('reports a missing variable with its position and LF_CONFIG_ENV', async () => {
    const { code, problems } = await problemsOf(MINIMAL.replace('./out', '${OUT_DIR}'));
    expect(code).toBe('LF_CONFIG_ENV');
    expect(problems[0]).toMatchObject({ path: 'sinks.archive.path', line: 7 });
    expect(problems[0]!.message).toContain('OUT_DIR');
  });

  it('lists every problem in one pass, in file order, with did-you-mean', async () => {
    const { message, problems } = await problemsOf(`data_dirr: ./x
sources:
  jobs:
    type: job_log_tail
    include: "./logs/*.ndjson"
    start_at: middle
transforms:
  keyed:
    type: path_formatt
    inputs: [jobs]
sinks:
  archive:
    type: file
    inputs: [keyed]
    path: ./out
    retry: { initial_backof_ms: 5 }
`);
    expect(problems.map((p) => p.line)).toEqual([1, 5, 6, 9, 16]);
    expect(message).toContain('pipeline.yaml:1:1: data_dirr: unknown option; did you mean "data_dir"?');
    const second = await problemsOf(MINIMAL.replace('include: ["./logs/*.ndjson"]', 'include: "./logs/*.ndjson", start_at: middle').replace(
      'path: ./out',
      'path: ./out, retry: { initial_backof_ms: 5 }',
    ).replace('type: path_format', 'type: path_formatt'));
    const paths = second.problems.map((p) => p.path);
    expect(paths).toContain('sources.jobs.include');
    expect(paths).toContain('sources.jobs.start_at');
    expect(paths).toContain('transforms.keyed.type');
    expect(paths).toContain('sinks.archive.retry.initial_backof_ms');
    expect(second.message).toMatch(/transforms\.keyed\.type: unknown transform type "path_formatt"; did you mean "path_format"\?/);
    expect(second.message).toMatch(/retry\.initial_backof_ms: unknown option; did you mean "initial_backoff_ms"\?/);
    for (const p of second.problems) expect(p.line).toBeGreaterThan(0);
  });

  it('checks the graph: unknown inputs, sinks as inputs, cycles, unused components, missing keys', async () => {
    const unknown = await problemsOf(MINIMAL.replace('inputs: [masked]', 'inputs: [maskd]'));
    expect(unknown.message).toMatch(/:5:\d+: transforms\.keyed\.inputs\[0\]: no source or transform is called "maskd"; did you mean "masked"\?/);

    const sinkInput = await problemsOf(MINIMAL.replace('inputs: [masked]', 'inputs: [archive]'));
    expect(sinkInput.message).toContain('"archive" is a sink');

    const cycle = await problemsOf(MINIMAL.replace('inputs: [jobs]', 'inputs: [keyed]'));
    expect(cycle.message).toMatch(/cycle: (masked -> keyed -> masked|keyed -> masked -> keyed)/);

    const unused = await problemsOf(MINIMAL.replace('transforms:', 'transforms:\n  spare: { type: select, inputs: [jobs] }'));
    expect(unused.message).toContain('transform "spare" is not an input of any transform or sink');

    const unkeyed = await problemsOf(MINIMAL.replace('inputs: [keyed]', 'inputs: [masked]').replace('  keyed: { type: path_format, inputs: [masked], user_id: 5234 }\n', ''));
    expect(unkeyed.message).toContain('put a path_format transform');
  });

  it('warns when a sink receives records that no redact transform masked', async () => {
    const config = await load(`sources:
  jobs: { type: job_log_tail, include: ["./logs/*.ndjson"] }
transforms:
  keyed: { type: path_format, inputs: [jobs] }
sinks:
  archive: { type: file, inputs: [keyed], path: ./out }
`);
    const unmasked = (warnings: readonly ConfigProblem[]): ConfigProblem[] => warnings.filter((w) => w.message.includes('mask_data'));
    expect(unmasked(config.warnings)).toHaveLength(1);
    const optedOut = await load(MINIMAL.replace('type: redact,', 'type: redact, mask_data: false,'));
    expect(unmasked(optedOut.warnings)).toHaveLength(1);
  });

  it('rejects YAML syntax errors, duplicate keys, duplicate ids and unsafe ids with positions', async () => {
    const syntax = await problemsOf('sources:\n  jobs: [unclosed\n');
    expect(syntax.problems[0]!.line).toBeGreaterThan(0);
    const duplicate = await problemsOf(MINIMAL + 'sinks:\n  other: { type: console, inputs: [keyed] }\n');
    expect(duplicate.problems[0]!.line).toBeGreaterThan(0);
    const sameId = await problemsOf(MINIMAL.replace('archive:', 'jobs:'));
    expect(sameId.message).toContain('already used by sources.jobs');
    const unsafe = await problemsOf(MINIMAL.replace('archive:', '"../etc":'));
    expect(unsafe.message).toContain('component ids may only use');
  });

  it('has a JSON Schema that names every built-in type and its options', () => {
    const schema = JSON.stringify(pipelineJsonSchema(builtinRegistry()));
    for (const word of ['job_log_tail', 'max_line_bytes', 'path_format', 'activity_key', 'redact', 'patterns', 'file', 'console', 'shutdown_timeout']) {
      expect(schema).toContain(`"${word}"`);
    }
  });

  it('suggests only close matches', () => {
    expect(closest('max_line_bytez', ['max_line_bytes', 'include'])).toBe('max_line_bytes');
    expect(closest('zzz', ['max_line_bytes', 'include'])).toBeUndefined();
  });
});
