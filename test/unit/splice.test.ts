import { describe, expect, it } from 'vitest';
import type { JsonObject, JsonValue } from '../../src/engine/types.js';
import { bodyFrom, countDocKeys, countTextKeys, sourceTextOf } from '../../src/records/body.js';
import { createRedactor, redactSchema } from '../../src/records/redaction.js';
import { spliceDocument } from '../../src/records/splice.js';
import { mulberry32 } from '../../src/testkit/random.js';

const random = mulberry32(1234);
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
const STRINGS = ['plain', 'with "quotes"', 'back\\slash\\', 'ends with backslash \\', 'ünïcödé ✓', 'emoji 🚀', '', 'new\nline', 'tab\t', '}{][,:'];
const KEYS = ['a', 'b', 'key with space', 'quo"te', 'ünï', '__proto__', '1', '0', 'lines', 'input'];

function randomValue(depth: number): JsonValue {
  const r = random();
  if (depth > 3 || r < 0.35) return pick<JsonValue>([pick(STRINGS), Math.floor(random() * 1e6) - 5e5, 1.5e-7, true, false, null]);
  if (r < 0.65) return Array.from({ length: Math.floor(random() * 4) }, () => randomValue(depth + 1));
  const object: JsonObject = {};
  for (let i = Math.floor(random() * 5); i > 0; i--) {
    Object.defineProperty(object, pick(KEYS), { value: randomValue(depth + 1), enumerable: true, writable: true, configurable: true });
  }
  return object;
}

/** Copy-on-write edits like the transforms make: replace, remove and add members, edit elements. */
function edit(value: JsonValue): JsonValue {
  if (value === null || typeof value !== 'object') return random() < 0.3 ? pick(STRINGS) : value;
  if (random() < 0.15) return '<redacted>';
  if (Array.isArray(value)) {
    if (random() < 0.5) return value;
    const copy = value.map((item) => (random() < 0.4 ? edit(item) : item));
    return random() < 0.1 ? [...copy, 'appended'] : copy;
  }
  if (random() < 0.4) return value;
  const copy: JsonObject = {};
  for (const key of Object.keys(value)) {
    if (random() < 0.15) continue;
    const next = random() < 0.5 ? edit(value[key] as JsonValue) : (value[key] as JsonValue);
    Object.defineProperty(copy, key, { value: next, enumerable: true, writable: true, configurable: true });
  }
  if (random() < 0.15) copy[`added ${Math.floor(random() * 100)}`] = randomValue(2);
  return copy;
}

