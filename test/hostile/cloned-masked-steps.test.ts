import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FIXTURES, makeJob, readTree, removeAll, runCli, scratch, writePipeline } from '../helpers/cli.js';

/**
 * A plugin transform before redact that deep-clones each document (a JSON round trip or
 * structuredClone) must not make redact forget that a line's masked steps are nested: the
 * decision is carried by the record, not only by a mark on the document the clone drops.
 */

const cleanup: string[] = [];
afterEach(() => removeAll(cleanup));

const SECRET_IN = 'SECRET-in-nested-4b7e1f';
const SECRET_OUT = 'SECRET-out-nested-9c2d0a';
const maskedStep = { recipe_line_number: 1, input: { password: SECRET_IN }, output: { token: SECRET_OUT }, mask_data: true };

function input(): string {
  // Padded past the pool threshold (1 KiB), so that with the pool on the worker parses and redacts.
  const job = (id: number, lines: unknown[]): string => JSON.stringify(makeJob(id, { lines, filler: 'f'.repeat(1200) }));
  return (
    [
      // A masked step inside an array in lines, and inside another step.
      job(8_300_001, [[maskedStep]]),
      job(8_300_002, [{ recipe_line_number: 0, mask_data: false, sub: maskedStep }]),
      // mask_data false then true in a nested step: a key given twice.
      job(8_300_003, [{ steps: [{ ...maskedStep, mask_data: false }] }]).replace('"mask_data":false}', '"mask_data":false,"mask_data":true}'),
      // The common shape, for comparison.
      job(8_300_004, [maskedStep]),
    ].join('\n') + '\n'
  );
}

function pipeline(dir: string, how: 'json' | 'structured', pool: boolean): string {
  return `data_dir: ${JSON.stringify(join(dir, 'data'))}
plugins: [${JSON.stringify(join(FIXTURES, 'plugins', 'cloning'))}]
checkpoint_interval_ms: 100
status_interval_ms: 60000
${pool ? 'pool: { threads: 1, threshold_bytes: 1024 }' : 'pool: { threads: 0 }'}
sources:
  jobs:
    type: job_log_tail
    include: [${JSON.stringify(join(dir, 'logs', '*.ndjson'))}]
    poll_interval_ms: 20
transforms:
  keyed:
    type: path_format
    inputs: [jobs]
  cloned:
    type: deep_clone
    inputs: [keyed]
    how: ${how}
  redacted:
    type: redact
    inputs: [cloned]
sinks:
  archive:
    type: file
    inputs: [redacted]
    path: ${JSON.stringify(join(dir, 'out'))}
`;
}

describe('nested masked steps after a plugin deep-cloned the document', () => {
  for (const how of ['json', 'structured'] as const) {
    for (const pool of [false, true]) {
      it(`ship masked (clone: ${how}, pool ${pool ? 'on' : 'off'})`, async () => {
        const dir = await scratch(cleanup);
        await mkdir(join(dir, 'logs'));
        await writeFile(join(dir, 'logs', 'jobs.ndjson'), input());
        const config = await writePipeline(dir, pipeline(dir, how, pool));
        const result = await runCli(['run', '-c', config, '--once', '--log-level', 'debug'], { cwd: dir });
        expect(result.code, result.stderr).toBe(0);
        expect(result.stdout + result.stderr).not.toMatch(/SECRET-/);

        const out = await readTree(join(dir, 'out'));
        const shipped = [...out.values()].map((content) => content.toString('utf8')).join('');
        // Every job shipped, each with its masked step replaced.
        for (const id of [8_300_001, 8_300_002, 8_300_003, 8_300_004]) expect(shipped).toContain(`"id":${id}`);
        expect(shipped.match(/<redacted>/g)).toHaveLength(8);
        expect(shipped).not.toContain(SECRET_IN);
        expect(shipped).not.toContain(SECRET_OUT);
        const data = await readTree(join(dir, 'data'));
        for (const [path, content] of data) expect(content.toString('utf8'), path).not.toMatch(/SECRET-/);
      }, 120_000);
    }
  }
});
