import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { JsonObject, LogRecord } from '../../src/engine/types.js';
import { LogferryError, RecordError } from '../../src/errors.js';
import { contentDigest } from '../../src/records/canonical.js';
import {
  ACTIVITY_KEY_TEMPLATE,
  ACTIVITY_PLACEHOLDERS,
  JOB_KEY_TEMPLATE,
  JOB_PLACEHOLDERS,
  compileKeyTemplates,
  formatJobId,
  keyForDocument,
  keyForRecord,
  parseKeyTemplate,
} from '../../src/records/keys.js';
import { pathFormatSchema, type PathFormatOptions } from '../../src/transforms/path-format.js';

const SEEDS = new URL('../fixtures/seeds/', import.meta.url);

function readJson<T>(url: URL): T {
  return JSON.parse(readFileSync(url, 'utf8')) as T;
}

const withFallback = pathFormatSchema.parse({ user_id: 5234 });
const withoutFallback = pathFormatSchema.parse({});

/** The issue's example: job 100 of recipe 234, no job_context in its report. */
function job100(extra: JsonObject = {}): JsonObject {
  return { id: 100, flow_id: 234, status: 'completed', started_at: '2018-05-21T00:00:00Z', report: { name: 'x' }, ...extra };
}

function activity(extra: JsonObject = {}): JsonObject {
  return { event: 'user_login', team: { id: 4848 }, timestamp: '2019-09-13 17:24:16 UTC', ...extra };
}

/** Runs `fn` and returns the RecordError it throws (failing the test when it throws nothing or something else). */
function recordError(fn: () => unknown): RecordError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(RecordError);
    return err as RecordError;
  }
  throw new Error('expected a RecordError, nothing was thrown');
}

function keyOf(doc: JsonObject, options: PathFormatOptions = withFallback): string | null {
  return keyForDocument(doc, options);
}

describe('job keys', () => {
  it("give the issue's example key for job 100", () => {
    expect(keyOf(job100())).toBe(
      '5234/jobs/234/20180521/000/000/000/000/000/000/100/5234-234-100-20180521000000-succeeded.json',
    );
  });

  it('prefer report.workato.job_context.user_id over the fallback, as a number or a numeric string', () => {
    const withContext = (userId: number | string): JsonObject =>
      job100({ report: { workato: { job_context: { user_id: userId } } } });
    expect(keyOf(withContext(4848))).toMatch(/^4848\/jobs\/234\/.*\/4848-234-100-/);
    expect(keyOf(withContext('77'))).toMatch(/^77\/jobs\/234\/.*\/77-234-100-/);
  });

  it('name failed jobs "failed" and completed ones "succeeded"', () => {
    expect(keyOf(job100({ status: 'failed' }))).toMatch(/-100-20180521000000-failed\.json$/);
    expect(keyOf(job100({ status: 'succeeded' }))).toMatch(/-100-20180521000000-succeeded\.json$/);
  });

  it('skip jobs that are not final (null, not an error)', () => {
    for (const status of ['running', 'pending', 'Succeeded', '']) expect(keyOf(job100({ status })), status).toBeNull();
    // Not final wins over problems that would otherwise dead-letter it: the job ships once it finishes.
    expect(keyOf(job100({ status: 'running', started_at: null }), withoutFallback)).toBeNull();
  });

  it('convert started_at with an offset to UTC, including across midnight', () => {
    const key = keyOf(job100({ started_at: '2019-09-13T20:22:18-07:00' }));
    expect(key).toBe('5234/jobs/234/20190914/000/000/000/000/000/000/100/5234-234-100-20190914032218-succeeded.json');
    expect(keyOf(job100({ started_at: '2019-09-14T03:22:18.123456+00:00' }))).toBe(key);
  });

  it('fail with LF_RECORD_NO_USER_ID when neither the report nor the options have a user id', () => {
    const err = recordError(() => keyOf(job100(), withoutFallback));
    expect(err.code).toBe('LF_RECORD_NO_USER_ID');
    expect(err.message).toContain('report.workato.job_context.user_id');
    expect(err.message).toContain('user_id option');
  });

  it('reject a user id in the report that is not a number', () => {
    const doc = job100({ report: { workato: { job_context: { user_id: '../..' } } } });
    expect(recordError(() => keyOf(doc)).code).toBe('LF_RECORD_INVALID');
  });

  it('time each record by its own started_at when consecutive records repeat or change it', () => {
    const at = (started_at: string): string | null => keyOf(job100({ started_at }));
    expect(at('2018-05-21T00:00:00Z')).toContain('-20180521000000-');
    expect(at('2018-05-21T00:00:00Z')).toContain('-20180521000000-');
    expect(at('2019-12-31T23:59:59-01:00')).toContain('/20200101/');
    expect(recordError(() => at('2019-13-01T00:00:00Z')).code).toBe('LF_RECORD_BAD_TIME');
    expect(at('2019-12-31T23:59:59-01:00')).toContain('-20200101005959-');
    expect(recordError(() => keyOf(job100({ started_at: 5 }))).code).toBe('LF_RECORD_BAD_TIME');
    expect(keyForDocument(activity(), withFallback)).toContain('/20190913/');
  });

  it('fail with LF_RECORD_BAD_TIME naming the field and value', () => {
    const missing = recordError(() => keyOf(job100({ started_at: null })));
    expect(missing.code).toBe('LF_RECORD_BAD_TIME');
    expect(missing.message).toContain('started_at');
    for (const bad of ['yesterday', '2019-13-01T00:00:00Z', '2019-02-30T00:00:00Z', '2019-09-13T12:22:18']) {
      const err = recordError(() => keyOf(job100({ started_at: bad })));
      expect(err.code, bad).toBe('LF_RECORD_BAD_TIME');
      expect(err.message, bad).toContain('started_at');
      expect(err.message, bad).toContain(JSON.stringify(bad));
    }
  });
});

