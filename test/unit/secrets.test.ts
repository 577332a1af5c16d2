import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/engine/logger.js';
import { collectSecrets, MIN_SECRET_LENGTH, SecretScrubber, urlSecrets } from '../../src/engine/secrets.js';
import type { ComponentConfig } from '../../src/config/types.js';
import { httpSecrets, httpSink, httpSinkSchema } from '../../src/sinks/http.js';
import { s3Secrets, s3SinkSchema } from '../../src/sinks/s3.js';
import sumoPlugin from '../../plugins/sumologic/index.js';

describe('SecretScrubber', () => {
  it('replaces a secret and its encodings: as is, URL-encoded, base64, JSON-escaped', () => {
    const secret = 'p@ss w/rd"+ä';
    const scrubber = new SecretScrubber([secret]);
    const forms = [
      secret,
      encodeURIComponent(secret),
      encodeURIComponent(secret).replace(/%20/g, '+'),
      encodeURIComponent(secret).toLowerCase(),
      Buffer.from(secret).toString('base64'),
      Buffer.from(secret).toString('base64url'),
      JSON.stringify(secret).slice(1, -1),
      JSON.stringify(secret).slice(1, -1).replace(/\//g, '\\/'),
    ];
    for (const form of forms) expect(scrubber.scrub(`before ${form} after`), form).toBe('before *** after');
  });

  it(`ignores secrets shorter than ${MIN_SECRET_LENGTH} characters`, () => {
    const scrubber = new SecretScrubber(['abc', 'a']);
    expect(scrubber.size).toBe(0);
    expect(scrubber.scrub('abc a')).toBe('abc a');
  });

  it('scrubs the longest match first, so no part of a longer secret is left', () => {
    const scrubber = new SecretScrubber(['token-1234', 'https://h/x/token-1234-and-more']);
    expect(scrubber.scrub('at https://h/x/token-1234-and-more now')).toBe('at *** now');
  });

  it('scrubs every log line, text and json, message, fields and errors', () => {
    const lines: string[] = [];
    const scrubber = new SecretScrubber(['s3cr3t"token']);
    for (const format of ['text', 'json'] as const) {
      const log = createLogger({ format, write: (l) => lines.push(l), scrub: (t) => scrubber.scrub(t) });
      log.warn('echo s3cr3t"token', { reason: 'got s3cr3t"token', error: new Error('e: s3cr3t"token'), nested: { deep: ['s3cr3t"token'] } });
    }
    expect(lines.join('')).not.toContain('s3cr3t');
    expect(JSON.parse(lines[1]!)).toMatchObject({ msg: 'echo ***', reason: 'got ***', error: { message: 'e: ***' }, nested: { deep: ['***'] } });
  });
});

describe('secrets hooks', () => {
  it('urlSecrets: userinfo, the path after its first segment, query values; short words are not secrets', () => {
    const secrets = urlSecrets('https://user:pa55word@collector.example.com/receiver/v1/http/ZaVnC4dhaV3-long-token?code=abcdefgh12&fmt=json');
    expect(secrets).toEqual(
      expect.arrayContaining(['user', 'pa55word', 'v1/http/ZaVnC4dhaV3-long-token?code=abcdefgh12&fmt=json', 'ZaVnC4dhaV3-long-token', 'abcdefgh12']),
    );
    expect(secrets).not.toContain('http');
    expect(secrets).not.toContain('json');
    expect(secrets).not.toContain('receiver');
    expect(urlSecrets('https://logs.example.com/ingest')).toEqual([]);
  });

  it('http: token, password with user:password and its base64, uri tokens, secret headers', () => {
    const bearer = httpSinkSchema.parse({ uri: 'https://h/in', auth: { strategy: 'bearer', token: 'tok-123456' }, headers: { 'X-Api-Key': 'key-1', 'X-Sumo-Category': 'prod/x', Accept: 'application/json' } });
    expect(httpSecrets(bearer)).toEqual(expect.arrayContaining(['tok-123456', 'key-1', 'prod/x']));
    expect(httpSecrets(bearer)).not.toContain('application/json');
    const basic = httpSinkSchema.parse({ uri: 'https://h/in', auth: { strategy: 'basic', user: 'me', password: 'pw-9876' }, headers: { Authorization2: 'x' }, secret_headers: ['authorization*'] });
    expect(httpSecrets(basic)).toEqual(expect.arrayContaining(['pw-9876', 'me:pw-9876', Buffer.from('me:pw-9876').toString('base64'), 'x']));
    expect(httpSink.secrets).toBe(httpSecrets);
  });

  it('s3: endpoint credentials and the SDK credential variables', () => {
    const options = s3SinkSchema.parse({ bucket: 'b', endpoint: 'http://minio:pw-minio-1@127.0.0.1:9000' });
    expect(s3Secrets(options, { AWS_SECRET_ACCESS_KEY: 'wJalrXUtnFEMI/K7MDENG', AWS_SESSION_TOKEN: 'sess-token-1' })).toEqual(
      expect.arrayContaining(['pw-minio-1', 'wJalrXUtnFEMI/K7MDENG', 'sess-token-1']),
    );
  });

  it('Sumo Logic: the whole URL', () => {
    const sink = sumoPlugin.sinks!.find((s) => s.type === 'sumo_logic')!;
    const url = 'https://endpoint1.collection.sumologic.com/receiver/v1/http/ZaVnC4dhaV3-token==';
    const options = sink.schema.parse({ url });
    expect(sink.secrets?.(options)).toEqual(expect.arrayContaining([url, 'ZaVnC4dhaV3-token==']));
  });

  it('collectSecrets skips a hook that throws', () => {
    const throwing = { definition: { secrets: () => { throw new Error('bug'); } }, options: {} } as unknown as ComponentConfig;
    const giving = { definition: { secrets: () => ['abcd-secret'] }, options: {} } as unknown as ComponentConfig;
    expect(collectSecrets([throwing, giving])).toEqual(['abcd-secret']);
  });
});
