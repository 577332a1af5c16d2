import { appendFile, mkdir, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { jobKey, makeJob, removeAll, runCli, scratch, standardPipeline, startCli, writePipeline } from '../helpers/cli.js';

const cleanup: string[] = [];
afterEach(() => removeAll(cleanup));

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitFor(condition: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(50);
  }
}

describe('kill -9 while lines are appended', () => {
  it.each([
    ['pool off', '{ threads: 0 }'],
    // Every third job is over the threshold, so records are in the workers when the kill comes.
    ['pool on', '{ threads: 2, threshold_bytes: 2048 }'],
  ])('loses no job across repeated SIGKILL and restart (%s)', async (_name, pool) => {
    const dir = await scratch(cleanup);
    const logs = join(dir, 'logs');
    const out = join(dir, 'out');
    await mkdir(logs);
    const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include: join(logs, '*.ndjson'), out, top: `pool: ${pool}` }));
    const total = 4000;
    let written = 0;
    /** Jobs the writer may have written so far: a share more with every run, so the input outlasts several kills however slow start-up is. */
    let allowance = 0;
    // The writer appends in uneven chunks that often end mid-line, like a real producer.
    const writer = (async () => {
      let pendingTail = '';
      while (written < total) {
        while (written >= allowance) await sleep(20);
        const n = Math.min(total - written, 20 + Math.floor(Math.random() * 60));
        let text = pendingTail;
        for (let i = 0; i < n; i++) {
          const id = 1_000_000 + written + i;
          text += JSON.stringify(makeJob(id, id % 3 === 0 ? { title: 'large '.repeat(600) } : {})) + '\n';
        }
        written += n;
        const cut = written < total ? Math.floor(Math.random() * 200) : 0;
        pendingTail = cut > 0 ? text.slice(text.length - cut) : '';
        await appendFile(join(logs, 'jobs.ndjson'), cut > 0 ? text.slice(0, text.length - cut) : text);
        await sleep(40);
      }
    })();

    const kills = 6;
    let killsWhileWriting = 0;
    const checkpoint = join(dir, 'data', 'checkpoints', 'jobs.json');
    for (let k = 0; k < kills; k++) {
      const before = await readFile(checkpoint, 'utf8').catch(() => '');
      const running = startCli(['run', '-c', config], { cwd: dir });
      allowance = Math.min(total, (k + 1) * (total / 4));
      // Kill only once this run has moved the checkpoint (start-up takes 1-2 s on a busy machine),
      // then at a random moment while it ships, so every kill lands mid-work.
      await waitFor(
        async () =>
          (await readFile(checkpoint, 'utf8').catch(() => '')) !== before ||
          (written >= total && running.stderr().includes('running;')) ||
          running.child.exitCode !== null,
        60_000,
      );
      await sleep(Math.floor(Math.random() * 400));
      if (written < total) killsWhileWriting++;
      running.child.kill('SIGKILL');
      const result = await running.exited;
      expect(result.signal).toBe('SIGKILL');
    }
    allowance = total;
    await writer;
    expect(killsWhileWriting).toBeGreaterThanOrEqual(2);

    const final = await runCli(['run', '-c', config, '--once'], { cwd: dir });
    expect(final.stderr).not.toContain('unexpected error');
    expect(final.code).toBe(0);
    const missing: number[] = [];
    for (let i = 0; i < total; i++) {
      if (!existsSync(join(out, jobKey(1_000_000 + i)))) missing.push(1_000_000 + i);
    }
    expect(missing).toEqual([]);
    // The last run resumed from a checkpoint: it re-read at most the unacknowledged window.
    const resumed = /(\d+) records? in/.exec(final.stderr);
    expect(resumed).not.toBeNull();
    expect(Number(resumed![1])).toBeLessThan(total);
    const doc = JSON.parse(await readFile(join(out, jobKey(1_000_000)), 'utf8')) as { id: number };
    expect(doc.id).toBe(1_000_000);
  }, 120_000);
});
