import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { builtinRegistry } from '../../src/builtins.js';
import { parseConfigText } from '../../src/config/load.js';
import { DeadLetterWriter, readDeadLetters } from '../../src/engine/dead-letters.js';
import { createLogger, silentLogger, type Logger } from '../../src/engine/logger.js';
import { Pipeline } from '../../src/engine/pipeline.js';
import { LogferryError, type ErrorCode } from '../../src/errors.js';
import { registrable } from '../../src/registry.js';
import { isDrop } from '../../src/engine/record-shape.js';
import { SecretScrubber } from '../../src/engine/secrets.js';
import type { ComponentContext, ComponentDefinition, Delivery, JsonObject, LogRecord, Sink, Source, SourceContext } from '../../src/engine/types.js';
import { makeJob, removeAll, scratch } from '../helpers/cli.js';

/**
 * Engine defects found in review (issue 9 follow-up), each below the CLI where the CLI would be
 * slow or could not reach it: hostile values from plugin sources and sinks, a dead-letter writer
 * that throws, and the order of the last steps of shutdown.
 */

const cleanup: string[] = [];
afterEach(async () => {
  vi.restoreAllMocks();
  await removeAll(cleanup);
});

const empty = z.object({}).strict();

/** A source that emits the given values with `ctx.emit`, counting the records acknowledged. */
function emittingSource(values: () => { record: unknown; bytes: unknown }[], acknowledged: { count: number }): ComponentDefinition {
  const definition: ComponentDefinition<'source', typeof empty> = {
    kind: 'source',
    type: 'emitting',
    description: 'test source',
    schema: empty,
    build: (): Source => ({
      async run(ctx: SourceContext) {
        for (const { record, bytes } of values()) await ctx.emit(record as LogRecord, bytes as number, () => acknowledged.count++);
      },
      checkpoint: () => ({ acknowledged: acknowledged.count }),
    }),
  };
  return registrable(definition);
}

/** A sink defined by the test: `answer` settles each delivery; `onBuild` sees its context. */
function testSink(answer: (d: Delivery) => void, onBuild?: (ctx: ComponentContext) => void, run?: () => Promise<void>): ComponentDefinition {
  const definition: ComponentDefinition<'sink', typeof empty> = {
    kind: 'sink',
    type: 'probe',
    description: 'test sink',
    schema: empty,
    build: (_options, ctx): Sink => {
      onBuild?.(ctx);
      return {
        async run(input) {
          await run?.();
          for await (const batch of input) batch.forEach(answer);
        },
      };
    },
  };
  return registrable(definition);
}

async function pipelineFor(dir: string, yaml: string, extra: ComponentDefinition[], options: { once: boolean; log?: Logger; scrubber?: SecretScrubber }): Promise<Pipeline> {
  const registry = builtinRegistry();
  for (const definition of extra) registry.register(definition);
  const config = await parseConfigText(`data_dir: ${JSON.stringify(join(dir, 'data'))}\npool: { threads: 0 }\n${yaml}`, join(dir, 'pipeline.yaml'), registry);
  const pipeline = new Pipeline(config, { log: silentLogger, ...options });
  await pipeline.build();
  return pipeline;
}

async function savedOffset(dir: string): Promise<number> {
  const state = JSON.parse(await readFile(join(dir, 'data', 'checkpoints', 'jobs.json'), 'utf8')) as { files: { offset: number }[] };
  return state.files[0]!.offset;
}

/** A job_log_tail file of these jobs; returns where each line starts and the file's size. */
async function jobsFile(dir: string, ids: number[]): Promise<{ include: string; starts: number[]; size: number }> {
  const lines = ids.map((id) => JSON.stringify(makeJob(id)) + '\n');
  await writeFile(join(dir, 'jobs.ndjson'), lines.join(''));
  const starts = lines.map((_, i) => lines.slice(0, i).reduce((n, l) => n + Buffer.byteLength(l), 0));
  return { include: join(dir, '*.ndjson'), starts, size: lines.reduce((n, l) => n + Buffer.byteLength(l), 0) };
}

const jobRecord = (id: number): LogRecord => ({ kind: 'job', doc: makeJob(id) as JsonObject, origin: { source: 'hostile', offset: id } });

