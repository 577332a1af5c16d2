import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { JsonObject } from '../../src/engine/types.js';
import { RecordError } from '../../src/errors.js';
import { ACTIVITY_PLACEHOLDERS, JOB_PLACEHOLDERS, keyForDocument, parseKeyTemplate } from '../../src/records/keys.js';
import { parseText } from '../../src/records/parse.js';
import type { PathFormatOptions } from '../../src/transforms/path-format.js';

/**
 * Whatever the template an operator writes and whatever a record holds, a key never leaves the
 * sink's folder: relative, no `.` or `..` folder, no empty folder, only [A-Za-z0-9._/-].
 */

const SAFE_KEY = /^[A-Za-z0-9._/-]+$/;

function assertContained(key: string): void {
  expect(key).toMatch(SAFE_KEY);
  expect(key.startsWith('/')).toBe(false);
  for (const segment of key.split('/')) {
    expect(segment, key).not.toBe('');
    expect(segment, key).not.toBe('.');
    expect(segment, key).not.toBe('..');
  }
}

/** Template pieces: literal text (hostile characters included) and placeholders, known or not. */
function template(placeholders: readonly string[]): fc.Arbitrary<string> {
  const piece = fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...placeholders).map((p) => `{${p}}`) },
    { weight: 4, arbitrary: fc.constantFrom('/', '-', '.', '..', 'jobs', 'a_b', '.json', '..', '/./', '//', '{', '}', '{nope}', ' ', '\\', '%2e', '~') },
    { weight: 1, arbitrary: fc.string({ maxLength: 3 }) },
  );
  return fc.array(piece, { minLength: 1, maxLength: 12 }).map((pieces) => pieces.join(''));
}

/** Values a record may hold in the places keys are made of, hostile ones included. */
const hostileText = fc.oneof(
  fc.constantFrom('user_login', '..', '.', '../../etc/passwd', 'a/b', '', ' ', 'ünï', 'x\u0000y', 'C:\\x', '%2e%2e', '-', '.hidden'),
  fc.string({ maxLength: 12 }),
);
const numberTextArb = fc.constantFrom('0', '7', '9007199254740993', '1e400', '-0', '1.0', '1E2', '1e+2', '-5', '123456789012345678901', '"12"', '"../x"', '"a/b"', 'null', 'true');
const timestamp = fc.constantFrom('2019-09-13 17:24:16 UTC', '2019-09-13T12:22:18-07:00', '0000-01-01T00:10:00+01:00', '9999-12-31T23:30:00-05:00', 'not a date', '2019-02-30T00:00:00Z');

describe('key templates', () => {
  it('render only keys inside the sink folder, for any template that parses and any record', () => {
    let rendered = 0;
    fc.assert(
      fc.property(
        template(JOB_PLACEHOLDERS),
        template(ACTIVITY_PLACEHOLDERS),
        hostileText,
        numberTextArb,
        numberTextArb,
        numberTextArb,
        timestamp,
        fc.constantFrom('succeeded', 'failed', 'completed', '../x'),
        (jobKey, activityKey, event, id, teamId, userId, time, status) => {
          const jobParsed = parseKeyTemplate(jobKey, JOB_PLACEHOLDERS);
          const activityParsed = parseKeyTemplate(activityKey, ACTIVITY_PLACEHOLDERS);
          // A template that parses is relative and has no `.`, `..` or empty folder of its own.
          for (const [source, parsed] of [[jobKey, jobParsed], [activityKey, activityParsed]] as const) {
            if (parsed.ok) {
              expect(source.startsWith('/')).toBe(false);
              expect(source.split('/').some((s) => s === '.' || s === '..')).toBe(false);
            } else expect(parsed.problems.length).toBeGreaterThan(0);
          }
          fc.pre(jobParsed.ok && activityParsed.ok);
          const options: PathFormatOptions = { job_key: jobKey, activity_key: activityKey, user_id: 5234 };
          const lines = [
            `{"id":${id},"flow_id":${id},"status":${JSON.stringify(status)},"started_at":${JSON.stringify(time)},"report":{"workato":{"job_context":{"user_id":${userId}}}}}`,
            `{"event":${JSON.stringify(event)},"team":{"id":${teamId}},"timestamp":${JSON.stringify(time)}}`,
          ];
          for (const line of lines) {
            const parsed = parseText(line, { source: 'property' });
            if (!parsed.ok) continue;
            let key: string | null;
            try {
              key = keyForDocument(parsed.record.doc, options, parsed.record.receivedDigest, parsed.record.writtenNumbers);
            } catch (err) {
              // A record that cannot have a safe key is a dead letter, never a key outside the folder.
              expect(err).toBeInstanceOf(RecordError);
              continue;
            }
            if (key === null) continue;
            rendered++;
            assertContained(key);
          }
        },
      ),
      { seed: 42, numRuns: 1500 },
    );
    expect(rendered).toBeGreaterThan(100);
  });

  it('refuse templates that would leave the folder or name a folder', () => {
    for (const bad of ['../{job_id}.json', '/{job_id}.json', '{job_id}/', 'a/./{job_id}', 'a//{job_id}', 'a/../{job_id}', 'a\\{job_id}', '{job_id} x', '{unknown}']) {
      expect(parseKeyTemplate(bad, JOB_PLACEHOLDERS).ok, bad).toBe(false);
    }
  });

  it('keep a job key from one hostile job document inside the folder too (documents without text)', () => {
    fc.assert(
      fc.property(hostileText, fc.oneof(fc.integer(), fc.double(), hostileText), (event, teamId) => {
        try {
          const key = keyForDocument({ event, team: { id: teamId }, timestamp: '2019-09-13 17:24:16 UTC' } as JsonObject, { job_key: '{job_id}.json', activity_key: '{team_id}/{event}/{digest}.json' });
          if (key !== null) assertContained(key);
        } catch (err) {
          expect(err).toBeInstanceOf(RecordError);
        }
      }),
      { seed: 42, numRuns: 2000 },
    );
  });
});
