import { describe, expect, it } from 'vitest';
import { sinkConformanceCases, driveSink, jobRecord, startReceiver } from 'logferry/testkit';
import plugin, { sumoHeaders, sumoLogicSchema, sumoLogicSink } from '../index.js';

describe('sumo_logic sink', () => {
  it('is a plugin with one sink type', () => {
    expect(plugin.name).toBe('logferry-plugin-sumologic');
    expect(plugin.sinks?.map((s) => s.type)).toEqual(['sumo_logic']);
  });

  it('maps its options onto the X-Sumo-* headers', () => {
    const options = sumoLogicSchema.parse({ url: 'https://example.com/r', category: 'prod/jobs', host: 'h1', fields: { env: 'prod', team: 'data' } });
    expect(sumoHeaders(options)).toEqual({ 'X-Sumo-Category': 'prod/jobs', 'X-Sumo-Host': 'h1', 'X-Sumo-Fields': 'env=prod,team=data' });
    expect(options.compression).toBe('gzip');
    expect(options.batch.max_bytes).toBe(1024 * 1024);
  });

  it('refuses batches above Sumo Logic’s 1 MiB and metadata that would break the header', () => {
    expect(sumoLogicSchema.safeParse({ url: 'https://example.com/r', batch: { max_bytes: 2_000_000 } }).success).toBe(false);
    expect(sumoLogicSchema.safeParse({ url: 'https://example.com/r', fields: { env: 'a,b' } }).success).toBe(false);
    expect(sumoLogicSchema.safeParse({ url: 'ftp://example.com/r' }).success).toBe(false);
  });

  it('sends gzipped NDJSON batches that never exceed 1 MiB uncompressed', async () => {
    const receiver = await startReceiver();
    try {
      // 60 records of ~50 kB: 3 MB in all, so at least three requests.
      const records = Array.from({ length: 60 }, (_, i) => jobRecord(i + 1, { pad: 'x'.repeat(50_000) }));
      const result = await driveSink(sumoLogicSink, { url: `${receiver.url}/receiver/v1/http/TOKEN`, category: 'c' }, records);
      expect(result.delivered).toHaveLength(60);
      expect(receiver.requests.length).toBeGreaterThanOrEqual(3);
      for (const request of receiver.requests) {
        expect(request.headers['content-encoding']).toBe('gzip');
        expect(request.headers['content-type']).toBe('application/x-ndjson');
        expect(request.headers['x-sumo-category']).toBe('c');
        expect(request.body.length).toBeLessThanOrEqual(1024 * 1024);
        expect(request.rawBody.length).toBeLessThan(request.body.length);
      }
      expect(receiver.ids().sort((a, b) => a - b)).toEqual(records.map((r) => r.doc.id));
    } finally {
      await receiver.close();
    }
  });

  const subject = {
    definition: sumoLogicSink,
    options: (url: string) => ({
      url,
      batch: { max_events: 20, timeout_ms: 20 },
      request: { timeout_ms: 1000 },
      retry: { initial_backoff_ms: 10, max_backoff_ms: 200, max_duration_s: 60 },
    }),
  };
  for (const c of sinkConformanceCases(subject)) it(`conformance: ${c.name}`, c.run, c.timeoutMs);
});
