import type { LogRecord } from '../engine/types.js';

/** Compact JSON by default: the bytes depend only on the document, so redelivery rewrites the same bytes. */
export function serializeRecord(record: LogRecord, pretty = false): string {
  return pretty ? JSON.stringify(record.doc, null, 2) : JSON.stringify(record.doc);
}
