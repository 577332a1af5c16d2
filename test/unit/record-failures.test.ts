import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { builtinRegistry } from '../../src/builtins.js';
import { parseConfigText } from '../../src/config/load.js';
import { DeadLetterWriter, readDeadLetters } from '../../src/engine/dead-letters.js';
import { silentLogger } from '../../src/engine/logger.js';
import { Metrics } from '../../src/engine/metrics.js';
import { Pipeline } from '../../src/engine/pipeline.js';
import type { ComponentDefinition, JsonObject, LogRecord, Source, SourceContext } from '../../src/engine/types.js';
import { errorMessage, unprocessable } from '../../src/errors.js';
import { makeJob, readTree, removeAll, scratch } from '../helpers/cli.js';

/** The rule behind finding 1 of issue 9, below the CLI: whatever one record does, only it is dead-lettered. */

const cleanup: string[] = [];
afterEach(() => removeAll(cleanup));

function deepArray(levels: number): unknown {
  let value: unknown = [];
  for (let i = 0; i < levels; i++) value = [value];
  return value;
}

describe('dead letters of documents that cannot be serialized', () => {
  it('are written without the document and say why, instead of throwing', async () => {
    const dir = await scratch(cleanup);
    const writer = new DeadLetterWriter(DeadLetterWriter.dirFor(dir));
    const cyclic: Record<string, unknown> = { id: 1 };
    cyclic.self = cyclic;
    for (const doc of [{ deep: deepArray(100_000) }, cyclic, { big: 10n }]) {
      await writer.write({ code: 'LF_RECORD_UNPROCESSABLE', reason: 'test', component: 'c', origin: { source: 's' }, doc: doc as unknown as JsonObject });
    }
    await writer.close();
    const entries = await readDeadLetters(dir);
    expect(entries).toHaveLength(3);
    for (const e of entries) {
      expect(e.text).toBeUndefined();
      expect(e.reason).toMatch(/^test \(the document could not be written into the dead letter: \w*Error: /);
    }
  });
});

describe('errorMessage and unprocessable', () => {
  it('describe anything thrown without throwing themselves', () => {
    expect(errorMessage(new RangeError('deep'))).toBe('RangeError: deep');
    expect(errorMessage(new Error('plain'))).toBe('plain');
    expect(errorMessage('text')).toBe('text');
    expect(errorMessage(42)).toBe('(number) 42');
    expect(errorMessage(null)).toBe('(null) null');
    expect(errorMessage(Object.create(null))).toBe('a thrown object that cannot be shown');
    expect(unprocessable(new TypeError('x'))).toEqual({ code: 'LF_RECORD_UNPROCESSABLE', reason: 'record could not be processed: TypeError: x' });
  });
});

describe('a plugin source that emits hostile records', () => {
  it('dead-letters each one and delivers the others; the run ends normally', async () => {
    const dir = await scratch(cleanup);
    const good = (id: number): LogRecord => ({ kind: 'job', doc: makeJob(id) as JsonObject, origin: { source: 'hostile', offset: id } });
    const emitted: unknown[] = [
      good(1),
      42,
      { kind: 'job', doc: null, origin: { source: 'hostile' } },
      good(2),
      // Too deep for JSON.stringify: the sink's body cannot be made.
      { ...good(3), doc: { ...makeJob(3), nested: deepArray(100_000) } },
      // A getter that throws when the engine looks at the document.
      Object.defineProperty({ kind: 'job', origin: { source: 'hostile', offset: 4 } }, 'doc', { enumerable: true, get: () => ({ get id(): never { throw new Error('hostile getter'); } }) }),
      good(5),
    ];
    let finals = 0;
    const sourceDefinition: ComponentDefinition<'source'> = {
      kind: 'source',
      type: 'hostile',
      description: 'test source',
      schema: z.object({}).strict(),
      build: (): Source => ({
        async run(ctx: SourceContext) {
          for (const record of emitted) await ctx.emit(record as LogRecord, 100, () => finals++);
        },
        checkpoint: () => ({ finals }),
      }),
    };
    const registry = builtinRegistry();
    registry.register(sourceDefinition);
    const yaml = `data_dir: ${JSON.stringify(join(dir, 'data'))}
pool: { threads: 0 }
sources:
  hostile: { type: hostile }
transforms:
  redacted: { type: redact, inputs: [hostile], patterns: [email] }
  keyed: { type: path_format, inputs: [redacted], user_id: 5 }
sinks:
  archive: { type: file, inputs: [keyed], path: ${JSON.stringify(join(dir, 'out'))} }
`;
    const config = await parseConfigText(yaml, join(dir, 'pipeline.yaml'), registry);
    const pipeline = new Pipeline(config, { once: true, log: silentLogger, metrics: new Metrics() });
    await pipeline.build();
    const summary = await pipeline.run();
    expect(summary.abandoned).toBe(0);
    expect(finals).toBe(emitted.length);
    expect((await readTree(join(dir, 'out'))).size).toBe(3);
    const entries = await readDeadLetters(join(dir, 'data'));
    expect(entries.map((e) => [e.component, e.code])).toEqual([
      ['hostile', 'LF_RECORD_INVALID'],
      ['hostile', 'LF_RECORD_INVALID'],
      ['redacted', 'LF_TRANSFORM_FAILED'],
      ['redacted', 'LF_TRANSFORM_FAILED'],
    ]);
  });
});