describe('a transform that returns undefined', () => {
  it('is not a drop: only null and [] are, and undefined fails the transform on that record (inline)', async () => {
    expect([null, [], undefined, 0, ''].map(isDrop)).toEqual([true, true, false, false, false]);
    const dir = await scratch(cleanup);
    const acknowledged = { count: 0 };
    const forgetful: ComponentDefinition<'transform', typeof empty> = {
      kind: 'transform',
      type: 'forgetful',
      description: 'test transform',
      schema: empty,
      build: () => ({ process: (record) => (record.doc.id === 2 ? (undefined as unknown as null) : record.doc.id === 3 ? null : record) }),
    };
    const delivered: unknown[] = [];
    const pipeline = await pipelineFor(
      dir,
      `sources:\n  hostile: { type: emitting }\ntransforms:\n  forgetful: { type: forgetful, inputs: [hostile] }\nsinks:\n  probe: { type: probe, inputs: [forgetful] }\n`,
      [
        emittingSource(() => [1, 2, 3, 4].map((id) => ({ record: jobRecord(id), bytes: 100 })), acknowledged),
        registrable(forgetful),
        testSink((d) => {
          delivered.push(d.record.doc.id);
          d.delivered();
        }),
      ],
      { once: true },
    );
    await pipeline.run();
    expect(delivered).toEqual([1, 4]);
    expect(pipeline.metrics.skipped).toBe(1);
    const entries = await readDeadLetters(join(dir, 'data'));
    expect(entries.map((e) => [e.component, e.code, JSON.parse(e.text!).id])).toEqual([['forgetful', 'LF_TRANSFORM_FAILED', 2]]);
    expect(entries[0]!.reason).toMatch(/not a record/);
    expect(acknowledged.count).toBe(4);
  });
});

describe('records a plugin source emits with ctx.emit', () => {
  it('a size that is not a whole number of bytes, or a getter that throws, dead-letters only that record; the budget stays exact', async () => {
    const dir = await scratch(cleanup);
    const acknowledged = { count: 0 };
    const throwingGetter = (name: 'doc' | 'origin'): unknown =>
      Object.defineProperty({ ...jobRecord(90) }, name, {
        enumerable: true,
        get: () => {
          throw new Error(`hostile ${name} getter`);
        },
      });
    const values = (): { record: unknown; bytes: unknown }[] => [
      { record: jobRecord(1), bytes: 100 },
      ...[undefined, Number.NaN, -1, 1.5, Infinity, 2 ** 60, '100'].map((bytes, i) => ({ record: jobRecord(10 + i), bytes })),
      { record: throwingGetter('origin'), bytes: 100 },
      { record: throwingGetter('doc'), bytes: 100 },
      { record: jobRecord(2), bytes: 100 },
    ];
    const delivered: unknown[] = [];
    const pipeline = await pipelineFor(
      dir,
      // A small budget: a NaN charge would block every record after it for good.
      `buffer: { max_bytes: 65536 }\nsources:\n  hostile: { type: emitting }\nsinks:\n  probe: { type: probe, inputs: [hostile] }\n`,
      [
        emittingSource(values, acknowledged),
        testSink((d) => {
          delivered.push(d.record.doc.id);
          d.delivered();
        }),
      ],
      { once: true },
    );
    const summary = await pipeline.run();
    expect(summary.abandoned).toBe(0);
    expect(delivered).toEqual([1, 2]);
    expect(acknowledged.count).toBe(values().length);
    expect(pipeline.bytesInFlight).toBe(0);
    expect(pipeline.recordsInFlight).toBe(0);
    expect(pipeline.metrics.bytesIn).toBe(200);
    const entries = await readDeadLetters(join(dir, 'data'));
    const invalid = entries.filter((e) => e.code === 'LF_RECORD_INVALID');
    expect(invalid.map((e) => JSON.parse(e.text!).id)).toEqual([10, 11, 12, 13, 14, 15, 16]);
    for (const e of invalid) expect(e.reason).toMatch(/whose size is not a whole number of bytes from 0 to 1 TiB: /);
    const thrown = entries.filter((e) => e.code === 'LF_RECORD_UNPROCESSABLE');
    expect(thrown.map((e) => e.reason)).toEqual([expect.stringMatching(/hostile origin getter/), expect.stringMatching(/hostile doc getter/)]);
    expect(entries).toHaveLength(9);
  }, 20_000);
});

describe('fail()', () => {
  it('reports a sink that throws Object.create(null), and the pipeline stops', async () => {
    const dir = await scratch(cleanup);
    const acknowledged = { count: 0 };
    const pipeline = await pipelineFor(
      dir,
      `shutdown_timeout: 500ms\nsources:\n  hostile: { type: emitting }\nsinks:\n  probe: { type: probe, inputs: [hostile] }\n`,
      [
        emittingSource(() => [{ record: jobRecord(1), bytes: 100 }], acknowledged),
        testSink(
          () => {},
          undefined,
          () => Promise.reject(Object.create(null) as Error),
        ),
      ],
      { once: true },
    );
    await expect(pipeline.run()).rejects.toMatchObject({ code: 'LF_SINK_FAILED', message: 'sink probe failed: a thrown object that cannot be shown' });
    expect(acknowledged.count).toBe(0);
  }, 20_000);
});

