import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CheckpointSaver, CheckpointStore, SerialTask } from '../../src/engine/checkpoints.js';
import { silentLogger } from '../../src/engine/logger.js';

/**
 * Finding 8 of issue 9: the interval timer's save could run beside the final save, so a slower
 * older write could land last and move a checkpoint backwards. Saves are now serialized; this
 * checks it over random interleavings of position changes, timer saves and write completions
 * (in any order, some failing), with a fake slow write the test completes by hand.
 */

type Op =
  | { kind: 'advance'; file: number; by: number }
  | { kind: 'save' }
  | { kind: 'complete'; pick: number; fail: boolean }
  | { kind: 'tick' };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('advance' as const), file: fc.integer({ min: 0, max: 3 }), by: fc.integer({ min: 1, max: 1000 }) }),
  fc.constant({ kind: 'save' as const }),
  fc.record({ kind: fc.constant('complete' as const), pick: fc.nat(), fail: fc.boolean() }),
  fc.constant({ kind: 'tick' as const }),
);

/** Lets promise chains and the saver's continuations run. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

interface PendingWrite {
  text: string;
  resolve: () => void;
  reject: (err: Error) => void;
}

describe('CheckpointSaver', () => {
  it('never moves a checkpoint backwards, and the last state reaches the file (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 10, maxLength: 80, size: 'max' }), async (ops) => {
        const offsets = [0, 0, 0, 0];
        /** Files appear as their first advance happens (a new file found by a scan). */
        const known = new Set<number>();
        const inFlight: PendingWrite[] = [];
        const reachedFile: string[] = [];
        let maxConcurrent = 0;
        const write = (_path: string, text: string): Promise<void> =>
          new Promise<void>((resolve, reject) => {
            inFlight.push({ text, resolve, reject });
            maxConcurrent = Math.max(maxConcurrent, inFlight.length);
          });
        const complete = (index: number, fail: boolean): void => {
          const [w] = inFlight.splice(index, 1);
          if (!w) return;
          if (fail) {
            w.reject(Object.assign(new Error('no space left on device'), { code: 'ENOSPC' }));
          } else {
            // The rename: this is the moment the state reaches the file.
            reachedFile.push(w.text);
            w.resolve();
          }
        };
        const state = (): unknown => ({ version: 1, files: [...known].sort().map((f) => ({ dev: 1, ino: f, offset: offsets[f] })) });
        const saver = new CheckpointSaver(new CheckpointStore('/nowhere', silentLogger, write), () => [{ id: 'jobs', state }], silentLogger);
        const saveRejections: unknown[] = [];

        for (const o of ops) {
          if (o.kind === 'advance') {
            known.add(o.file);
            offsets[o.file]! += o.by;
          } else if (o.kind === 'save') {
            // Not awaited: its writes are held until a 'complete' step. save() must never reject (a
            // failing write is kept in saver.failures); a rejection is recorded and fails the case.
            void saver.save().catch((err: unknown) => saveRejections.push(err));
          } else if (o.kind === 'complete') {
            if (inFlight.length > 0) complete(o.pick % inFlight.length, o.fail);
          }
          await settle();
        }
        // Shutdown: the final save, with every write from here on succeeding.
        let finished = false;
        const final = saver.final().finally(() => {
          finished = true;
        });
        while (!finished) {
          if (inFlight.length > 0) complete(0, false);
          await settle();
        }
        expect((await final).size).toBe(0);
        expect(saveRejections).toEqual([]);
        // Never two writes at once; even without this check, the sequence below catches a race.
        expect(maxConcurrent).toBeLessThanOrEqual(1);


        const last = new Map<number, number>();
        for (const text of reachedFile) {
          const files = (JSON.parse(text) as { files: { ino: number; offset: number }[] }).files;
          // A file that was in the checkpoint must stay in it (it would be read from 0 again otherwise).
          for (const ino of last.keys()) expect(files.some((f) => f.ino === ino), `file ${ino} dropped out`).toBe(true);
          for (const f of files) {
            expect(f.offset, `file ${f.ino} went backwards`).toBeGreaterThanOrEqual(last.get(f.ino) ?? 0);
            last.set(f.ino, f.offset);
          }
        }
        const latest = JSON.stringify(state());
        if (reachedFile.length > 0 || known.size > 0) expect(reachedFile.at(-1)).toBe(latest);
      }),
      { seed: 42, numRuns: 300 },
    );
  });

  it('logs a failing save once and its recovery once', async () => {
    const lines: string[] = [];
    const log = { ...silentLogger, warn: (m: string) => lines.push(`warn ${m}`), info: (m: string) => lines.push(`info ${m}`) };
    let fail = true;
    let offset = 0;
    const write = (): Promise<void> => (fail ? Promise.reject(Object.assign(new Error('no space'), { code: 'ENOSPC' })) : Promise.resolve());
    const saver = new CheckpointSaver(new CheckpointStore('/nowhere', log, write), () => [{ id: 'jobs', state: () => ({ offset }) }], log);
    for (let i = 0; i < 5; i++) {
      offset++;
      await saver.save();
    }
    expect(saver.failures.get('jobs')).toContain('ENOSPC');
    fail = false;
    await saver.save();
    await saver.save();
    expect(saver.failures.size).toBe(0);
    expect(lines.map((l) => l.split(' (')[0])).toEqual(['warn cannot save the checkpoint', 'info checkpoint saved again']);
  });
});

describe('SerialTask', () => {
  it('runs one at a time and coalesces the requests made meanwhile into one run', async () => {
    let running = 0;
    let runs = 0;
    const gates: (() => void)[] = [];
    const task = new SerialTask(async () => {
      running++;
      runs++;
      expect(running).toBe(1);
      await new Promise<void>((resolve) => gates.push(resolve));
      running--;
    });
    const first = task.run();
    const coalesced = [task.run(), task.run(), task.run()];
    await settle();
    expect(runs).toBe(1);
    gates.shift()!();
    await first;
    await settle();
    expect(runs).toBe(2);
    gates.shift()!();
    await Promise.all(coalesced);
    expect(runs).toBe(2);
  });
});
