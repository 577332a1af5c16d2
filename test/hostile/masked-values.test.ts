import { createHash } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { DeadLetterEntry } from '../../src/engine/dead-letters.js';
import { startReceiver, type Receiver } from '../../src/testkit/index.js';
import { makeJob, readTree, removeAll, runCli, scratch, writePipeline } from '../helpers/cli.js';

/**
 * Finding 5: values of steps marked mask_data must reach no dead letter, no sink and no log,
 * whatever shape the line has: cut mid-write, a stray quote, one byte that is not UTF-8, a
 * mask_data key given twice, escaped, or on a step nested deeper in `lines`; and whichever
 * component dead-letters the record (path_format before redact, a sink that answers 400).
 */

const cleanup: string[] = [];
const servers: Receiver[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
  await removeAll(cleanup);
});

/** Every value that must never be seen outside the input file. */
const PASSWORD = 'PW-hunter2-masked-7f3a9c';
const OUTPUT_SECRET = 'OUT-ssn-masked-123-45-6789';
const API_KEY = 'APIKEY-redacted-field-91b2';
const EMAIL = 'leaky.person@example.org';
const SECRETS = [PASSWORD, OUTPUT_SECRET, API_KEY, EMAIL];

/** The id of the job the http receiver refuses with 400 (echoing what it got). */
const REFUSED_ID = 8_100_050;

const maskedStep = { recipe_line_number: 1, adapter_name: 'http', input: { password: PASSWORD }, output: { ssn: OUTPUT_SECRET }, error: null, mask_data: true };
const plainStep = { recipe_line_number: 2, adapter_name: 'logger', input: { api_key: API_KEY, note: `mail ${EMAIL}` }, output: { ok: 1 }, error: null, mask_data: false };

/** Pads a line past the pool threshold (1 KiB) with a field nothing looks at. */
function job(id: number, extra: Record<string, unknown> = {}, lines: unknown[] = [maskedStep, plainStep]): Record<string, unknown> {
  return makeJob(id, { lines, filler: 'f'.repeat(1200), ...extra });
}

function lines(): Buffer[] {
  const out: (string | Buffer)[] = [];
  // 1. A good job with a masked step: shipped masked.
  out.push(JSON.stringify(job(8_100_001)));
  // 2. A stray quote after the password: not JSON.
  out.push(JSON.stringify(job(8_100_002)).replace(`${PASSWORD}"`, `${PASSWORD}""`));
  // 3. One 0xFF byte in an unrelated field: not UTF-8.
  const bad = Buffer.from(JSON.stringify(job(8_100_003, { title: 'title-XX' })));
  bad[bad.indexOf('title-XX') + 6] = 0xff;
  out.push(bad);
  // 4. mask_data true, then false in the same step: JSON.parse keeps the last; the step is still masked.
  out.push(JSON.stringify(job(8_100_004)).replace('"mask_data":true}', '"mask_data":true,"mask_data":false}'));
  // 5. The key escaped: "mask\u005fdata".
  out.push(JSON.stringify(job(8_100_005)).replace('"mask_data":true', '"mask\\u005fdata":true'));
  // 6. Steps nested deeper in lines: inside another step, and inside an array in lines.
  out.push(JSON.stringify(job(8_100_006, {}, [{ recipe_line_number: 0, mask_data: false, input: {}, steps: [maskedStep] }, [maskedStep], plainStep])));
  // 7. Duplicate keys again, false first then true, with the step nested.
  out.push(JSON.stringify(job(8_100_007, {}, [{ steps: [{ ...maskedStep, mask_data: false }] }])).replace('"mask_data":false}', '"mask_data":false,"mask_data":true}'));
  // 8. path_format (before redact here) dead-letters it: started_at is not a date.
  out.push(JSON.stringify(job(8_100_008, { started_at: 'not a date' })));
  // 9. The same, with mask_data true then false.
  out.push(JSON.stringify(job(8_100_009, { started_at: 'not a date' })).replace('"error":null,"mask_data":true', '"mask_data":true,"error":null,"mask_data":false'));
  // 10. The sink refuses it for good (400, echoing the body it got).
  out.push(JSON.stringify(job(REFUSED_ID)));
  // 11. Not an object.
  out.push(JSON.stringify([job(8_100_011)]));
  // 12. The last line, cut mid-write (no newline: --once flushes it as a line).
  const torn = JSON.stringify(job(8_100_012));
  out.push(torn.slice(0, torn.indexOf(PASSWORD) + PASSWORD.length + 3));
  const body = out.map((l) => (typeof l === 'string' ? Buffer.from(l) : l));
  return body.map((l, i) => (i === body.length - 1 ? l : Buffer.concat([l, Buffer.from('\n')])));
}

