import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/engine/logger.js';
import { collectSecrets, MIN_SECRET_LENGTH, otelSecrets, SecretScrubber, urlSecrets } from '../../src/engine/secrets.js';
import type { ComponentConfig } from '../../src/config/types.js';
import { safeUrl } from '../../src/sinks/delivery.js';
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
  it('urlSecrets: userinfo, the path and query, each segment and query value of 8+ characters; short words are not secrets', () => {
    const secrets = urlSecrets('https://user:pa55word@collector.example.com/receiver/v1/http/ZaVnC4dhaV3-long-token?code=abcdefgh12&fmt=json');
    expect(secrets).toEqual(
      expect.arrayContaining([
        'user',
        'pa55word',
        'receiver/v1/http/ZaVnC4dhaV3-long-token?code=abcdefgh12&fmt=json',
        'receiver',
        'ZaVnC4dhaV3-long-token',
        'abcdefgh12',
      ]),
    );
    expect(secrets).not.toContain('http');
    expect(secrets).not.toContain('json');
    expect(urlSecrets('https://logs.example.com/ingest')).toEqual([]);
  });

  it('urlSecrets: a token in the first path segment is a secret; a short path such as /_bulk is not', () => {
    const uri = 'https://hooks.example.com/3f9a1c7e5b2d4a6f8e0c';
    expect(urlSecrets(uri)).toEqual(expect.arrayContaining(['3f9a1c7e5b2d4a6f8e0c', uri]));
    const scrubber = new SecretScrubber(urlSecrets(uri));
    expect(scrubber.scrub(`HTTP 503 from ${uri}`)).toBe('HTTP 503 from ***');
    expect(scrubber.scrub('token 3f9a1c7e5b2d4a6f8e0c echoed')).toBe('token *** echoed');
    // A 5-character path (the tail of an Elasticsearch URL) is a word: it must not blank `_bulk` everywhere.
    expect(urlSecrets('https://es.example.com/_bulk')).toEqual([]);
    expect(urlSecrets('https://es.example.com/logs-2026/_bulk')).not.toContain('_bulk');
    expect(new SecretScrubber(urlSecrets('https://es.example.com/_bulk?x=1')).scrub('POST /_bulk failed')).toBe('POST /_bulk failed');
  });

  it('safeUrl shows no path segment and no query value, only the shape of the path', () => {
    expect(safeUrl('https://hooks.example.com/3f9a1c7e5b2d4a6f8e0c')).toBe('https://hooks.example.com/…');
    expect(safeUrl('https://u:p@collector.example.com:8443/receiver/v1/http/TOKEN?code=abc')).toBe('https://collector.example.com:8443/…/…/…/…?…');
    expect(safeUrl('http://127.0.0.1:9000/')).toBe('http://127.0.0.1:9000/');
    expect(safeUrl('http://host/a/')).toBe('http://host/…/');
    expect(safeUrl('not a url')).toBe('(invalid url)');
    for (const uri of ['https://h.example.com/3f9a1c7e5b2d4a6f8e0c', 'https://h.example.com/x/y?t=secret-value-1']) {
      expect(safeUrl(uri)).not.toMatch(/3f9a|secret|x\/y/);
    }
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

describe('the secrets of the OTEL_EXPORTER_OTLP_* variables', () => {
  it('takes the credentials and tokens of the endpoints and the values of the headers, so a logged endpoint shows none', () => {
    const env = {
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://otel-user:OtelPass7788@collector.example:4318/?api_key=abcdefgh12345678',
      OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: 'https://otlp.example/v1/logs/rcv-9f8e7d6c5b4a39281706',
      OTEL_EXPORTER_OTLP_HEADERS: 'x-api-key=hdr-secret-123456,authorization=Bearer%20tok-6655443322, short=ab',
      OTEL_EXPORTER_OTLP_METRICS_HEADERS: 'dd-api-key=metrics-key-778899',
    };
    const scrubber = new SecretScrubber(otelSecrets(env));
    const line = `exporting metrics over OTLP endpoint=${env.OTEL_EXPORTER_OTLP_ENDPOINT}/v1/metrics logs=${env.OTEL_EXPORTER_OTLP_LOGS_ENDPOINT} headers: hdr-secret-123456 Bearer tok-6655443322 metrics-key-778899`;
    const scrubbed = scrubber.scrub(line);
    for (const secret of ['OtelPass7788', 'otel-user', 'abcdefgh12345678', 'rcv-9f8e7d6c5b4a39281706', 'hdr-secret-123456', 'tok-6655443322', 'metrics-key-778899']) {
      expect(scrubbed).not.toContain(secret);
    }
    // A URL with a secret in it is replaced whole (as a sink's URI is), the rest of the line stays.
    expect(scrubbed).toMatch(/^exporting metrics over OTLP endpoint=\*\*\*/);
    expect(new SecretScrubber(otelSecrets({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector.example:4318' })).scrub('to http://collector.example:4318/v1/logs')).toBe('to http://collector.example:4318/v1/logs');
    expect(otelSecrets({})).toEqual([]);
  });
});
