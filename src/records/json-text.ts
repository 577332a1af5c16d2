import type { JsonObject, JsonValue } from '../engine/types.js';
import { WrittenNumber } from './canonical.js';
import { scalarEnd, skipSpace, stringAt, stringEnd } from './splice.js';

/**
 * Two readings of a line's JSON text that JSON.parse does not give: a parse in which a `mask_data`
 * key that is true in any of its occurrences stays true, and where a text that is not JSON goes
 * wrong, without quoting any of it. Both are iterative (an explicit stack), so no nesting depth
 * overflows the call stack, and both only run on rare lines.
 */

export interface MaskDataParse {
  readonly value: JsonValue;
  /** How many `mask_data` keys the text has (every occurrence, escaped spellings included). */
  readonly maskDataKeys: number;
}

interface OpenContainer {
  readonly value: JsonObject | JsonValue[];
  /** The key whose value is being read (objects only). */
  key: string;
}

/**
 * Parses text JSON.parse accepted, as JSON.parse does (a repeated key keeps its first place and
 * its last value), except that a `mask_data` key that was `true` stays true whatever comes after
 * it: `{"mask_data":true,"mask_data":false}` is a masked step. Only for text that is valid JSON.
 * With `numbersAsWritten`, numbers are WrittenNumber objects holding their text (not JSON values:
 * only for the redact hash, which reads them through canonicalJson).
 */
export function parseKeepingMaskData(text: string, numbersAsWritten = false): MaskDataParse {
  const stack: OpenContainer[] = [];
  let maskDataKeys = 0;
  let i = skipSpace(text, 0);
  const readKey = (): string => {
    const end = stringEnd(text, i);
    const key = stringAt(text, i, end);
    if (key === 'mask_data') maskDataKeys++;
    // Past the key, the colon and the space around it.
    i = skipSpace(text, skipSpace(text, end + 1) + 1);
    return key;
  };
  for (;;) {
    let value: JsonValue;
    const c = text.charCodeAt(i);
    if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      const container: JsonObject | JsonValue[] = c === 0x7b ? {} : [];
      i = skipSpace(text, i + 1);
      const close = text.charCodeAt(i);
      if (close === 0x7d || close === 0x5d) {
        i++;
        value = container;
      } else {
        stack.push({ value: container, key: c === 0x7b ? readKey() : '' });
        continue;
      }
    } else if (c === 0x22 /* " */) {
      const end = stringEnd(text, i);
      value = stringAt(text, i, end);
      i = end + 1;
    } else {
      const start = i;
      i = scalarEnd(text, i);
      const scalar = text.slice(start, i);
      // `numbersAsWritten` (redact hashes): a number keeps its text, which its double may not hold.
      value = numbersAsWritten && c !== 0x74 && c !== 0x66 && c !== 0x6e ? (new WrittenNumber(scalar) as unknown as JsonValue) : (JSON.parse(scalar) as JsonValue);
    }
    // Attach the value to its container; close every container that ends right after it.
    for (;;) {
      const top = stack[stack.length - 1];
      if (!top) return { value, maskDataKeys };
      if (Array.isArray(top.value)) top.value.push(value);
      else setMember(top.value, top.key, value);
      i = skipSpace(text, i);
      if (text.charCodeAt(i) === 0x2c /* , */) {
        i = skipSpace(text, i + 1);
        if (!Array.isArray(top.value)) top.key = readKey();
        break;
      }
      i++;
      stack.pop();
      value = top.value;
    }
  }
}

function setMember(object: JsonObject, key: string, value: JsonValue): void {
  // The rule of this parse: a mask_data that was true once stays true.
  if (key === 'mask_data' && object.mask_data === true && Object.hasOwn(object, key)) return;
  if (key === '__proto__') Object.defineProperty(object, key, { value, writable: true, enumerable: true, configurable: true });
  else object[key] = value;
}


// ---------------------------------------------------------------------------------------------
// What is wrong with a text that is not JSON