describe('formatted job ids', () => {
  it('pad to 21 digits in folders of three', () => {
    expect(formatJobId(7)).toBe('000/000/000/000/000/000/007');
    expect(formatJobId(994216821)).toBe('000/000/000/000/994/216/821');
    expect(formatJobId('123456789012345678901')).toBe('123/456/789/012/345/678/901');
  });

  it('reject ids longer than 21 digits as LF_RECORD_INVALID', () => {
    const err = recordError(() => formatJobId('1234567890123456789012'));
    expect(err.code).toBe('LF_RECORD_INVALID');
    expect(err.message).toContain('22 digits');
    // As a JSON number such an id is not even an exact integer, so the document is invalid too.
    const parsedFromJson = JSON.parse('{"id": 1234567890123456789012}') as JsonObject;
    expect(recordError(() => keyOf(job100(parsedFromJson))).code).toBe('LF_RECORD_INVALID');
  });

  it('cut ids into the same folders by arithmetic as by padding the digits', () => {
    const byPadding = (id: number): string => {
      const padded = String(id).padStart(21, '0');
      return padded.match(/.{3}/g)!.join('/');
    };
    const ids = [0, 9, 10, 999, 1000, 999_999, 1_000_000, 123_456_789, 999_999_999_999_999, 1e15, Number.MAX_SAFE_INTEGER];
    let seed = 7;
    for (let i = 0; i < 2000; i++) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      ids.push(Math.min(Number.MAX_SAFE_INTEGER, Math.floor((seed / 2 ** 31) * 10 ** (1 + (i % 16)))));
    }
    for (const id of ids) expect(formatJobId(id), String(id)).toBe(byPadding(id));
  });

  it('reject negative, fractional and unsafe numbers', () => {
    for (const bad of [-1, 1.5, Number.MAX_SAFE_INTEGER + 2, Number.NaN]) {
      expect(recordError(() => formatJobId(bad)).code, String(bad)).toBe('LF_RECORD_INVALID');
    }
  });

  it('appear in the key for a one-digit id', () => {
    expect(keyOf(job100({ id: 1 }))).toBe(
      '5234/jobs/234/20180521/000/000/000/000/000/000/001/5234-234-1-20180521000000-succeeded.json',
    );
  });
});

