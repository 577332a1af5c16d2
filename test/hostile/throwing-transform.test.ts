import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { DeadLetterEntry } from '../../src/engine/dead-letters.js';
import { FIXTURES, jobKey, makeJob, poolPipeline, removeAll, runCli, scratch, writePipeline } from '../helpers/cli.js';

/**
 * The rule behind finding 1 of issue 9: any exception while handling one record becomes that
 * record's dead letter; it never fails a source, the pool, the pipeline or the process. A test
 * plugin (test/fixtures/plugins/throwing) fails on chosen records in every way a plugin can.
 */

const cleanup: string[] = [];
afterEach(() => removeAll(cleanup));

/** How each chosen record must end: the component that dead-letters it, its code, a part of the reason. */
type Outcome = { component: string; code: string; reason: RegExp } | 'delivered';
const EXPECTED: Record<string, Outcome> = {
  sync: { component: 'failing', code: 'LF_TRANSFORM_FAILED', reason: /chosen sync failure/ },
  async: { component: 'failing', code: 'LF_TRANSFORM_FAILED', reason: /chosen async failure/ },
  string: { component: 'failing', code: 'LF_TRANSFORM_FAILED', reason: /chosen string failure/ },
  number: { component: 'failing', code: 'LF_TRANSFORM_FAILED', reason: /42/ },
  bare: { component: 'failing', code: 'LF_TRANSFORM_FAILED', reason: /transform failed: / },
  recursion: { component: 'failing', code: 'LF_TRANSFORM_FAILED', reason: /RangeError: Maximum call stack size exceeded/ },
  async_recursion: { component: 'failing', code: 'LF_TRANSFORM_FAILED', reason: /RangeError: Maximum call stack size exceeded/ },
  not_a_record: { component: 'failing', code: 'LF_TRANSFORM_FAILED', reason: /not a record/ },
  not_a_record_async: { component: 'failing', code: 'LF_TRANSFORM_FAILED', reason: /not a record/ },
  // undefined is not a drop (only null and [] are): the same dead letter inline and on the pool.
  undefined: { component: 'failing', code: 'LF_TRANSFORM_FAILED', reason: /not a record/ },
  deep_doc: { component: 'archive', code: 'LF_RECORD_UNPROCESSABLE', reason: /could not be serialized for this sink: RangeError/ },
  thenable: 'delivered',
};
/** A worker that dies under a record takes only that record: it is dead-lettered by file and offset. */
const CRASH_INLINE: Outcome = { component: 'failing', code: 'LF_TRANSFORM_FAILED', reason: /crash_worker ran on the main thread/ };
const CRASH_ON_POOL: Outcome = { component: 'jobs', code: 'LF_RECORD_UNPROCESSABLE', reason: /the pool worker handling this line died/ };

function pipelineYaml(dir: string, pool: boolean): string {
  const transforms = `  redacted:
    type: redact
    inputs: [jobs]
    patterns: [email]
  failing:
    type: throw_on
    inputs: [redacted]
  keyed:
    type: path_format
    inputs: [failing]
`;
  return poolPipeline({ dir, pool, transforms, last: 'keyed', plugins: [join(FIXTURES, 'plugins', 'throwing')], shutdownTimeout: '20s', pollIntervalMs: 20 });
}

describe.each([
  ['inline', false],
  ['on the pool', true],
])('a transform that throws on chosen records (%s)', (_name, pool) => {
  it('dead-letters exactly those records with the reason, delivers the rest, moves the checkpoint past all, exits 65 (its dead letters)', async () => {
    const dir = await scratch(cleanup);
    await mkdir(join(dir, 'logs'));
    // On the pool run every other line is above threshold_bytes, so both paths take failures.
    const padding = (i: number): string => (pool && i % 2 === 0 ? 'p'.repeat(1500) : 'small');
    const lines: string[] = [];
    const chosen = new Map<number, string>();
    const expectations: Record<string, Outcome> = { ...EXPECTED, crash_worker: pool ? CRASH_ON_POOL : CRASH_INLINE };
    let id = 9_300_000;
    for (let round = 0; round < 2; round++) {
      for (const how of Object.keys(expectations)) {
        lines.push(JSON.stringify(makeJob(++id, { title: padding(id) })));
        chosen.set(++id, how);
        lines.push(JSON.stringify(makeJob(id, { title: padding(id), fail: how })));
      }
    }
    lines.push(JSON.stringify(makeJob(++id)));
    const file = join(dir, 'logs', 'jobs.ndjson');
    await writeFile(file, lines.join('\n') + '\n');
    const config = await writePipeline(dir, pipelineYaml(dir, pool));

    const result = await runCli(['run', '-c', config, '--once'], { cwd: dir, timeoutMs: 90_000 });
    expect(result.code, result.stderr).toBe(65);
    expect(result.stderr).not.toMatch(/unhandled|LF_POOL_FAILED|LF_SINK_FAILED|(source|sink) \w+ failed|record pool failed/i);

    const entries = (await readFile(join(dir, 'data', 'dead_letter', 'dead-letters.ndjson'), 'utf8'))
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as DeadLetterEntry);
    const failing = [...chosen].filter(([, how]) => expectations[how] !== 'delivered');
    expect(entries).toHaveLength(failing.length);
    const byOffset = new Map(entries.map((e) => [e.offset, e]));
    const starts = lines.map((_, i) => lines.slice(0, i).reduce((n, l) => n + Buffer.byteLength(l) + 1, 0));
    for (let i = 0, n = 9_300_000; i < lines.length; i++) {
      const lineId = ++n;
      const how = chosen.get(lineId);
      const expected = how === undefined ? 'delivered' : expectations[how]!;
      if (expected === 'delivered') {
        expect(existsSync(join(dir, 'out', jobKey(lineId))), `job ${lineId} (${how ?? 'plain'})`).toBe(true);
        continue;
      }
      expect(existsSync(join(dir, 'out', jobKey(lineId))), `job ${lineId} (${how})`).toBe(false);
      const entry = byOffset.get(starts[i]);
      expect(entry, `dead letter of job ${lineId} (${how})`).toBeDefined();
      expect({ how, component: entry!.component, code: entry!.code }).toEqual({ how, component: expected.component, code: expected.code });
      expect(entry!.reason, how).toMatch(expected.reason);
    }
    const checkpoint = JSON.parse(await readFile(join(dir, 'data', 'checkpoints', 'jobs.json'), 'utf8')) as { files: { offset: number }[] };
    expect(checkpoint.files[0]?.offset).toBe((await stat(file)).size);

    const again = await runCli(['run', '-c', config, '--once'], { cwd: dir, timeoutMs: 60_000 });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/done: 0 records in/);
  }, 120_000);
});