function pipeline(dir: string, receiverUrl: string, pool: boolean, keepText = false): string {
  return `data_dir: ${JSON.stringify(join(dir, 'data'))}
checkpoint_interval_ms: 100
status_interval_ms: 60000
${pool ? 'pool: { threads: 1, threshold_bytes: 1024 }' : 'pool: { threads: 0 }'}
${keepText ? 'dead_letter: { keep_text: true }' : ''}
sources:
  jobs:
    type: job_log_tail
    include: [${JSON.stringify(join(dir, 'logs', '*.ndjson'))}]
    poll_interval_ms: 20
transforms:
  keyed:
    type: path_format
    inputs: [jobs]
  redacted:
    type: redact
    inputs: [keyed]
    fields: ["lines.*.input.api_key"]
    patterns: [email]
sinks:
  archive:
    type: file
    inputs: [redacted]
    path: ${JSON.stringify(join(dir, 'out'))}
  collector:
    type: http
    inputs: [redacted]
    uri: ${JSON.stringify(receiverUrl + '/ingest')}
    encoding: json
    request: { concurrency: 2, timeout_ms: 5000 }
    retry: { initial_backoff_ms: 10, max_backoff_ms: 100, max_duration_s: 30 }
`;
}

async function echoingReceiver(): Promise<Receiver> {
  const receiver = await startReceiver({
    respond: (request) => (request.body.includes(String(REFUSED_ID)) ? { status: 400, body: `refused: ${request.body.toString('utf8')}` } : { status: 200 }),
  });
  servers.push(receiver);
  return receiver;
}

function expectNoSecret(where: string, text: string): void {
  for (const secret of SECRETS) expect(text.includes(secret), `${secret} in ${where}`).toBe(false);
}