describe('activity keys', () => {
  it('use team.id, the event, the UTC time and the digest of the event as received', () => {
    const doc = activity();
    expect(keyOf(doc)).toBe(`4848/activity/20190913/4848-user_login-20190913172416-${contentDigest(doc)}.json`);
    expect(keyForDocument(doc, withFallback, 'feedfacecafebeef')).toBe(
      '4848/activity/20190913/4848-user_login-20190913172416-feedfacecafebeef.json',
    );
  });

  it('accept "UTC" timestamps and ISO 8601 with an offset for the same instant', () => {
    const utc = keyForDocument(activity(), withFallback, 'd');
    expect(keyForDocument(activity({ timestamp: '2019-09-13T10:24:16-07:00' }), withFallback, 'd')).toBe(utc);
    expect(keyForDocument(activity({ timestamp: '2019-09-13T17:24:16Z' }), withFallback, 'd')).toBe(utc);
    expect(keyForDocument(activity({ timestamp: '2019-09-13 19:24:16 +0200' }), withFallback, 'd')).toBe(utc);
  });

  it('use the record digest in the pipeline, so a transform changing the doc does not move the key', () => {
    const compiled = compileKeyTemplates(withFallback);
    const received = activity();
    const record: LogRecord = { kind: 'activity', doc: { ...received, extra: 'added later' }, origin: { source: 's' }, receivedDigest: contentDigest(received) };
    expect(keyForRecord(record, compiled)).toBe(keyOf(received));
  });

  it('digest differs for different events and is stable when keys are re-ordered', () => {
    const login = activity();
    const reordered: JsonObject = { timestamp: '2019-09-13 17:24:16 UTC', team: { id: 4848 }, event: 'user_login' };
    const otherDetails = activity({ details: { activity: 'switch_team' } });
    expect(keyOf(reordered)).toBe(keyOf(login));
    expect(keyOf(otherDetails)).not.toBe(keyOf(login));
    expect(contentDigest(otherDetails)).not.toBe(contentDigest(login));
  });

  it('fail with LF_RECORD_INVALID without team.id and LF_RECORD_BAD_TIME without a timestamp', () => {
    expect(recordError(() => keyOf(activity({ team: { name: 'x' } }))).code).toBe('LF_RECORD_INVALID');
    const noTime = recordError(() => keyOf(activity({ timestamp: null })));
    expect(noTime.code).toBe('LF_RECORD_BAD_TIME');
    expect(noTime.message).toContain('timestamp');
    const badTime = recordError(() => keyOf(activity({ timestamp: '13/09/2019' })));
    expect(badTime.code).toBe('LF_RECORD_BAD_TIME');
    expect(badTime.message).toContain('"13/09/2019"');
  });
});

describe('hostile values', () => {
  it.each([
    ['event', activity({ event: '../../../escape' }), '{event} would be "../../../escape"'],
    ['event with a space', activity({ event: 'user login' }), '{event} would be "user login"'],
    ['event with a slash', activity({ event: 'a/b' }), '{event} would be "a/b"'],
    ['team id', activity({ team: { id: '../..' } }), '{team_id} would be "../.."'],
    ['team id with a slash', activity({ team: { id: 'a/b' } }), '{team_id} would be "a/b"'],
    ['team id that is ..', activity({ team: { id: '..' } }), 'cannot be "." or ".."'],
    ['team id with a space', activity({ team: { id: '48 48' } }), '{team_id} would be "48 48"'],
  ])('%s is LF_RECORD_UNSAFE_KEY', (_name, doc, message) => {
    const err = recordError(() => keyOf(doc));
    expect(err.code).toBe('LF_RECORD_UNSAFE_KEY');
    expect(err.message).toContain(message);
  });

  it('an unsafe event explains which characters are allowed', () => {
    expect(recordError(() => keyOf(activity({ event: '../../../escape' }))).message).toBe(
      'key part {event} would be "../../../escape"; only [A-Za-z0-9._-] is allowed',
    );
  });
});

describe('seed samples', () => {
  const expected = readJson<Record<string, string>>(new URL('expected-keys.json', SEEDS));
  const fixtures = readdirSync(SEEDS).filter((name) => name !== 'expected-keys.json');

  it('has an expected key for every fixture, all distinct', () => {
    expect(Object.keys(expected).sort()).toEqual([...fixtures].sort());
    expect(new Set(Object.values(expected)).size).toBe(fixtures.length);
  });

  it.each(fixtures)('%s gets its documented key', (name) => {
    const doc = readJson<JsonObject>(new URL(name, SEEDS));
    expect(keyOf(doc)).toBe(expected[name]);
  });
});

