import type { LogRecord } from './types.js';

/**
 * Whether a transform's output can go on through the graph: an object with a document (a plain
 * object) and an origin. A plugin that returns anything else has failed on the record it was given,
 * which is dead-lettered instead of taking the pipeline down further on.
 */
export function isRecordLike(value: unknown): value is LogRecord {
  if (value === null || typeof value !== 'object') return false;
  const { doc, origin } = value as { doc?: unknown; origin?: unknown };
  return doc !== null && typeof doc === 'object' && !Array.isArray(doc) && origin !== null && typeof origin === 'object';
}

/**
 * Whether a transform's result drops the record: null or an empty array, as TransformResult says.
 * Not undefined: that is most often a forgotten `return`, and it is not a record either, so it
 * fails the transform on that record (NOT_A_RECORD). One rule, inline and on the pool.
 */
export function isDrop(result: unknown): result is null | [] {
  return result === null || (Array.isArray(result) && result.length === 0);
}

export const NOT_A_RECORD = 'transform failed: it returned something that is not a record (an object with `doc` and `origin`)';
