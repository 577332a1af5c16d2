import { describe, expect, it } from 'vitest';
import { RecordError } from '../../src/errors.js';
import { TransformGraph, type WalkEvents, type WalkFailure } from '../../src/engine/graph-walk.js';
import type { LogRecord, Transform } from '../../src/engine/types.js';

/** What the walk reported, in order: the same log for the pipeline and the pool workers. */
type Seen = string[];

const events: WalkEvents<string, Seen> = {
  deliver: (sink, sinkId, record, seen) => void seen.push(`deliver ${sinkId}(${sink}) ${String(record.doc.n)}`),
  dropped: (transformId, seen) => void seen.push(`dropped ${transformId}`),
  deadLetter: (transformId, record, failure: WalkFailure, seen) =>
    void seen.push(`dead ${transformId} ${String(record.doc.n)} ${failure.code}${failure.unexpected ? ` unexpected:${failure.unexpected.where}` : ''}`),
};

function record(n: number): LogRecord {
  return { kind: 'job', doc: { n }, origin: { source: 'src' } };
}

function transform(process: Transform['process']): Transform {
  return { process };
}

describe('TransformGraph', () => {
  it('fans out in the order consumers were added, passes on what transforms return, drops and dead-letters per branch', () => {
    const graph = new TransformGraph<string>();
    graph.add(['src'], { kind: 'transform', id: 'double', transform: transform((r) => [r, { ...r, doc: { n: Number(r.doc.n) * 10 } }]) });
    graph.add(['src'], { kind: 'transform', id: 'thrower', transform: transform(() => { throw new Error('boom'); }) });
    graph.add(['src'], { kind: 'transform', id: 'refuser', transform: transform(() => { throw new RecordError('LF_RECORD_NO_USER_ID', 'no user'); }) });
    graph.add(['src'], { kind: 'transform', id: 'dropper', transform: transform(() => null) });
    graph.add(['src'], { kind: 'transform', id: 'liar', transform: transform(() => 42 as unknown as LogRecord) });
    graph.add(['double', 'src'], { kind: 'sink', id: 'out', sink: 'channel' });
    const seen: Seen = [];
    expect(graph.route('src', record(1), events, seen)).toBeUndefined();
    expect(seen).toEqual([
      'deliver out(channel) 1',
      'deliver out(channel) 10',
      'dead thrower 1 LF_TRANSFORM_FAILED unexpected:transform',
      'dead refuser 1 LF_RECORD_NO_USER_ID',
      'dropped dropper',
      'dead liar 1 LF_TRANSFORM_FAILED',
      'deliver out(channel) 1',
    ]);
    expect(graph.node('double')?.kind).toBe('transform');
    expect(graph.node('nothing')).toBeUndefined();
  });

  it('returns a promise only when a transform answers asynchronously, settled once its branch is done', async () => {
    const graph = new TransformGraph<string>();
    graph.add(['src'], { kind: 'transform', id: 'slow', transform: transform(async (r) => ({ ...r, doc: { n: Number(r.doc.n) + 1 } })) });
    graph.add(['src'], { kind: 'transform', id: 'rejecting', transform: transform(() => Promise.reject(new Error('later'))) });
    graph.add(['src', 'slow'], { kind: 'sink', id: 'out', sink: 'channel' });
    const seen: Seen = [];
    const walking = graph.route('src', record(1), events, seen);
    expect(walking).toBeInstanceOf(Promise);
    // The synchronous branch is delivered at once; the others when their transforms answer.
    expect(seen).toEqual(['deliver out(channel) 1']);
    await walking;
    expect(seen.sort()).toEqual(['dead rejecting 1 LF_TRANSFORM_FAILED unexpected:transform', 'deliver out(channel) 1', 'deliver out(channel) 2']);
  });

  it('makes a throw after an asynchronous answer the record\'s dead letter at that transform, not a rejection', async () => {
    const graph = new TransformGraph<string>();
    graph.add(['src'], { kind: 'transform', id: 'slow', transform: transform(async (r) => r) });
    graph.add(['slow'], { kind: 'sink', id: 'out', sink: 'channel' });
    const seen: Seen = [];
    const throwingDelivery: WalkEvents<string, Seen> = { ...events, deliver: () => { throw new Error('channel closed'); } };
    await graph.route('src', record(3), throwingDelivery, seen);
    expect(seen).toEqual(['dead slow 3 LF_RECORD_UNPROCESSABLE unexpected:after-transform']);
  });
});
