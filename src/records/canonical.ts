import { createHash } from 'node:crypto';
import type { JsonValue } from '../engine/types.js';
import { LogferryError } from '../errors.js';
import { scalarEnd, stringAt, stringEnd } from './splice.js';

/**
 * Canonical JSON: object keys sorted at every depth (JavaScript's default string order of the
 * decoded key), strings as JSON.stringify writes them, no spaces, so equal documents give equal
 * bytes. Both versions below are iterative: a document of any depth costs heap, never stack.
 */

/**
 * The canonical JSON of a line's text, with every number kept exactly as written: 9007199254740993
 * and 9007199254740992 stay different, and so do `1E2` and `100`. A key given twice keeps its last
 * value, as JSON.parse does. For a document whose numbers are written as JSON.stringify would
 * write them, this is the same text as `canonicalJson(JSON.parse(text))`, so digests made before
 * did not change. Only meaningful for text JSON.parse accepted.
 */
/**
 * A number as it is written in a line, for the one reading that needs it (the redact `hash`
 * replacement; see json-text.ts parseKeepingMaskData). canonicalJson writes it as JSON.stringify
 * would write its double when the double holds it exactly, and as written when it does not
 * (integers beyond 2^53, more digits than a double keeps, 1e400): equal values hash equally, and
 * numbers a double cannot tell apart still hash differently.
 */
export class WrittenNumber {
  readonly canonical: string;
  constructor(readonly text: string) {
    const value = Number(text);
    this.canonical = exactAsDouble(text, value) ? (Object.is(value, -0) ? '-0' : String(value)) : text;
  }
}

const INTEGER_TEXT = /^-?\d+$/;

function exactAsDouble(text: string, value: number): boolean {
  if (!Number.isFinite(value)) return false;
  if (INTEGER_TEXT.test(text)) return Number.isSafeInteger(value) || BigInt(text) === BigInt(value);
  // A fraction or an exponent: a double keeps 15 to 17 significant digits; beyond 15, two texts
  // may share one double, so the text is kept.
  const digits = text.replace(/[eE].*$/, '').replace(/[-.]/g, '').replace(/^0+/, '');
  // 1e-400 is 0 as a double: only a text with no digit but zeros is.
  if (value === 0) return digits.replace(/0+$/, '') === '';
  return digits.length <= 15;
}

/** With the u flag a surrogate pair is one code point, so this matches only a lone surrogate. */
const LONE_SURROGATE = /[\ud800-\udfff]/u;

export function canonicalText(text: string): string {
  type Frame = { readonly members: Map<string, string>; key: string | undefined } | { readonly items: string[] };
  const stack: Frame[] = [];
  let result = '';
  const emit = (value: string): void => {
    const top = stack[stack.length - 1];
    if (top === undefined) result = value;
    else if ('items' in top) top.items.push(value);
    else {
      top.members.set(top.key as string, value);
      top.key = undefined;
    }
  };
  const length = text.length;
  let i = 0;
  while (i < length) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      const end = stringEnd(text, i);
      const decoded = stringAt(text, i, end);
      // An escape always makes the text longer than what it stands for.
      const escaped = decoded.length !== end - i - 1;
      const top = stack[stack.length - 1];
      if (top !== undefined && !('items' in top) && top.key === undefined) top.key = decoded;
      // A string without escapes is written as is, unless it holds a lone surrogate (escaped by JSON.stringify).
      else emit(!escaped && !LONE_SURROGATE.test(decoded) ? text.slice(i, end + 1) : JSON.stringify(decoded));
      i = end + 1;
    } else if (c === 0x7b /* { */) {
      stack.push({ members: new Map(), key: undefined });
      i++;
    } else if (c === 0x5b /* [ */) {
      stack.push({ items: [] });
      i++;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      const frame = stack.pop()!;
      if ('items' in frame) emit('[' + frame.items.join(',') + ']');
      else emit('{' + [...frame.members.keys()].sort().map((key) => JSON.stringify(key) + ':' + frame.members.get(key)!).join(',') + '}');
      i++;
    } else if (c === 0x2c || c === 0x3a || c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) {
      i++;
    } else {
      // A number (kept as written), true, false or null: up to the next delimiter.
      const end = scalarEnd(text, i);
      emit(text.slice(i, end));
      i = end;
    }
  }
  return result;
}

/**
 * The canonical JSON of a document, for records that have no text (built by a plugin): numbers are
 * what the doubles hold, so two numbers that were already one double cannot be told apart here.
 * Distinct doubles never collide: -0 is written `-0`, and non-finite numbers (1e400 parses to
 * Infinity) as `Infinity`, `-Infinity`, `NaN`, which no JSON text can be.
 */
export function canonicalJson(value: JsonValue): string {
  type Frame = { readonly open: string; readonly close: string; readonly parts: string[]; readonly container: object; readonly entries: [string | undefined, unknown][]; index: number };
  const ancestors = new Set<object>();
  const stack: Frame[] = [];
  let result = '';
  const emit = (text: string): void => {
    const top = stack[stack.length - 1];
    if (top === undefined) {
      result = text;
      return;
    }
    const key = top.entries[top.index - 1]![0];
    top.parts.push(key === undefined ? text : JSON.stringify(key) + ':' + text);
  };
  const visit = (item: unknown, inArray: boolean): void => {
    if (item instanceof WrittenNumber) {
      emit(item.canonical);
      return;
    }
    if (item !== null && typeof item === 'object') {
      if (ancestors.has(item)) throw new LogferryError('LF_RECORD_UNPROCESSABLE', 'cannot write the canonical JSON of a document that contains itself (a plugin built a record with a cycle)');
      ancestors.add(item);
      if (Array.isArray(item)) {
        stack.push({ open: '[', close: ']', parts: [], container: item, entries: item.map((v) => [undefined, v]), index: 0 });
      } else {
        const record = item as Record<string, unknown>;
        const entries = Object.keys(record)
          .sort()
          .filter((k) => !isSkipped(record[k]))
          .map((k): [string, unknown] => [k, record[k]]);
        stack.push({ open: '{', close: '}', parts: [], container: item, entries, index: 0 });
      }
      return;
    }
    emit(isSkipped(item) ? (inArray ? 'null' : '') : scalar(item));
  };
  visit(value, false);
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    if (top.index < top.entries.length) {
      const [, item] = top.entries[top.index++]!;
      visit(item, top.open === '[');
      continue;
    }
    stack.pop();
    ancestors.delete(top.container);
    emit(top.open + top.parts.join(',') + top.close);
  }
  return result;
}

function isSkipped(value: unknown): boolean {
  return value === undefined || typeof value === 'function' || typeof value === 'symbol';
}

function scalar(value: unknown): string {
  // String() is JSON.stringify for finite numbers, and gives Infinity, -Infinity and NaN for the others.
  if (typeof value === 'number') return Object.is(value, -0) ? '-0' : String(value);
  if (typeof value === 'bigint') return `${value}n`;
  return JSON.stringify(value);
}

/** First 16 hex characters of SHA-256 over the canonical JSON of the value (records without text). */
export function contentDigest(value: JsonValue): string {
  return createHash('sha256').update(canonicalJson(value)).digest('hex').slice(0, 16);
}

/** First 16 hex characters of SHA-256 over the canonical JSON of a line's text, numbers as written. */
export function textDigest(text: string): string {
  return createHash('sha256').update(canonicalText(text)).digest('hex').slice(0, 16);
}
