import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/engine/logger.js';
import { Metrics } from '../../src/engine/metrics.js';
import type { ComponentContext, JsonObject, JsonValue, LogRecord, Transform } from '../../src/engine/types.js';
import { LogferryError } from '../../src/errors.js';
import { parseText } from '../../src/records/parse.js';
import { createRedactor, luhnValid, redactSchema } from '../../src/records/redaction.js';
import { redactTransform } from '../../src/transforms/redact.js';

const HASH_KEY = 'k'.repeat(16);
const OTHER_HASH_KEY = 'another-secret-key-of-enough-length';
const HASH = /^hmac-sha256:[0-9a-f]{32}$/;

/** Freezing the input makes any mutation by the redactor throw (ES modules run in strict mode). */
function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object') {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

function redactor(options: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): (doc: JsonObject) => JsonObject {
  return createRedactor(redactSchema.parse(options), env);
}

/** Redacts one string with the given patterns. */
function redactText(patterns: unknown[], text: string): JsonValue | undefined {
  return redactor({ patterns })({ text }).text;
}

function context(): ComponentContext {
  return { id: 'redacted', log: silentLogger, metrics: new Metrics(), signal: new AbortController().signal, dataDir: '/nonexistent' };
}

function maskedJob(): JsonObject {
  return deepFreeze<JsonObject>({
    id: 101,
    flow_id: 234,
    status: 'succeeded',
    report: { workato: { job_context: { user_id: 4848, user_email: 'janedoe@workato.com' } } },
    lines: [
      { recipe_line_number: 0, input: { interval: '5' }, output: { time: '2019-09-13T12:22:17Z' }, error: null, mask_data: false },
      {
        recipe_line_number: 1,
        input: { password: 'hunter2-secret', card: '4111 1111 1111 1111' },
        output: ['token-abc', { nested: true }],
        error: null,
        mask_data: true,
      },
    ],
  });
}

function loginEvent(): JsonObject {
  return deepFreeze({
    event: 'user_login',
    details: { activity: 'password_login', request: { ip_address: '67.207.106.234', user_agent: 'Mozilla/5.0' } },
    user: { id: 4848, handle: 'janedoen', email: 'janedoe@workato.com', name: 'janedoen' },
    team: { id: 4848, handle: 'janedoen', email: 'janedoe@workato.com', name: 'janedoen' },
    timestamp: '2019-09-13 17:24:16 UTC',
  });
}

describe('redact schema', () => {
  it('masks steps and nothing else by default', () => {
    expect(redactSchema.parse({})).toEqual({
      mask_data: true,
      fields: [],
      patterns: [],
      replacement: '<redacted>',
      hash_key_env: 'LOGFERRY_HASH_KEY',
    });
  });

  it('describes every option (the JSON Schema shown to editors)', () => {
    for (const [name, option] of Object.entries(redactSchema.shape)) expect(option.description, name).toBeTruthy();
  });

  it('rejects unknown options, unknown pattern names and field paths with empty segments', () => {
    expect(redactSchema.safeParse({ mask: true }).success).toBe(false);
    expect(redactSchema.safeParse({ patterns: ['phone'] }).success).toBe(false);
    expect(redactSchema.safeParse({ patterns: [{ regex: 'a', flags: 'i' }] }).success).toBe(false);
    for (const path of ['', '.user', 'user.', 'user..email']) {
      const result = redactSchema.safeParse({ fields: [path] });
      expect(result.success, path).toBe(false);
      expect(result.error?.issues[0]?.path).toEqual(['fields', 0]);
    }
  });

  it('rejects an invalid regex with the RegExp error on the regex path', () => {
    const result = redactSchema.safeParse({ patterns: ['email', { regex: '(unclosed' }] });
    expect(result.success).toBe(false);
    const issue = result.error?.issues[0];
    expect(issue?.path).toEqual(['patterns', 1, 'regex']);
    expect(issue?.message).toMatch(/Invalid regular expression.*Unterminated group/);
  });

  it('rejects a hash_key_env that is not a variable name', () => {
    expect(redactSchema.safeParse({ hash_key_env: 'MY KEY' }).success).toBe(false);
  });
});

describe('mask_data', () => {
  it("replaces a masked step's input and output and leaves unmasked steps alone", () => {
    const doc = maskedJob();
    const out = redactor({})(doc);
    const lines = out.lines as JsonObject[];
    expect(lines[1]).toEqual({ recipe_line_number: 1, input: '<redacted>', output: '<redacted>', error: null, mask_data: true });
    expect(lines[0]).toBe((doc.lines as JsonObject[])[0]);
    expect(out.report).toBe(doc.report);
  });

  it('does not touch the original document', () => {
    const doc = maskedJob();
    const snapshot = structuredClone(doc);
    redactor({ fields: ['report.workato.job_context.user_email'], patterns: ['email', 'credit_card'] })(doc);
    expect(doc).toEqual(snapshot);
  });

  it('is off with mask_data: false', () => {
    const doc = maskedJob();
    expect(redactor({ mask_data: false })(doc)).toBe(doc);
  });

  it('tells validate whether the transform masks steps', () => {
    expect(redactTransform.appliesMaskData?.(redactSchema.parse({}))).toBe(true);
    expect(redactTransform.appliesMaskData?.(redactSchema.parse({ mask_data: false }))).toBe(false);
  });
});

