import { describe, expect, it } from 'vitest';
import { EXIT, MAX_MAX_WAIT_S, parseMaxWait, runExitCode, type RunOutcome } from '../../src/cli/main.js';
import { UsageError } from '../../src/errors.js';

const clean: RunOutcome = { once: true, heldBy: [], abandoned: 0, problems: [], deadLetters: 0 };
const unreadable = { code: 'LF_INPUT_UNREADABLE', message: 'cannot read /logs/a.ndjson: permission denied' } as const;
const checkpoint = { code: 'LF_CHECKPOINT_FAILED', message: 'the checkpoint of source jobs could not be saved' } as const;
const held = { sink: 's3', reason: '403 AccessDenied' };

describe('runExitCode', () => {
  it('is 0 with nothing to report', () => {
    expect(runExitCode(clean)).toEqual({ code: EXIT.ok });
  });

  it('is 65 for dead letters of this run, with the count', () => {
    expect(runExitCode({ ...clean, deadLetters: 3 })).toEqual({
      code: 65,
      errorCode: 'LF_RUN_HAD_DEAD_LETTERS',
      message: '3 records of this run went to the dead letters',
    });
  });

  it('is 75 when --max-wait gave up on a sink, naming it and its reason', () => {
    const exit = runExitCode({ ...clean, heldBy: [held], abandoned: 12 });
    expect(exit.code).toBe(75);
    expect(exit.errorCode).toBe('LF_DESTINATION_HELD');
    expect(exit.message).toBe('sink s3 was still failing (403 AccessDenied) when --max-wait ran out: 12 records were not acknowledged and the next run sends them');
  });

  it('is 75 when a stop left records unacknowledged (shutdown_timeout ran out)', () => {
    const exit = runExitCode({ ...clean, abandoned: 4 });
    expect(exit.code).toBe(75);
    expect(exit.message).toContain('the run was stopped before its records were delivered: 4 records');
  });

  it('is 74 for an unreadable input or a checkpoint that could not be saved, with every message', () => {
    const exit = runExitCode({ ...clean, problems: [unreadable, checkpoint] });
    expect(exit).toEqual({ code: 74, errorCode: 'LF_INPUT_UNREADABLE', message: `${unreadable.message}; ${checkpoint.message}` });
  });

  it('ranks 75 over 74 over 65', () => {
    const all: RunOutcome = { once: true, heldBy: [held], abandoned: 2, problems: [unreadable], deadLetters: 5 };
    expect(runExitCode(all).code).toBe(75);
    expect(runExitCode({ ...all, heldBy: [], abandoned: 0 }).code).toBe(74);
    expect(runExitCode({ ...all, heldBy: [], abandoned: 0, problems: [] }).code).toBe(65);
  });

  it('without --once: 74 only for a final checkpoint that failed, else 0 (dead letters, held records and unreadable inputs are logged as they happen)', () => {
    const follow: RunOutcome = { once: false, heldBy: [], abandoned: 3, problems: [unreadable], deadLetters: 9 };
    expect(runExitCode(follow)).toEqual({ code: 0 });
    expect(runExitCode({ ...follow, problems: [unreadable, checkpoint] })).toMatchObject({ code: 74, errorCode: 'LF_CHECKPOINT_FAILED', message: checkpoint.message });
  });
});

describe('parseMaxWait', () => {
  it('takes a positive number of seconds up to a week', () => {
    expect(parseMaxWait('2')).toBe(2);
    expect(parseMaxWait('0.5')).toBe(0.5);
    expect(parseMaxWait(String(MAX_MAX_WAIT_S))).toBe(MAX_MAX_WAIT_S);
  });

  it.each(['0', '-1', 'abc', '', ' ', 'Infinity', 'NaN', String(MAX_MAX_WAIT_S + 1), '1e9'])('refuses %j as a usage error', (text) => {
    expect(() => parseMaxWait(text)).toThrow(UsageError);
  });
});
