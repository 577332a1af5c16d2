import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { DeadLetterEntry } from '../../src/engine/dead-letters.js';
import { jobKey, makeJob, poolPipeline, removeAll, runCli, scratch, writePipeline } from '../helpers/cli.js';

/**
 * Finding 1 of issue 9: one deeply nested line used to end the process with "Maximum call stack
 * size exceeded" (JSON.stringify of the body and of the dead letter, the recursive canonical JSON
 * of the activity digest, redaction), and every restart died on the same line. Each such line
 * must be a dead letter (LF_RECORD_TOO_DEEP), inline and on the pool, and everything after it ships.
 */

const cleanup: string[] = [];
afterEach(() => removeAll(cleanup));

/** `"nested": [[[...]]]` inside a job: `levels` arrays, written without recursion. */
function deepJob(id: number, levels: number): string {
  const job = JSON.stringify(makeJob(id, { nested: 'HOLE' }));
  return job.replace('"HOLE"', '['.repeat(levels) + ']'.repeat(levels));
}

/** An activity event whose `details` nest `levels` objects. */
function deepActivity(levels: number): string {
  const event = JSON.stringify({ event: 'user_login', team: { id: 4848 }, timestamp: '2019-09-13 17:24:16 UTC', details: 'HOLE' });
  return event.replace('"HOLE"', '{"a":'.repeat(levels) + '1' + '}'.repeat(levels));
}

function pipelineYaml(dir: string, pool: boolean, extraSource = ''): string {
  const transforms = `  redacted:
    type: redact
    inputs: [jobs]
    fields: ["report.workato.job_context.user_email", "nested.0.0.0", "details.a.a"]
    patterns: [email, ipv4, credit_card, bearer_token]
  keyed:
    type: path_format
    inputs: [redacted]
`;
  return poolPipeline({ dir, pool, transforms, last: 'keyed', shutdownTimeout: '20s', pollIntervalMs: 20, extraSource });
}

async function deadLetters(dir: string): Promise<DeadLetterEntry[]> {
  const file = join(dir, 'data', 'dead_letter', 'dead-letters.ndjson');
  if (!existsSync(file)) return [];
  return (await readFile(file, 'utf8'))
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as DeadLetterEntry);
}

async function checkpointOffset(dir: string): Promise<number | undefined> {
  const checkpoint = JSON.parse(await readFile(join(dir, 'data', 'checkpoints', 'jobs.json'), 'utf8')) as { files: { offset: number }[] };
  return checkpoint.files[0]?.offset;
}

describe.each([
  ['inline', false],
  ['on the pool', true],
])('deeply nested lines (%s)', (_name, pool) => {
  it('are dead letters (LF_RECORD_TOO_DEEP); the lines around them ship and the checkpoint moves past them', async () => {
    const dir = await scratch(cleanup);
    await mkdir(join(dir, 'logs'));
    const tenKb = deepJob(9_100_002, 5_000);
    expect(tenKb.length).toBeGreaterThan(10_000);
    const lines = [
      JSON.stringify(makeJob(9_100_001)),
      tenKb,
      JSON.stringify(makeJob(9_100_003)),
      deepJob(9_100_004, 100_000),
      JSON.stringify(makeJob(9_100_005)),
      deepActivity(5_000),
      JSON.stringify(makeJob(9_100_006)),
      deepActivity(100_000),
      // Just inside the default max_depth (64): shipped, through every redaction.
      deepJob(9_100_007, 60),
      JSON.stringify(makeJob(9_100_008, { title: 'x'.repeat(pool ? 2000 : 10) })),
    ];
    const file = join(dir, 'logs', 'jobs.ndjson');
    await writeFile(file, lines.join('\n') + '\n');
    const config = await writePipeline(dir, pipelineYaml(dir, pool));

    const result = await runCli(['run', '-c', config, '--once'], { cwd: dir, timeoutMs: 90_000 });
    expect(result.stderr).not.toContain('Maximum call stack');
    expect(result.code, result.stderr).toBe(65);
    for (const id of [9_100_001, 9_100_003, 9_100_005, 9_100_006, 9_100_007, 9_100_008]) {
      expect(existsSync(join(dir, 'out', jobKey(id))), `job ${id}`).toBe(true);
    }
    for (const id of [9_100_002, 9_100_004]) expect(existsSync(join(dir, 'out', jobKey(id))), `job ${id}`).toBe(false);
    const entries = await deadLetters(dir);
    expect(entries.map((e) => e.code)).toEqual(['LF_RECORD_TOO_DEEP', 'LF_RECORD_TOO_DEEP', 'LF_RECORD_TOO_DEEP', 'LF_RECORD_TOO_DEEP']);
    for (const e of entries) {
      expect(e.reason).toContain('max_depth (64)');
      expect(e.file).toBe(file);
      // The line was never parsed, so mask_data could not be applied: its text is not kept.
      expect(e.text).toBeUndefined();
    }
    const starts = lines.map((_, i) => lines.slice(0, i).reduce((n, l) => n + Buffer.byteLength(l) + 1, 0));
    expect(entries.map((e) => e.offset)).toEqual([starts[1], starts[3], starts[5], starts[7]]);
    expect(await checkpointOffset(dir)).toBe((await stat(file)).size);

    // The next start reads nothing again: the checkpoint is past the deep lines.
    const again = await runCli(['run', '-c', config, '--once'], { cwd: dir, timeoutMs: 60_000 });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/done: 0 records in/);
    expect(await deadLetters(dir)).toHaveLength(4);
  }, 120_000);
});

describe('max_depth', () => {
  it('is a source option: a line one level deeper than it is a dead letter, one at it ships', async () => {
    const dir = await scratch(cleanup);
    await mkdir(join(dir, 'logs'));
    // makeJob nests 5 levels itself (report.workato.job_context, lines[].input).
    await writeFile(join(dir, 'logs', 'jobs.ndjson'), [deepJob(9_200_001, 7), deepJob(9_200_002, 8), JSON.stringify(makeJob(9_200_003))].join('\n') + '\n');
    const config = await writePipeline(dir, pipelineYaml(dir, false, '    max_depth: 8\n'));
    const result = await runCli(['run', '-c', config, '--once'], { cwd: dir });
    expect(result.code, result.stderr).toBe(65);
    expect(existsSync(join(dir, 'out', jobKey(9_200_001)))).toBe(true);
    expect(existsSync(join(dir, 'out', jobKey(9_200_003)))).toBe(true);
    const entries = await deadLetters(dir);
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ code: 'LF_RECORD_TOO_DEEP', reason: expect.stringContaining('max_depth (8): depth 9') });

    await writeFile(config, pipelineYaml(dir, false, '    max_depth: 1001\n'));
    const invalid = await runCli(['validate', '-c', config], { cwd: dir });
    expect(invalid.code).toBe(78);
    expect(invalid.stderr).toContain('max_depth');
  }, 60_000);
});
