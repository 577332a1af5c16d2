import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { JsonValue } from '../../src/engine/types.js';
import { canonicalJson, canonicalText, contentDigest, textDigest } from '../../src/records/canonical.js';
import { hasDuplicateKeys, jsonNode, numberNodes, reorder, replaceNode, spacing, writeNode, type JsonNode } from '../helpers/json-text.js';

const RUNS = { seed: 42, numRuns: 2000 };

/** canonicalJson as it was before issue 9 (recursive, from doubles): digests made with it must not change. */
function formerCanonicalJson(value: JsonValue): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return '[' + value.map(formerCanonicalJson).join(',') + ']';
  const keys = Object.keys(value).sort();
  return '{' + keys.map((k) => JSON.stringify(k) + ':' + formerCanonicalJson(value[k] as JsonValue)).join(',') + '}';
}

describe('canonicalText (the activity digest, numbers as written)', () => {
  it('gives the former canonical JSON for every document written as JSON.stringify writes it, so existing keys keep their digest', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const text = JSON.stringify(value);
        expect(canonicalText(text)).toBe(formerCanonicalJson(JSON.parse(text) as JsonValue));
      }),
      RUNS,
    );
    fc.assert(
      fc.property(jsonNode(5), (node) => {
        // Numbers written canonically: what JSON.stringify gives for the double each one parses to.
        const canonicalNumbers = (n: JsonNode): JsonNode =>
          n.t === 'num'
            ? { t: 'num', text: Number.isFinite(Number(n.text)) ? JSON.stringify(Number(n.text)) : '1' }
            : n.t === 'arr'
              ? { t: 'arr', items: n.items.map(canonicalNumbers) }
              : n.t === 'obj'
                ? { t: 'obj', members: n.members.map(([k, e, v]) => [k, e, canonicalNumbers(v)] as const) }
                : n;
        const text = writeNode(canonicalNumbers(node), [' ']);
        expect(canonicalText(text)).toBe(formerCanonicalJson(JSON.parse(text) as JsonValue));
      }),
      RUNS,
    );
  });

  it('is the same whatever the key order and spacing', () => {
    fc.assert(
      fc.property(jsonNode(5), spacing, spacing, fc.integer(), (node, gapsA, gapsB, seed) => {
        fc.pre(!hasDuplicateKeys(node));
        let state = seed >>> 0;
        const shuffle = (length: number): number[] => {
          const order = Array.from({ length }, (_, i) => i);
          for (let i = length - 1; i > 0; i--) {
            state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
            const j = state % (i + 1);
            [order[i], order[j]] = [order[j]!, order[i]!];
          }
          return order;
        };
        expect(canonicalText(writeNode(reorder(node, shuffle), gapsA))).toBe(canonicalText(writeNode(node, gapsB)));
      }),
      RUNS,
    );
  });

  it('differs when the text of any number differs, even where the doubles are equal', () => {
    const variants = (text: string): string[] => [text + '0', text.startsWith('-') ? text.slice(1) : '-' + text, text.includes('.') || /e/i.test(text) ? text.replace(/[eE]/, 'E') + '1' : text + '.0', text + 'e0'];
    fc.assert(
      fc.property(jsonNode(5), fc.nat(), fc.nat(3), (node, pick, which) => {
        fc.pre(!hasDuplicateKeys(node));
        const numbers = numberNodes(node);
        fc.pre(numbers.length > 0);
        const target = numbers[pick % numbers.length]!;
        const before = (target as { text: string }).text;
        const after = variants(before)[which]!;
        fc.pre(after !== before && /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/.test(after));
        const changed = replaceNode(node, target, { t: 'num', text: after });
        expect(canonicalText(writeNode(changed))).not.toBe(canonicalText(writeNode(node)));
      }),
      RUNS,
    );
  });

  it('keeps the last value of a key given twice, as JSON.parse does', () => {
    expect(canonicalText('{"b":1,"a":{"x":1},"b":2,"a":[3]}')).toBe('{"a":[3],"b":2}');
    expect(canonicalText('{"\\u0061":1,"a":2}')).toBe('{"a":2}');
  });

  it('tells numbers apart that one double cannot: 2^53 + 1, 1E2, 1.0, -0, 1e400', () => {
    const digest = (resourceId: string): string => textDigest(`{"event":"recipe_started","resource":{"id":${resourceId}},"team":{"id":1}}`);
    const digests = ['9007199254740993', '9007199254740992', '100', '1E2', '1e2', '100.0', '1', '1.0', '0', '-0', '1e400', '1e401', '-1e400', 'null'].map(digest);
    expect(new Set(digests).size).toBe(digests.length);
  });

  it('is iterative: a 100,000-level text costs no stack', () => {
    const text = '['.repeat(100_000) + '{"b":1,"a":-0}' + ']'.repeat(100_000);
    expect(canonicalText(text)).toBe('['.repeat(100_000) + '{"a":-0,"b":1}' + ']'.repeat(100_000));
  });
});

describe('canonicalJson (records without text)', () => {
  it('is the former canonical JSON for JSON values', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const doc = JSON.parse(JSON.stringify(value)) as JsonValue;
        expect(canonicalJson(doc)).toBe(formerCanonicalJson(doc));
      }),
      RUNS,
    );
  });

  it('never lets distinct doubles collide (-0, non-finite numbers) and never overflows the stack', () => {
    const texts = [0, -0, Infinity, -Infinity, NaN, null, 'Infinity', 1e21].map((v) => canonicalJson({ v } as never));
    expect(new Set(texts).size).toBe(texts.length);
    let deep: JsonValue = { a: 1 };
    for (let i = 0; i < 100_000; i++) deep = [deep];
    expect(canonicalJson(deep).length).toBe(200_000 + '{"a":1}'.length);
    expect(contentDigest(deep)).toMatch(/^[0-9a-f]{16}$/);
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => canonicalJson(cyclic as never)).toThrow(/contains itself/);
    // A value seen twice (not a cycle) is fine.
    const shared = { x: 1 };
    expect(canonicalJson({ a: shared, b: [shared] })).toBe('{"a":{"x":1},"b":[{"x":1}]}');
  });
});
