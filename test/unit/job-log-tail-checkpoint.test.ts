import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/engine/logger.js';
import { Metrics } from '../../src/engine/metrics.js';
import type { Source, SourceContext } from '../../src/engine/types.js';
import { jobLogTailSchema, jobLogTailSource } from '../../src/sources/job-log-tail.js';

const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

interface Saved {
  files: { path: string; offset: number }[];
}

describe('job_log_tail checkpoint while starting', () => {
  it('keeps the positions it loaded until it has opened their files, so a save during the first scan drops none', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'logferry-cp-'));
    dirs.push(dir);
    const paths = await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const path = join(dir, `f${i}.ndjson`);
        await writeFile(path, '{"a":1}\n{"a":2}\n');
        return path;
      }),
    );
    const restored = {
      version: 1,
      files: await Promise.all(
        paths.map(async (path) => {
          const info = await stat(path);
          // The fingerprint only matters when the file is opened; the offset is what must survive.
          return { path, dev: info.dev, ino: info.ino, fingerprint: 'x', fingerprint_bytes: 0, offset: 8 };
        }),
      ),
    };
    const options = jobLogTailSchema.parse({ include: [join(dir, '*.ndjson')] });
    const abort = new AbortController();
    const source: Source = await jobLogTailSource.build(options, { id: 'jobs', log: silentLogger, metrics: new Metrics(), signal: abort.signal, dataDir: '' });
    const ctx: SourceContext = {
      id: 'jobs',
      log: silentLogger,
      metrics: new Metrics(),
      signal: abort.signal,
      dataDir: '',
      once: true,
      restored,
      emit: () => Promise.resolve(),
      emitLine: () => Promise.resolve(),
      deadLetter: () => Promise.resolve(),
      inputUnreadable: () => {},
      inputReadable: () => {},
    };
    const running = source.run(ctx);
    // What the checkpoint timer would save right now, before the first scan opened anything.
    const early = source.checkpoint() as Saved;
    expect(early.files.map((f) => [f.path, f.offset]).sort()).toEqual(paths.map((p) => [p, 8]).sort());
    await running;
    const late = source.checkpoint() as Saved;
    expect(late.files.map((f) => f.path).sort()).toEqual([...paths].sort());
  });
});
