import { isAscii } from 'node:buffer';
import { createHash } from 'node:crypto';
import { RecordError } from '../errors.js';
import type { JsonObject, LineReference, LogRecord, RecordKind, RecordOrigin } from '../engine/types.js';
import { checkText, sourceTextOf, TEXT_DUPLICATE_KEYS, TEXT_NESTED_MASK_DATA } from './body.js';
import { contentDigest } from './canonical.js';
import { findJsonProblem, parseKeepingMaskData } from './json-text.js';
import { markNestedMaskData } from './mask.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The line as text, or undefined when it is not valid UTF-8. Most lines are ASCII, which is
 * checked and copied into a string at memory speed; only the others pay for the UTF-8 decoder.
 */
export function decodeLine(line: Uint8Array): string | undefined {
  const bytes = Buffer.isBuffer(line) ? line : Buffer.from(line.buffer, line.byteOffset, line.byteLength);
  // For ASCII, latin1 gives the same string and is a plain copy.
  if (isAscii(bytes)) return bytes.toString('latin1');
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}

/**
 * A line that is not a record. `text` and `rawBase64` are the line itself: the dead letters keep
 * only `line` (its length and hash) unless `dead_letter.keep_text` is on, because the text may
 * hold the values of a step marked mask_data.
 */
export type ParseResult =
  | { ok: true; record: LogRecord }
  | { ok: false; error: RecordError; text?: string; doc?: JsonObject; rawBase64?: string; line?: LineReference };

/** The length and SHA-256 of a line, by which a dead letter names it without holding its text. */
export function lineReference(line: Uint8Array | string): LineReference {
  const bytes = typeof line === 'string' ? Buffer.from(line, 'utf8') : line;
  return { length: bytes.byteLength, sha256: createHash('sha256').update(bytes).digest('hex') };
}

/**
 * Turns one input line (without its line terminator) into a record, or says precisely why not.
 * Shared by every source so that a line means the same thing whichever way it arrives.
 *
 * A copy of the line is kept with the record (`sourceText`), so sinks can write the document from
 * the text it was read as instead of serializing it again (see body.ts).
 */
export function parseLine(line: Uint8Array, origin: RecordOrigin): ParseResult {
  const text = decodeLine(line);
  if (text === undefined) {
    return {
      ok: false,
      error: new RecordError('LF_RECORD_BAD_UTF8', `line is not valid UTF-8: ${utf8Problem(line)}`),
      rawBase64: Buffer.from(line).toString('base64'),
      line: lineReference(line),
    };
  }
  return parseText(text, origin, line);
}

/** Where the first byte that breaks UTF-8 is, for the dead letter's reason (it quotes nothing). */
export function utf8Problem(bytes: Uint8Array): string {
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i]!;
    if (b < 0x80) {
      i++;
      continue;
    }
    // Lead byte: how many continuation bytes follow, and the smallest second byte (no overlong
    // forms, no surrogates, nothing above U+10FFFF).
    let need: number;
    let low = 0x80;
    let high = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) need = 1;
    else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      if (b === 0xe0) low = 0xa0;
      if (b === 0xed) high = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      if (b === 0xf0) low = 0x90;
      if (b === 0xf4) high = 0x8f;
    } else return `byte 0x${b.toString(16)} at byte ${i} cannot start a character`;
    for (let k = 1; k <= need; k++) {
      const c = bytes[i + k];
      if (c === undefined) return `the line ends inside a character at byte ${i}`;
      const [min, max] = k === 1 ? [low, high] : [0x80, 0xbf];
      if (c < min || c > max) return `byte 0x${c.toString(16)} at byte ${i + k} does not continue the character at byte ${i}`;
    }
    i += need + 1;
  }
  return 'no invalid byte found';
}

/**
 * As parseLine, from text; with the bytes the text was decoded from, the record keeps both (see
 * body.ts). `owned` says the caller hands the bytes over (the pool worker), so they are not copied.
 */
export function parseText(text: string, origin: RecordOrigin, bytes?: Uint8Array, owned = false): ParseResult {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    // JSON.parse's message quotes the text around the error; the reason names only the place.
    const problem = findJsonProblem(text);
    const where = problem ? `${problem.problem} at position ${problem.position}` : 'at an unknown position';
    const error = new RecordError('LF_RECORD_BAD_JSON', `line is not valid JSON: ${where} (of ${text.length} characters)`);
    return { ok: false, error, text, line: lineReference(bytes ?? text) };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    const what = Array.isArray(value) ? 'an array' : value === null ? 'null' : `a ${typeof value}`;
    return {
      ok: false,
      error: new RecordError('LF_RECORD_NOT_OBJECT', `line is ${what}, expected a JSON object (a job or an activity event)`),
      text,
      line: lineReference(bytes ?? text),
    };
  }
  // Whether a key is given twice, and whether mask_data appears off the elements of `lines`.
  const checked = checkText(text, value as JsonObject);
  let doc = value as JsonObject;
  if (checked === TEXT_DUPLICATE_KEYS) doc = parseWithMaskDataRule(text);
  else if (checked === TEXT_NESTED_MASK_DATA) markNestedMaskData(doc);
  const kind = classify(doc);
  if (typeof kind !== 'string') return { ok: false, error: kind, doc };
  const receivedDigest = kind === 'activity' ? contentDigest(doc) : undefined;
  const sourceText = bytes === undefined ? undefined : sourceTextOf(doc, text, bytes, owned, checked !== TEXT_DUPLICATE_KEYS);
  // One object literal, so every parsed record has the same shape.
  const record: LogRecord = { kind, doc, origin, receivedDigest, sourceText };
  return { ok: true, record };
}

/**
 * A line that gives a key twice: JSON.parse kept each key's last value, so a step written
 * `{"mask_data":true,...,"mask_data":false}` would read as unmasked. It is parsed again, keeping
 * a `mask_data` that is true in any occurrence, and masked deep when it names mask_data at all.
 */
function parseWithMaskDataRule(text: string): JsonObject {
  const { value, maskDataKeys } = parseKeepingMaskData(text);
  const doc = value as JsonObject;
  return maskDataKeys > 0 ? markNestedMaskData(doc) : doc;
}

/** A job has integer `id` and `flow_id`; an activity event has a string `event`. */
export function classify(doc: JsonObject): RecordKind | RecordError {
  if (typeof doc.event === 'string') {
    if (doc.event.length === 0) return new RecordError('LF_RECORD_INVALID', 'activity event has an empty `event` name');
    return 'activity';
  }
  if ('id' in doc || 'flow_id' in doc) {
    for (const field of ['id', 'flow_id'] as const) {
      const v = doc[field];
      if (!Number.isSafeInteger(v) || (v as number) < 0) {
        return new RecordError(
          'LF_RECORD_INVALID',
          `job field \`${field}\` must be a non-negative integer, got ${describe(v)}`,
        );
      }
    }
    return 'job';
  }
  if ('event' in doc) {
    return new RecordError('LF_RECORD_INVALID', `activity field \`event\` must be a string, got ${describe(doc.event)}`);
  }
  return new RecordError(
    'LF_RECORD_INVALID',
    'object is neither a job (integer `id` and `flow_id`) nor an activity event (string `event`)',
  );
}

function describe(v: unknown): string {
  if (v === undefined) return 'nothing (missing)';
  const json = JSON.stringify(v) ?? String(v);
  return `${Array.isArray(v) ? 'array' : v === null ? 'null' : typeof v} ${json.length > 40 ? json.slice(0, 40) + '…' : json}`;
}
