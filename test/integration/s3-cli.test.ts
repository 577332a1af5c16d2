import { appendFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CreateBucketCommand, HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterEach, describe, expect, it } from 'vitest';
import { readDeadLetters } from '../../src/engine/dead-letters.js';
import { faultPlans, startFaultProxy } from '../../src/testkit/index.js';
import { jobKey, makeJob, removeAll, runCli, scratch, standardPipeline, startCli, writePipeline } from '../helpers/cli.js';
import { S3RVER_ENV, startS3 } from '../helpers/s3.js';

const cleanup: string[] = [];
const servers: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
  await removeAll(cleanup);
});

const env = S3RVER_ENV;
const FIRST = 4_000_000;

function s3SinkYaml(endpoint: string, bucket: string): string {
  return `  archive:
    type: s3
    inputs: [keyed]
    bucket: ${bucket}
    endpoint: ${JSON.stringify(endpoint)}
    force_path_style: true
    prefix: "ferry/"
    concurrency: 16
    request_timeout_ms: 1000
    retry: { initial_backoff_ms: 10, max_backoff_ms: 200, max_duration_s: 60 }
`;
}

/**
 * Which of the keys exist, by HEAD requests: s3rver's listing answers 500 InternalError when a
 * PUT it was receiving died with the killed process, so listing cannot be trusted here.
 */
async function existingKeys(client: S3Client, bucket: string, keys: string[]): Promise<Set<string>> {
  const found = new Set<string>();
  for (let i = 0; i < keys.length; i += 32) {
    await Promise.all(
      keys.slice(i, i + 32).map(async (key) => {
        const ok = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key })).then(
          () => true,
          () => false,
        );
        if (ok) found.add(key);
      }),
    );
  }
  return found;
}

describe('s3 sink, end to end through the CLI', () => {
  it('loses no job across repeated SIGKILL while shipping to S3 through throttling', async () => {
    const dir = await scratch(cleanup);
    const s3 = await startS3(['jobs']);
    servers.push({ close: () => s3.stop() });
    const proxy = await startFaultProxy({ upstream: s3.endpoint, plan: faultPlans.mixed({ unavailable: 0.2, drop: 0.02, slow: 0, slowMs: 0, seed: 11 }) });
    servers.push(proxy);
    const logs = join(dir, 'logs');
    await mkdir(logs);
    const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include: join(logs, '*.ndjson'), out: '', sinks: s3SinkYaml(proxy.url, 'jobs') }));
    const total = 1500;
    let written = 0;
    const writer = (async () => {
      while (written < total) {
        let text = '';
        for (let i = 0; i < 50; i++) text += JSON.stringify(makeJob(FIRST + written + i)) + '\n';
        written += 50;
        await appendFile(join(logs, 'jobs.ndjson'), text);
        await new Promise((r) => setTimeout(r, 60));
      }
    })();
    for (let k = 0; k < 4; k++) {
      const running = startCli(['run', '-c', config], { cwd: dir, env });
      await new Promise((r) => setTimeout(r, 500 + Math.floor(Math.random() * 500)));
      running.child.kill('SIGKILL');
      expect((await running.exited).signal).toBe('SIGKILL');
    }
    await writer;
    const final = await runCli(['run', '-c', config, '--once'], { cwd: dir, env });
    expect(final.code, final.stderr).toBe(0);
    const expected = Array.from({ length: total }, (_, i) => `ferry/${jobKey(FIRST + i)}`);
    const found = await existingKeys(s3.client, 'jobs', expected);
    expect(expected.filter((key) => !found.has(key))).toEqual([]);
  });

  it('holds the records when the bucket does not exist, saying what to check; --once gives up with 75 and the next run ships them', async () => {
    const dir = await scratch(cleanup);
    const s3 = await startS3([]);
    servers.push({ close: () => s3.stop() });
    const logs = join(dir, 'logs');
    await mkdir(logs);
    let text = '';
    for (let i = 0; i < 5; i++) text += JSON.stringify(makeJob(FIRST + i)) + '\n';
    await appendFile(join(logs, 'jobs.ndjson'), text);
    const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include: join(logs, '*.ndjson'), out: '', sinks: s3SinkYaml(s3.endpoint, 'late-bucket') }));
    const result = await runCli(['run', '-c', config, '--once', '--max-wait', '1'], { cwd: dir, env });
    expect(result.code, result.stderr).toBe(75);
    expect(await readDeadLetters(join(dir, 'data'))).toEqual([]);
    expect(result.stderr).toMatch(/NoSuchBucket/);
    expect(result.stderr).toContain('bucket "late-bucket" does not exist');
    expect(result.stderr).toContain('LF_DESTINATION_HELD');

    await s3.client.send(new CreateBucketCommand({ Bucket: 'late-bucket' }));
    const second = await runCli(['run', '-c', config, '--once'], { cwd: dir, env });
    expect(second.code, second.stderr).toBe(0);
    const expected = Array.from({ length: 5 }, (_, i) => `ferry/${jobKey(FIRST + i)}`);
    const found = await existingKeys(s3.client, 'late-bucket', expected);
    expect(expected.filter((key) => !found.has(key))).toEqual([]);
  });
});
