import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { fsyncDir } from '../../src/engine/fs-atomic.js';
import { DeadLetterWriter, readDeadLetters } from '../../src/engine/dead-letters.js';
import { removeAll, scratch } from '../helpers/cli.js';

// The folder fsyncs are observed, and still done.
vi.mock('../../src/engine/fs-atomic.js', async (importOriginal) => {
  const actual = await importOriginal<typeof import('../../src/engine/fs-atomic.js')>();
  return { ...actual, fsyncDir: vi.fn(actual.fsyncDir) };
});

const cleanup: string[] = [];
afterEach(async () => {
  vi.mocked(fsyncDir).mockClear();
  await removeAll(cleanup);
});

const entry = { code: 'LF_RECORD_BAD_JSON' as const, reason: 'test', component: 'jobs', origin: { source: 'jobs' }, text: 'x' };

describe('the dead-letter file', () => {
  it('has its name made durable: the dead_letter folder is fsynced after the file is opened, and data_dir when the folder was made', async () => {
    const dataDir = await scratch(cleanup);
    const dir = DeadLetterWriter.dirFor(dataDir);
    const writer = new DeadLetterWriter(dir);
    await writer.write(entry);
    expect(vi.mocked(fsyncDir).mock.calls).toEqual([[dir], [dataDir]]);
    // Once per opening, not per entry.
    await writer.write(entry);
    expect(vi.mocked(fsyncDir)).toHaveBeenCalledTimes(2);
    await writer.close();

    // The folder exists now: a new writer fsyncs it (the file may be new), not data_dir.
    vi.mocked(fsyncDir).mockClear();
    const again = new DeadLetterWriter(dir);
    await again.write(entry);
    await again.close();
    expect(vi.mocked(fsyncDir).mock.calls).toEqual([[dir]]);
    expect(await readDeadLetters(dataDir)).toHaveLength(3);
    expect(join(dir, 'dead-letters.ndjson')).toBe(again.file);
  });
});
