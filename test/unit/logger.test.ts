import { describe, expect, it } from 'vitest';
import { RateWindow, sinkStateFields } from '../../src/cli/status.js';
import { createLogger, type LogEntry, type LogLevel } from '../../src/engine/logger.js';
import { LogferryError } from '../../src/errors.js';
import { plural } from '../../src/plural.js';

/** ISO 8601 in UTC with milliseconds, as Date.toISOString writes it. */
const UTC_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

function capture(level: LogLevel, format: 'text' | 'json'): { lines: string[]; entries: LogEntry[]; log: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  const entries: LogEntry[] = [];
  const log = createLogger({ level, format, write: (l) => lines.push(l), forward: (e) => entries.push(e) });
  return { lines, entries, log };
}

describe('log lines', () => {
  it('text: each line starts with the time in UTC, then the level padded to 5, the message and key=value fields', () => {
    const { lines, log } = capture('info', 'text');
    const before = Date.now();
    log.info('message', { k: 'v', n: 3, nested: { a: [1] } });
    log.warn('careful');
    const after = Date.now();
    const [first, second] = lines;
    const [time, rest] = [first!.slice(0, 24), first!.slice(25)];
    expect(time).toMatch(UTC_TIME);
    expect(Date.parse(time)).toBeGreaterThanOrEqual(before);
    expect(Date.parse(time)).toBeLessThanOrEqual(after);
    expect(rest).toBe('info  message k=v n=3 nested={"a":[1]}\n');
    expect(second!.slice(25)).toBe('warn  careful\n');
  });

  it('json: time (UTC, ms), level, msg and the fields at the top level', () => {
    const { lines, log } = capture('info', 'json');
    log.child({ sink: 'out' }).error('failed', { attempts: 2 });
    const line = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(line).toEqual({ time: expect.stringMatching(UTC_TIME), level: 'error', msg: 'failed', sink: 'out', attempts: 2 });
  });

  it('an error field shows its message and code at info, and its stack only at debug level', () => {
    const err = new LogferryError('LF_SINK_FAILED', 'the sink broke');
    for (const format of ['text', 'json'] as const) {
      const info = capture('info', format);
      info.log.warn('sink failed', { error: err });
      expect(info.lines[0]).toContain('the sink broke');
      expect(info.lines[0]).toContain('LF_SINK_FAILED');
      expect(info.lines[0]).not.toContain('stack');
      expect(info.lines[0]).not.toContain('logger.test.ts');

      const debug = capture('debug', format);
      debug.log.warn('sink failed', { error: err });
      expect(debug.lines).toHaveLength(1);
      expect(debug.lines[0]).toContain('"stack":');
      expect(debug.lines[0]).toContain('logger.test.ts');
    }
    const json = capture('debug', 'json');
    json.log.error('x', { error: err });
    const fields = JSON.parse(json.lines[0]!) as { error: { message: string; code: string; stack: string } };
    expect(fields.error).toEqual({ message: 'the sink broke', code: 'LF_SINK_FAILED', stack: err.stack });
  });

  it('hands each written entry, and only those, to forward: the same time and fields as the line', () => {
    const { lines, entries, log } = capture('info', 'json');
    log.debug('below the level');
    log.info('counted', { records: 2, error: new Error('e') });
    expect(entries).toHaveLength(1);
    const line = JSON.parse(lines[0]!) as { time: string };
    expect(entries[0]).toEqual({ time: new Date(line.time), level: 'info', msg: 'counted', fields: { records: 2, error: { message: 'e', code: undefined } } });
  });
});

describe('plural', () => {
  it('agrees the noun with the count, irregular plurals and verbs included', () => {
    expect(plural(0, 'record')).toBe('0 records');
    expect(plural(1, 'record')).toBe('1 record');
    expect(plural(2, 'source')).toBe('2 sources');
    expect(plural(1, 'entry', 'entries')).toBe('1 entry');
    expect(plural(3, 'entry', 'entries')).toBe('3 entries');
    expect(plural(1, 'record was', 'records were')).toBe('1 record was');
    expect(plural(12, 'record was', 'records were')).toBe('12 records were');
  });
});

describe('status figures', () => {
  it('a rate window covers the time since its own previous reading, whatever other windows read meanwhile', () => {
    const MiB = 1024 * 1024;
    const t0 = Date.now();
    const status = new RateWindow();
    const live = new RateWindow();
    // The live line reads every second; the status line's 10 s still cover all 10 MiB.
    for (let s = 1; s <= 10; s++) live.next(s * MiB, t0 + s * 1000);
    const reading = status.next(10 * MiB, t0 + 10_000);
    expect(reading.seconds).toBeCloseTo(10, 1);
    expect(reading.mibPerS).toBeCloseTo(1, 2);
    expect(live.next(12 * MiB, t0 + 11_000)).toEqual({ mibPerS: 2, seconds: 1 });
  });

  it('names every sink with its state', () => {
    expect(
      sinkStateFields([
        { sink: 'archive', state: 'healthy', sinceMs: 0, failedAttempts: 0, pendingRecords: 0 },
        { sink: 'collector', state: 'retrying', sinceMs: 0, failedAttempts: 2, pendingRecords: 5 },
      ]),
    ).toEqual({ archive: 'healthy', collector: 'retrying' });
  });
});
