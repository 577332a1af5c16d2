import { describe, expect, it } from 'vitest';
import { describeSinks, describeSinksAtEnd, formatSince, sinkFields } from '../../src/cli/status.js';
import type { SinkStatus } from '../../src/engine/sink-state.js';

const now = new Date(2026, 11, 5, 12, 10, 0).getTime();
const since = new Date(2026, 11, 5, 12, 3, 4).getTime();
const healthy: SinkStatus = { sink: 'archive', state: 'healthy', sinceMs: since, failedAttempts: 0, pendingRecords: 0 };
const blocked: SinkStatus = {
  sink: 's3',
  state: 'blocked',
  reason: '403 AccessDenied',
  advice: 'the credentials and s3:PutObject',
  sinceMs: since,
  failedAttempts: 7,
  pendingRecords: 120,
};
const retrying: SinkStatus = { sink: 'http', state: 'retrying', reason: '503 Service Unavailable', sinceMs: since, failedAttempts: 3, pendingRecords: 40 };

describe('sink states in the status lines', () => {
  it('say nothing while every sink is healthy', () => {
    expect(describeSinks([healthy], now)).toBe('');
    expect(describeSinksAtEnd([healthy], now)).toBe('');
    expect(sinkFields([healthy])).toEqual([]);
  });

  it('name each failing sink with its state, reason and since when in the status line', () => {
    expect(describeSinks([healthy, blocked, retrying], now)).toBe('s3=blocked(403 AccessDenied) since 12:03:04, http=retrying(503 Service Unavailable) since 12:03:04');
  });

  it('say in the final summary what each failing sink held, without claiming it still retries', () => {
    const text = describeSinksAtEnd([blocked, retrying, healthy], now);
    expect(text).toBe(
      'sink s3 blocked since 12:03:04 (403 AccessDenied), 120 records held for the next run; sink http failing since 12:03:04 (503 Service Unavailable), 40 records held for the next run',
    );
    expect(text).not.toContain('retrying');
  });

  it('give JSON logs one object per failing sink, with the time in ISO 8601', () => {
    expect(sinkFields([healthy, blocked])).toEqual([
      {
        sink: 's3',
        state: 'blocked',
        reason: '403 AccessDenied',
        advice: 'the credentials and s3:PutObject',
        since: new Date(since).toISOString(),
        failed_attempts: 7,
        held_records: 120,
      },
    ]);
  });

  it('add the date to a time more than a day ago', () => {
    expect(formatSince(since, now)).toBe('12:03:04');
    expect(formatSince(since, since + 2 * 24 * 3600_000)).toBe('2026-12-05 12:03:04');
  });
});
