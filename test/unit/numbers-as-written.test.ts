import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { JsonObject, LogRecord, WrittenNumbers } from '../../src/engine/types.js';
import { RecordError } from '../../src/errors.js';
import { compileKeyTemplates, keyForDocument, keyForRecord } from '../../src/records/keys.js';
import { classify, JOB_ID_TEXT, numberText, parseText, type ParseResult } from '../../src/records/parse.js';
import { pathFormatSchema } from '../../src/transforms/path-format.js';
import { documentBody } from '../../src/records/body.js';
import { serializeRecord } from '../../src/sinks/serialize.js';

/**
 * Finding 4 of issue 9: key parts and digests come from the numbers as written in the line, never
 * from the doubles JSON.parse makes of them.
 */

const compiled = compileKeyTemplates(pathFormatSchema.parse({}));
const withFallback = compileKeyTemplates(pathFormatSchema.parse({ user_id: 5234 }));

function parse(text: string): ParseResult {
  return parseText(text, { source: 'test' }, Buffer.from(text));
}

function record(text: string): LogRecord {
  const parsed = parse(text);
  if (!parsed.ok) throw parsed.error;
  return parsed.record;
}

function keyOrError(text: string, templates = compiled): string {
  try {
    const parsed = parse(text);
    if (!parsed.ok) return `${parsed.error.code}: ${parsed.error.message}`;
    return keyForRecord(parsed.record, templates) ?? 'not final';
  } catch (err) {
    expect(err).toBeInstanceOf(RecordError);
    return `${(err as RecordError).code}: ${(err as RecordError).message}`;
  }
}

const job = (id: string, flowId = '234', userId = '4848'): string =>
  `{"id":${id},"flow_id":${flowId},"status":"succeeded","started_at":"2018-05-21T00:00:00Z","report":{"workato":{"job_context":{"user_id":${userId}}}}}`;
const activity = (teamId: string, resourceId = '1'): string =>
  `{"event":"recipe_started","team":{"id":${teamId}},"resource":{"id":${resourceId}},"timestamp":"2019-09-13 17:24:16 UTC"}`;

/** Texts that one double cannot tell from another, or that are not plain digits. */
const HOSTILE_NUMBERS = ['1e400', '-1e400', '1.0', '-0', '1E2', '1e2', '100.0', '1e+2', '0.5', '-1'];

