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

export const NOT_A_RECORD = 'transform failed: it returned something that is not a record (an object with `doc` and `origin`)';
