import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { findJsonProblem, parseKeepingMaskData } from '../../src/records/json-text.js';
import { parseLine, utf8Problem } from '../../src/records/parse.js';

/** Random texts near JSON: valid documents with one character changed, cut, or doubled. */
const nearJson = fc
  .tuple(fc.jsonValue({ maxDepth: 3 }), fc.nat(), fc.constantFrom('cut', 'insert', 'replace', 'none'), fc.constantFrom('"', '{', '}', ',', ':', '\\', 'x', ' ', '\n', '\u0001', '1', ']'))
  .map(([value, at, how, char]) => {
    const text = JSON.stringify(value);
    const i = text.length === 0 ? 0 : at % text.length;
    if (how === 'cut') return text.slice(0, i);
    if (how === 'insert') return text.slice(0, i) + char + text.slice(i);
    if (how === 'replace') return text.slice(0, i) + char + text.slice(i + 1);
    return text;
  });

function jsonParses(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

describe('findJsonProblem', () => {
  it('finds a problem exactly when JSON.parse throws (property)', () => {
    fc.assert(
      fc.property(fc.oneof(nearJson, fc.string()), (text) => {
        expect(findJsonProblem(text) === undefined).toBe(jsonParses(text));
      }),
      { seed: 42, numRuns: 2000 },
    );
  });

  it('names the place and quotes nothing of the line', () => {
    expect(findJsonProblem('{"password": "hunter2""}')).toEqual({ position: 22, problem: 'expected a comma or the end of the object' });
    expect(findJsonProblem('{"password": "hunt')).toEqual({ position: 18, problem: 'the line ends inside a string (cut short?)' });
    expect(findJsonProblem('{"a":1,}')?.problem).toBe('expected a property name in double quotes');
    const line = parseLine(Buffer.from('{"user": "x", "password": hunter2secret}'), { source: 'jobs' });
    expect(line.ok).toBe(false);
    if (!line.ok) {
      expect(line.error.message).toBe('line is not valid JSON: unexpected character where a value should start at position 26 (of 40 characters)');
      expect(line.error.message).not.toContain('hunter2');
    }
  });
});

describe('parseKeepingMaskData', () => {
  it('is JSON.parse for every JSON text (property)', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 5 }), fc.boolean(), (value, pretty) => {
        const text = JSON.stringify(value, null, pretty ? 2 : undefined);
        expect(parseKeepingMaskData(text).value).toEqual(JSON.parse(text));
      }),
      { seed: 42, numRuns: 500 },
    );
  });

  it('keeps a mask_data that is true in any occurrence, and counts every spelling of the key', () => {
    const text = '{"lines":[{"mask_data":true,"input":1,"mask_data":false},{"mask\\u005fdata":false,"mask_data":true},{"mask_data":false,"mask_data":false}]}';
    const { value, maskDataKeys } = parseKeepingMaskData(text);
    expect(value).toEqual({ lines: [{ mask_data: true, input: 1 }, { mask_data: true }, { mask_data: false }] });
    expect(maskDataKeys).toBe(6);
    // __proto__ is an ordinary key, as with JSON.parse.
    const proto = parseKeepingMaskData('{"__proto__":{"x":1}}').value as Record<string, unknown>;
    expect(Object.hasOwn(proto, '__proto__')).toBe(true);
  });

  it('does not overflow the stack on deep nesting', () => {
    const depth = 200_000;
    const text = '['.repeat(depth) + ']'.repeat(depth);
    expect(Array.isArray(parseKeepingMaskData(text).value)).toBe(true);
    expect(findJsonProblem(text)).toBeUndefined();
    expect(findJsonProblem('['.repeat(depth))?.problem).toContain('cut short');
  });
});

describe('utf8Problem', () => {
  it('finds the first byte that breaks UTF-8 exactly when a strict decoder refuses the bytes (property)', () => {
    const strict = new TextDecoder('utf-8', { fatal: true });
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 24 }), fc.string({ unit: 'grapheme', maxLength: 8 }), (noise, text) => {
        const bytes = Buffer.concat([Buffer.from(text), noise, Buffer.from(text)]);
        let valid = true;
        try {
          strict.decode(bytes);
        } catch {
          valid = false;
        }
        expect(utf8Problem(bytes) === 'no invalid byte found').toBe(valid);
      }),
      { seed: 42, numRuns: 3000 },
    );
    expect(utf8Problem(Buffer.from('{"a":"x\xffy"}', 'latin1'))).toBe('byte 0xff at byte 7 cannot start a character');
  });
});
