import { appendFile, mkdir, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { jobKey, makeJob, removeAll, runCli, scratch, standardPipeline, startCli, waitFor, writePipeline } from '../helpers/cli.js';

const cleanup: string[] = [];
afterEach(() => removeAll(cleanup));

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
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
    // The writer appends only while a CLI is up: startup is not what is tested, and takes seconds
    // on a loaded machine, long enough for the writer to finish before the second kill.
    let cliUp = false;
    // The writer appends in uneven chunks that often end mid-line, like a real producer.
    const writer = (async () => {
      let pendingTail = '';
      while (written < total) {
        while (!cliUp) await sleep(10);
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
    for (let k = 0; k < kills; k++) {
      const running = startCli(['run', '-c', config], { cwd: dir });
      await waitFor(() => running.stderr().includes('running') || running.child.exitCode !== null, 60_000, 'the CLI to start');
      cliUp = true;
      // The first run lives until a job went through, so the final run can show that it resumed.
      if (k === 0) await waitFor(() => existsSync(join(out, jobKey(1_000_000))), 60_000, 'a first job in the sink');
      await sleep(300 + Math.floor(Math.random() * 700));
      cliUp = false;
      if (written < total) killsWhileWriting++;
      running.child.kill('SIGKILL');
      const result = await running.exited;
      expect(result.signal).toBe('SIGKILL');
    }
    cliUp = true;
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
    const resumed = /(\d+) records in/.exec(final.stderr);
    expect(resumed).not.toBeNull();
    expect(Number(resumed![1])).toBeLessThan(total);
    const doc = JSON.parse(await readFile(join(out, jobKey(1_000_000)), 'utf8')) as { id: number };
    expect(doc.id).toBe(1_000_000);
  }, 120_000);
});
