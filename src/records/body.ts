import type { JsonObject, JsonValue, LogRecord, SourceText } from '../engine/types.js';
import { skipSpace, spliceDocument, stringEnd } from './splice.js';

/**
 * The bytes a sink writes for a record: the document's JSON on one line.
 *
 * Serializing is the most expensive step a record goes through (JSON.stringify runs at about a
 * fifth of JSON.parse's speed on job documents), so it is avoided whenever the text is known: a
 * document that no transform changed is written as the bytes it was read as, a changed one by
 * editing that text where it changed (splice.ts), and a record prepared by the worker pool
 * carries the bytes the worker made. Made bodies are cached by document identity in a weak map,
 * so two sinks share one, and a transform that builds a new document never gets stale bytes.
 */
const bodiesByDoc = new WeakMap<JsonObject, Buffer>();
const preparedBodies = new WeakMap<LogRecord, PreparedBodies>();

export interface PreparedBodies {
  /** Compact JSON of the document, UTF-8. */
  readonly body: Uint8Array;
  /** The body gzip-compressed, for sinks that store or send one compressed document at a time. */
  readonly gzip?: Uint8Array;
}

/**
 * The text to keep with a record parsed from `bytes`, or undefined when it cannot stand for the
 * document: a duplicated key keeps only its last value in `doc`, while the text would still carry
 * the first one, which masking and redaction never saw.
 *
 * `bytes` may be a view of a buffer the caller reuses: it is copied when kept, and for an ASCII
 * line it is not kept at all (the text is the same bytes). A caller that owns `bytes` (the pool
 * worker, which got them transferred) passes `owned`, and they are kept as they are.
 */
export function sourceTextOf(
  doc: JsonObject,
  text: string,
  bytes: Uint8Array,
  owned = false,
  faithful = isFaithfulText(text, doc),
): SourceText | undefined {
  if (!faithful) return undefined;
  if (owned) return new WithheldSourceText(doc, text, bytes);
  // One byte per character only for ASCII (UTF-8 spends two or more on every other character).
  const ascii = bytes.length === text.length;
  return new WithheldSourceText(doc, text, ascii ? undefined : Buffer.from(bytes));
}

const WITHHELD = '[the line as read: withheld, it may hold values that are masked]';

class WithheldSourceText implements SourceText {
  readonly #doc: JsonObject;
  readonly #text: string;
  readonly #bytes: Uint8Array | undefined;

  constructor(doc: JsonObject, text: string, bytes: Uint8Array | undefined) {
    this.#doc = doc;
    this.#text = text;
    this.#bytes = bytes;
  }

  get doc(): JsonObject {
    return this.#doc;
  }

  get text(): string {
    return this.#text;
  }

  get bytes(): Uint8Array | undefined {
    return this.#bytes;
  }

  toJSON(): string {
    return WITHHELD;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return WITHHELD;
  }
}

/** Writes `doc` using what is known of the text it came from. */
export function bodyFrom(source: SourceText | undefined, doc: JsonObject): Buffer {
  if (source) {
    if (doc === source.doc) return source.bytes ? asBuffer(source.bytes) : Buffer.from(source.text, 'latin1');
    try {
      return spliceDocument(source.text, (source.bytes?.length ?? source.text.length) === source.text.length, source.doc, doc);
    } catch {
      // Not expected for text JSON.parse accepted; stringify is always right, only slower.
    }
  }
  return Buffer.from(JSON.stringify(doc));
}

/** Whether `text` (which JSON.parse turned into `doc`) names no key twice. */
export function isFaithfulText(text: string, doc: JsonObject): boolean {
  return checkText(text, doc) !== TEXT_DUPLICATE_KEYS;
}

/** `doc` is the text, and every `mask_data` key is the one key of an element of `lines`. */
export const TEXT_FAITHFUL = 0;
/** `doc` is the text, but `mask_data` keys appear elsewhere too (nested steps): mask deep. */
export const TEXT_NESTED_MASK_DATA = 1;
/** A key appears twice (or the nesting is too deep to count): JSON.parse dropped values. */
export const TEXT_DUPLICATE_KEYS = 2;

/** Counted by countDocKeys; a module variable, so the check allocates nothing per line. */
let maskDataKeysCounted = 0;

/**
 * How `text` relates to the document JSON.parse made of it: one of the TEXT_* values. The key
 * counts are the ones isFaithfulText always made; counting the `mask_data` keys on the way costs
 * one comparison per key, and tells the rare document whose masking must look deeper.
 */
export function checkText(text: string, doc: JsonObject, textKeys?: number): number {
  try {
    maskDataKeysCounted = 0;
    // parse.ts counted the text's keys already, in its structure scan: that saves a pass.
    if ((textKeys ?? countTextKeys(text)) !== countDocKeys(doc)) return TEXT_DUPLICATE_KEYS;
    return maskDataKeysCounted === stepMaskDataKeys(doc) ? TEXT_FAITHFUL : TEXT_NESTED_MASK_DATA;
  } catch {
    // Nesting deeper than the stack: not worth an exact answer, the document is serialized instead.
    return TEXT_DUPLICATE_KEYS;
  }
}

/** `mask_data` keys of the elements of `lines` (each object has a key at most once). */
function stepMaskDataKeys(doc: JsonObject): number {
  const lines = doc.lines;
  if (!Array.isArray(lines)) return 0;
  let keys = 0;
  for (const step of lines) {
    if (step !== null && typeof step === 'object' && !Array.isArray(step) && Object.hasOwn(step, 'mask_data')) keys++;
  }
  return keys;
}

/** A record made from worker output: its document is parsed from the body only if someone asks. */
export function preparedRecord(fields: Omit<LogRecord, 'doc'>, bodies: PreparedBodies): LogRecord {
  let doc: JsonObject | undefined;
  const record = { ...fields } as LogRecord;
  // An own enumerable getter, so `{ ...record }` in a plugin still copies a real document.
  Object.defineProperty(record, 'doc', {
    enumerable: true,
    get: () => (doc ??= JSON.parse(asBuffer(bodies.body).toString('utf8')) as JsonObject),
  });
  preparedBodies.set(record, bodies);
  return record;
}

/** The record's document as JSON bytes on one line (no trailing newline). */
export function documentBody(record: LogRecord): Buffer {
  const prepared = preparedBodies.get(record);
  if (prepared) return asBuffer(prepared.body);
  const doc = record.doc;
  let body = bodiesByDoc.get(doc);
  if (!body) {
    body = bodyFrom(record.sourceText, doc);
    bodiesByDoc.set(doc, body);
  }
  return body;
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
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
    const end = stringEnd(text, at);
    if (end === -1) return keys;
    const next = skipSpace(text, end + 1);
    if (text.charCodeAt(next) === 0x3a) keys++;
    at = text.indexOf('"', next);
  }
  return keys;
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
    if (key === 'mask_data') maskDataKeysCounted++;
    const item = value[key] as JsonValue;
    if (item !== null && typeof item === 'object') keys += countDocKeys(item);
  }
  return keys;
}
