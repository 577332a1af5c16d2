import { transformFailure, unprocessable, type ErrorCode } from '../errors.js';
import { NOT_A_RECORD, isDrop, isRecordLike } from './record-shape.js';
import type { LogRecord, Transform, TransformResult } from './types.js';

/** A consumer in the graph: a transform passes on what it returns; a sink ends the branch. */
export type GraphNode<S> =
  | { readonly kind: 'transform'; readonly id: string; readonly transform: Transform }
  | { readonly kind: 'sink'; readonly id: string; readonly sink: S };

/**
 * Why a record ends as a dead letter at a transform. `unexpected` is what was thrown when it was
 * not a RecordError (a bug in a transform, or in what ran after it): worth an error line.
 */
export interface WalkFailure {
  readonly code: ErrorCode;
  readonly reason: string;
  readonly unexpected?: { readonly error: unknown; readonly where: 'transform' | 'after-transform' };
}

/**
 * What happens to a record on its way through the graph, told to the side that walks it: the
 * pipeline (channels, finalizers, dead-letter files) or a pool worker (events sent back to the
 * main thread). `C` is that side's per-record context, passed through so no closure is made per
 * record.
 */
export interface WalkEvents<S, C> {
  /** A branch reached `sink` with `record`. */
  deliver(sink: S, sinkId: string, record: LogRecord, context: C): void;
  /** The transform dropped the record (it returned null or []). */
  dropped(transformId: string, context: C): void;
  /** `record` is a dead letter at `transformId`: the transform threw, or returned something that is not a record. */
  deadLetter(transformId: string, record: LogRecord, failure: WalkFailure, context: C): void;
}

/**
 * The transform graph and the one walk of a record through it, used by the pipeline and by each
 * pool worker alike, so both route the same way: consumers in the order of the pipeline file,
 * fan-out to each of them, drops, and a transform that throws making that record its dead letter
 * (the other branches go on).
 *
 * The walk is synchronous while transforms answer synchronously (all built-ins do), so the common
 * case allocates no promise; a transform that returns a promise makes the walk return one, which
 * settles when everything after that transform is done and never rejects unless a `WalkEvents`
 * callback throws while reporting a failure.
 */
export class TransformGraph<S> {
  private readonly consumers = new Map<string, GraphNode<S>[]>();
  private readonly byId = new Map<string, GraphNode<S>>();

  /** Adds a consumer of the records of `inputs`; consumers of one input are walked in the order added. */
  add(inputs: readonly string[], node: GraphNode<S>): void {
    this.byId.set(node.id, node);
    for (const input of inputs) {
      const list = this.consumers.get(input);
      if (list) list.push(node);
      else this.consumers.set(input, [node]);
    }
  }

  /** The transform or sink with this id. */
  node(id: string): GraphNode<S> | undefined {
    return this.byId.get(id);
  }

  /** Hands `record`, emitted by `fromId`, to every consumer of `fromId`. */
  route<C>(fromId: string, record: LogRecord, events: WalkEvents<S, C>, context: C): Promise<void> | undefined {
    const consumers = this.consumers.get(fromId);
    if (!consumers) return undefined;
    let pending: Promise<void>[] | undefined;
    for (const node of consumers) {
      const walking = this.visit(node, record, events, context);
      if (walking) (pending ??= []).push(walking);
    }
    return pending && Promise.all(pending).then(noop);
  }

  /** One consumer takes the record: a sink gets it, a transform runs and passes on what it returns. */
  visit<C>(node: GraphNode<S>, record: LogRecord, events: WalkEvents<S, C>, context: C): Promise<void> | undefined {
    if (node.kind === 'sink') {
      events.deliver(node.sink, node.id, record, context);
      return undefined;
    }
    let result: TransformResult | Promise<TransformResult>;
    try {
      result = node.transform.process(record);
    } catch (err) {
      events.deadLetter(node.id, record, failureOf(err), context);
      return undefined;
    }
    if (!isThenable(result)) return this.forward(node.id, record, result, events, context);
    return Promise.resolve(result).then(
      (answer) => {
        // What follows the transform's answer is guarded too: a throw there is this record's dead
        // letter at the transform, never an unhandled rejection.
        try {
          return this.forward(node.id, record, answer, events, context);
        } catch (err) {
          const { code, reason } = unprocessable(err);
          events.deadLetter(node.id, record, { code, reason, unexpected: { error: err, where: 'after-transform' } }, context);
          return undefined;
        }
      },
      (err: unknown) => events.deadLetter(node.id, record, failureOf(err), context),
    );
  }

  private forward<C>(transformId: string, input: LogRecord, result: TransformResult, events: WalkEvents<S, C>, context: C): Promise<void> | undefined {
    if (isDrop(result)) {
      events.dropped(transformId, context);
      return undefined;
    }
    const records = Array.isArray(result) ? result : [result];
    // A plugin that returns something else than records has failed on the record it was given.
    if (!records.every(isRecordLike)) {
      events.deadLetter(transformId, input, { code: 'LF_TRANSFORM_FAILED', reason: NOT_A_RECORD }, context);
      return undefined;
    }
    if (records.length === 1) return this.route(transformId, records[0]!, events, context);
    let pending: Promise<void>[] | undefined;
    for (const r of records) {
      const walking = this.route(transformId, r, events, context);
      if (walking) (pending ??= []).push(walking);
    }
    return pending && Promise.all(pending).then(noop);
  }
}

function failureOf(err: unknown): WalkFailure {
  const { code, reason, expected } = transformFailure(err);
  return expected ? { code, reason } : { code, reason, unexpected: { error: err, where: 'transform' } };
}

function isThenable(value: unknown): value is PromiseLike<TransformResult> {
  return value !== null && typeof value === 'object' && typeof (value as { then?: unknown }).then === 'function';
}

function noop(): void {}
