import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { JsonObject, JsonValue } from '../../src/engine/types.js';
import { TEXT_DUPLICATE_KEYS, checkText, countDocKeys, countTextKeys, isFaithfulText } from '../../src/records/body.js';
import { parseText } from '../../src/records/parse.js';
import { spliceDocument } from '../../src/records/splice.js';
import { WATCHED_NUMBERS, isPlainSafeInteger, scanStructure } from '../../src/records/structure.js';
import { mulberry32 } from '../../src/testkit/random.js';
import { KEYS, KEY_PATH_KEYS, numberText, depthOf, hasDuplicateKeys, jsonNode, jsonObjectNode, keyCount, nodeAt, spacing, writeNode } from '../helpers/json-text.js';

const RUNS = { seed: 42, numRuns: 2000 };

/** The obvious reference: every character, in-string state tracked one by one. */
function referenceDepth(text: string): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === '{' || c === '[') deepest = Math.max(deepest, ++depth);
    else if (c === '}' || c === ']') depth--;
  }
  return deepest;
}

describe('scanStructure (the max_depth check)', () => {
  it('measures the depth of random documents as the character-by-character reference does', () => {
    fc.assert(
      fc.property(jsonNode(6), spacing, (node, gaps) => {
        const text = writeNode(node, gaps);
        const scan = scanStructure(text, 1000);
        expect(scan.tooDeep).toBe(false);
        expect(scan.depth).toBe(referenceDepth(text));
        expect(scan.depth).toBe(depthOf(node));
      }),
      RUNS,
    );
  });

  it('refuses exactly the documents deeper than the limit, at the first bracket beyond it', () => {
    fc.assert(
      fc.property(jsonNode(6), spacing, fc.integer({ min: 1, max: 7 }), (node, gaps, limit) => {
        const text = writeNode(node, gaps);
        const scan = scanStructure(text, limit);
        expect(scan.tooDeep).toBe(depthOf(node) > limit);
        if (scan.tooDeep) {
          expect(scan.depth).toBe(limit + 1);
          expect('{['.includes(text[scan.tooDeepAt]!)).toBe(true);
          expect(referenceDepth(text.slice(0, scan.tooDeepAt + 1))).toBe(limit + 1);
        }
      }),
      RUNS,
    );
  });

  it('counts the keys as countTextKeys does, and as the document has them', () => {
    fc.assert(
      fc.property(jsonNode(5), spacing, (node, gaps) => {
        const text = writeNode(node, gaps);
        expect(scanStructure(text, 1000).keys).toBe(keyCount(node));
        expect(countTextKeys(text)).toBe(keyCount(node));
      }),
      RUNS,
    );
  });

  it.each([
    ['any keys', KEYS],
    ['the key path names only', KEY_PATH_KEYS],
  ])('finds the text of the key numbers where JSON.parse takes them from (last duplicate, escaped keys; %s)', (_name, keys) => {
    let found = 0;
    fc.assert(
      fc.property(jsonObjectNode(5, keys), spacing, (node, gaps) => {
        const text = writeNode(node, gaps);
        const scan = scanStructure(text, 1000);
        const doc = JSON.parse(text) as JsonObject;
        WATCHED_NUMBERS.forEach((path, index) => {
          const kept = nodeAt(node, path);
          const start = scan.numbers?.[index * 2] ?? -1;
          const end = scan.numbers?.[index * 2 + 1] ?? -1;
          // Where JSON.parse kept a number that String() would not give back as written, the span
          // is its text; a plain one has no span; where no number is kept the span is not used.
          if (kept?.t === 'num') {
            found++;
            if (isPlainSafeInteger(kept.text, 0, kept.text.length)) expect(start, `${path} ${kept.text}`).toBe(-1);
            else expect(text.slice(start, end), path).toBe(kept.text);
            expect(typeof path.split('.').reduce<JsonValue | undefined>((v, k) => (v as JsonObject)[k], doc)).toBe('number');
          }
        });
      }),
      RUNS,
    );
    expect(found).toBeGreaterThan(50);
  });

  it('only calls a number plain when String() of its double gives back exactly its text', () => {
    fc.assert(
      fc.property(numberText, (text) => {
        if (isPlainSafeInteger(text, 0, text.length)) expect(String(JSON.parse(text))).toBe(text);
      }),
      RUNS,
    );
    for (const text of ['-0', '1E2', '1.0', '9007199254740993', '1234567890123456', '1e400']) expect(isPlainSafeInteger(text, 0, text.length), text).toBe(false);
    for (const text of ['0', '-1', '123456789012345', '-123456789012345']) expect(isPlainSafeInteger(text, 0, text.length), text).toBe(true);
  });

  it('never throws or loops on arbitrary text (invalid JSON, cut strings, stray brackets)', () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom('{', '}', '[', ']', '"', '\\', ':', ',', '1', 'e', '-', ' ', 'a') }), fc.integer({ min: 1, max: 10 }), (text, limit) => {
        const scan = scanStructure(text, limit);
        expect(scan.depth).toBeLessThanOrEqual(limit + 1);
      }),
      RUNS,
    );
  });

  it('stops at the limit without walking the rest of a 100,000-level line', () => {
    const text = '['.repeat(100_000) + ']'.repeat(100_000);
    const scan = scanStructure(text, 64);
    expect(scan).toMatchObject({ tooDeep: true, depth: 65, tooDeepAt: 64 });
    expect(scanStructure(text, 100_000)).toMatchObject({ tooDeep: false, depth: 100_000 });
  });
});

