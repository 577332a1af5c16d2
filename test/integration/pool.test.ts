import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { builtinRegistry } from '../../src/builtins.js';
import { parseConfigText } from '../../src/config/load.js';
import { readDeadLetters } from '../../src/engine/dead-letters.js';
import { silentLogger } from '../../src/engine/logger.js';
import { Metrics } from '../../src/engine/metrics.js';
import { Pipeline } from '../../src/engine/pipeline.js';
import type { ComponentDefinition, Delivery, Sink } from '../../src/engine/types.js';
import { builtinTransformRegistry } from '../../src/transforms/builtins.js';
import { documentBody, preparedGzip } from '../../src/records/body.js';
import { makeJob, readTree, removeAll, scratch } from '../helpers/cli.js';

const cleanup: string[] = [];
afterEach(() => removeAll(cleanup));

const SECRET = 'pool-secret-do-not-ship';

/** A job of about `size` bytes whose second step is masked and carries SECRET. */
function bigJob(id: number, size: number, extra: Record<string, unknown> = {}): string {
  const job = makeJob(id, extra);
  (job.lines as unknown[]).push({
    recipe_line_number: 1,
    adapter_name: 'rest',
    adapter_operation: 'make_request',
    input: { password: SECRET, body: 'x'.repeat(size) },
    output: { token: SECRET },
    error: null,
    mask_data: true,
  });
  return JSON.stringify(job);
}

/**
 * Small and large records interleaved, with every way a record can leave the graph: delivered,
 * masked, dropped (not final), dead-lettered at the source (bad JSON, bad UTF-8, not an object)
 * and at a transform (no user id).
 */
function mixedLines(): Buffer[] {
  const lines: Buffer[] = [];
  for (let i = 0; i < 60; i++) {
    const id = 2_000_000 + i;
    const big = i % 3 === 0;
    if (i === 7) lines.push(Buffer.from(bigJob(id, 5000, { status: 'running' })));
    else if (i === 11) lines.push(Buffer.from(bigJob(id, 5000, { report: {} })));
    else if (i === 13) lines.push(Buffer.from('{"id": 1, "flow_id": 2, "lines": [' + '"x",'.repeat(2000) + ']'));
    else if (i === 17) lines.push(Buffer.concat([Buffer.from(bigJob(id, 3000).slice(0, -1)), Buffer.from([0xff, 0xfe]), Buffer.from('}')]));
    else if (i === 23 || i === 29) {
      // A key given twice: JSON.parse keeps the last `lines`, so nothing is masked, but the raw
      // line still carries the first one with the secret. It must be rewritten, not passed on.
      const padding = i === 23 ? 'p'.repeat(3000) : '';
      const job = JSON.stringify(makeJob(id, { title: `dup ${padding}` }));
      const hidden = `"lines":[{"input":{"password":"${SECRET}"},"output":{},"mask_data":true}],`;
      lines.push(Buffer.from(job.replace('"lines":', hidden + '"lines":')));
    } else if (i === 19) lines.push(Buffer.from(JSON.stringify(['not', 'an', 'object', 'x'.repeat(3000)])));
    else lines.push(Buffer.from(big ? bigJob(id, 2000 + i * 100) : JSON.stringify(makeJob(id))));
  }
  return lines;
}

const orderSinkSchema = z.object({}).strict();
const seen: { keys: string[]; gzipOk: number; gzipMissing: number } = { keys: [], gzipOk: 0, gzipMissing: 0 };

/** Records the order of keys and checks the gzip the pool prepared against the body. */
const orderSink: ComponentDefinition<'sink', typeof orderSinkSchema> = {
  kind: 'sink',
  type: 'order_probe',
  description: 'test sink',
  schema: orderSinkSchema,
  build: (): Sink => ({
    bodyCompression: 'gzip',
    async run(input: AsyncIterable<Delivery[]>) {
      for await (const batch of input) {
        for (const d of batch) {
          seen.keys.push(d.record.key!);
          const gzip = preparedGzip(d.record);
          if (gzip) {
            expect(gunzipSync(gzip).equals(documentBody(d.record))).toBe(true);
            seen.gzipOk++;
          } else seen.gzipMissing++;
          d.delivered();
        }
      }
    },
  }),
};