describe('custom templates', () => {
  it('render every placeholder, with flow_id as an alias of recipe_id', () => {
    const options = pathFormatSchema.parse({
      user_id: 9,
      job_key: 'y{year}/m{month}/d{day}/{flow_id}.{recipe_id}.{job_id}.{status}.{user_id}.{datetime}.json',
      activity_key: 'audit/{year}-{month}-{day}/{event}_{team_id}_{digest}.ndjson',
    });
    expect(keyOf(job100(), options)).toBe('y2018/m05/d21/234.234.100.succeeded.9.20180521000000.json');
    expect(keyForDocument(activity(), options, 'abc')).toBe('audit/2019-09-13/user_login_4848_abc.ndjson');
  });

  it('only require the values they use', () => {
    const options = pathFormatSchema.parse({ job_key: 'jobs/{job_id}.json' });
    expect(keyOf(job100({ started_at: 'not a time' }), options)).toBe('jobs/100.json');
  });

  it('are compiled once into literals and placeholders', () => {
    const parsed = parseKeyTemplate('a/{event}-{digest}.json', ACTIVITY_PLACEHOLDERS);
    expect(parsed.ok && parsed.template.literals).toEqual(['a/', '-', '.json']);
    expect(parsed.ok && parsed.template.placeholders).toEqual(['event', 'digest']);
    expect(parsed.ok && parsed.template.checked).toEqual([true, true]);
    const job = parseKeyTemplate(JOB_KEY_TEMPLATE, JOB_PLACEHOLDERS);
    expect(job.ok && job.template.checked.every((check) => !check)).toBe(true);
    expect(parseKeyTemplate(JOB_KEY_TEMPLATE, JOB_PLACEHOLDERS).ok).toBe(true);
    expect(parseKeyTemplate(ACTIVITY_KEY_TEMPLATE, ACTIVITY_PLACEHOLDERS).ok).toBe(true);
  });
});

describe('bad templates', () => {
  const problemsOf = (template: string): string[] => {
    const parsed = parseKeyTemplate(template, JOB_PLACEHOLDERS);
    return parsed.ok ? [] : parsed.problems;
  };

  it.each([
    ['', 'empty'],
    ['{user_id}/{team_id}.json', 'unknown placeholder {team_id}'],
    ['/{user_id}/{job_id}.json', 'absolute'],
    ['{user_id}/../{job_id}.json', '".." folder'],
    ['../{job_id}.json', '".." folder'],
    ['{user_id} {job_id}.json', '" "'],
    ['{user_id}\\{job_id}.json', '"\\\\"'],
    ['{user_id}/{job_id.json', 'never closed'],
    ['{user_id}/job_id}.json', 'no matching "{"'],
    ['{user_id}//{job_id}.json', 'empty folder'],
    ['{user_id}/', 'ends with "/"'],
  ])('%j is a problem (%s)', (template, problem) => {
    const problems = problemsOf(template);
    expect(problems.length).toBeGreaterThan(0);
    expect(problems.join('\n')).toContain(problem);
  });

  it('lists every problem at once', () => {
    expect(problemsOf('/{nope}/../a b')).toHaveLength(4);
  });

  it('are config errors on the right option path', () => {
    const result = pathFormatSchema.safeParse({ job_key: '{user_id}/{nope}.json', activity_key: '../{event}' });
    expect(result.success).toBe(false);
    const paths = result.error?.issues.map((issue) => issue.path.join('.'));
    expect(paths).toEqual(['job_key', 'activity_key']);
    expect(() => compileKeyTemplates({ job_key: '/x', activity_key: ACTIVITY_KEY_TEMPLATE })).toThrow(LogferryError);
  });

  it('rejects a fallback user_id that is not a positive integer or digits', () => {
    expect(pathFormatSchema.safeParse({ user_id: 0 }).success).toBe(false);
    expect(pathFormatSchema.safeParse({ user_id: '../x' }).success).toBe(false);
    expect(pathFormatSchema.safeParse({ user_id: '5234' }).success).toBe(true);
    expect(pathFormatSchema.safeParse({ unknown_option: 1 }).success).toBe(false);
  });
});
