import { afterEach, describe, expect, it } from 'vitest';
import type { LogRecord } from '../../src/engine/types.js';
import { logsUrl, otlpSink, otlpSinkSchema, recordTime } from '../../src/sinks/otlp.js';
import { driveSink, jobRecord, sinkConformanceCases } from '../../src/testkit/index.js';
import { otlpRecordIds, startOtlpReceiver, statusBody, type OtlpReceiver } from '../helpers/otlp-receiver.js';

const fast = { request: { timeout_ms: 1000 }, retry: { initial_backoff_ms: 10, max_backoff_ms: 200, max_duration_s: 60 } };

const receivers: OtlpReceiver[] = [];
afterEach(async () => {
  await Promise.all(receivers.splice(0).map((r) => r.close()));
});
async function receiver(respond?: Parameters<typeof startOtlpReceiver>[0]): Promise<OtlpReceiver> {
  const started = await startOtlpReceiver(respond);
  receivers.push(started);
  return started;
}

/** An audit event as the job_log_tail source emits it. */
function auditEvent(id: number, extra: Record<string, unknown> = {}): LogRecord {
  return {
    kind: 'activity',
    doc: { event: 'user_login', id, team: { id: 4848, handle: 'ops' }, user: { id: 7 }, timestamp: '2019-09-13 17:24:16 UTC', ...extra } as LogRecord['doc'],
    origin: { source: 'test' },
  };
}

const NANOS_PER_MS = 1_000_000n;

