import { readdir } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import type { ErrorCode } from '../../src/errors.js';
import type { Delivery, LogRecord } from '../../src/engine/types.js';
import { ConcurrencyLimit } from '../../src/sinks/delivery.js';
import { fileSink } from '../../src/sinks/file.js';
import { driveSink, jobRecord } from '../../src/testkit/index.js';
import { removeAll, scratch } from '../helpers/cli.js';

const cleanup: string[] = [];
afterEach(() => removeAll(cleanup));

interface Answer {
  kind: 'delivered' | 'rejected';
  reason?: string;
  code?: ErrorCode;
}

/** A delivery that keeps every answer it gets, so a second settlement would show. */
function recordingDelivery(n: number): Delivery & { answers: Answer[] } {
  const answers: Answer[] = [];
  return {
    record: jobRecord(n),
    answers,
    delivered: () => void answers.push({ kind: 'delivered' }),
    rejected: (reason, code) => void answers.push({ kind: 'rejected', reason, code }),
  };
}

/** A record whose key throws when read: any bug in a sink's handling of one record. */
function brokenRecord(n: number): LogRecord {
  const record = jobRecord(n);
  Object.defineProperty(record, 'key', {
    get(): never {
      throw new Error('the key cannot be read');
    },
  });
  return record;
}

describe('ConcurrencyLimit, the one limiter of every sink', () => {
  it('keeps at most N tasks running, and run() returns once its task has started', async () => {
    const limit = new ConcurrencyLimit(3);
    let running = 0;
    let most = 0;
    const gates: (() => void)[] = [];
    const started: number[] = [];
    const feeding = (async () => {
      for (let n = 0; n < 10; n++) {
        const delivery = recordingDelivery(n);
        await limit.run([delivery], async () => {
          started.push(n);
          running++;
          most = Math.max(most, running);
          await new Promise<void>((resolve) => gates.push(resolve));
          running--;
          delivery.delivered();
        });
      }
    })();
    // The feeder is held at the fourth task until one of the first three ends.
    await expect.poll(() => started.length).toBe(3);
    expect(gates).toHaveLength(3);
    while (started.length < 10 || gates.length > 0) {
      if (gates.length > 0) gates.shift()!();
      await new Promise((resolve) => setImmediate(resolve));
    }
    await feeding;
    await limit.drain();
    expect(most).toBe(3);
    expect(started).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('turns an exception out of a task into dead letters for the deliveries it named, and goes on', async () => {
    const limit = new ConcurrencyLimit(2);
    const deliveries = [0, 1, 2, 3, 4].map(recordingDelivery);
    const [first, second, ...rest] = deliveries;
    // One task settles one delivery, then throws: the settled one keeps its answer.
    await limit.run([first!, second!], async () => {
      first!.delivered();
      await Promise.resolve();
      throw new TypeError('cannot read properties of undefined');
    });
    // A task that throws before its first await, and one that throws a non-Error.
    await limit.run([rest[0]!], () => {
      throw new Error('synchronous');
    });
    await limit.run([rest[1]!], () => Promise.reject('a string'));
    await limit.run([rest[2]!], async () => {
      await Promise.resolve();
      rest[2]!.delivered();
    });
    await limit.drain();

    expect(first!.answers).toEqual([{ kind: 'delivered' }, expect.objectContaining({ kind: 'rejected' })]);
    expect(second!.answers).toEqual([
      {
        kind: 'rejected',
        code: 'LF_SINK_REJECTED',
        reason: expect.stringMatching(/^the sink failed while handling a batch of 2 records \(a bug.*\): TypeError: cannot read properties of undefined$/) as string,
      },
    ]);
    expect(rest[0]!.answers).toEqual([{ kind: 'rejected', code: 'LF_SINK_REJECTED', reason: expect.stringMatching(/this record .*: synchronous$/) as string }]);
    expect(rest[1]!.answers).toEqual([{ kind: 'rejected', code: 'LF_SINK_REJECTED', reason: expect.stringMatching(/: \(string\) a string$|: a string$/) as string }]);
    expect(rest[2]!.answers).toEqual([{ kind: 'delivered' }]);
  });

  it('the file sink: an exception on one record makes that record a dead letter; the others are written', async () => {
    const dir = await scratch(cleanup);
    const result = await driveSink(fileSink, { path: dir }, [jobRecord(1), brokenRecord(2), jobRecord(3)]);
    expect(result.rejected).toHaveLength(1);
    expect(result.rejected[0]).toMatchObject({ code: 'LF_SINK_REJECTED' });
    expect(result.rejected[0]!.reason).toMatch(/the sink failed while handling this record .*: the key cannot be read/);
    expect(result.delivered).toHaveLength(2);
    expect(result.unsettled).toHaveLength(0);
    expect(result.settledTwice).toBe(0);
    expect((await readdir(dir, { recursive: true })).filter((name) => name.endsWith('.json'))).toHaveLength(2);
  });
});
