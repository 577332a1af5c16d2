import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/engine/logger.js';
import { Metrics } from '../../src/engine/metrics.js';
import type { ComponentContext, JsonObject, LogRecord, RecordKind, Transform } from '../../src/engine/types.js';
import { selectSchema, selectTransform } from '../../src/transforms/select.js';

const context: ComponentContext = {
  id: 'selected',
  log: silentLogger,
  metrics: new Metrics(),
  signal: new AbortController().signal,
  dataDir: '/nonexistent',
};

function build(options: Record<string, unknown> = {}): Transform {
  return selectTransform.build(selectSchema.parse(options), context) as Transform;
}

/** Freezing the input makes any mutation by the transform throw (ES modules run in strict mode). */
function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object') {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

function record(kind: RecordKind, doc: JsonObject): LogRecord {
  return deepFreeze({ kind, doc, origin: { source: 'jobs', file: 'a.ndjson', offset: 0 }, receivedDigest: '0123456789abcdef' });
}

const job = (): LogRecord =>
  record('job', {
    id: 100,
    flow_id: 234,
    status: 'completed',
    report: { name: "Xavier D'Souza" },
    lines: [
      { recipe_line_number: 0, input: { interval: '1' }, output: { time: '2018-05-21T23:14:41Z' }, error: null, mask_data: false },
    ],
  });

const activity = (event: string): LogRecord =>
  record('activity', {
    event,
    details: { request: { ip_address: '67.207.106.234' } },
    user: { id: 4848, email: 'janedoe@workato.com' },
    team: { id: 4848 },
    timestamp: '2019-09-13 17:24:16 UTC',
  });

describe('select schema', () => {
  it('ships everything by default', () => {
    expect(selectSchema.parse({})).toEqual({ job_history: true, user_activity: true, step_details: true, activity_events: [] });
  });

  it('rejects unknown options and wrong types', () => {
    expect(selectSchema.safeParse({ job_histroy: false }).success).toBe(false);
    expect(selectSchema.safeParse({ activity_events: 'user_login' }).success).toBe(false);
    expect(selectSchema.safeParse({ step_details: 'no' }).success).toBe(false);
  });

  it('describes every option (the JSON Schema shown to editors)', () => {
    for (const [name, option] of Object.entries(selectSchema.shape)) expect(option.description, name).toBeTruthy();
  });
});

describe('select transform', () => {
  it('passes jobs and activity events through as the same record objects by default', () => {
    const select = build();
    const jobRecord = job();
    const event = activity('user_login');
    expect(select.process(jobRecord)).toBe(jobRecord);
    expect(select.process(event)).toBe(event);
  });

  it('drops jobs when job_history is false and keeps activity events', () => {
    const select = build({ job_history: false });
    expect(select.process(job())).toBeNull();
    const event = activity('user_login');
    expect(select.process(event)).toBe(event);
  });

  it('drops activity events when user_activity is false and keeps jobs', () => {
    const select = build({ user_activity: false });
    expect(select.process(activity('user_login'))).toBeNull();
    const jobRecord = job();
    expect(select.process(jobRecord)).toBe(jobRecord);
  });

  it('removes lines when step_details is false, on a copy, keeping everything else', () => {
    const select = build({ step_details: false });
    const input = job();
    const snapshot = structuredClone(input.doc);

    const output = select.process(input) as LogRecord;

    expect(output).not.toBe(input);
    expect(output.doc).not.toHaveProperty('lines');
    expect(output.doc).toEqual({ id: 100, flow_id: 234, status: 'completed', report: { name: "Xavier D'Souza" } });
    expect(output.doc.report).toBe(input.doc.report);
    expect(output.origin).toEqual(input.origin);
    expect(output.receivedDigest).toBe('0123456789abcdef');
    expect(input.doc).toEqual(snapshot);
  });

  it('leaves a job without lines and every activity event untouched when step_details is false', () => {
    const select = build({ step_details: false });
    const summaryOnly = record('job', { id: 1, flow_id: 2, status: 'failed' });
    const event = activity('user_logout');
    expect(select.process(summaryOnly)).toBe(summaryOnly);
    expect(select.process(event)).toBe(event);
  });

  it('ships only the events on a non-empty allow-list, and every job', () => {
    const select = build({ activity_events: ['user_login', 'recipe_created'] });
    const login = activity('user_login');
    const created = activity('recipe_created');
    expect(select.process(login)).toBe(login);
    expect(select.process(created)).toBe(created);
    expect(select.process(activity('user_logout'))).toBeNull();
    expect(select.process(activity('package_exported'))).toBeNull();
    const jobRecord = job();
    expect(select.process(jobRecord)).toBe(jobRecord);
  });

  it('lets user_activity false win over an allow-list', () => {
    const select = build({ user_activity: false, activity_events: ['user_login'] });
    expect(select.process(activity('user_login'))).toBeNull();
  });
});
