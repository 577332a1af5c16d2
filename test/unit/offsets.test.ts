import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { OffsetTracker } from '../../src/engine/offsets.js';

type Step = { op: 'track'; length: number } | { op: 'skip'; length: number } | { op: 'finish'; pick: number };

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ op: fc.constant('track' as const), length: fc.integer({ min: 1, max: 50 }) }),
  fc.record({ op: fc.constant('skip' as const), length: fc.integer({ min: 1, max: 5 }) }),
  fc.record({ op: fc.constant('finish' as const), pick: fc.nat() }),
);

describe('OffsetTracker (property)', () => {
  it('commits the end of the longest finished prefix, never moves back, and holds at most 2 x unfinished + 1 spans', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1000 }), fc.array(step, { maxLength: 300 }), fc.nat(), (start, steps, drainSeed) => {
        const tracker = new OffsetTracker(start);
        // The model: every line in read order, finished or not.
        const lines: { end: number; done: boolean; finish?: () => void }[] = [];
        let offset = start;
        let lastCommitted = start;
        const check = (): void => {
          let expected = start;
          for (const line of lines) {
            if (!line.done) break;
            expected = line.end;
          }
          const unfinished = lines.filter((l) => !l.done).length;
          expect(tracker.committed).toBe(expected);
          expect(tracker.committed).toBeGreaterThanOrEqual(lastCommitted);
          expect(tracker.pending).toBe(unfinished);
          expect(tracker.size).toBeLessThanOrEqual(2 * unfinished + 1);
          lastCommitted = tracker.committed;
        };
        const finishOne = (pick: number): void => {
          const open = lines.filter((l) => !l.done);
          if (open.length === 0) return;
          const line = open[pick % open.length]!;
          line.done = true;
          line.finish!();
          // A second call (a sink that answers twice) changes nothing.
          if (pick % 7 === 0) line.finish!();
        };
        for (const s of steps) {
          if (s.op === 'track') {
            offset += s.length;
            lines.push({ end: offset, done: false, finish: tracker.track(offset) });
          } else if (s.op === 'skip') {
            offset += s.length;
            tracker.skip(offset);
            lines.push({ end: offset, done: true });
          } else {
            finishOne(s.pick);
          }
          check();
        }
        // Finish the rest in a random order: everything ends committed and the tracker empty.
        let seed = drainSeed;
        while (lines.some((l) => !l.done)) {
          seed = (seed * 1103515245 + 12345) % 2 ** 31;
          finishOne(seed);
          check();
        }
        expect(tracker.committed).toBe(offset);
        expect(tracker.size).toBe(0);
      }),
      { seed: 42, numRuns: 500 },
    );
  });

  it('one stuck record followed by a million blank and finished lines costs two spans', () => {
    const tracker = new OffsetTracker(0);
    const stuck = tracker.track(10);
    let offset = 10;
    for (let i = 0; i < 1_000_000; i++) {
      offset += 1;
      if (i % 3 === 0) tracker.track(offset)();
      else tracker.skip(offset);
    }
    expect(tracker.size).toBe(2);
    expect(tracker.committed).toBe(0);
    stuck();
    expect(tracker.committed).toBe(offset);
    expect(tracker.size).toBe(0);
  });
});