describe('fast path', () => {
  it('returns the same document when nothing matches', () => {
    const doc = loginEvent();
    const redact = redactor({
      fields: ['user.password', 'lines.*.input.password', 'details.request.ip_address.v4'],
      patterns: ['credit_card', 'aws_access_key', 'bearer_token', { regex: 'never-present' }],
    });
    expect(redact(doc)).toBe(doc);
  });

  it('returns the same record object from the transform, and a new record with the origin kept otherwise', async () => {
    const ctx = context();
    const transform = (await redactTransform.build(redactSchema.parse({ fields: ['user.email'] }), ctx)) as Transform;
    const clean: LogRecord = { kind: 'job', doc: deepFreeze({ id: 1, flow_id: 2, lines: [] }), origin: { source: 'jobs' } };
    expect(transform.process(clean)).toBe(clean);

    const event: LogRecord = { kind: 'activity', doc: loginEvent(), origin: { source: 'jobs', file: 'a', offset: 7 }, receivedDigest: 'abc' };
    const out = (await transform.process(event)) as LogRecord;
    expect(out).not.toBe(event);
    expect(out.origin).toBe(event.origin);
    expect(out.receivedDigest).toBe('abc');
    expect((out.doc.user as JsonObject).email).toBe('<redacted>');
    expect(ctx.metrics.snapshot().components.redacted).toEqual({ redacted: 1 });
  });

  it('masks nested steps after a transform deep-cloned the document (the record carries the decision)', async () => {
    const transform = (await redactTransform.build(redactSchema.parse({}), context())) as Transform;
    const step = '{"mask_data":true,"input":"SECRET-in","output":"SECRET-out"}';
    const texts = [
      `{"id":1,"flow_id":2,"lines":[[${step}]]}`,
      `{"id":1,"flow_id":2,"lines":[{"sub":${step}}]}`,
      // A key given twice: parsed again with the mask_data rule.
      `{"id":1,"flow_id":2,"lines":[{"sub":${step.replace('"mask_data":true', '"mask_data":false,"mask_data":true')}}]}`,
    ];
    const clones: ((doc: JsonObject) => JsonObject)[] = [(doc) => JSON.parse(JSON.stringify(doc)) as JsonObject, (doc) => structuredClone(doc)];
    for (const text of texts) {
      const parsed = parseText(text, { source: 'jobs' });
      if (!parsed.ok) throw parsed.error;
      expect(parsed.record.nestedMaskData, text).toBe(true);
      for (const clone of clones) {
        const cloned: LogRecord = { ...parsed.record, doc: clone(parsed.record.doc) };
        const out = (await transform.process(cloned)) as LogRecord;
        expect(JSON.stringify(out.doc), text).not.toContain('SECRET');
        expect(JSON.stringify(out.doc), text).toContain('<redacted>');
      }
    }
    // The common shape: no deep walk asked for.
    const plain = parseText(`{"id":1,"flow_id":2,"lines":[${step}]}`, { source: 'jobs' });
    expect(plain.ok && plain.record.nestedMaskData).toBe(false);
  });
});