export interface JsonProblem {
  /** Index (UTF-16 code units, as JSON.parse counts) where the text stops being JSON. */
  readonly position: number;
  /** What was expected or found, in words that quote nothing of the text. */
  readonly problem: string;
}

const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const LITERALS = ['true', 'false', 'null'] as const;

const enum Expect {
  Value,
  ValueOrArrayEnd,
  Key,
  KeyOrObjectEnd,
  AfterValue,
}

/**
 * Where and why `text` is not JSON, or undefined when it is. The dead letter of a line that is
 * not JSON carries this instead of JSON.parse's message, which quotes the text around the error
 * (and the text may hold a masked step's values).
 */
export function findJsonProblem(text: string): JsonProblem | undefined {
  const closers: number[] = [];
  let expect = Expect.Value;
  let i = 0;
  const length = text.length;
  for (;;) {
    i = skipSpace(text, i);
    const c = text.charCodeAt(i);
    if (expect === Expect.AfterValue) {
      const closer = closers[closers.length - 1];
      if (closer === undefined) return i === length ? undefined : { position: i, problem: 'unexpected data after the JSON value' };
      if (i >= length) return { position: i, problem: `the line ends inside ${closer === 0x7d ? 'an object' : 'an array'} (cut short?)` };
      if (c === 0x2c) {
        expect = closer === 0x7d ? Expect.Key : Expect.Value;
        i++;
      } else if (c === closer) {
        closers.pop();
        i++;
      } else {
        return { position: i, problem: `expected a comma or the end of ${closer === 0x7d ? 'the object' : 'the array'}` };
      }
      continue;
    }
    if (i >= length) return { position: i, problem: 'the line ends where a value should be (cut short?)' };
    if (expect === Expect.Key || expect === Expect.KeyOrObjectEnd) {
      if (c === 0x7d && expect === Expect.KeyOrObjectEnd) {
        closers.pop();
        i++;
        expect = Expect.AfterValue;
        continue;
      }
      if (c !== 0x22) return { position: i, problem: 'expected a property name in double quotes' };
      const string = scanString(text, i);
      if (typeof string !== 'number') return string;
      i = skipSpace(text, string);
      if (text.charCodeAt(i) !== 0x3a) return { position: i, problem: "expected ':' after a property name" };
      i++;
      expect = Expect.Value;
      continue;
    }
    if (c === 0x5d && expect === Expect.ValueOrArrayEnd) {
      closers.pop();
      i++;
      expect = Expect.AfterValue;
      continue;
    }
    if (c === 0x7b || c === 0x5b) {
      closers.push(c === 0x7b ? 0x7d : 0x5d);
      expect = c === 0x7b ? Expect.KeyOrObjectEnd : Expect.ValueOrArrayEnd;
      i++;
      continue;
    }
    expect = Expect.AfterValue;
    if (c === 0x22) {
      const string = scanString(text, i);
      if (typeof string !== 'number') return string;
      i = string;
      continue;
    }
    const literal = LITERALS.find((word) => text.startsWith(word, i));
    if (literal) {
      i += literal.length;
      continue;
    }
    NUMBER.lastIndex = i;
    if (NUMBER.test(text)) {
      i = NUMBER.lastIndex;
      continue;
    }
    return { position: i, problem: 'unexpected character where a value should start' };
  }
}

/** The index after the string starting at `start`, or what is wrong with it. */
function scanString(text: string, start: number): number | JsonProblem {
  for (let i = start + 1; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) return i + 1;
    if (c < 0x20) return { position: i, problem: 'control character inside a string' };
    if (c !== 0x5c) continue;
    const escape = text.charCodeAt(++i);
    if (escape === 0x75 /* u */) {
      if (!/^[0-9A-Fa-f]{4}$/.test(text.slice(i + 1, i + 5))) return { position: i - 1, problem: 'bad \\u escape in a string' };
      i += 4;
    } else if (!'"\\/bfnrt'.includes(text.charAt(i)) || i >= text.length) {
      return { position: i - 1, problem: 'bad escape in a string' };
    }
  }
  return { position: text.length, problem: 'the line ends inside a string (cut short?)' };
}
