import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { toEntry } from '../../src/engine/dead-letters.js';
import type { ComponentContext, JsonObject, LogRecord, Transform } from '../../src/engine/types.js';
import { Metrics } from '../../src/engine/metrics.js';
import { silentLogger } from '../../src/engine/logger.js';
import { bodyFrom, documentBody } from '../../src/records/body.js';
import { parseLine, parseText } from '../../src/records/parse.js';
import { deadLetterRedactor, redactSchema } from '../../src/records/redaction.js';
import { redactTransform } from '../../src/transforms/redact.js';

/**
 * Masking, as a property: for random job lines with random steps marked mask_data, written with
 * a mask_data key given more than once, spelled with escapes, or on steps nested deeper in
 * `lines`, no value of a masked step appears in what a sink writes (the body, spliced from the
 * line or serialized), in what the pool would write, or in a dead letter; and the values of the
 * steps that are not masked are still there (the check is not vacuous).
 */

interface StepSpec {
  /** Each occurrence of the mask_data key: its value and how the key is spelled. */
  flags: { value: boolean; spelling: 0 | 1 | 2 }[];
  children: StepSpec[];
  /** Wrap the step in an array inside `lines` (only for top-level steps). */
  wrapped: boolean;
  spaced: boolean;
}

const SPELLINGS = ['"mask_data"', '"mask\\u005fdata"', '"\\u006dask_data"'];

const stepArbitrary: fc.Memo<StepSpec> = fc.memo((depth) =>
  fc.record({
    flags: fc.array(fc.record({ value: fc.boolean(), spelling: fc.constantFrom(0 as const, 1 as const, 2 as const) }), { minLength: 0, maxLength: 3 }),
    children: depth > 1 ? fc.array(stepArbitrary(depth - 1), { maxLength: 2 }) : fc.constant([]),
    wrapped: fc.boolean(),
    spaced: fc.boolean(),
  }),
);

interface Written {
  text: string;
  masked: string[];
  plain: string[];
}

/** Writes the job as text by hand, so keys can repeat and be escaped as a producer might. */
function writeJob(id: number, steps: StepSpec[], salt: string): Written {
  const masked: string[] = [];
  const plain: string[] = [];
  let counter = 0;
  const writeStep = (step: StepSpec, nested: boolean): string => {
    const n = counter++;
    const isMasked = step.flags.some((f) => f.value);
    const input = `${isMasked ? 'MASKED' : 'PLAIN'}-in-${salt}-${n}`;
    const output = `${isMasked ? 'MASKED' : 'PLAIN'}-out-${salt}-${n}`;
    (isMasked ? masked : plain).push(input, output);
    const colon = step.spaced ? ': ' : ':';
    const members = [`"recipe_line_number"${colon}${n}`];
    const [first, ...rest] = step.flags;
    if (first) members.push(`${SPELLINGS[first.spelling]}${colon}${first.value}`);
    members.push(`"input"${colon}{"password"${colon}"${input}"}`, `"output"${colon}{"value"${colon}["${output}"]}`, `"error"${colon}null`);
    if (step.children.length > 0) members.push(`"steps"${colon}[${step.children.map((c) => writeStep(c, true)).join(',')}]`);
    for (const flag of rest) members.push(`${SPELLINGS[flag.spelling]}${colon}${flag.value}`);
    const text = `{${members.join(step.spaced ? ', ' : ',')}}`;
    return step.wrapped && !nested ? `[${text}]` : text;
  };
  const lines = steps.map((s) => writeStep(s, false)).join(',');
  const text = `{"id":${id},"flow_id":7,"status":"succeeded","started_at":"2019-09-13T12:22:18Z","report":{"workato":{"job_context":{"user_id":1}}},"lines":[${lines}]}`;
  return { text, masked, plain };
}

const ctx: ComponentContext = { id: 'redacted', log: silentLogger, metrics: new Metrics(), signal: new AbortController().signal, dataDir: '' };

describe('masking (property)', () => {
  it('no masked value reaches a sink body, the pool body or a dead letter', async () => {
    const redact = (await redactTransform.build(redactSchema.parse({}), ctx)) as Transform;
    const forDeadLetters = deadLetterRedactor([]);
    fc.assert(
      fc.property(fc.array(stepArbitrary(3), { minLength: 1, maxLength: 4 }), fc.integer({ min: 1, max: 1e9 }), fc.nat(), (steps, id, cut) => {
        const { text, masked, plain } = writeJob(id, steps, id.toString(36));
        const bytes = Buffer.from(text);
        const origin = { source: 'jobs', file: '/in.ndjson', offset: 0 };
        const leaks = (what: string, out: string): void => {
          for (const value of masked) expect(out.includes(value), `${value} in ${what}: ${out}`).toBe(false);
        };

        // Main thread: parse, redact, body (spliced from the line, or serialized when keys repeat).
        const parsed = parseLine(bytes, origin);
        if (!parsed.ok) throw new Error(`not parsed: ${parsed.error.message}`);
        const record = redact.process(parsed.record) as LogRecord;
        const body = documentBody(record).toString('utf8');
        leaks('the body', body);
        for (const value of plain) expect(body).toContain(value);
        expect(JSON.parse(body)).toEqual(JSON.parse(JSON.stringify(record.doc)));

        // The pool worker: owned bytes, the same transform, bodies from the kept source text.
        const pooled = parseText(text, origin, Buffer.from(text), { ownedBytes: true });
        if (!pooled.ok) throw new Error('not parsed on the pool path');
        const pooledRecord = redact.process(pooled.record) as LogRecord;
        leaks('the pool body', bodyFrom(pooledRecord.sourceText, pooledRecord.doc).toString('utf8'));

        // Dead letters: of the record before any redact (a path_format in front of it, a pipeline
        // without redact), and of the line cut short (not JSON: named by hash, not kept).
        leaks('a record dead letter', JSON.stringify(toEntry({ code: 'LF_RECORD_BAD_TIME', reason: 'x', component: 'keyed', origin, doc: parsed.record.doc }, { redact: forDeadLetters })));
        leaks('a record dead letter (default mask)', JSON.stringify(toEntry({ code: 'LF_SINK_REJECTED', reason: 'x', component: 'sink', origin, doc: parsed.record.doc })));
        const torn = parseLine(bytes.subarray(0, 1 + (cut % (bytes.length - 1))), origin);
        if (!torn.ok) {
          const { error, text: tornText, doc, rawBase64, line } = torn;
          const entry = toEntry({ code: error.code, reason: error.message, component: 'jobs', origin, text: tornText, doc, rawBase64, line }, { redact: forDeadLetters });
          leaks('a dead letter of a torn line', JSON.stringify(entry));
        }
      }),
      { seed: 42, numRuns: 300 },
    );
  });

  it('a doc from a line without repeated keys is JSON.parse of it, and the body is the line when nothing is masked', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 4 }), (value) => {
        const doc: JsonObject = { id: 1, flow_id: 2, payload: value as JsonObject };
        const text = JSON.stringify(doc);
        const parsed = parseLine(Buffer.from(text), { source: 'jobs' });
        if (!parsed.ok) throw new Error(parsed.error.message);
        expect(parsed.record.doc).toEqual(JSON.parse(text));
        expect(documentBody(parsed.record).toString('utf8')).toBe(text);
      }),
      { seed: 42, numRuns: 200 },
    );
  });
});