describe('fields', () => {
  it('replaces dotted paths and copies only the objects on the way', () => {
    const doc = loginEvent();
    const out = redactor({ fields: ['user.email', 'details.request.ip_address'] })(doc);
    expect(out.user).toEqual({ id: 4848, handle: 'janedoen', email: '<redacted>', name: 'janedoen' });
    expect((out.details as JsonObject).request).toEqual({ ip_address: '<redacted>', user_agent: 'Mozilla/5.0' });
    expect(out.team).toBe(doc.team);
    expect((doc.user as JsonObject).email).toBe('janedoe@workato.com');
  });

  it('replaces whole objects, arrays and numbers', () => {
    const out = redactor({ fields: ['user', 'team.id', 'lines.1.output'], mask_data: false })({ ...maskedJob(), ...loginEvent() });
    expect(out.user).toBe('<redacted>');
    expect((out.team as JsonObject).id).toBe('<redacted>');
    expect((out.lines as JsonObject[])[1]?.output).toBe('<redacted>');
    expect((out.lines as JsonObject[])[0]?.output).toEqual({ time: '2019-09-13T12:22:17Z' });
  });

  it('lets * match every array element', () => {
    const doc = maskedJob();
    const out = redactor({ fields: ['lines.*.input.password'], mask_data: false })(doc);
    const lines = out.lines as JsonObject[];
    expect(lines[1]?.input).toEqual({ password: '<redacted>', card: '4111 1111 1111 1111' });
    // The first step has no password: nothing is copied for it.
    expect(lines[0]).toBe((doc.lines as JsonObject[])[0]);
  });

  it('lets * match every object key', () => {
    const doc = deepFreeze({
      event: 'recipe_created',
      details: { a: { secret: 1, keep: 2 }, b: { secret: [3] }, c: 'no secret here' },
    });
    const out = redactor({ fields: ['details.*.secret'] })(doc);
    expect(out.details).toEqual({ a: { secret: '<redacted>', keep: 2 }, b: { secret: '<redacted>' }, c: 'no secret here' });
  });

  it('ignores missing paths and paths through scalars or out-of-range indexes', () => {
    const doc = maskedJob();
    expect(redactor({ fields: ['nope', 'status.x', 'lines.7.input', 'lines.x.input', 'report.*.missing'], mask_data: false })(doc)).toBe(doc);
  });

  it('replaces a __proto__ key like any other instead of changing the prototype', () => {
    const doc = deepFreeze(JSON.parse('{"event":"x","__proto__":{"token":"s3cret"}}') as JsonObject);
    const out = redactor({ fields: ['__proto__'] })(doc);
    expect(JSON.stringify(out)).toBe('{"event":"x","__proto__":"<redacted>"}');
    expect(Object.getPrototypeOf(out)).toBe(Object.prototype);
  });
});

describe('patterns', () => {
  it('email', () => {
    expect(redactText(['email'], 'from janedoe+x@mail.workato.co.uk, ok')).toBe('from <redacted>, ok');
    expect(redactText(['email'], 'handle @janedoe and user@localhost')).toBe('handle @janedoe and user@localhost');
  });

  it('ipv4', () => {
    expect(redactText(['ipv4'], 'from 67.207.106.234:443 and 10.0.0.1.')).toBe('from <redacted>:443 and <redacted>.');
    expect(redactText(['ipv4'], 'v1.2.3.4.5, 256.1.1.1, 2019-09-13T12:22:17.867522-07:00')).toBe('v1.2.3.4.5, 256.1.1.1, 2019-09-13T12:22:17.867522-07:00');
  });

  it('ipv6', () => {
    expect(redactText(['ipv6'], 'at 2001:db8::8a2e:370:7334 and [::1]:8080')).toBe('at <redacted> and [<redacted>]:8080');
    expect(redactText(['ipv6'], 'mapped ::ffff:192.168.1.1.')).toBe('mapped <redacted>.');
    const notAddresses = 'at 17:24:16, 2019-09-13T12:22:18-07:00, Workato::Connector, a :: b, mac 00:1A:2B:3C:4D:5E';
    expect(redactText(['ipv6'], notAddresses)).toBe(notAddresses);
  });

  it('credit_card only when the Luhn check passes', () => {
    expect(luhnValid('4111111111111111')).toBe(true);
    expect(luhnValid('4111111111111112')).toBe(false);
    expect(redactText(['credit_card'], 'card 4111 1111 1111 1111 exp 12/29')).toBe('card <redacted> exp 12/29');
    expect(redactText(['credit_card'], '4111-1111-1111-1111')).toBe('<redacted>');
    expect(redactText(['credit_card'], '5500000000000004')).toBe('<redacted>');
    expect(redactText(['credit_card'], 'order 1234567812345678')).toBe('order 1234567812345678');
    expect(redactText(['credit_card'], 'card 4111 1111 1111 1112')).toBe('card 4111 1111 1111 1112');
    expect(redactText(['credit_card'], 'id 123456789012')).toBe('id 123456789012');
  });

  it('credit_card finds a card next to other digit groups', () => {
    expect(redactText(['credit_card'], 'ref 12 4111 1111 1111 1111 ok')).toBe('ref 12 <redacted> ok');
  });

  it('aws_access_key', () => {
    expect(redactText(['aws_access_key'], 'key=AKIAIOSFODNN7EXAMPLE;')).toBe('key=<redacted>;');
    expect(redactText(['aws_access_key'], 'ASIAY34FZKBOKMUTVV7A')).toBe('<redacted>');
    expect(redactText(['aws_access_key'], 'AKIAshort AKIAIOSFODNN7EXAMPLE1 akiaiosfodnn7example')).toBe(
      'AKIAshort AKIAIOSFODNN7EXAMPLE1 akiaiosfodnn7example',
    );
  });

  it('bearer_token keeps the word Bearer', () => {
    expect(redactText(['bearer_token'], 'Authorization: Bearer eyJhbGciOi.eyJzdWIi.Sfl-KxwR_8=')).toBe('Authorization: Bearer <redacted>');
    expect(redactText(['bearer_token'], 'bearer abc123, then more')).toBe('bearer <redacted>, then more');
    expect(redactText(['bearer_token'], 'Basic dXNlcjpwYXNz and a Bearer: none')).toBe('Basic dXNlcjpwYXNz and a Bearer: none');
  });

  it('custom regex replaces only the match', () => {
    expect(redactText([{ regex: 'acct-\\d+' }], 'accounts acct-42 and acct-7.')).toBe('accounts <redacted> and <redacted>.');
    expect(redactText([{ regex: '\\p{Lu}{3}' }], 'code ÄÖÜ here')).toBe('code <redacted> here');
  });

  it('ignores empty matches of a custom regex', () => {
    expect(redactText([{ regex: 'x*' }], 'abxxc')).toBe('ab<redacted>c');
  });

  it('applies to string values at any depth, not to keys or other types', () => {
    const doc = deepFreeze({
      'keep@key.com': 'mail a@b.io',
      list: [1, true, null, ['deep c@d.io']],
      count: 4111111111111111,
    });
    const out = redactor({ patterns: ['email', 'credit_card'] })(doc);
    expect(out).toEqual({ 'keep@key.com': 'mail <redacted>', list: [1, true, null, ['deep <redacted>']], count: 4111111111111111 });
    expect((out.list as JsonValue[])[0]).toBe(1);
  });

  it('merges overlapping matches of several patterns into one replacement', () => {
    expect(redactText(['email', { regex: 'doe@' }], 'x jane.doe@workato.com y')).toBe('x <redacted> y');
  });
});