/** The transforms and sinks of the pipeline runOnce runs (YAML under `transforms:`, then `sinks:`). */
const MASK_AND_KEY = `transforms:
  redacted: { type: redact, inputs: [jobs] }
  keyed: { type: path_format, inputs: [redacted] }
sinks:
  archive: { type: file, inputs: [keyed], path: OUT }
  probe: { type: order_probe, inputs: [keyed] }
`;

async function runOnce(dir: string, pool: string, lines: Buffer[], graph = MASK_AND_KEY) {
  const input = join(dir, 'jobs.ndjson');
  await writeFile(input, Buffer.concat(lines.flatMap((l) => [l, Buffer.from('\n')])));
  const registry = builtinRegistry();
  registry.register(orderSink);
  const yaml = `data_dir: ${JSON.stringify(join(dir, 'data'))}
pool: ${pool}
checkpoint_interval_ms: 50
sources:
  jobs: { type: job_log_tail, include: [${JSON.stringify(input)}] }
${graph.replaceAll('OUT', JSON.stringify(join(dir, 'out')))}`;
  const config = await parseConfigText(yaml, join(dir, 'pipeline.yaml'), registry);
  const metrics = new Metrics();
  const pipeline = new Pipeline(config, { once: true, log: silentLogger, metrics });
  seen.keys = [];
  seen.gzipOk = 0;
  seen.gzipMissing = 0;
  await pipeline.build();
  const summary = await pipeline.run();
  const checkpoint = JSON.parse(await readFile(join(dir, 'data', 'checkpoints', 'jobs.json'), 'utf8')) as { files: { offset: number }[] };
  const deadLetters = await readDeadLetters(join(dir, 'data'));
  return {
    summary,
    metrics: metrics.snapshot(),
    out: await readTree(join(dir, 'out')),
    keys: [...seen.keys],
    gzip: { ok: seen.gzipOk, missing: seen.gzipMissing },
    checkpoint,
    inputBytes: (await readFile(input)).length,
    deadLetters,
  };
}

