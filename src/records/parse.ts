import { isAscii } from 'node:buffer';
import { createHash } from 'node:crypto';
import { RecordError } from '../errors.js';
import type { JsonObject, JsonValue, KeyNumberPath, LineReference, LogRecord, RecordKind, RecordOrigin, WrittenNumbers } from '../engine/types.js';
import { checkText, sourceTextOf, TEXT_DUPLICATE_KEYS, TEXT_NESTED_MASK_DATA } from './body.js';
import { textDigest } from './canonical.js';
import { findJsonProblem, parseKeepingMaskData } from './json-text.js';
import { hasNestedMaskData, markNestedMaskData } from './mask.js';
import { DEFAULT_MAX_DEPTH, WATCHED_NUMBERS, scanStructure } from './structure.js';

export interface ParseOptions {
  /** Deepest nesting allowed (see LineLimits.maxDepth); DEFAULT_MAX_DEPTH when undefined. */
  readonly maxDepth?: number | undefined;
  /** The caller owns `bytes` (the pool worker, which got them transferred): they are kept, not copied. */
  readonly ownedBytes?: boolean;
}

const NO_OPTIONS: ParseOptions = {};

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
export function parseLine(line: Uint8Array, origin: RecordOrigin, options: ParseOptions = NO_OPTIONS): ParseResult {
  const text = decodeLine(line);
  if (text === undefined) {
    return {
      ok: false,
      error: new RecordError('LF_RECORD_BAD_UTF8', `line is not valid UTF-8: ${utf8Problem(line)}`),
      rawBase64: Buffer.from(line).toString('base64'),
      line: lineReference(line),
    };
  }
  return parseText(text, origin, line, options);
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
 * As parseLine, from text; with the bytes the text was decoded from, the record keeps both (see body.ts).
 *
 * Before JSON.parse, one pass over the structural text (structure.ts) checks the nesting against
 * `maxDepth`, so no deeper document exists to overflow a recursive step further on, counts the
 * keys (which tells whether the text can stand for the document) and notes where the numbers key
 * parts are made of are written.
 */
export function parseText(text: string, origin: RecordOrigin, bytes?: Uint8Array, options: ParseOptions = NO_OPTIONS): ParseResult {
  const maxDepth = options.maxDepth ?? DEFAULT_MAX_DEPTH;
  const structure = scanStructure(text, maxDepth);
  if (structure.tooDeep) {
    // No text: the line was not parsed, so mask_data could not be applied to it. The origin finds it.
    return {
      ok: false,
      error: new RecordError(
        'LF_RECORD_TOO_DEEP',
        `line nests objects and arrays deeper than max_depth (${maxDepth}): depth ${structure.depth} at character ${structure.tooDeepAt} of ${text.length}`,
      ),
      line: lineReference(bytes ?? text),
    };
  }
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
  const checked = checkText(text, value as JsonObject, structure.keys);
  let doc = value as JsonObject;
  if (checked === TEXT_DUPLICATE_KEYS) doc = parseWithMaskDataRule(text);
  else if (checked === TEXT_NESTED_MASK_DATA) markNestedMaskData(doc);
  const nestedMaskData = checked === TEXT_NESTED_MASK_DATA || (checked === TEXT_DUPLICATE_KEYS && hasNestedMaskData(doc));
  const writtenNumbers = writtenNumbersOf(text, structure.numbers, doc);
  const kind = classify(doc, writtenNumbers);
  if (typeof kind !== 'string') return { ok: false, error: kind, doc };
  // From the text, numbers as written: two events that differ only beyond 2^53 get different digests.
  const receivedDigest = kind === 'activity' ? textDigest(text) : undefined;
  const sourceText = bytes === undefined ? undefined : sourceTextOf(doc, text, bytes, options.ownedBytes, checked !== TEXT_DUPLICATE_KEYS);
  // One object literal, so every parsed record has the same shape.
  const record: LogRecord = { kind, doc, origin, receivedDigest, sourceText, writtenNumbers, nestedMaskData };
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

/**
 * The texts of the key numbers that String() would not give back as written. The spans come from
 * the structure scan (last occurrence of each path, as JSON.parse keeps), and a text is kept only
 * while the doc holds a number there, so a stale span of a replaced duplicate is never used.
 */
function writtenNumbersOf(text: string, spans: readonly number[] | undefined, doc: JsonObject): WrittenNumbers | undefined {
  if (spans === undefined) return undefined;
  let written: Partial<Record<KeyNumberPath, { value: number; text: string }>> | undefined;
  for (let index = 0; index < WATCHED_NUMBERS.length; index++) {
    const start = spans[index * 2]!;
    if (start < 0) continue;
    const end = spans[index * 2 + 1]!;
    const path = WATCHED_NUMBERS[index]!;
    const value = valueAt(doc, path);
    if (typeof value !== 'number') continue;
    written ??= {};
    written[path] = { value, text: text.slice(start, end) };
  }
  return written;
}

function valueAt(doc: JsonObject, path: string): JsonValue | undefined {
  let value: JsonValue | undefined = doc;
  for (const segment of path.split('.')) {
    if (value === null || typeof value !== 'object' || Array.isArray(value) || !Object.hasOwn(value, segment)) return undefined;
    value = value[segment];
  }
  return value;
}

/**
 * A number's text for a key: as written when the record has it and the doc still holds the value
 * it was parsed as; otherwise String() of a safe integer (exact); otherwise undefined, because
 * the digits of a double beyond 2^53 that was not read from a line are not known.
 */
export function numberText(value: number, written: { readonly value: number; readonly text: string } | undefined): string | undefined {
  if (written !== undefined && Object.is(written.value, value)) return written.text;
  if (Object.is(value, -0)) return '-0';
  return Number.isSafeInteger(value) ? String(value) : undefined;
}

/** How a job id must be written: digits, no sign, no fraction or exponent, at most 21 of them. */
export const JOB_ID_TEXT = /^(?:0|[1-9][0-9]{0,20})$/;

/**
 * A job has integer `id` and `flow_id` (plain digits as written, any size up to 21 digits: never
 * rounded to a double); an activity event has a string `event`.
 */
export function classify(doc: JsonObject, written?: WrittenNumbers): RecordKind | RecordError {
  if (typeof doc.event === 'string') {
    if (doc.event.length === 0) return new RecordError('LF_RECORD_INVALID', 'activity event has an empty `event` name');
    return 'activity';
  }
  if ('id' in doc || 'flow_id' in doc) {
    for (const field of ['id', 'flow_id'] as const) {
      const v = doc[field];
      // The common case, without String() and the regex: a safe integer's digits are what it was
      // written as unless the line wrote it otherwise, and then `written` has its text.
      if (typeof v === 'number' && written?.[field] === undefined && Number.isSafeInteger(v) && v >= 0 && !Object.is(v, -0)) continue;
      const text = typeof v === 'number' ? numberText(v, written?.[field]) : undefined;
      if (text === undefined || !JOB_ID_TEXT.test(text)) {
        return new RecordError(
          'LF_RECORD_INVALID',
          `job field \`${field}\` must be a non-negative integer written in at most 21 digits, got ${describe(v, written?.[field])}`,
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

/** The value for a message: a number as written in the line when known (`1e400`, not `null`). */
export function describe(v: unknown, written?: { readonly value: number; readonly text: string }): string {
  if (v === undefined) return 'nothing (missing)';
  let shown: string;
  if (typeof v === 'number') shown = written !== undefined && Object.is(written.value, v) ? written.text : Object.is(v, -0) ? '-0' : String(v);
  else {
    try {
      shown = JSON.stringify(v) ?? String(v);
    } catch {
      shown = '(cannot be shown)';
    }
  }
  return `${Array.isArray(v) ? 'array' : v === null ? 'null' : typeof v} ${shown.length > 40 ? shown.slice(0, 40) + '…' : shown}`;
}
