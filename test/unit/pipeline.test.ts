import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { ComponentConfig, PipelineConfig } from '../../src/config/types.js';
import { readDeadLetters } from '../../src/engine/dead-letters.js';
import { silentLogger } from '../../src/engine/logger.js';
import { Pipeline } from '../../src/engine/pipeline.js';
import { registrable } from '../../src/registry.js';
import { poolSchema } from '../../src/engine/record-pool.js';
import type { ComponentDefinition, Delivery, Sink } from '../../src/engine/types.js';
import { jobLogTailSchema, jobLogTailSource } from '../../src/sources/job-log-tail.js';

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

const emptySchema = z.object({}).strict();

/** A sink defined in the test: it decides, per delivery, when and how to answer. */
function testSink(answer: (d: Delivery[]) => Promise<void>): ComponentDefinition {
  const definition: ComponentDefinition<'sink', typeof emptySchema> = {
    kind: 'sink',
    type: 'test',
    description: 'test sink',
    schema: emptySchema,
    build: (): Sink => ({
      async run(input) {
        const pending: Promise<void>[] = [];
        for await (const batch of input) pending.push(answer(batch));
        await Promise.all(pending);
      },
    }),
  };
  return registrable(definition);
}

async function setup(lines: string[], sinks: Record<string, ComponentDefinition>, bufferMaxBytes = 1 << 20) {
  const dir = await mkdtemp(join(tmpdir(), 'logferry-pipeline-'));
  dirs.push(dir);
  const file = join(dir, 'jobs.ndjson');
  await writeFile(file, lines.map((l) => l + '\n').join(''));
  const source: ComponentConfig = {
    id: 'jobs',
    kind: 'source',
    type: 'job_log_tail',
    inputs: [],
    options: jobLogTailSchema.parse({ include: [join(dir, '*.ndjson')], poll_interval_ms: 10 }),
    definition: registrable(jobLogTailSource),
    path: 'sources.jobs',
  };
  const config: PipelineConfig = {
    file: 'test.yaml',
    dataDir: join(dir, 'data'),
    bufferMaxBytes,
    pool: poolSchema.parse({ threads: 0 }),
    shutdownTimeoutMs: 300,
    checkpointIntervalMs: 50,
    statusIntervalMs: 60_000,
    plugins: [],
    sources: [source],
    transforms: [],
    sinks: Object.entries(sinks).map(([id, definition]) => ({
      id,
      kind: 'sink',
      type: 'test',
      inputs: ['jobs'],
      options: {},
      definition,
      path: `sinks.${id}`,
    })),
    warnings: [],
  };
  return { dir, file, config };
}

const job = (id: number, pad = 0): string => JSON.stringify({ id, flow_id: 1, status: 'succeeded', pad: 'x'.repeat(pad) });

async function savedOffset(dataDir: string): Promise<number> {
  const state = JSON.parse(await readFile(join(dataDir, 'checkpoints', 'jobs.json'), 'utf8')) as { files: { offset: number }[] };
  return state.files[0]!.offset;
}

describe('Pipeline', () => {
  it('keeps memory within buffer.max_bytes when the sink is slow (backpressure)', async () => {
    const lines = Array.from({ length: 400 }, (_, i) => job(i, 1000));
    let peak = 0;
    let pipeline: Pipeline | undefined;
    const slow = testSink(async (batch) => {
      for (const d of batch) {
        peak = Math.max(peak, pipeline!.bytesInFlight);
        await new Promise((r) => setTimeout(r, 1));
        d.delivered();
      }
    });
    const { config } = await setup(lines, { slow }, 16 * 1024);
    pipeline = new Pipeline(config, { once: true, log: silentLogger });
    await pipeline.build();
    await pipeline.run();
    expect(pipeline.metrics.recordsOut).toBe(400);
    expect(peak).toBeGreaterThan(0);
    expect(peak).toBeLessThanOrEqual(16 * 1024);
  });

  it('never checkpoints past a record that a sink has not answered', async () => {
    const lines = Array.from({ length: 50 }, (_, i) => job(i));
    const stuckId = 20;
    const sink = testSink(async (batch) => {
      for (const d of [...batch].reverse()) if (d.record.doc.id !== stuckId) d.delivered();
    });
    const { config, file } = await setup(lines, { sink });
    // Not --once: a batch run waits for every answer, however long; a stop gives up after shutdown_timeout.
    const pipeline = new Pipeline(config, { once: false, log: silentLogger });
    await pipeline.build();
    const running = pipeline.run();
    while (pipeline.metrics.recordsOut < 49) await new Promise((r) => setTimeout(r, 10));
    pipeline.stop('test');
    const summary = await running;
    expect(summary.abandoned).toBe(1);
    const text = await readFile(file, 'utf8');
    expect(await savedOffset(config.dataDir)).toBe(text.indexOf(job(stuckId)));
  });

  it('advances once every sink answered, and a rejection becomes a dead letter', async () => {
    const lines = Array.from({ length: 30 }, (_, i) => job(i));
    const ok = testSink(async (batch) => batch.forEach((d) => d.delivered()));
    const picky = testSink(async (batch) =>
      batch.forEach((d) => (d.record.doc.id === 7 ? d.rejected('403 Forbidden: check the bucket policy') : d.delivered())),
    );
    const { config, file } = await setup(lines, { ok, picky });
    const pipeline = new Pipeline(config, { once: true, log: silentLogger });
    await pipeline.build();
    const summary = await pipeline.run();
    expect(summary.abandoned).toBe(0);
    expect(pipeline.metrics.recordsOut).toBe(59);
    expect(await savedOffset(config.dataDir)).toBe((await readFile(file)).length);
    const dead = await readDeadLetters(config.dataDir);
    expect(dead).toHaveLength(1);
    expect(dead[0]).toMatchObject({ code: 'LF_SINK_REJECTED', component: 'picky', reason: '403 Forbidden: check the bucket policy' });
    expect(JSON.parse(dead[0]!.text!)).toMatchObject({ id: 7 });
  });
});