describe('worker pool', () => {
  it('gives the same files, order, dead letters, counters and checkpoint as the main thread alone', async () => {
    const lines = mixedLines();
    const off = await runOnce(await scratch(cleanup), '{ threads: 0 }', lines);
    const on = await runOnce(await scratch(cleanup), '{ threads: 2, threshold_bytes: 1024, max_queue: 3 }', lines);

    expect(on.summary.abandoned).toBe(0);
    expect([...on.out.keys()].sort()).toEqual([...off.out.keys()].sort());
    for (const [key, bytes] of off.out) expect(on.out.get(key)?.equals(bytes), key).toBe(true);
    expect(on.keys).toEqual(off.keys);
    expect(on.metrics).toEqual(off.metrics);
    expect(on.checkpoint.files[0]!.offset).toBe(on.inputBytes);
    expect(off.checkpoint.files[0]!.offset).toBe(off.inputBytes);
    const codes = (r: typeof on) => r.deadLetters.map((d) => d.code).sort();
    expect(codes(on)).toEqual(['LF_RECORD_BAD_JSON', 'LF_RECORD_BAD_UTF8', 'LF_RECORD_NOT_OBJECT', 'LF_RECORD_NO_USER_ID']);
    expect(codes(on)).toEqual(codes(off));

    // 55 delivered: 60 lines less 4 dead letters and 1 job still running.
    expect(on.out.size).toBe(55);
    expect(on.metrics.skipped).toBe(1);
    // Every large job is masked: 20 delivered, the one still running and the one without a user id.
    expect(on.metrics.components.redacted?.redacted).toBe(22);
    for (const bytes of on.out.values()) expect(bytes.toString()).not.toContain(SECRET);
    expect(JSON.stringify(on.deadLetters)).not.toContain(SECRET);
    // Large records reached the probe with a gzip made in the pool; small ones without.
    expect(on.gzip.ok).toBe(21);
    expect(on.gzip.missing).toBe(34);
    const duplicated = [...on.out.entries()].filter(([key]) => /-20000(23|29)-/.test(key));
    expect(duplicated).toHaveLength(2);
    expect(off.gzip.ok).toBe(0);
  });

  it('has every built-in transform, and runs each as the main thread does', async () => {
    // One use of each built-in transform, on branches that fan out from the source and join at
    // the sinks. A new built-in must be added here: the first expectation fails until it is.
    const uses: Record<string, string> = {
      select: 'stepless: { type: select, inputs: [jobs], step_details: false }',
      redact: 'redacted: { type: redact, inputs: [jobs] }',
      path_format: `keyed: { type: path_format, inputs: [redacted] }
  keyed_stepless: { type: path_format, inputs: [stepless], job_key: "stepless/{user_id}/{job_id}.json" }`,
    };
    expect(Object.keys(uses).sort()).toEqual(builtinRegistry().types('transform'));
    // The pool workers build their registry from the same list as the main thread's.
    expect(builtinTransformRegistry().types('transform')).toEqual(builtinRegistry().types('transform'));
    const graph = `transforms:
  ${Object.values(uses).join('\n  ')}
sinks:
  archive: { type: file, inputs: [keyed, keyed_stepless], path: OUT }
  probe: { type: order_probe, inputs: [keyed, keyed_stepless] }
`;
    const lines = mixedLines();
    const off = await runOnce(await scratch(cleanup), '{ threads: 0 }', lines, graph);
    const on = await runOnce(await scratch(cleanup), '{ threads: 1, threshold_bytes: 1024 }', lines, graph);

    expect(on.summary.abandoned).toBe(0);
    expect(on.gzip.ok).toBeGreaterThan(0);
    expect([...on.out.keys()].sort()).toEqual([...off.out.keys()].sort());
    for (const [key, bytes] of off.out) expect(on.out.get(key)?.equals(bytes), key).toBe(true);
    // Both branches delivered (stepless copies have no `lines`), in the same order as inline.
    const stepless = [...on.out.entries()].filter(([key]) => key.startsWith('stepless/'));
    expect(stepless.length).toBeGreaterThan(40);
    for (const [, bytes] of stepless) expect(JSON.parse(bytes.toString())).not.toHaveProperty('lines');
    expect(on.keys).toEqual(off.keys);
    expect(on.metrics).toEqual(off.metrics);
    expect(on.deadLetters.map((d) => [d.code, d.component]).sort()).toEqual(off.deadLetters.map((d) => [d.code, d.component]).sort());
  });

  it('keeps the input order when large records take longer than the small ones behind them', async () => {
    const lines: Buffer[] = [];
    for (let i = 0; i < 200; i++) {
      const id = 3_000_000 + i;
      lines.push(Buffer.from(i % 10 === 0 ? bigJob(id, 400_000) : JSON.stringify(makeJob(id))));
    }
    const on = await runOnce(await scratch(cleanup), '{ threads: 2, threshold_bytes: 65536 }', lines);
    const ids = on.keys.map((k) => Number(/-(\d+)-\d{14}-/.exec(k)![1]));
    expect(ids).toEqual(Array.from({ length: 200 }, (_, i) => 3_000_000 + i));
    expect(on.checkpoint.files[0]!.offset).toBe(on.inputBytes);
  });

  it('fails the start with LF_POOL_FAILED when a worker cannot build the transforms', async () => {
    const dir = await scratch(cleanup);
    const plugin = join(dir, 'broken.mjs');
    // The plugin loads on the main thread (it registers a transform) but throws in a worker.
    await writeFile(
      plugin,
      `import { isMainThread } from 'node:worker_threads';
import { definePlugin, z } from ${JSON.stringify(join(import.meta.dirname, '../../dist/src/index.js'))};
if (!isMainThread) throw new Error('no workers here');
export default definePlugin({ name: 'broken', transforms: [{ kind: 'transform', type: 'passthrough', description: 'x', schema: z.object({}), build: () => ({ process: (r) => r }) }] });
`,
    );
    const { loadPlugins } = await import('../../src/plugin/load.js');
    const yaml = `data_dir: ${JSON.stringify(join(dir, 'data'))}
plugins: [./broken.mjs]
pool: { threads: 1 }
sources:
  jobs: { type: job_log_tail, include: [${JSON.stringify(join(dir, '*.ndjson'))}] }
transforms:
  pass: { type: passthrough, inputs: [jobs] }
sinks:
  out: { type: console, inputs: [pass] }
`;
    const config = await parseConfigText(yaml, join(dir, 'pipeline.yaml'), builtinRegistry(), { loadPlugins });
    const pipeline = new Pipeline(config, { once: true, log: silentLogger });
    await expect(pipeline.build()).rejects.toMatchObject({ code: 'LF_POOL_FAILED', message: expect.stringContaining('no workers here') });
  });
});
