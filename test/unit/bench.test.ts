import { describe, expect, it } from 'vitest';
import { jobDocument, PAYLOADS } from '../../bench/corpus.js';
import { formatTable, plan, throughputSvg, type BenchReport, type ScenarioResult } from '../../bench/run.js';
import { createRedactor, redactSchema } from '../../src/records/redaction.js';

function result(scenario: ScenarioResult['scenario'], mibPerSecond: number, coresUsed = 1.5): ScenarioResult {
  return {
    scenario,
    sink: 'http',
    pool: 'off',
    records: 1000,
    mib: 100,
    seconds: 1,
    recordsPerSecond: 1000,
    mibPerSecond,
    latencyP50Ms: 1,
    latencyP99Ms: 2,
    cpuSecondsPerGiB: 10,
    coresUsed,
    peakRssMiB: 200,
    eventLoopDelayP99Ms: 5,
    floorMibPerSecond: 100,
    ratioToFloor: 0.5,
    ratioToMachineFloor: 0.4,
  };
}

const report: BenchReport = {
  command: 'logferry bench',
  machine: { cpus: 2, model: 'test cpu', memoryGiB: 24, node: 'v20', platform: 'linux' },
  startedAt: '2026-11-23T00:00:00.000Z',
  results: [result('1k', 40), result('10k', 80), result('100k', 120), result('1m', 130), result('mix', 100)],
  notes: [],
};

describe('bench', () => {
  it('generates job documents of the requested size in the seed shape, with masked steps', () => {
    let seed = 1;
    const random = (): number => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    for (const size of Object.values(PAYLOADS)) {
      const text = jobDocument(7, size, random);
      expect(Math.abs(text.length - size) / size).toBeLessThan(0.05);
      const doc = JSON.parse(text) as { id: number; flow_id: number; lines: { mask_data: boolean }[] };
      expect(doc.id).toBe(7);
      expect(Number.isInteger(doc.flow_id)).toBe(true);
      if (doc.lines.length >= 4) expect(doc.lines.some((l) => l.mask_data)).toBe(true);
    }
    // The masked steps really have something to mask.
    const big = JSON.parse(jobDocument(8, 100 * 1024, random)) as never;
    const masked = createRedactor(redactSchema.parse({}))(big);
    expect(JSON.stringify(masked)).not.toBe(JSON.stringify(big));
  });

  it('plans instances and cores from the measured throughput, with headroom', () => {
    // 50,000 jobs/min of 30 kB = 24.4 MiB/s; at 30 kB the measured rate interpolates between 80 and 120 MiB/s.
    const text = plan(report, { jobsPerMinute: 50_000, avgKb: 30, headroom: 0.5 });
    expect(text).toContain('24.4 MiB/s');
    expect(text).toMatch(/answer: 1 instance x 2 cores = 2 cores/);
    const big = plan(report, { jobsPerMinute: 2_000_000, avgKb: 30, headroom: 0.5 });
    const instances = Number(/answer: (\d+) instances/.exec(big)![1]);
    // 976.6 MiB/s needed, about 99 MiB/s per instance, derated by 1.5.
    expect(instances).toBeGreaterThanOrEqual(14);
    expect(instances).toBeLessThanOrEqual(15);
  });

  it('prints a table row per run and draws every sink in the chart', () => {
    const table = formatTable(report.results);
    expect(table.split('\n').filter((l) => l.startsWith('| ')).length).toBe(2 + report.results.length);
    const svg = throughputSvg(report.results);
    expect(svg).toMatch(/^<svg/);
    expect(svg).toContain('polyline');
    expect(svg).toContain('http (mix 100)');
  });
});