describe('isFaithfulText and the splice on random texts (spacing, escapes, unicode, duplicate keys)', () => {
  /** Copy-on-write edits like the transforms make. */
  function edit(value: JsonValue, random: () => number): JsonValue {
    const roll = (): number => Math.floor(random() * 100);
    if (value === null || typeof value !== 'object') return roll() < 30 ? `<changed ${roll()}>` : value;
    if (roll() < 10) return '<redacted>';
    if (Array.isArray(value)) return roll() < 50 ? value : value.map((item) => (roll() < 40 ? edit(item, random) : item));
    if (roll() < 30) return value;
    const copy: JsonObject = {};
    for (const key of Object.keys(value)) {
      if (roll() < 15) continue;
      const next = roll() < 50 ? edit(value[key] as JsonValue, random) : (value[key] as JsonValue);
      Object.defineProperty(copy, key, { value: next, enumerable: true, writable: true, configurable: true });
    }
    if (roll() < 15) copy[`added ${roll()}`] = { nested: [roll(), 'x'] };
    return copy;
  }

  it('says a text stands for its document exactly when no key is given twice', () => {
    fc.assert(
      fc.property(jsonObjectNode(5), spacing, (node, gaps) => {
        const text = writeNode(node, gaps);
        const doc = JSON.parse(text) as JsonObject;
        expect(isFaithfulText(text, doc)).toBe(!hasDuplicateKeys(node));
        // parse.ts hands checkText the key count of its structure scan: the same verdict.
        expect(checkText(text, doc, scanStructure(text, 1000).keys) !== TEXT_DUPLICATE_KEYS).toBe(!hasDuplicateKeys(node));
        expect(countDocKeys(doc) === keyCount(node)).toBe(!hasDuplicateKeys(node));
      }),
      RUNS,
    );
  });

  it('writes the edited document for every faithful text', () => {
    fc.assert(
      fc.property(jsonObjectNode(5), spacing, fc.integer(), (node, gaps, seed) => {
        fc.pre(!hasDuplicateKeys(node));
        const text = writeNode(node, gaps);
        const original = JSON.parse(text) as JsonObject;
        const changed = edit(original, mulberry32(seed));
        const after: JsonObject = changed !== null && typeof changed === 'object' && !Array.isArray(changed) ? changed : { value: changed };
        const ascii = Buffer.byteLength(text) === text.length;
        const body = spliceDocument(text, ascii, original, after);
        // Unchanged values are copied as written, so 1e400 stays Infinity and -0 stays -0, as in `after`.
        expect(JSON.parse(body.toString('utf8'))).toEqual(after);
        if (after === original) expect(body.toString('utf8')).toBe(text);
      }),
      { seed: 42, numRuns: 1500 },
    );
  });

  it('keeps what parse.ts decides consistent: a record keeps its text only when it can stand for the document', () => {
    fc.assert(
      fc.property(jsonObjectNode(4), spacing, (node, gaps) => {
        const text = writeNode({ t: 'obj', members: [['event', false, { t: 'str', value: 'user_login', escaped: false }], ...(node.t === 'obj' ? node.members : [])] }, gaps);
        const parsed = parseText(text, { source: 'property' }, Buffer.from(text));
        if (!parsed.ok) return; // `event` may be given again with another value
        expect(parsed.record.sourceText !== undefined).toBe(isFaithfulText(text, parsed.record.doc));
      }),
      RUNS,
    );
  });
});
