import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import sumologic from '../../plugins/sumologic/index.js';
import { builtinRegistry } from '../../src/builtins.js';
import { pipelineJsonSchema } from '../../src/config/json-schema.js';
import { MAX_TIMER_MS } from '../../src/config/limits.js';
import { parseConfigText, pipelineSchema } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';

type JsonSchema = Record<string, unknown>;

/** Every number or integer in the schema, with its path (e.g. `sinks.http.retry.max_backoff_ms`). */
function numbersIn(schema: unknown, path: string, out: { path: string; node: JsonSchema }[]): void {
  if (schema === null || typeof schema !== 'object') return;
  if (Array.isArray(schema)) {
    schema.forEach((item) => numbersIn(item, path, out));
    return;
  }
  const node = schema as JsonSchema;
  if (node.type === 'number' || node.type === 'integer') out.push({ path, node });
  for (const [key, value] of Object.entries(node)) {
    if (key === 'properties' && value && typeof value === 'object') {
      for (const [name, child] of Object.entries(value as Record<string, unknown>)) numbersIn(child, path ? `${path}.${name}` : name, out);
    } else if (key === 'oneOf' || key === 'anyOf' || key === 'allOf') {
      const variants = value as JsonSchema[];
      variants.forEach((variant) => numbersIn(variant, typeof variant.title === 'string' ? `${path}<${variant.title}>` : path, out));
    } else if (key === 'items' || key === 'additionalProperties' || key === 'prefixItems') {
      numbersIn(value, `${path}[]`, out);
    }
  }
}

/** zod gives every `.int()` the safe-integer range; that is no bound an operator would choose. */
const lower = (n: JsonSchema): number | undefined => {
  const value = (n.minimum ?? n.exclusiveMinimum) as number | undefined;
  return value !== undefined && value > Number.MIN_SAFE_INTEGER ? value : undefined;
};
const upper = (n: JsonSchema): number | undefined => {
  const value = (n.maximum ?? n.exclusiveMaximum) as number | undefined;
  return value !== undefined && value < Number.MAX_SAFE_INTEGER ? value : undefined;
};

describe('option bounds', () => {
  const registry = builtinRegistry();
  for (const sink of sumologic.sinks ?? []) registry.register(sink);
  const numbers: { path: string; node: JsonSchema }[] = [];
  numbersIn(pipelineJsonSchema(registry), '', numbers);

  it('finds the numeric options of every component (the walk itself works)', () => {
    const paths = numbers.map((n) => n.path);
    for (const expected of [
      'buffer.max_bytes',
      'checkpoint_interval_ms',
      'shutdown_timeout',
      'pool.threads',
      'sources[]<job_log_tail>.read_buffer_bytes',
      'sinks[]<http>.retry.max_backoff_ms',
      'sinks[]<s3>.multipart_threshold_bytes',
      'sinks[]<sumo_logic>.batch.timeout_ms',
      'transforms[]<path_format>.user_id',
    ]) {
      expect(paths).toContain(expected);
    }
    expect(numbers.length).toBeGreaterThan(30);
  });

  it('gives every numeric option of every built-in component a minimum and a maximum', () => {
    const unbounded = numbers.filter((n) => lower(n.node) === undefined || upper(n.node) === undefined).map((n) => n.path);
    expect(unbounded).toEqual([]);
  });

  it('keeps every millisecond option below the 2^31-1 ms that timers turn into 1 ms', () => {
    const ms = numbers.filter((n) => /_ms$/.test(n.path));
    expect(ms.length).toBeGreaterThan(10);
    for (const n of ms) expect(upper(n.node), n.path).toBeLessThanOrEqual(MAX_TIMER_MS);
    // Options in seconds are turned into milliseconds for timers and deadlines.
    for (const n of numbers.filter((n) => /(_s|shutdown_timeout)$/.test(n.path))) expect(upper(n.node)! * 1000, n.path).toBeLessThanOrEqual(MAX_TIMER_MS);
  });
});

/** The smallest options each component type accepts, to vary one number at a time. */
const MINIMAL_OPTIONS: Record<string, Record<string, unknown>> = {
  job_log_tail: { include: ['./logs/*.ndjson'] },
  select: {},
  redact: {},
  path_format: {},
  file: { path: './out' },
  console: {},
  http: { uri: 'http://127.0.0.1:9/x' },
  s3: { bucket: 'b' },
  sumo_logic: { url: 'https://example.com/receiver' },
  otlp: { endpoint: 'http://127.0.0.1:9' },
};

function withValue(base: Record<string, unknown>, path: string, value: unknown): Record<string, unknown> {
  const copy = structuredClone(base);
  const keys = path.split('.');
  let node = copy;
  for (const key of keys.slice(0, -1)) node = (node[key] ??= {}) as Record<string, unknown>;
  node[keys.at(-1)!] = value;
  return copy;
}