describe('a dead-letter writer that throws', () => {
  it('holds the record unacknowledged, logs once, and the pipeline goes on', async () => {
    const dir = await scratch(cleanup);
    const { include, starts } = await jobsFile(dir, [1, 2, 3, 4, 5]);
    // The writer scrubs each reason synchronously: a scrubber that throws makes write() throw.
    const scrubber = new (class extends SecretScrubber {
      override scrub(text: string): string {
        if (text.includes('POISON')) throw new Error('scrubber broke');
        return text;
      }
    })();
    const logged: string[] = [];
    const delivered: unknown[] = [];
    const pipeline = await pipelineFor(
      dir,
      `sources:\n  jobs: { type: job_log_tail, include: [${JSON.stringify(include)}] }\nsinks:\n  probe: { type: probe, inputs: [jobs] }\n`,
      [
        testSink((d) => {
          if (d.record.doc.id === 2 || d.record.doc.id === 4) d.rejected('POISON: never deliverable');
          else {
            delivered.push(d.record.doc.id);
            d.delivered();
          }
        }),
      ],
      { once: true, scrubber, log: createLogger({ level: 'warn', write: (line) => logged.push(line) }) },
    );
    const summary = await pipeline.run();
    expect(summary.abandoned).toBe(0);
    expect(delivered).toEqual([1, 3, 5]);
    expect(pipeline.bytesInFlight).toBe(0);
    expect(logged.filter((l) => l.includes('a dead letter could not be written') && l.includes('LF_DEAD_LETTER_WRITE_FAILED'))).toHaveLength(1);
    expect(logged.join('')).not.toMatch(/cannot write dead letters|failed/);
    expect(await readDeadLetters(join(dir, 'data'))).toEqual([]);
    // The position stops before the first record that could not be dead-lettered: it is read again after a restart.
    expect(await savedOffset(dir)).toBe(starts[1]);
  });
});

describe('error codes from plugins written in JavaScript', () => {
  it('dead-letters a rejection or a source dead letter with a code that is not documented under a documented one, naming the original', async () => {
    const dir = await scratch(cleanup);
    const acknowledged = { count: 0 };
    const lineSource: ComponentDefinition<'source', typeof empty> = {
      kind: 'source',
      type: 'liner',
      description: 'test source that dead-letters its second line',
      schema: empty,
      build: (): Source => ({
        async run(ctx: SourceContext) {
          await ctx.emit(jobRecord(1), 100, () => acknowledged.count++);
          await ctx.deadLetter({ code: 'E_BAD_LINE' as ErrorCode, reason: 'the line is garbage', component: ctx.id, origin: { source: ctx.id, offset: 7 } });
          for (const id of [2, 3, 4]) await ctx.emit(jobRecord(id), 100, () => acknowledged.count++);
        },
        checkpoint: () => ({ acknowledged: acknowledged.count }),
      }),
    };
    // What a JavaScript sink may pass: its own string, nothing, a documented code, a number.
    const codes = new Map<unknown, unknown>([
      [2, 'E_PLUGIN_REFUSED'],
      [3, undefined],
      [4, 'LF_RECORD_NO_KEY'],
    ]);
    const pipeline = await pipelineFor(
      dir,
      `sources:\n  hostile: { type: liner }\nsinks:\n  probe: { type: probe, inputs: [hostile] }\n`,
      [
        lineSource as unknown as ComponentDefinition,
        testSink((d) => {
          const id = d.record.doc.id;
          if (id === 1) d.rejected('numbered code', 404 as unknown as ErrorCode);
          else d.rejected(`refused ${String(id)}`, codes.get(id) as ErrorCode | undefined);
        }),
      ],
      { once: true },
    );
    await pipeline.run();
    const entries = await readDeadLetters(join(dir, 'data'));
    // The source's dead letter and the sink's rejections are written as each is answered: order aside.
    const byReason = (a: string[], b: string[]): number => a[2]!.localeCompare(b[2]!);
    expect(entries.map((e) => [e.component, e.code, e.reason]).sort(byReason)).toEqual([
      ['probe', 'LF_SINK_REJECTED', 'numbered code (reported with code (number) 404, which is not a logferry error code; see docs/errors.md)'],
      ['hostile', 'LF_INTERNAL', 'the line is garbage (reported with code "E_BAD_LINE", which is not a logferry error code; see docs/errors.md)'],
      ['probe', 'LF_SINK_REJECTED', 'refused 2 (reported with code "E_PLUGIN_REFUSED", which is not a logferry error code; see docs/errors.md)'],
      ['probe', 'LF_SINK_REJECTED', 'refused 3'],
      ['probe', 'LF_RECORD_NO_KEY', 'refused 4'],
    ].sort(byReason));
  });
});