describe('otlp sink', () => {
  for (const protocol of ['http/protobuf', 'http/json'] as const) {
    const subject = {
      definition: otlpSink,
      options: (url: string) => ({ endpoint: url, protocol, batch: { max_events: 25, timeout_ms: 20 }, ...fast }),
      destination: () => startOtlpReceiver(),
      recordIds: otlpRecordIds,
    };
    for (const c of sinkConformanceCases(subject)) it(`${protocol}: ${c.name}`, c.run, c.timeoutMs);
  }

  for (const protocol of ['http/protobuf', 'http/json'] as const) {
    it(`${protocol}: sends log records with the document as body, the record's time, severity, attributes and resource`, async () => {
      const otlp = await receiver();
      const failed = jobRecord(1, { status: 'failed', team: { id: 55 } });
      const succeeded = jobRecord(2);
      const event = auditEvent(3);
      const started = Date.now();
      const result = await driveSink(
        otlpSink,
        { endpoint: `${otlp.url}/otlp/`, protocol, resource: { 'deployment.environment': 'test' }, batch: { timeout_ms: 20 }, ...fast },
        [failed, succeeded, event],
        { batches: 1 },
      );
      expect(result.delivered).toHaveLength(3);
      expect(otlp.requests).toHaveLength(1);
      const request = otlp.requests[0]!;
      expect(request.url).toBe('/otlp/v1/logs');
      expect(request.protocol).toBe(protocol);
      expect(request.headers['content-type']).toBe(protocol === 'http/json' ? 'application/json' : 'application/x-protobuf');
      expect(request.headers['content-encoding']).toBe('gzip');

      const [first, second, third] = otlp.logs();
      expect(first!.body).toEqual(failed.doc);
      expect(first!.severityNumber).toBe(17);
      expect(first!.severityText).toBe('ERROR');
      expect(BigInt(first!.timeUnixNano)).toBe(BigInt(Date.parse(failed.doc.started_at as string)) * NANOS_PER_MS);
      expect(first!.attributes).toEqual({ 'job.id': 1, 'recipe.id': failed.doc.flow_id, 'job.status': 'failed', 'team.id': 55, 'logferry.key': failed.key });
      expect(first!.resource).toEqual({ 'service.name': 'logferry', 'deployment.environment': 'test' });
      expect(first!.scope).toBe('logferry');
      const observedMs = Number(BigInt(first!.observedTimeUnixNano) / NANOS_PER_MS);
      expect(observedMs).toBeGreaterThanOrEqual(started);
      expect(observedMs).toBeLessThanOrEqual(Date.now());

      expect(second!.severityNumber).toBe(9);
      expect(second!.severityText).toBe('INFO');
      expect(second!.attributes).not.toHaveProperty('team.id');

      expect(third!.body).toEqual(event.doc);
      expect(third!.severityText).toBe('INFO');
      expect(BigInt(third!.timeUnixNano)).toBe(BigInt(Date.UTC(2019, 8, 13, 17, 24, 16)) * NANOS_PER_MS);
      // No key: no logferry.key attribute.
      expect(third!.attributes).toEqual({ 'job.id': 3, 'event.name': 'user_login', 'team.id': 4848 });
      if (protocol === 'http/json') {
        // The OTLP 1.5 event_name field, which the decoder's older definitions do not know.
        expect(request.body.toString()).toContain('"eventName":"user_login"');
      }
    });
  }

  it('body json_text, custom attributes without the key, no compression, bearer auth and headers; a record without a time gets the observed time', async () => {
    const otlp = await receiver();
    const record = jobRecord(9, { started_at: 'not a time', report: { workato: { job_context: { user_id: 4848 } } } });
    const result = await driveSink(
      otlpSink,
      {
        endpoint: `${otlp.url}/v1/logs`,
        body: 'json_text',
        attributes: { 'user.id': 'report.workato.job_context.user_id', missing: 'no.such.field' },
        key_attribute: '',
        compression: 'none',
        auth: { strategy: 'bearer', token: 'otlp-token-123' },
        headers: { 'X-Scope-OrgID': 'tenant-1' },
        batch: { timeout_ms: 20 },
        ...fast,
      },
      [record],
    );
    expect(result.delivered).toHaveLength(1);
    const request = otlp.requests[0]!;
    expect(request.url).toBe('/v1/logs');
    expect(request.headers['content-encoding']).toBeUndefined();
    expect(request.headers.authorization).toBe('Bearer otlp-token-123');
    expect(request.headers['x-scope-orgid']).toBe('tenant-1');
    const [log] = otlp.logs();
    expect(log!.body).toBe(JSON.stringify(record.doc));
    expect(log!.attributes).toEqual({ 'user.id': 4848 });
    expect(log!.timeUnixNano).toBe(log!.observedTimeUnixNano);
  });

  it('partial_success: each record of the batch is sent once more alone; a refused one becomes a dead letter with the error_message, an accepted one arrives at most twice', async () => {
    // The receiver refuses every record whose id is a multiple of 5, and says only how many.
    const otlp = await receiver((request) => {
      const refused = request.logs.filter((log) => ((log.body as { id: number }).id % 5) === 0).length;
      return refused > 0 ? { partialSuccess: { rejectedLogRecords: refused, errorMessage: 'log record too old' } } : undefined;
    });
    const records = Array.from({ length: 20 }, (_, i) => jobRecord(i + 1));
    const result = await driveSink(otlpSink, { endpoint: otlp.url, batch: { max_events: 20, timeout_ms: 20 }, ...fast }, records, { batches: 1 });
    expect(result.unsettled).toHaveLength(0);
    expect(result.rejected.map((r) => r.record.doc.id).sort((a, b) => Number(a) - Number(b))).toEqual([5, 10, 15, 20]);
    for (const rejected of result.rejected) {
      expect(rejected.code).toBe('LF_SINK_REJECTED');
      expect(rejected.reason).toMatch(/^HTTP 200 from http:\/\/127\.0\.0\.1:\d+\/…\/…: partial_success: the receiver rejected 1 of 1 log record: log record too old$/);
    }
    expect(result.delivered.map((r) => r.doc.id).sort((a, b) => Number(a) - Number(b))).toEqual(records.map((r) => r.doc.id).filter((id) => Number(id) % 5 !== 0));
    // The batch, then each of its 20 records alone: no record reaches the receiver more than twice.
    expect(otlp.requests).toHaveLength(21);
    const copies = new Map<number, number>();
    for (const log of otlp.logs()) {
      const id = (log.body as { id: number }).id;
      copies.set(id, (copies.get(id) ?? 0) + 1);
    }
    expect([...copies.values()].every((n) => n === 2)).toBe(true);
  });

  it('a 2xx answer that decodes to no response (http/json body null, an error_message that is not text) is a success, not a retry', async () => {
    for (const body of ['null', '{"partialSuccess":{"rejectedLogRecords":0,"errorMessage":7}}', '[]']) {
      const otlp = await receiver(() => ({ body: Buffer.from(body), headers: { 'content-type': 'application/json' } }));
      const result = await driveSink(otlpSink, { endpoint: otlp.url, protocol: 'http/json', batch: { max_events: 10, timeout_ms: 20 }, ...fast }, [1, 2].map((id) => jobRecord(id)), { batches: 1 });
      expect(result.delivered, body).toHaveLength(2);
      expect(result.rejected, body).toHaveLength(0);
      expect(otlp.requests, body).toHaveLength(1);
    }
  });

  it('a 400 with a protobuf google.rpc.Status answer: the refused record is a dead letter whose reason holds the Status message', async () => {
    const otlp = await receiver((request) =>
      request.logs.some((log) => (log.body as { id: number }).id === 3) ? { status: 400, body: statusBody('log record 3: body exceeds the 64 KiB limit') } : undefined,
    );
    const result = await driveSink(otlpSink, { endpoint: otlp.url, batch: { max_events: 10, timeout_ms: 20 }, ...fast }, [1, 2, 3, 4].map((id) => jobRecord(id)), { batches: 1 });
    expect(result.delivered.map((r) => r.doc.id).sort()).toEqual([1, 2, 4]);
    expect(result.rejected).toHaveLength(1);
    expect(result.rejected[0]!.reason).toMatch(/^HTTP 400 from http:\/\/127\.0\.0\.1:\d+\/…\/…: .*log record 3: body exceeds the 64 KiB limit/);
    expect(result.rejected[0]!.reason).not.toMatch(/\p{Cc}/u);
  });

  it('a partial_success that rejects nothing is a success', async () => {
    const otlp = await receiver(() => ({ partialSuccess: { rejectedLogRecords: 0, errorMessage: 'some attributes were truncated' } }));
    const result = await driveSink(otlpSink, { endpoint: otlp.url, protocol: 'http/json', batch: { timeout_ms: 20 }, ...fast }, [jobRecord(1), jobRecord(2)]);
    expect(result.delivered).toHaveLength(2);
    expect(result.rejected).toHaveLength(0);
  });

  it('appends /v1/logs to the endpoint unless its path already ends there; options have bounds', () => {
    expect(logsUrl('http://collector:4318')).toBe('http://collector:4318/v1/logs');
    expect(logsUrl('http://collector:4318/')).toBe('http://collector:4318/v1/logs');
    expect(logsUrl('https://otlp.example.com/api/otlp?tenant=a')).toBe('https://otlp.example.com/api/otlp/v1/logs?tenant=a');
    expect(logsUrl('https://otlp.example.com/v1/logs/')).toBe('https://otlp.example.com/v1/logs');
    const problems = (options: Record<string, unknown>): string[] =>
      otlpSinkSchema.safeParse({ endpoint: 'http://127.0.0.1:4318', ...options }).error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`) ?? [];
    expect(problems({})).toEqual([]);
    expect(problems({ endpoint: 'grpc://collector:4317' })[0]).toMatch(/^endpoint: expected the http:\/\/ or https:\/\/ base URL/);
    expect(problems({ protocol: 'grpc' })[0]).toMatch(/^protocol: /);
    expect(problems({ body: 'text' })[0]).toMatch(/^body: /);
    expect(problems({ attributes: { 'team.id': 'team..id' } })[0]).toMatch(/^attributes\.team\.id: expected a dotted field path/);
    expect(problems({ batch: { max_events: 0 } })[0]).toMatch(/^batch\.max_events: /);
    expect(problems({ headers: { 'Content-Length': '1' } })[0]).toMatch(/^headers\.Content-Length: /);
    const defaults = otlpSinkSchema.parse({ endpoint: 'http://127.0.0.1:4318' });
    expect(defaults).toMatchObject({ protocol: 'http/protobuf', body: 'map', compression: 'gzip', key_attribute: 'logferry.key', resource: {} });
    expect(defaults.attributes).toEqual({ 'job.id': 'id', 'recipe.id': 'flow_id', 'job.status': 'status', 'event.name': 'event', 'team.id': 'team.id' });
  });

  it('keeps the bearer token and secret headers among the secrets the engine scrubs', () => {
    const options = otlpSinkSchema.parse({ endpoint: 'http://127.0.0.1:4318', auth: { strategy: 'bearer', token: 'otlp-secret-1' }, headers: { 'x-api-key': 'key-secret-2', 'x-team': 'ops' } });
    const secrets = otlpSink.secrets!(options);
    expect(secrets).toContain('otlp-secret-1');
    expect(secrets).toContain('key-secret-2');
    expect(secrets).not.toContain('ops');
  });
});

describe('otlp record time', () => {
  const at = (startedAt: unknown): number | undefined => {
    const record = jobRecord(1);
    return recordTime({ ...record, doc: { ...record.doc, started_at: startedAt as string } });
  };

  it('reads started_at with its zone, a time without a zone as UTC, and leaves out what OTLP cannot carry', () => {
    expect(at('2026-12-06T01:02:03.456Z')).toBe(Date.UTC(2026, 11, 6, 1, 2, 3, 456));
    expect(at('2026-12-06T03:02:03+02:00')).toBe(Date.UTC(2026, 11, 6, 1, 2, 3));
    // The host's zone plays no part (the test runs in whatever TZ the machine has).
    expect(at('2026-12-06T01:02:03')).toBe(Date.UTC(2026, 11, 6, 1, 2, 3));
    expect(at('2026-12-06 01:02:03.5')).toBe(Date.UTC(2026, 11, 6, 1, 2, 3, 500));
    // A Go zero time (a job that never started), before 1970, past 2262, not a time: observed time only.
    expect(at('0001-01-01T00:00:00Z')).toBeUndefined();
    expect(at('1960-05-01T00:00:00Z')).toBeUndefined();
    expect(at('2300-01-01T00:00:00Z')).toBeUndefined();
    expect(at('yesterday')).toBeUndefined();
    expect(at(1733446923)).toBeUndefined();
  });
});
