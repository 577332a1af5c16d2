import { appendFile, mkdir, readFile, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { jobKey, makeJob, removeAll, runCli, scratch, standardPipeline, startCli, waitFor, writePipeline } from '../helpers/cli.js';

const cleanup: string[] = [];
afterEach(() => removeAll(cleanup));

describe('graceful shutdown', () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`${signal} drains, saves the checkpoint at the end of the file and exits 0`, async () => {
      const dir = await scratch(cleanup);
      const logs = join(dir, 'logs');
      const out = join(dir, 'out');
      const dataDir = join(dir, 'data');
      await mkdir(logs);
      const file = join(logs, 'jobs.ndjson');
      let text = '';
      for (let i = 0; i < 500; i++) text += JSON.stringify(makeJob(5_000_000 + i)) + '\n';
      await appendFile(file, text);
      const config = await writePipeline(dir, standardPipeline({ dataDir, include: join(logs, '*.ndjson'), out }));
      const running = startCli(['run', '-c', config], { cwd: dir });
      await waitFor(() => existsSync(join(out, jobKey(5_000_499))), 20_000, 'the last job');
      running.child.kill(signal);
      const result = await running.exited;
      expect(result.code).toBe(0);
      expect(result.stderr).toContain('stopping');
      expect(result.stderr).toMatch(/done: 500 records in/);
      const checkpoint = JSON.parse(await readFile(join(dataDir, 'checkpoints', 'jobs.json'), 'utf8')) as {
        files: { path: string; offset: number }[];
      };
      expect(checkpoint.files).toHaveLength(1);
      expect(checkpoint.files[0]!.offset).toBe((await stat(file)).size);

      // A restart with nothing new reads nothing again.
      const again = await runCli(['run', '-c', config, '--once'], { cwd: dir });
      expect(again.code).toBe(0);
      expect(again.stderr).toMatch(/done: 0 records in/);
    }, 60_000);
  }
});