/** JSON text with arbitrary whitespace between tokens, as some producers write it. */
function spaced(value: JsonValue): string {
  const ws = (): string => pick(['', '', ' ', '  ', '\t', ' \r ']);
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${ws()}${value.map((v) => spaced(v) + ws()).join(`,${ws()}`)}]`;
  const members = Object.keys(value).map((k) => `${ws()}${JSON.stringify(k)}${ws()}:${ws()}${spaced(value[k] as JsonValue)}${ws()}`);
  return `{${members.join(',')}${ws()}}`;
}

describe('spliceDocument', () => {
  it('writes the edited document for random documents, edits and spacing', () => {
    let spliced = 0;
    for (let round = 0; round < 3000; round++) {
      const shape = randomValue(0);
      const original: JsonObject = shape !== null && typeof shape === 'object' && !Array.isArray(shape) ? shape : { value: shape };
      const text = round % 2 === 0 ? JSON.stringify(original) : spaced(original);
      const parsed = JSON.parse(text) as JsonObject;
      const changed = edit(parsed);
      if (changed === null || typeof changed !== 'object' || Array.isArray(changed)) continue;
      const out = spliceDocument(text, Buffer.byteLength(text) === text.length, parsed, changed);
      expect(JSON.parse(out.toString('utf8')), text).toEqual(JSON.parse(JSON.stringify(changed)));
      expect(out.includes(0x0a) && !text.includes('\n')).toBe(false);
      spliced++;
    }
    expect(spliced).toBeGreaterThan(2000);
  });

  it('masks a step in place and copies everything else byte for byte', () => {
    const text = '{"id":1,"flow_id":2,"lines":[{"input":{"a":1},"output":"x","mask_data":false},{"input":{"password":"s3cret"},"output":{"token":"t0k"},"mask_data":true}],"tail":"é"}';
    const doc = JSON.parse(text) as JsonObject;
    const masked = createRedactor(redactSchema.parse({}))(doc);
    const body = bodyFrom(sourceTextOf(doc, text, Buffer.from(text)), masked).toString();
    expect(body).toBe(
      '{"id":1,"flow_id":2,"lines":[{"input":{"a":1},"output":"x","mask_data":false},{"input":"<redacted>","output":"<redacted>","mask_data":true}],"tail":"é"}',
    );
    expect(body).not.toContain('s3cret');
  });

  it('removes members (first, middle, last, all) without leaving a stray comma', () => {
    const text = '{ "a" : 1 , "b" : [1, 2] , "c" : {"d": 3} }';
    const doc = JSON.parse(text) as JsonObject;
    const without = (...keys: string[]): JsonObject => Object.fromEntries(Object.entries(doc).filter(([k]) => !keys.includes(k))) as JsonObject;
    for (const keys of [['a'], ['b'], ['c'], ['a', 'b'], ['b', 'c'], ['a', 'c'], ['a', 'b', 'c']]) {
      const out = spliceDocument(text, Buffer.byteLength(text) === text.length, doc, without(...keys)).toString();
      expect(JSON.parse(out)).toEqual(without(...keys));
    }
  });
});

describe('source text', () => {
  it('never prints or serializes the values it holds before masking', async () => {
    const { inspect } = await import('node:util');
    const text = '{"id":1,"flow_id":2,"lines":[{"input":"s3cret","mask_data":true}]}';
    const source = sourceTextOf(JSON.parse(text) as JsonObject, text, Buffer.from(text))!;
    const record = { kind: 'job', doc: {}, sourceText: source };
    expect(JSON.stringify(record)).not.toContain('s3cret');
    expect(inspect(record, { depth: 10 })).not.toContain('s3cret');
    expect(source.text).toBe(text);
  });
});

describe('source text', () => {
  it('keeps the bytes read only for a line that is not ASCII, and copies them from a reused buffer', () => {
    const ascii = '{"id":1,"flow_id":2,"name":"plain"}';
    expect(sourceTextOf(JSON.parse(ascii) as JsonObject, ascii, Buffer.from(ascii))!.bytes).toBeUndefined();
    const utf8 = '{"id":1,"flow_id":2,"name":"ünïcödé 🚀"}';
    const readBuffer = Buffer.from(utf8);
    const kept = sourceTextOf(JSON.parse(utf8) as JsonObject, utf8, readBuffer)!;
    readBuffer.fill(0x20);
    expect(Buffer.from(kept.bytes!).toString('utf8')).toBe(utf8);
  });

  it('writes an unchanged document as the bytes read, ASCII or not', () => {
    for (const text of ['{"id":1,"flow_id":2, "spaced" : [1, 2]}', '{"id":1,"flow_id":2,"name":"ünïcödé 🚀"}']) {
      const doc = JSON.parse(text) as JsonObject;
      expect(bodyFrom(sourceTextOf(doc, text, Buffer.from(text)), doc).toString('utf8')).toBe(text);
    }
  });

  it('splices an ASCII line with a replacement that is not ASCII into valid UTF-8', () => {
    const text = '{"id":1,"flow_id":2,"user":{"email":"a@b.c"},"note":"kept as read"}';
    const doc = JSON.parse(text) as JsonObject;
    const redacted = { ...doc, user: { email: '«redacted» ✓' } };
    const body = bodyFrom(sourceTextOf(doc, text, Buffer.from(text)), redacted).toString('utf8');
    expect(body).toBe('{"id":1,"flow_id":2,"user":{"email":"«redacted» ✓"},"note":"kept as read"}');
  });
});

describe('duplicate keys', () => {
  it('are told apart from escaped quotes and colons inside strings', () => {
    const text = '{"a":"x\\":\\\\","b":{"c":"d:e"},"f":[{"g":1}],"h\\"":2}';
    expect(countTextKeys(text)).toBe(6);
    expect(countDocKeys(JSON.parse(text) as JsonValue)).toBe(6);
  });

  it('make a text unusable as the body, so a hidden first value never ships', () => {
    const text = '{"id":1,"secret":"hidden","secret":"shown"}';
    const doc = JSON.parse(text) as JsonObject;
    expect(sourceTextOf(doc, text, Buffer.from(text))).toBeUndefined();
    expect(bodyFrom(undefined, doc).toString()).toBe('{"id":1,"secret":"shown"}');
  });
});
