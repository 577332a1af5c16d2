import type { JsonObject, JsonValue } from '../engine/types.js';

/**
 * Writes a changed document by editing the text it was parsed from instead of serializing it
 * again. Transforms copy on write, so every subtree that no transform touched is the very object
 * JSON.parse made: its text is copied as it was read, and only the values that changed (a masked
 * step's input and output, a redacted field) are serialized. On job documents JSON.stringify is
 * about two thirds of the cost of a record; this leaves a scan of the text and a memcpy.
 *
 * The text must be the one `original` was parsed from, with no key given twice (see body.ts):
 * with a duplicated key the text would hold a value the document never had. `ascii` says the text
 * has one byte per character, so its ranges can be copied into the body as latin1.
 */
export function spliceDocument(text: string, ascii: boolean, original: JsonObject, changed: JsonObject): Buffer {
  const pieces: Piece[] = [];
  const scan = new Scanner(text, pieces);
  scan.value(skipSpace(text, 0), original, changed);
  scan.finish();
  // ASCII text is one byte a character: its ranges are copied as latin1 straight into the body.
  if (ascii) return joinAscii(text, pieces);
  return Buffer.from(pieces.map((p) => (typeof p === 'string' ? p : text.slice(p[0], p[1]))).join(''));
}

function joinAscii(text: string, pieces: readonly Piece[]): Buffer {
  let length = 0;
  for (const p of pieces) length += typeof p === 'string' ? Buffer.byteLength(p) : p[1] - p[0];
  const body = Buffer.allocUnsafe(length);
  let at = 0;
  for (const p of pieces) {
    at += typeof p === 'string' ? body.write(p, at, 'utf8') : body.write(text.slice(p[0], p[1]), at, 'latin1');
  }
  return body;
}

/** A range of the original text to copy, or a text to write instead. */
type Piece = string | readonly [from: number, to: number];

class Scanner {
  /** Start of the text not yet copied into parts. */
  private copiedTo = 0;

  constructor(
    private readonly text: string,
    private readonly pieces: Piece[],
  ) {}

  /** Rewrites the value at `at` (parsed as `before`) so it reads as `after`; returns its end. */
  value(at: number, before: JsonValue, after: JsonValue): number {
    if (before === after) return skipValue(this.text, at);
    if (isObject(before) && isObject(after)) return this.object(at, before, after);
    if (Array.isArray(before) && Array.isArray(after) && before.length === after.length) return this.array(at, before, after);
    const end = skipValue(this.text, at);
    this.replace(at, end, JSON.stringify(after));
    return end;
  }

  private object(at: number, before: JsonObject, after: JsonObject): number {
    const text = this.text;
    let i = skipSpace(text, at + 1);
    /** End of the last member kept, so a removed member takes its comma with it. */
    let lastKeptEnd = -1;
    let pendingRemoval = -1;
    const seen = new Set<string>();
    while (text.charCodeAt(i) !== 0x7d /* } */) {
      const memberStart = i;
      const keyEnd = stringEnd(text, i) + 1;
      const key = stringAt(text, i, keyEnd - 1);
      seen.add(key);
      const valueStart = skipSpace(text, skipSpace(text, keyEnd) + 1);
      let valueEnd: number;
      if (!Object.hasOwn(after, key)) {
        valueEnd = skipValue(text, valueStart);
        // Removed: cut from the end of the previous kept member (its comma) or, for the first
        // member, up to the next member.
        if (lastKeptEnd >= 0) this.replace(lastKeptEnd, valueEnd, '');
        else pendingRemoval = pendingRemoval >= 0 ? pendingRemoval : memberStart;
      } else {
        if (pendingRemoval >= 0) {
          this.replace(pendingRemoval, memberStart, '');
          pendingRemoval = -1;
        }
        valueEnd = this.value(valueStart, before[key] as JsonValue, after[key] as JsonValue);
        lastKeptEnd = valueEnd;
      }
      i = skipSpace(text, valueEnd);
      if (text.charCodeAt(i) === 0x2c /* , */) i = skipSpace(text, i + 1);
    }
    if (pendingRemoval >= 0) this.replace(pendingRemoval, i, '');
    const added = Object.keys(after).filter((key) => !seen.has(key));
    if (added.length > 0) {
      const members = added.map((key) => `${JSON.stringify(key)}:${JSON.stringify(after[key])}`).join(',');
      this.replace(i, i, lastKeptEnd >= 0 ? `,${members}` : members);
    }
    return i + 1;
  }

  private array(at: number, before: JsonValue[], after: JsonValue[]): number {
    const text = this.text;
    let i = skipSpace(text, at + 1);
    for (let index = 0; index < before.length; index++) {
      i = skipSpace(text, this.value(i, before[index] as JsonValue, after[index] as JsonValue));
      if (text.charCodeAt(i) === 0x2c) i = skipSpace(text, i + 1);
    }
    return i + 1;
  }

  /** Copies the text up to `from`, then `replacement` instead of the text up to `to`. */
  private replace(from: number, to: number, replacement: string): void {
    if (from > this.copiedTo) this.pieces.push([this.copiedTo, from]);
    if (replacement) this.pieces.push(replacement);
    this.copiedTo = to;
  }

  /** Called once after value(): copies the rest of the text. */
  finish(): void {
    if (this.copiedTo < this.text.length) this.pieces.push([this.copiedTo, this.text.length]);
  }
}

function isObject(value: JsonValue): value is JsonObject {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** The decoded string between the quotes at `open` and `close`; only a string with an escape pays for JSON.parse. */
export function stringAt(text: string, open: number, close: number): string {
  const raw = text.slice(open + 1, close);
  return raw.includes('\\') ? (JSON.parse(text.slice(open, close + 1)) as string) : raw;
}

/** End (exclusive) of the number, true, false or null starting at `i`: up to the next delimiter. */
export function scalarEnd(text: string, i: number): number {
  let c = text.charCodeAt(i);
  while (i < text.length && c !== 0x2c && c !== 0x7d && c !== 0x5d && c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) c = text.charCodeAt(++i);
  return i;
}

export function skipSpace(text: string, i: number): number {
  let c = text.charCodeAt(i);
  while (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) c = text.charCodeAt(++i);
  return i;
}

/** Index of the quote that closes the string opening at `start` (-1 when there is none). */
export function stringEnd(text: string, start: number): number {
  let end = text.indexOf('"', start + 1);
  while (isEscaped(text, end)) end = text.indexOf('"', end + 1);
  return end;
}

function isEscaped(text: string, quote: number): boolean {
  let backslashes = 0;
  for (let i = quote - 1; text.charCodeAt(i) === 0x5c; i--) backslashes++;
  return backslashes % 2 === 1;
}

/** End (exclusive) of the JSON value starting at `i`; strings are jumped over with indexOf. */
function skipValue(text: string, i: number): number {
  const first = text.charCodeAt(i);
  if (first === 0x22) return stringEnd(text, i) + 1;
  if (first !== 0x7b && first !== 0x5b) return scalarEnd(text, i);
  let depth = 0;
  for (;;) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      i = stringEnd(text, i) + 1;
      continue;
    }
    if (c === 0x7b || c === 0x5b) depth++;
    else if (c === 0x7d || c === 0x5d) {
      if (--depth === 0) return i + 1;
    }
    i++;
  }
}