describe('job key parts use the digits as written', () => {
  it('ships ids beyond 2^53 with their exact digits: 2^53 + 1 and 2^53 get different keys', () => {
    const above = keyOrError(job('9007199254740993'));
    const at = keyOrError(job('9007199254740992'));
    expect(above).toBe('4848/jobs/234/20180521/000/009/007/199/254/740/993/4848-234-9007199254740993-20180521000000-succeeded.json');
    expect(at).toBe('4848/jobs/234/20180521/000/009/007/199/254/740/992/4848-234-9007199254740992-20180521000000-succeeded.json');
    expect(keyOrError(job('123456789012345678901'))).toContain('/123/456/789/012/345/678/901/4848-234-123456789012345678901-');
  });

  it('ships flow_id and report.workato.job_context.user_id beyond 2^53 with their exact digits', () => {
    expect(keyOrError(job('100', '9007199254740993', '18014398509481985'))).toBe(
      '18014398509481985/jobs/9007199254740993/20180521/000/000/000/000/000/000/100/18014398509481985-9007199254740993-100-20180521000000-succeeded.json',
    );
    expect(keyOrError(job('100', '9007199254740992', '18014398509481984'))).toContain('18014398509481984/jobs/9007199254740992/');
  });

  it.each(['id', 'flow_id', 'user_id'])('refuses %s written as anything but plain digits (1e400, 1.0, -0, 1E2, ...), showing it as written', (field) => {
    const keys = new Set<string>();
    for (const text of [...HOSTILE_NUMBERS, '1234567890123456789012']) {
      const line = field === 'id' ? job(text) : field === 'flow_id' ? job('100', text) : job('100', '234', text);
      const result = keyOrError(line, withFallback);
      expect(result, text).toMatch(/^LF_RECORD_INVALID: /);
      expect(result, text).toContain(`got number ${text}`);
      keys.add(result);
    }
    // 100, 1, 0 and the plain forms still work and are never confused with the above.
    expect(keyOrError(field === 'id' ? job('100') : field === 'flow_id' ? job('100', '100') : job('100', '234', '100'))).toMatch(/\.json$/);
  });

  it('never reports 1e400 as null (finding 10)', () => {
    expect(keyOrError(job('1e400'))).toContain('got number 1e400');
    // A document built without its text says what the double is.
    expect(() => keyForDocument({ id: Infinity, flow_id: 1, status: 'succeeded' } as JsonObject, pathFormatSchema.parse({ user_id: 1 }))).toThrow(/got number Infinity/);
  });

  it('does not take digits beyond 2^53 from a document built without text (a plugin): they are not known', () => {
    const doc = { id: 2 ** 53 + 2, flow_id: 1, status: 'succeeded', started_at: '2018-05-21T00:00:00Z' } as JsonObject;
    expect(() => keyForDocument(doc, pathFormatSchema.parse({ user_id: 1 }))).toThrow(/must be a non-negative integer written in at most 21 digits/);
  });

  it('uses a text as written only while the doc still holds the value it was parsed as', () => {
    const parsed = record(job('9007199254740993'));
    // A transform replaced the id: the key follows the doc, not the stale text.
    const changed: LogRecord = { ...parsed, doc: { ...parsed.doc, id: 77 } };
    expect(keyForRecord(changed, compiled)).toContain('-234-77-');
    expect(keyForRecord(parsed, compiled)).toContain('-234-9007199254740993-');
  });

  it('takes the last of a key given twice, and sees through escaped keys', () => {
    expect(keyOrError(`{"id":1E2,"flow_id":234,"status":"succeeded","started_at":"2018-05-21T00:00:00Z","id":9007199254740993}`, withFallback)).toContain('-234-9007199254740993-');
    expect(keyOrError(`{"id":9007199254740993,"flow_id":234,"status":"succeeded","started_at":"2018-05-21T00:00:00Z","id":1E2}`, withFallback)).toContain('got number 1E2');
    expect(keyOrError(`{"\\u0069d":1E2,"flow_id":234,"status":"succeeded","started_at":"2018-05-21T00:00:00Z"}`, withFallback)).toContain('got number 1E2');
    expect(keyOrError(`{"id":100,"flow_id":234,"status":"succeeded","started_at":"2018-05-21T00:00:00Z","report":{"workato":{"job_context":{"user_id":1E2}}},"report":{"workato":{"job_context":{"user_id":9007199254740993}}}}`)).toMatch(/^9007199254740993\/jobs\//);
  });
});

describe('classify: the fast path for plain safe integers', () => {
  /** What classify accepted before its fast path: the id's text (as written, else String()) against JOB_ID_TEXT. */
  function acceptedByText(value: number, written?: { value: number; text: string }): boolean {
    const text = numberText(value, written);
    return text !== undefined && JOB_ID_TEXT.test(text);
  }

  it('accepts and refuses exactly what the text rule does, for numbers with and without a written text', () => {
    const edges = [0, -0, 1, -1, 1.5, 2 ** 53 - 1, 2 ** 53, 2 ** 53 + 2, 1e21, 1e22, Number.MAX_SAFE_INTEGER, NaN, Infinity, -Infinity, 5e-324];
    const values = fc.oneof(fc.constantFrom(...edges), fc.integer(), fc.maxSafeNat(), fc.double());
    const writtenText = fc.option(fc.constantFrom('1E2', '1.0', '-0', '100', '007', '9007199254740993'), { nil: undefined });
    fc.assert(
      fc.property(values, writtenText, (value, text) => {
        const written: WrittenNumbers | undefined = text === undefined ? undefined : { id: { value, text } };
        const kind = classify({ id: value, flow_id: 7 }, written);
        expect(kind === 'job', `${String(value)} written ${text}`).toBe(acceptedByText(value, written?.id));
      }),
      { seed: 42, numRuns: 2000 },
    );
  });

  it('refuses a safe integer written otherwise (1E2, 1.0) and -0, accepts one written as plain digits', () => {
    expect(classify({ id: 100, flow_id: 7 }, { id: { value: 100, text: '1E2' } })).toBeInstanceOf(RecordError);
    expect(classify({ id: 1, flow_id: 7 }, { flow_id: { value: 7, text: '7.0' } })).toBeInstanceOf(RecordError);
    expect(classify({ id: -0, flow_id: 7 })).toBeInstanceOf(RecordError);
    expect(classify({ id: 100, flow_id: 7 }, { id: { value: 100, text: '100' } })).toBe('job');
    expect(classify({ id: 2 ** 53 - 1, flow_id: 0 })).toBe('job');
    expect(classify({ id: 2 ** 53, flow_id: 0 })).toBeInstanceOf(RecordError);
  });
});

describe('bodies: exact digits only where the body is the line as read (README limits)', () => {
  const BIG = '9007199254740993';

  it('a line as read keeps the digits beyond 2^53 in its body and its key', () => {
    const r = record(`{"id":${BIG},"flow_id":1,"status":"succeeded","started_at":"2019-09-13T12:22:18Z"}`);
    expect(documentBody(r).toString()).toContain(BIG);
    expect(keyForRecord(r, withFallback)).toContain(BIG);
  });

  it('a line that gives a key twice, and pretty output, carry the nearest double in the body; the key keeps the digits', () => {
    const duplicated = record(`{"id":${BIG},"flow_id":1,"status":"succeeded","started_at":"2019-09-13T12:22:18Z","x":1,"x":2}`);
    expect(documentBody(duplicated).toString()).toContain('"id":9007199254740992');
    expect(keyForRecord(duplicated, withFallback)).toContain(BIG);
    const plain = record(`{"id":${BIG},"flow_id":1,"status":"succeeded","started_at":"2019-09-13T12:22:18Z"}`);
    expect(serializeRecord(plain, true).toString()).toContain('"id": 9007199254740992');
  });
});

describe('activity keys and digests use the numbers as written', () => {
  it('gives two events that differ only in resource.id beyond 2^53 different digests and keys', () => {
    const a = record(activity('4848', '9007199254740993'));
    const b = record(activity('4848', '9007199254740992'));
    expect(a.receivedDigest).not.toBe(b.receivedDigest);
    expect(keyForRecord(a, compiled)).not.toBe(keyForRecord(b, compiled));
  });

  it('keeps the digest of events written as JSON.stringify writes them (existing keys do not move)', () => {
    const doc = { event: 'user_login', team: { id: 4848 }, timestamp: '2019-09-13 17:24:16 UTC', details: { ip: '10.0.0.1', n: 1.5 } };
    const fromText = record(JSON.stringify(doc));
    expect(keyForRecord(fromText, compiled)).toBe(keyForDocument(doc, pathFormatSchema.parse({})));
  });

  it('uses team.id as written; every hostile number gives its own key part and digest, none crashes', () => {
    const keys = new Map<string, string>();
    for (const text of ['9007199254740993', '9007199254740992', '100', ...HOSTILE_NUMBERS]) {
      const result = keyOrError(activity(text));
      keys.set(text, result);
      if (text === '1e+2') expect(result).toMatch(/^LF_RECORD_UNSAFE_KEY: /);
      else expect(result.startsWith(`${text}/activity/20190913/${text}-recipe_started-20190913172416-`), `${text}: ${result}`).toBe(true);
    }
    expect(new Set(keys.values()).size).toBe(keys.size);
  });

  it('digests every hostile number in any position differently', () => {
    const digests = new Set<string>();
    const texts = ['9007199254740993', '9007199254740992', '100', ...HOSTILE_NUMBERS];
    for (const text of texts) digests.add(record(activity('1', text)).receivedDigest!);
    expect(digests.size).toBe(texts.length);
  });
});

describe('times outside the years 0000-9999 (finding 10)', () => {
  it.each(['9999-12-31T23:30:00-05:00', '0000-01-01T00:10:00+01:00'])('%s is a dead letter (LF_RECORD_BAD_TIME), not a folder like 00-11231', (startedAt) => {
    const text = `{"id":1,"flow_id":2,"status":"succeeded","started_at":"${startedAt}"}`;
    const result = keyOrError(text, withFallback);
    expect(result).toMatch(/^LF_RECORD_BAD_TIME: .*outside the years 0000-9999/);
    expect(keyOrError(`{"event":"user_login","team":{"id":1},"timestamp":"${startedAt}"}`)).toMatch(/^LF_RECORD_BAD_TIME: /);
  });

  it('keeps the edges inside the range', () => {
    expect(keyOrError('{"id":1,"flow_id":2,"status":"succeeded","started_at":"0000-01-01T00:10:00Z"}', withFallback)).toContain('/00000101/');
    expect(keyOrError('{"id":1,"flow_id":2,"status":"succeeded","started_at":"9999-12-31T18:30:00-05:00"}', withFallback)).toContain('/99991231/');
  });
});
