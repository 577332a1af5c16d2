import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { finishInterruptedReplay, lineId, PROGRESS_FILE, readDeadLetterFile, ReplayProgress } from '../../src/engine/dead-letter-files.js';
import { DeadLetterWriter, readDeadLetters } from '../../src/engine/dead-letters.js';
import type { DeadLetterInput } from '../../src/engine/types.js';
import { removeAll, scratch } from '../helpers/cli.js';

const cleanup: string[] = [];
afterEach(() => removeAll(cleanup));

const entry = (n: number): DeadLetterInput => ({
  code: 'LF_SINK_REJECTED',
  reason: `entry ${n}`,
  component: 'archive',
  origin: { source: 'jobs', offset: n },
});

async function fiveEntries(): Promise<{ dataDir: string; dir: string }> {
  const dataDir = await scratch(cleanup);
  const dir = DeadLetterWriter.dirFor(dataDir);
  const writer = new DeadLetterWriter(dir);
  for (let n = 0; n < 5; n++) await writer.write(entry(n));
  await writer.close();
  return { dataDir, dir };
}

describe('a replay\'s progress file', () => {
  it('hides the confirmed entries from readers, and the rewrite removes them; finishing again after a crash removes nothing more', async () => {
    const { dataDir, dir } = await fiveEntries();
    const lines = await readDeadLetterFile(dir, 'dead-letters.ndjson');
    const progress = await ReplayProgress.start(dir);
    progress.confirm(lines[1]!);
    progress.confirm(lines[3]!);
    await progress.close();
    const recorded = await readFile(join(dir, PROGRESS_FILE), 'utf8');
    // A torn last line (killed in the middle of a flush) confirms nothing.
    await writeFile(join(dir, PROGRESS_FILE), recorded + JSON.stringify({ file: 'dead-letters.ndjson', offset: lines[4]!.offset, id: lines[4]!.id }).slice(0, 20));

    // Before the rewrite, readers already leave the confirmed entries out.
    expect((await readDeadLetters(dataDir)).map((e) => e.offset)).toEqual([0, 2, 4]);
    expect(await finishInterruptedReplay(dir)).toBe(2);
    expect(await readdir(dir)).toEqual(['dead-letters.ndjson']);
    expect((await readDeadLetters(dataDir)).map((e) => e.offset)).toEqual([0, 2, 4]);

    // Killed after the rename but before the file was marked done: the same progress again finds
    // other lines at those offsets (their hashes differ) and keeps them.
    await writeFile(join(dir, PROGRESS_FILE), recorded);
    expect(await finishInterruptedReplay(dir)).toBe(0);
    expect((await readDeadLetters(dataDir)).map((e) => e.offset)).toEqual([0, 2, 4]);
    expect(await readdir(dir)).toEqual(['dead-letters.ndjson']);
  });

  it('removes a file left empty, and is finished by the next writer before it appends', async () => {
    const { dataDir, dir } = await fiveEntries();
    const progress = await ReplayProgress.start(dir);
    for (const line of await readDeadLetterFile(dir, 'dead-letters.ndjson')) progress.confirm(line);
    await progress.close();
    const writer = new DeadLetterWriter(dir, { finishInterruptedReplay: true });
    await writer.write(entry(9));
    await writer.close();
    expect(await readdir(dir)).toEqual(['dead-letters.ndjson']);
    expect((await readDeadLetters(dataDir)).map((e) => e.reason)).toEqual(['entry 9']);
    const [line] = await readDeadLetterFile(dir, 'dead-letters.ndjson');
    expect(line!.id).toBe(lineId(Buffer.from(line!.text)));
  });
});

describe('the dead-letter writer', () => {
  it('starts numbered files at max_file_bytes, never renames one, and appends to the last after a restart', async () => {
    const dataDir = await scratch(cleanup);
    const dir = DeadLetterWriter.dirFor(dataDir);
    await mkdir(dir, { recursive: true });
    const writer = new DeadLetterWriter(dir, { maxFileBytes: 4096 });
    for (let n = 0; n < 40; n++) await writer.write(entry(n));
    await writer.close();
    const names = await readdir(dir);
    expect(names.length).toBeGreaterThan(1);
    const again = new DeadLetterWriter(dir, { maxFileBytes: 4096 });
    await again.write(entry(40));
    expect(again.file).toBe(join(dir, names.at(-1)!));
    await again.close();
    expect((await readDeadLetters(dataDir)).map((e) => e.offset)).toEqual(Array.from({ length: 41 }, (_, n) => n));
  });
});
