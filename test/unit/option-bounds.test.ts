import { describe, expect, it } from 'vitest';
import sumologic from '../../plugins/sumologic/index.js';
import { builtinRegistry } from '../../src/builtins.js';
import { pipelineJsonSchema } from '../../src/config/json-schema.js';
import { MAX_TIMER_MS } from '../../src/config/limits.js';

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
