import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ByteBudget } from '../../src/engine/budget.js';
import { Channel } from '../../src/engine/channel.js';
import { CheckpointStore } from '../../src/engine/checkpoints.js';
import { DeadLetterWriter, readDeadLetters } from '../../src/engine/dead-letters.js';
import { silentLogger } from '../../src/engine/logger.js';
import { OffsetTracker } from '../../src/engine/offsets.js';
import { backoffDelay } from '../../src/engine/retry.js';

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'logferry-engine-'));
  dirs.push(dir);
  return dir;
}
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

describe('OffsetTracker', () => {
  it('moves only over a contiguous prefix of finished lines', () => {
    const t = new OffsetTracker(0);
    const a = t.track(10);
    const b = t.track(20);
    const c = t.track(35);
    c();
    expect(t.committed).toBe(0);
    a();
    expect(t.committed).toBe(10);
    b();
    expect(t.committed).toBe(35);
    expect(t.pending).toBe(0);
  });

  it('keeps sequence numbers valid across compaction and ignores double finishes', () => {
    const t = new OffsetTracker(5);
    const finishers = Array.from({ length: 20_000 }, (_, i) => t.track(6 + i));
    const late = finishers[19_999]!;
    for (let i = 0; i < 19_999; i++) finishers[i]!();
    expect(t.committed).toBe(6 + 19_998);
    late();
    late();
    expect(t.committed).toBe(6 + 19_999);
    t.skip(30_000);
    expect(t.committed).toBe(30_000);
  });
});

describe('ByteBudget', () => {
  it('blocks when full and wakes waiters in order on release', async () => {
    const budget = new ByteBudget(100);
    expect(budget.tryAcquire(60)).toBe(true);
    const order: string[] = [];
    const first = budget.acquire(50).then(() => order.push('first'));
    const second = budget.acquire(10).then(() => order.push('second'));
    await Promise.resolve();
    expect(order).toEqual([]);
    budget.release(60);
    await Promise.all([first, second]);
    expect(order).toEqual(['first', 'second']);
    expect(budget.inUse).toBe(60);
  });

  it('lets one record larger than the budget through when nothing else is in flight', () => {
    const budget = new ByteBudget(10);
    expect(budget.tryAcquire(1000)).toBe(true);
    expect(budget.tryAcquire(1)).toBe(false);
  });

  it('rejects a waiter when its signal aborts', async () => {
    const budget = new ByteBudget(10);
    budget.tryAcquire(10);
    const controller = new AbortController();
    const waiting = budget.acquire(5, controller.signal);
    controller.abort(new Error('stop'));
    await expect(waiting).rejects.toThrow('stop');
    budget.release(10);
    expect(budget.inUse).toBe(0);
  });
});

describe('Channel', () => {
  it('yields what is queued as batches and ends after close', async () => {
    const ch = new Channel<number>(3);
    for (let i = 0; i < 5; i++) ch.push(i);
    const seen: number[][] = [];
    const reading = (async () => {
      for await (const batch of ch) seen.push([...batch]);
    })();
    await new Promise((r) => setTimeout(r, 5));
    ch.push(5);
    ch.close();
    await reading;
    expect(seen.flat()).toEqual([0, 1, 2, 3, 4, 5]);
    expect(Math.max(...seen.map((b) => b.length))).toBeLessThanOrEqual(3);
  });
});

describe('CheckpointStore', () => {
  it('round-trips state atomically and skips unchanged saves', async () => {
    const dir = await tempDir();
    const store = new CheckpointStore(dir, silentLogger);
    expect(await store.load('jobs')).toBeUndefined();
    expect(await store.save('jobs', { version: 1, files: [] })).toBe(true);
    expect(await store.save('jobs', { version: 1, files: [] })).toBe(false);
    expect(JSON.parse(await readFile(store.fileFor('jobs'), 'utf8'))).toEqual({ version: 1, files: [] });
    expect(await new CheckpointStore(dir, silentLogger).load('jobs')).toEqual({ version: 1, files: [] });
  });
});

describe('DeadLetterWriter', () => {
  it('writes masked documents with their reason and position', async () => {
    const dir = await tempDir();
    const writer = new DeadLetterWriter(DeadLetterWriter.dirFor(dir));
    await writer.write({
      code: 'LF_RECORD_UNSAFE_KEY',
      reason: 'bad key',
      component: 'keyed',
      origin: { source: 'jobs', file: '/x.ndjson', offset: 42 },
      doc: { id: 1, flow_id: 2, lines: [{ mask_data: true, input: { password: 'TOP-SECRET' }, output: 'ALSO-SECRET' }] },
    });
    await writer.write({ code: 'LF_RECORD_BAD_JSON', reason: 'not json', component: 'jobs', origin: { source: 'jobs' }, text: '{oops' });
    await writer.close();
    const raw = await readFile(join(DeadLetterWriter.dirFor(dir), 'dead-letters.ndjson'), 'utf8');
    expect(raw).not.toContain('TOP-SECRET');
    expect(raw).not.toContain('ALSO-SECRET');
    const entries = await readDeadLetters(dir);
    expect(entries.map((e) => e.code)).toEqual(['LF_RECORD_UNSAFE_KEY', 'LF_RECORD_BAD_JSON']);
    expect(entries[0]).toMatchObject({ file: '/x.ndjson', offset: 42, component: 'keyed', source: 'jobs' });
    // A line that is not a record is named by its length and hash, not kept (keep_text is off).
    expect(entries[1]!.text).toBeUndefined();
    expect(entries[1]).toMatchObject({ length: 5, sha256: createHash('sha256').update('{oops').digest('hex') });
  });

  it('keeps the text of a line with keepText, and scrubs secrets from reasons and text', async () => {
    const dir = await tempDir();
    const writer = new DeadLetterWriter(DeadLetterWriter.dirFor(dir), { keepText: true, scrub: (t) => t.replaceAll('s3cr3t-token', '***') });
    await writer.write({ code: 'LF_RECORD_BAD_JSON', reason: 'echo s3cr3t-token', component: 'jobs', origin: { source: 'jobs' }, text: '{oops s3cr3t-token' });
    await writer.close();
    const [entry] = await readDeadLetters(dir);
    expect(entry).toMatchObject({ reason: 'echo ***', text: '{oops ***', length: 18 });
  });
});

describe('backoffDelay', () => {
  it('grows exponentially up to the cap, with full jitter', () => {
    const opts = { initial_backoff_ms: 100, max_backoff_ms: 1000 };
    expect(backoffDelay(0, opts, () => 0.999)).toBe(99);
    expect(backoffDelay(3, opts, () => 0.999)).toBe(799);
    expect(backoffDelay(10, opts, () => 0.999)).toBe(999);
    expect(backoffDelay(10, opts, () => 0)).toBe(0);
  });
});
