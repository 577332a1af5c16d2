import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { DeadLetterEntry } from '../../src/engine/dead-letters.js';
import { poolPipeline, readTree, removeAll, runCli, scratch, writePipeline } from '../helpers/cli.js';

/**
 * Finding 4 of issue 9: two activity events identical except `resource.id` 9007199254740993 vs
 * 9007199254740992 got one key, and one overwrote the other. Keys and digests now come from the
 * numbers as written, through the CLI, inline and on the pool.
 */

const cleanup: string[] = [];
afterEach(() => removeAll(cleanup));

const KEYED = `  keyed:
    type: path_format
    inputs: [jobs]
    user_id: 5234
`;

function pipelineYaml(dir: string, pool: boolean): string {
  return poolPipeline({ dir, pool, transforms: KEYED, last: 'keyed' });
}

describe.each([
  ['inline', false],
  ['on the pool', true],
])('numbers as written (%s)', (_name, pool) => {
  it('gives events and jobs that differ only beyond 2^53 their own keys; odd numbers in key parts are dead letters, never a collision', async () => {
    const dir = await scratch(cleanup);
    await mkdir(join(dir, 'logs'));
    // Above threshold_bytes on the pool run, so the worker makes the keys.
    const pad = pool ? 'p'.repeat(1200) : '';
    const event = (resourceId: string, teamId = '4848'): string =>
      `{"event":"recipe_started","team":{"id":${teamId}},"resource":{"id":${resourceId}},"timestamp":"2019-09-13 17:24:16 UTC","pad":"${pad}"}`;
    const job = (id: string, extra = ''): string =>
      `{"id":${id},"flow_id":1002398,"status":"succeeded","started_at":"2019-09-13T12:22:18-07:00","title":"${pad}"${extra}}`;
    const lines = [
      event('9007199254740993'),
      event('9007199254740992'),
      event('1', '1E2'),
      event('1', '100'),
      job('9007199254740993'),
      job('9007199254740992'),
      job('1e400'),
      job('1.0'),
      job('-0'),
      job('1E2'),
      job('100'),
      job('7', ',"started_at":"9999-12-31T23:30:00-05:00"'),
    ];
    await writeFile(join(dir, 'logs', 'n.ndjson'), lines.join('\n') + '\n');
    const config = await writePipeline(dir, pipelineYaml(dir, pool));
    const result = await runCli(['run', '-c', config, '--once'], { cwd: dir });
    expect(result.code, result.stderr).toBe(65);

    const keys = [...(await readTree(join(dir, 'out'))).keys()].sort();
    const activity = keys.filter((k) => k.includes('/activity/'));
    expect(activity).toHaveLength(4);
    expect(activity.filter((k) => k.startsWith('4848/'))).toHaveLength(2);
    expect(activity.filter((k) => k.startsWith('1E2/'))).toHaveLength(1);
    expect(activity.filter((k) => k.startsWith('100/'))).toHaveLength(1);
    expect(keys.filter((k) => k.includes('/jobs/'))).toEqual([
      '5234/jobs/1002398/20190913/000/000/000/000/000/000/100/5234-1002398-100-20190913192218-succeeded.json',
      '5234/jobs/1002398/20190913/000/009/007/199/254/740/992/5234-1002398-9007199254740992-20190913192218-succeeded.json',
      '5234/jobs/1002398/20190913/000/009/007/199/254/740/993/5234-1002398-9007199254740993-20190913192218-succeeded.json',
    ]);
    const entries = (await readFile(join(dir, 'data', 'dead_letter', 'dead-letters.ndjson'), 'utf8'))
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as DeadLetterEntry);
    expect(entries.map((e) => [e.code, /got number (\S+)|outside the years/.exec(e.reason)?.[0]])).toEqual([
      ['LF_RECORD_INVALID', 'got number 1e400'],
      ['LF_RECORD_INVALID', 'got number 1.0'],
      ['LF_RECORD_INVALID', 'got number -0'],
      ['LF_RECORD_INVALID', 'got number 1E2'],
      ['LF_RECORD_BAD_TIME', 'outside the years'],
    ]);
  }, 60_000);

  it('hashes numbers as written with redact replacement: hash (two ids one double cannot tell apart, 1e400 and null)', async () => {
    const dir = await scratch(cleanup);
    await mkdir(join(dir, 'logs'));
    const pad = pool ? 'p'.repeat(1200) : '';
    const event = (resourceId: string, n: number): string =>
      `{"event":"recipe_started","team":{"id":${n}},"resource":{"id":${resourceId}},"timestamp":"2019-09-13 17:24:16 UTC","pad":"${pad}"}`;
    const ids = ['9007199254740993', '9007199254740992', '1e400', 'null'];
    await writeFile(join(dir, 'logs', 'n.ndjson'), ids.map((id, n) => event(id, n + 1)).join('\n') + '\n');
    const yaml = pipelineYaml(dir, pool).replace(
      'transforms:\n  keyed:\n    type: path_format\n    inputs: [jobs]',
      'transforms:\n  hashed:\n    type: redact\n    replacement: hash\n    fields: [resource.id]\n    inputs: [jobs]\n  keyed:\n    type: path_format\n    inputs: [hashed]',
    );
    const config = await writePipeline(dir, yaml);
    const result = await runCli(['run', '-c', config, '--once'], { cwd: dir, env: { LOGFERRY_HASH_KEY: 'a-secret-of-at-least-16-characters' } });
    expect(result.code, result.stderr).toBe(0);
    const tree = await readTree(join(dir, 'out'));
    const hashes = new Map<number, string>();
    for (const [key, body] of tree) hashes.set(Number(key.split('/')[0]), (JSON.parse(body.toString('utf8')) as { resource: { id: string } }).resource.id);
    expect([...hashes.keys()].sort()).toEqual([1, 2, 3, 4]);
    for (const hash of hashes.values()) expect(hash).toMatch(/^hmac-sha256:[0-9a-f]{32}$/);
    expect(new Set(hashes.values()).size).toBe(4);
  }, 60_000);
});