describe('building the components', () => {
  const failingSink = (failure: () => unknown): ComponentDefinition => {
    const definition: ComponentDefinition<'sink', typeof empty> = {
      kind: 'sink',
      type: 'unbuildable',
      description: 'test sink whose build throws',
      schema: empty,
      build: () => {
        throw failure();
      },
    };
    return definition as unknown as ComponentDefinition;
  };
  const yaml = `sources:\n  jobs: { type: job_log_tail, include: [none.ndjson] }\nsinks:\n  out: { type: unbuildable, inputs: [jobs] }\n`;

  it('names the component of an unexpected error (LF_COMPONENT_BUILD_FAILED) and keeps the code of a LogferryError', async () => {
    const dir = await scratch(cleanup);
    await expect(pipelineFor(dir, yaml, [failingSink(() => new Error('no socket'))], { once: true })).rejects.toMatchObject({
      code: 'LF_COMPONENT_BUILD_FAILED',
      message: expect.stringMatching(/^cannot build sink out \(type unbuildable, at sinks\.out\): no socket; /) as unknown,
    });
    const own = new LogferryError('LF_CONFIG_ENV', 'TOKEN is not set');
    await expect(pipelineFor(dir, yaml, [failingSink(() => own)], { once: true })).rejects.toBe(own);
  });
});

describe('a source that fails as a whole', () => {
  it('ends the run with LF_SOURCE_FAILED naming the source', async () => {
    const dir = await scratch(cleanup);
    const broken: ComponentDefinition<'source', typeof empty> = {
      kind: 'source',
      type: 'broken',
      description: 'test source that fails',
      schema: empty,
      build: (): Source => ({
        run: () => Promise.reject(new Error('the feed went away')),
        checkpoint: () => ({}),
      }),
    };
    const pipeline = await pipelineFor(
      dir,
      `sources:\n  feed: { type: broken }\nsinks:\n  probe: { type: probe, inputs: [feed] }\n`,
      [broken as unknown as ComponentDefinition, testSink((d) => d.delivered())],
      { once: true },
    );
    await expect(pipeline.run()).rejects.toMatchObject({ code: 'LF_SOURCE_FAILED', message: 'source feed failed: the feed went away' });
  });
});

describe('shutdown', () => {
  it('finishes a dead-letter append in progress before the final checkpoint, which then includes its record', async () => {
    const dir = await scratch(cleanup);
    const { include, size } = await jobsFile(dir, [1, 2, 3]);
    // The append of the dead letter waits until the pipeline has aborted its components (the
    // last step before the final save): it is in progress exactly when shutdown reaches the end.
    let aborted: Promise<void> | undefined;
    let appendCalled = false;
    const writer = DeadLetterWriter.prototype as unknown as { append: (batch: unknown) => Promise<void> };
    const append = writer.append;
    vi.spyOn(writer, 'append').mockImplementation(async function (this: unknown, batch: unknown) {
      appendCalled = true;
      await aborted;
      return append.call(this, batch);
    });
    const delivered: unknown[] = [];
    const pipeline = await pipelineFor(
      dir,
      `shutdown_timeout: 200ms\ncheckpoint_interval_ms: 3600000\nsources:\n  jobs: { type: job_log_tail, include: [${JSON.stringify(include)}], poll_interval_ms: 20 }\nsinks:\n  probe: { type: probe, inputs: [jobs] }\n`,
      [
        testSink(
          (d) => {
            if (d.record.doc.id === 2) d.rejected('never deliverable');
            else {
              delivered.push(d.record.doc.id);
              d.delivered();
            }
          },
          (ctx) => {
            aborted = new Promise((resolve) => ctx.signal.addEventListener('abort', () => setImmediate(resolve), { once: true }));
          },
        ),
      ],
      { once: false },
    );
    const running = pipeline.run();
    const deadline = Date.now() + 10_000;
    while (!(appendCalled && delivered.length === 2) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    expect(appendCalled).toBe(true);
    pipeline.stop('test');
    await running;
    expect((await readDeadLetters(join(dir, 'data'))).map((e) => e.code)).toEqual(['LF_SINK_REJECTED']);
    expect(await savedOffset(dir)).toBe(size);
  });
});
