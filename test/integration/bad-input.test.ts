import { mkdir, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { jobKey, makeJob, removeAll, runCli, scratch, standardPipeline, writePipeline } from '../helpers/cli.js';
import type { DeadLetterEntry } from '../../src/engine/dead-letters.js';

const cleanup: string[] = [];
afterEach(() => removeAll(cleanup));

describe('bad input', () => {
  it('sends each bad line to the dead letters with a clear reason and ships the good lines around it', async () => {
    const dir = await scratch(cleanup);
    const logs = join(dir, 'logs');
    const out = join(dir, 'out');
    await mkdir(logs);
    const good = (id: number): string => JSON.stringify(makeJob(id));
    const noUser = makeJob(7_000_099);
    delete noUser.report;
    const secretJob = makeJob(7_000_098, {
      id: '../../x',
      lines: [{ recipe_line_number: 0, mask_data: true, input: { password: 'DEAD-LETTER-SECRET' }, output: { v: 'OUT-SECRET-42' } }],
    });
    const lines: (string | Buffer)[] = [
      good(7_000_001),
      '{"id": 1, "flow_id": ',
      good(7_000_002),
      '[1, 2, 3]',
      good(7_000_003),
      '"just a string"',
      good(7_000_004),
      JSON.stringify(makeJob(7_000_097, { title: 'x'.repeat(5000) })),
      good(7_000_005),
      Buffer.from([0x7b, 0x22, 0x65, 0x76, 0x65, 0x6e, 0x74, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]),
      good(7_000_006),
      JSON.stringify(secretJob),
      good(7_000_007),
      JSON.stringify(noUser),
      '',
      '   ',
      good(7_000_008) + '\r',
    ];
    const body = Buffer.concat(lines.map((l) => Buffer.concat([typeof l === 'string' ? Buffer.from(l) : l, Buffer.from('\n')])));
    await writeFile(join(logs, 'jobs.ndjson'), body);
    const yaml = standardPipeline({ dataDir: join(dir, 'data'), include: join(logs, '*.ndjson'), out, userId: null }).replace(
      'rotate_wait_ms: 300',
      'rotate_wait_ms: 300\n    max_line_bytes: 4096',
    );
    const config = await writePipeline(dir, yaml);
    const result = await runCli(['run', '-c', config, '--once'], { cwd: dir });
    expect(result.code).toBe(65);
    for (let id = 7_000_001; id <= 7_000_008; id++) expect(existsSync(join(out, jobKey(id))), `job ${id}`).toBe(true);

    const listed = await runCli(['dead-letter', 'list', '-c', config, '--json'], { cwd: dir });
    expect(listed.code).toBe(0);
    const entries = listed.stdout.trim().split('\n').map((l) => JSON.parse(l) as DeadLetterEntry);
    const byCode = new Map<string, DeadLetterEntry[]>();
    for (const e of entries) byCode.set(e.code, [...(byCode.get(e.code) ?? []), e]);
    // Lines that are not records are named by position, length and hash; their text is not kept.
    expect(byCode.get('LF_RECORD_BAD_JSON')?.[0]).toMatchObject({ length: 21, reason: expect.stringContaining('at position 21') });
    expect(byCode.get('LF_RECORD_BAD_JSON')?.[0]?.text).toBeUndefined();
    expect(byCode.get('LF_RECORD_NOT_OBJECT')?.map((e) => e.reason)).toEqual([
      expect.stringContaining('an array'),
      expect.stringContaining('a string'),
    ]);
    expect(byCode.get('LF_RECORD_TOO_LONG')?.[0]?.reason).toContain('max_line_bytes');
    expect(byCode.get('LF_RECORD_BAD_UTF8')?.[0]).toMatchObject({ length: 14, sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(byCode.get('LF_RECORD_BAD_UTF8')?.[0]?.raw_base64).toBeUndefined();
    const unsafe = byCode.get('LF_RECORD_INVALID')?.[0];
    expect(unsafe?.reason).toContain('`id` must be a non-negative integer');
    expect(byCode.get('LF_RECORD_NO_USER_ID')?.[0]?.reason).toContain('user_id');
    expect(entries).toHaveLength(7);
    for (const e of entries) {
      expect(e.file).toBe(join(logs, 'jobs.ndjson'));
      expect(typeof e.offset).toBe('number');
    }
    // mask_data applies to dead letters too.
    expect(listed.stdout).not.toContain('DEAD-LETTER-SECRET');
    expect(listed.stdout).not.toContain('OUT-SECRET-42');
    expect(result.stderr).toMatch(/7 dead letters/);

    const grouped = await runCli(['dead-letter', 'list', '-c', config], { cwd: dir });
    expect(grouped.stdout).toContain('7 dead letters');
    expect(grouped.stdout).toMatch(/LF_RECORD_NOT_OBJECT \(2\)/);
  });

  it('writes nothing outside the sink folder for hostile activity events', async () => {
    const dir = await scratch(cleanup);
    const logs = join(dir, 'logs');
    const out = join(dir, 'out');
    await mkdir(logs);
    const event = (name: string, teamId: unknown): string =>
      JSON.stringify({ event: name, team: { id: teamId }, timestamp: '2019-09-13 17:24:16 UTC' });
    await writeFile(
      join(logs, 'a.ndjson'),
      [event('../../../escape', 1), event('user_login', '../..'), event('user login', 1), event('user_login', 4848)].join('\n') + '\n',
    );
    const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include: join(logs, '*.ndjson'), out }));
    const result = await runCli(['run', '-c', config, '--once'], { cwd: dir });
    expect(result.code).toBe(65);
    expect(result.stderr).toMatch(/3 dead letters/);
    expect(existsSync(join(dir, 'escape'))).toBe(false);
    const listed = await runCli(['dead-letter', 'list', '-c', config, '--json'], { cwd: dir });
    const codes = listed.stdout.trim().split('\n').map((l) => (JSON.parse(l) as DeadLetterEntry).code);
    expect(codes).toEqual(['LF_RECORD_UNSAFE_KEY', 'LF_RECORD_UNSAFE_KEY', 'LF_RECORD_UNSAFE_KEY']);
  });
});