describe('hash replacement', () => {
  const env = { LOGFERRY_HASH_KEY: HASH_KEY };

  it('is deterministic, differs across values and keys, and is the same for a field and a pattern match', () => {
    const doc = loginEvent();
    const hashFields = redactor({ replacement: 'hash', fields: ['user.email', 'user.handle'] }, env);
    const first = hashFields(doc).user as JsonObject;
    const second = hashFields(doc).user as JsonObject;
    expect(first.email).toMatch(HASH);
    expect(first.email).toBe(second.email);
    expect(first.email).not.toBe(first.handle);

    const otherKey = redactor({ replacement: 'hash', fields: ['user.email'] }, { LOGFERRY_HASH_KEY: OTHER_HASH_KEY });
    expect((otherKey(doc).user as JsonObject).email).not.toBe(first.email);

    // Patterns hash the matched text the same way, so the address stays joinable across both.
    const hashPatterns = redactor({ replacement: 'hash', patterns: ['email'] }, env);
    expect(hashPatterns({ text: 'janedoe@workato.com' }).text).toBe(first.email);
  });

  it('hashes objects by their canonical JSON and masks steps with the same function', () => {
    const redact = redactor({ replacement: 'hash', fields: ['a', 'b'] }, env);
    const out = redact({ a: { x: 1, y: 2 }, b: { y: 2, x: 1 } });
    expect(out.a).toMatch(HASH);
    expect(out.a).toBe(out.b);
    const lines = redactor({ replacement: 'hash' }, env)(maskedJob()).lines as JsonObject[];
    expect(lines[1]?.input).toMatch(HASH);
    expect(lines[1]?.output).toMatch(HASH);
  });

  it('reads the key from the variable named by hash_key_env', () => {
    const fromCustom = redactor({ replacement: 'hash', hash_key_env: 'MY_KEY', fields: ['v'] }, { MY_KEY: HASH_KEY });
    const fromDefault = redactor({ replacement: 'hash', fields: ['v'] }, env);
    expect(fromCustom({ v: 'same' }).v).toBe(fromDefault({ v: 'same' }).v);
  });

  it('fails with LF_CONFIG_ENV when the key is missing or too short', () => {
    const attempt = (options: Record<string, unknown>, keys: NodeJS.ProcessEnv) => () => redactor({ replacement: 'hash', ...options }, keys);
    for (const [options, keys, mentions] of [
      [{}, {}, 'LOGFERRY_HASH_KEY'],
      [{}, { LOGFERRY_HASH_KEY: 'short' }, 'LOGFERRY_HASH_KEY'],
      [{ hash_key_env: 'MY_KEY' }, { LOGFERRY_HASH_KEY: HASH_KEY }, 'MY_KEY'],
    ] as const) {
      let error: unknown;
      try {
        attempt(options, keys)();
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(LogferryError);
      expect((error as LogferryError).code).toBe('LF_CONFIG_ENV');
      expect((error as LogferryError).message).toContain(mentions);
      expect((error as LogferryError).message).toContain('16 characters');
    }
  });

  it('uses a custom replacement text', () => {
    expect(redactor({ replacement: '***', fields: ['user.email'] })(loginEvent()).user).toMatchObject({ email: '***' });
  });
});
