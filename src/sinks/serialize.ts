import type { LogRecord } from '../engine/types.js';
import { documentBody } from '../records/body.js';

/**
 * The bytes to write for a record: compact JSON by default, known bytes reused (see
 * records/body.ts), so redelivery rewrites the same bytes. `pretty` indents for people.
 */
export function serializeRecord(record: LogRecord, pretty = false): Buffer {
  if (pretty) {
    try {
      return Buffer.from(JSON.stringify(record.doc, null, 2));
    } catch {
      // Too deep to indent with JSON.stringify (a plugin's document): the compact body, which the
      // engine made before the sink got the record, is the same document.
    }
  }
  return documentBody(record);
}
