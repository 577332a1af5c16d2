import { describe, expect, it } from 'vitest';
import { Metrics } from '../../src/engine/metrics.js';
import { silentLogger } from '../../src/engine/logger.js';
import type { JsonObject, LogRecord, Transform } from '../../src/engine/types.js';
import { parseLine } from '../../src/records/parse.js';
import { redactSchema, redactTransform } from '../../src/transforms/redact.js';

const env = { LOGFERRY_HASH_KEY: 'a-secret-of-at-least-16-characters' };

async function hashing(options: Record<string, unknown>): Promise<Transform> {
  const previous = process.env.LOGFERRY_HASH_KEY;
  process.env.LOGFERRY_HASH_KEY = env.LOGFERRY_HASH_KEY;
  try {
    const ctx = { id: 'r', log: silentLogger, metrics: new Metrics(), signal: new AbortController().signal, dataDir: '' };
    return await redactTransform.build(redactSchema.parse({ replacement: 'hash', ...options }), ctx);
  } finally {
    if (previous === undefined) delete process.env.LOGFERRY_HASH_KEY;
    else process.env.LOGFERRY_HASH_KEY = previous;
  }
}

function record(line: string): LogRecord {
  const parsed = parseLine(Buffer.from(line), { source: 'test' });
  if (!parsed.ok) throw new Error(parsed.error.message);
  return parsed.record;
}

async function hashedField(transform: Transform, line: string, path: string[]): Promise<unknown> {
  const out = (await transform.process(record(line))) as LogRecord;
  let value: unknown = out.doc;
  for (const segment of path) value = (value as JsonObject)[segment];
  return value;
}

const event = (id: string): string => `{"event":"user_login","team":{"id":1},"timestamp":"2019-09-13 17:24:16 UTC","resource":{"id":${id}}}`;

describe('redact replacement hash: numbers as written (issue 9, finding 4)', () => {
  it('gives numbers one double cannot tell apart different hashes, and equal values equal hashes', async () => {
    const redact = await hashing({ fields: ['resource.id'] });
    const hash = (id: string): Promise<unknown> => hashedField(redact, event(id), ['resource', 'id']);
    const [a, b] = await Promise.all([hash('9007199254740993'), hash('9007199254740992')]);
    expect(a).toMatch(/^hmac-sha256:[0-9a-f]{32}$/);
    expect(a).not.toBe(b);
    // 1e400 parses to Infinity, which JSON writes as null: it must not hash like null.
    expect(await hash('1e400')).not.toBe(await hash('null'));
    expect(await hash('1e-400')).not.toBe(await hash('0'));
    expect(await hash('0.0')).toBe(await hash('0'));
    // A value a double holds exactly hashes as before, whatever else is in the line or how it is written.
    expect(await hash('1.0')).toBe(await hash('1'));
    expect(await hash('12')).toBe(await hashedField(redact, event('12').replace('"team":{"id":1}', '"team":{"id":1},"big":12345678901234567890'), ['resource', 'id']));
  });

  it('hashes masked step values and objects holding big numbers by their text', async () => {
    const redact = await hashing({ mask_data: true });
    const job = (n: string): string =>
      `{"id":1,"flow_id":2,"status":"succeeded","lines":[{"mask_data":true,"input":{"account":${n}},"output":null}]}`;
    const input = async (n: string): Promise<unknown> => ((await hashedField(redact, job(n), ['lines'])) as JsonObject[])[0]!.input;
    expect(await input('9007199254740993')).not.toBe(await input('9007199254740992'));
    expect(await input('5')).toBe(await input('5'));
  });

  it('uses the parsed values when a transform before changed the document (no text stands for it)', async () => {
    const redact = await hashing({ fields: ['resource.id'] });
    const changed = { ...record(event('9007199254740993')) };
    const doc = { ...changed.doc, extra: true } as JsonObject;
    const out = (await redact.process({ ...changed, doc })) as LogRecord;
    expect((out.doc.resource as JsonObject).id).toMatch(/^hmac-sha256:/);
  });
});
