import type { JsonObject, JsonValue, LogRecord } from '../engine/types.js';

/**
 * The bytes a sink writes for a record: the document's JSON on one line.
 *
 * Serializing is the most expensive step a record goes through (JSON.stringify runs at about a
 * quarter of JSON.parse's speed on job documents), so it is skipped whenever the bytes are already
 * known: a document that no transform changed is sent as the bytes it was read as, and a record
 * prepared by the worker pool carries the bytes the worker made. Bodies are keyed by object
 * identity in weak maps, so a transform that builds a new document (copy on write) can never be
 * paired with stale bytes, and the bytes go away with the record.
 */
const bodiesByDoc = new WeakMap<JsonObject, Uint8Array>();
const preparedBodies = new WeakMap<LogRecord, PreparedBodies>();

export interface PreparedBodies {
  /** Compact JSON of the document, UTF-8. */
  readonly body: Uint8Array;
  /** The body gzip-compressed, for sinks that store or send one compressed document at a time. */
  readonly gzip?: Uint8Array;
}

/**
 * Records that `bytes` is a faithful text of `doc`, parsed from `text`: the same document, with no
 * key given twice. A duplicated key keeps only its last value in `doc`; the raw text would still
 * carry the first one, which masking and redaction never saw, so such a text is not remembered.
 */
export function rememberSourceText(doc: JsonObject, text: string, bytes: Uint8Array): boolean {
  if (!isFaithfulText(text, doc)) return false;
  bodiesByDoc.set(doc, bytes);
  return true;
}

/** Whether `text` (which JSON.parse turned into `doc`) names no key twice. */
export function isFaithfulText(text: string, doc: JsonObject): boolean {
  try {
    return countTextKeys(text) === countDocKeys(doc);
  } catch {
    // Nesting deeper than the stack: not worth an exact answer, the document is serialized instead.
    return false;
  }
}

/** A record made from worker output: its document is parsed from the body only if someone asks. */
export function preparedRecord(fields: Omit<LogRecord, 'doc'>, bodies: PreparedBodies): LogRecord {
  let doc: JsonObject | undefined;
  const record = { ...fields } as LogRecord;
  // An own enumerable getter, so `{ ...record }` in a plugin still copies a real document.
  Object.defineProperty(record, 'doc', {
    enumerable: true,
    get: () => (doc ??= JSON.parse(Buffer.from(bodies.body.buffer, bodies.body.byteOffset, bodies.body.byteLength).toString('utf8')) as JsonObject),
  });
  preparedBodies.set(record, bodies);
  return record;
}

/** The record's document as compact JSON bytes (no trailing newline). */
export function documentBody(record: LogRecord): Buffer {
  const known = preparedBodies.get(record)?.body ?? bodiesByDoc.get(record.doc);
  if (known) return Buffer.from(known.buffer, known.byteOffset, known.byteLength);
  return Buffer.from(JSON.stringify(record.doc));
}

/** The gzip of `documentBody(record)` when the worker pool already made it. */
export function preparedGzip(record: LogRecord): Uint8Array | undefined {
  return preparedBodies.get(record)?.gzip;
}

/**
 * Counts the object keys in a JSON text: every string followed by `:`. Jumps from quote to quote
 * with indexOf, so the cost is per string, not per byte, and long step inputs and outputs cost
 * almost nothing. Only meaningful for text that JSON.parse accepted.
 */
export function countTextKeys(text: string): number {
  let keys = 0;
  let at = text.indexOf('"');
  while (at !== -1) {
    let end = text.indexOf('"', at + 1);
    while (end !== -1 && isEscaped(text, end)) end = text.indexOf('"', end + 1);
    if (end === -1) return keys;
    let next = end + 1;
    let c = text.charCodeAt(next);
    while (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) c = text.charCodeAt(++next);
    if (c === 0x3a) keys++;
    at = text.indexOf('"', next);
  }
  return keys;
}

function isEscaped(text: string, quote: number): boolean {
  let backslashes = 0;
  for (let i = quote - 1; text.charCodeAt(i) === 0x5c; i--) backslashes++;
  return backslashes % 2 === 1;
}

/** Counts the keys of every object in a parsed document. */
export function countDocKeys(value: JsonValue): number {
  if (value === null || typeof value !== 'object') return 0;
  let keys = 0;
  if (Array.isArray(value)) {
    for (const item of value) if (item !== null && typeof item === 'object') keys += countDocKeys(item);
    return keys;
  }
  for (const key in value) {
    keys++;
    const item = value[key] as JsonValue;
    if (item !== null && typeof item === 'object') keys += countDocKeys(item);
  }
  return keys;
}