describe('every numeric option refuses what is out of its bounds', () => {
  const registry = builtinRegistry();
  for (const sink of sumologic.sinks ?? []) registry.register(sink);
  const targets: { name: string; schema: z.ZodType; base: Record<string, unknown> }[] = [
    { name: 'top level', schema: pipelineSchema, base: { sources: {}, sinks: {} } },
    ...(['source', 'transform', 'sink'] as const).flatMap((kind) =>
      registry.definitions(kind).map((d) => ({ name: d.type, schema: d.schema as z.ZodType, base: MINIMAL_OPTIONS[d.type]! })),
    ),
  ];

  let checked = 0;

  it('has minimal options for every component type', () => {
    for (const t of targets) expect(t.base, t.name).toBeDefined();
    for (const t of targets) expect(t.schema.safeParse(t.base).success, t.name).toBe(true);
  });

  for (const target of targets) {
    it(`${target.name}: .inf, -.inf, .nan and one step past each bound are config errors`, () => {
      const numbers: { path: string; node: JsonSchema }[] = [];
      numbersIn(z.toJSONSchema(target.schema, { io: 'input', unrepresentable: 'any' }), '', numbers);
      for (const { path, node } of numbers.filter((n) => !n.path.includes('[]'))) {
        checked++;
        const step = node.type === 'integer' ? 1 : 1e-6;
        const below = node.exclusiveMinimum !== undefined ? (node.exclusiveMinimum as number) : lower(node)! - step;
        const above = node.exclusiveMaximum !== undefined ? (node.exclusiveMaximum as number) : upper(node)! + step;
        for (const bad of [Infinity, -Infinity, NaN, below, above]) {
          expect(target.schema.safeParse(withValue(target.base, path, bad)).success, `${target.name} ${path} = ${bad}`).toBe(false);
        }
        // The bounds themselves are accepted (where the option's own rules allow the value).
        const lowest = node.exclusiveMinimum !== undefined ? (node.exclusiveMinimum as number) + step : lower(node)!;
        expect(target.schema.safeParse(withValue(target.base, path, upper(node)!)).success, `${target.name} ${path} = max`).toBe(true);
        expect(target.schema.safeParse(withValue(target.base, path, lowest)).success, `${target.name} ${path} = min`).toBe(true);
      }
    });
  }

  it('names .inf and .nan in the config error of every numeric option, at the option', async () => {
    const sectionOf = { source: 'sources', transform: 'transforms', sink: 'sinks' } as const;
    let seen = 0;
    for (const target of targets) {
      const numbers: { path: string; node: JsonSchema }[] = [];
      numbersIn(z.toJSONSchema(target.schema, { io: 'input', unrepresentable: 'any' }), '', numbers);
      for (const { path } of numbers.filter((n) => !n.path.includes('[]'))) {
        for (const bad of ['.inf', '-.inf', '.nan']) {
          const options = JSON.stringify(withValue(target.base, path, '__BAD__')).replace('"__BAD__"', bad);
          const kind = target.name === 'top level' ? undefined : (['source', 'transform', 'sink'] as const).find((k) => registry.get(k, target.name));
          let text: string;
          let where: string;
          if (!kind) {
            text = `${options.slice(1, -1).replace(/"sources":\{\},"sinks":\{\}/, '')}`;
            text = `{${text.replace(/^,|,$/g, '')}, "sources": {"jobs": {"type": "job_log_tail", "include": ["./x/*.ndjson"]}}, "sinks": {"out": {"type": "console", "inputs": ["jobs"]}}}`;
            where = path;
          } else {
            const component = `{"type": "${target.name}"${kind === 'source' ? '' : ', "inputs": ["jobs"]'}, ${options.slice(1)}`.replace(', }', '}');
            const sinks = kind === 'sink' ? `{"x": ${component}}` : `{"out": {"type": "console", "inputs": ["${kind === 'transform' ? 'x' : 'jobs'}"]}}`;
            const sources = kind === 'source' ? `{"jobs": ${component}}` : '{"jobs": {"type": "job_log_tail", "include": ["./x/*.ndjson"]}}';
            text = `{"sources": ${sources}, ${kind === 'transform' ? `"transforms": {"x": ${component}}, ` : ''}"sinks": ${sinks}}`;
            where = `${sectionOf[kind]}.${kind === 'source' ? 'jobs' : 'x'}.${path}`;
          }
          const error = await parseConfigText(text, 'p.yaml', registry, { env: {} }).catch((err: unknown) => err);
          expect(error, `${where} = ${bad}\n${text}`).toBeInstanceOf(ConfigError);
          const problem = (error as ConfigError).problems.find((p) => p.path === where);
          expect(problem?.message, `${where} = ${bad}: ${(error as ConfigError).message}`).toContain('.inf, .nan and numbers too large for a double are not accepted');
          expect(problem?.line).toBe(1);
          seen++;
        }
      }
    }
    expect(seen).toBeGreaterThan(90);
  });

  it('checked every numeric option of every component (the sweep is not empty)', () => {
    expect(checked).toBeGreaterThan(30);
  });

  it('says why in the config error for .inf and .nan, at the option', async () => {
    const text = `checkpoint_interval_ms: .inf
sources:
  jobs: { type: job_log_tail, include: ["./logs/*.ndjson"], poll_interval_ms: .nan }
sinks:
  out: { type: console, inputs: [jobs] }
`;
    const error = await parseConfigText(text, 'p.yaml', builtinRegistry(), { env: {} }).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems).toEqual([
      expect.objectContaining({ path: 'checkpoint_interval_ms', line: 1, col: 25, message: expect.stringContaining('.inf, .nan and numbers too large for a double are not accepted') }),
      expect.objectContaining({ path: 'sources.jobs.poll_interval_ms', line: 3, message: expect.stringContaining('received NaN') }),
    ]);
  });
});