describe('masked values never leave the input file', () => {
  for (const pool of [false, true]) {
    it(`in no dead letter, sink output or log line (pool ${pool ? 'on' : 'off'})`, async () => {
      const dir = await scratch(cleanup);
      await mkdir(join(dir, 'logs'));
      const input = join(dir, 'logs', 'jobs.ndjson');
      const body = lines();
      await writeFile(input, Buffer.concat(body));
      const receiver = await echoingReceiver();
      const config = await writePipeline(dir, pipeline(dir, receiver.url, pool));

      for (const format of ['text', 'json']) {
        await rm(join(dir, 'data'), { recursive: true, force: true });
        const result = await runCli(['run', '-c', config, '--once', '--log-format', format, '--log-level', 'debug'], { cwd: dir });
        expect(result.code, result.stderr).toBe(65);
        expectNoSecret(`stdout/stderr (${format})`, result.stdout + result.stderr);
      }

      // Shipped: jobs 1, 4, 5, 6, 7 and the one the receiver refuses (the file sink takes it).
      const out = await readTree(join(dir, 'out'));
      expect(out.size).toBe(6);
      for (const [path, content] of out) expectNoSecret(`out/${path}`, content.toString('utf8'));
      for (const [path, content] of out) expect(content.toString('utf8'), path).toContain('<redacted>');
      expect(receiver.requests.length).toBeGreaterThanOrEqual(6);
      for (const request of receiver.requests) expectNoSecret(`request ${request.url}`, request.body.toString('utf8'));

      // Everything under data_dir (dead letters, checkpoints).
      const data = await readTree(join(dir, 'data'));
      expect(data.size).toBeGreaterThan(0);
      for (const [path, content] of data) expectNoSecret(`data/${path}`, content.toString('utf8'));

      const listed = await runCli(['dead-letter', 'list', '-c', config, '--json'], { cwd: dir });
      expect(listed.code).toBe(0);
      expectNoSecret('dead-letter list', listed.stdout);
      const entries = listed.stdout.trim().split('\n').map((l) => JSON.parse(l) as DeadLetterEntry);
      const byOffset = new Map(entries.map((e) => [e.offset, e]));
      let offset = 0;
      const offsets = body.map((l) => {
        const at = offset;
        offset += l.length;
        return at;
      });
      const expectReference = (index: number, code: string): void => {
        const entry = byOffset.get(offsets[index]);
        expect(entry?.code, `line ${index + 1}`).toBe(code);
        const line = body[index]!.subarray(0, index === body.length - 1 ? undefined : -1);
        expect(entry).toMatchObject({ file: input, length: line.length, sha256: createHash('sha256').update(line).digest('hex') });
        expect(entry?.text).toBeUndefined();
        expect(entry?.raw_base64).toBeUndefined();
      };
      expectReference(1, 'LF_RECORD_BAD_JSON');
      expectReference(2, 'LF_RECORD_BAD_UTF8');
      expectReference(10, 'LF_RECORD_NOT_OBJECT');
      expectReference(11, 'LF_RECORD_BAD_JSON');
      expect(byOffset.get(offsets[1])?.reason).toMatch(/at position \d+/);
      expect(byOffset.get(offsets[11])?.reason).toMatch(/cut short/);
      // Parsed records dead-lettered by path_format (before redact) and by the sink: masked, redacted.
      for (const index of [7, 8, 9]) {
        const entry = byOffset.get(offsets[index]);
        expect(entry?.code, `line ${index + 1}`).toBe(index === 9 ? 'LF_SINK_REJECTED' : 'LF_RECORD_BAD_TIME');
        expect(entry?.text).toContain('<redacted>');
      }
      expect(entries).toHaveLength(7);

      // show reads a line kept by reference back from the file, with a warning.
      const shown = await runCli(['dead-letter', 'show', '-c', config, String(entries.findIndex((e) => e.offset === offsets[1]) + 1)], { cwd: dir });
      expect(shown.code, shown.stderr).toBe(0);
      expect(shown.stdout).toContain('LF_RECORD_BAD_JSON');
      expect(shown.stdout).toContain('it may hold values of steps marked mask_data');
      expect(shown.stdout).toContain(body[1]!.subarray(0, -1).toString('utf8'));
    }, 180_000);
  }

  it('show says when the file changed or is gone; keep_text keeps the text', async () => {
    const dir = await scratch(cleanup);
    await mkdir(join(dir, 'logs'));
    const input = join(dir, 'logs', 'jobs.ndjson');
    const torn = JSON.stringify(job(8_200_001)).slice(0, 200);
    await writeFile(input, `{"stray": "quote"" }\n${torn}`);
    const receiver = await echoingReceiver();
    const config = await writePipeline(dir, pipeline(dir, receiver.url, false));
    expect((await runCli(['run', '-c', config, '--once'], { cwd: dir })).code).toBe(65);

    const all = await runCli(['dead-letter', 'show', '-c', config, '--all'], { cwd: dir });
    expect(all.code, all.stderr).toBe(0);
    expect(all.stdout).toContain('dead letter 1 of 2');
    expect(all.stdout).toContain('dead letter 2 of 2');
    expect(all.stdout).toContain('{"stray": "quote"" }');
    const list = await runCli(['dead-letter', 'list', '-c', config], { cwd: dir });
    expect(list.stdout).toMatch(/#1 .*jobs\.ndjson@0\+20 \[jobs\] line is not valid JSON/);

    await writeFile(input, `{"other": "content!"}\n${torn}`);
    const changed = await runCli(['dead-letter', 'show', '-c', config, '1'], { cwd: dir });
    expect(changed.stdout).toContain('no longer have the recorded SHA-256');
    expect(changed.stdout).not.toContain('"other"');
    await rm(input);
    const gone = await runCli(['dead-letter', 'show', '-c', config], { cwd: dir });
    expect(gone.stdout).toContain('dead letter 2 of 2');
    expect(gone.stdout).toContain('is gone');
    const outOfRange = await runCli(['dead-letter', 'show', '-c', config, '3'], { cwd: dir });
    expect(outOfRange.code).toBe(2);
    expect(outOfRange.stderr).toContain('there are 2');

    // With keep_text the text is kept (the documented risk).
    await writeFile(input, `{"stray": "quote"" }\n`);
    const keeping = await writePipeline(dir, pipeline(dir, receiver.url, false, true).replace(join(dir, 'data'), join(dir, 'data2')));
    expect((await runCli(['run', '-c', keeping, '--once'], { cwd: dir })).code).toBe(65);
    const kept = await runCli(['dead-letter', 'list', '-c', keeping, '--json'], { cwd: dir });
    expect((JSON.parse(kept.stdout.trim()) as DeadLetterEntry).text).toBe('{"stray": "quote"" }');
  }, 180_000);
});
