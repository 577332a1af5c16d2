import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { builtinRegistry } from '../../src/builtins.js';
import { parseConfigText } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { classifyS3Error, s3Sink, s3SinkSchema } from '../../src/sinks/s3.js';

/** Builds an error shaped like the ones the AWS SDK throws for an S3 error response. */
function s3Error(status: number, name: string, message = '', headers: Record<string, string> = {}, extra: Record<string, unknown> = {}): Error {
  const err = Object.assign(new Error(message), { $metadata: { httpStatusCode: status }, $fault: status >= 500 ? 'server' : 'client', ...extra });
  err.name = name;
  // The SDK attaches the raw response as a non-enumerable property.
  Object.defineProperty(err, '$response', { value: { statusCode: status, headers }, enumerable: false });
  return err;
}

function networkError(name: string, code: string | undefined, message: string): Error {
  return Object.assign(new Error(message), { name, code, $metadata: {} });
}

const issuePaths = (input: unknown): string[] => {
  const result = s3SinkSchema.safeParse(input);
  return result.success ? [] : result.error.issues.map((i) => i.path.join('.'));
};

describe('s3 sink options', () => {
  it('fills in the documented defaults', () => {
    expect(s3SinkSchema.parse({ bucket: 'my-bucket' })).toEqual({
      bucket: 'my-bucket',
      prefix: '',
      force_path_style: false,
      compression: 'none',
      gzip_suffix: false,
      storage_class: 'STANDARD',
      server_side_encryption: 'none',
      concurrency: 32,
      multipart_threshold_bytes: 8 * 1024 * 1024,
      request_timeout_ms: 30_000,
      retry: { initial_backoff_ms: 100, max_backoff_ms: 20_000 },
    });
  });

  it('keeps the other retry defaults when one is set', () => {
    expect(s3SinkSchema.parse({ bucket: 'b', retry: { max_duration_s: 5 } }).retry).toEqual({
      initial_backoff_ms: 100,
      max_backoff_ms: 20_000,
      max_duration_s: 5,
    });
  });

  it('accepts a full configuration', () => {
    const options = s3SinkSchema.parse({
      bucket: 'b',
      region: 'eu-west-1',
      prefix: 'logs/',
      endpoint: 'http://127.0.0.1:9000',
      force_path_style: true,
      compression: 'gzip',
      gzip_suffix: true,
      storage_class: 'STANDARD_IA',
      server_side_encryption: 'aws:kms',
      kms_key_id: 'arn:aws:kms:eu-west-1:111122223333:key/abcd',
      concurrency: 4,
      multipart_threshold_bytes: 16 * 1024 * 1024,
      request_timeout_ms: 5000,
      retry: { initial_backoff_ms: 10, max_backoff_ms: 50, max_duration_s: 1 },
    });
    expect(options.kms_key_id).toContain('key/abcd');
  });

  it('rejects kms_key_id without server_side_encryption aws:kms, at kms_key_id', () => {
    expect(issuePaths({ bucket: 'b', kms_key_id: 'k' })).toEqual(['kms_key_id']);
    expect(issuePaths({ bucket: 'b', kms_key_id: 'k', server_side_encryption: 'AES256' })).toEqual(['kms_key_id']);
    const result = s3SinkSchema.safeParse({ bucket: 'b', kms_key_id: 'k' });
    expect(result.error?.issues[0]?.message).toMatch(/aws:kms/);
  });

  it('rejects mistakes an operator can make', () => {
    expect(issuePaths({})).toEqual(['bucket']);
    expect(issuePaths({ bucket: 's3://b' })).toEqual(['bucket']);
    expect(issuePaths({ bucket: 'b', prefix: '/logs/' })).toEqual(['prefix']);
    expect(issuePaths({ bucket: 'b', endpoint: 'ftp://host' })).toEqual(['endpoint']);
    expect(issuePaths({ bucket: 'b', concurrency: 0 })).toEqual(['concurrency']);
    expect(issuePaths({ bucket: 'b', concurrency: 1025 })).toEqual(['concurrency']);
    expect(issuePaths({ bucket: 'b', storage_class: 'CHEAP' })).toEqual(['storage_class']);
    expect(issuePaths({ bucket: 'b', compression: 'zstd' })).toEqual(['compression']);
    expect(issuePaths({ bucket: 'b', gzip_suffix: true })).toEqual(['gzip_suffix']);
    expect(issuePaths({ bucket: 'b', retry: { max_backof_ms: 1 } })).toEqual(['retry']);
    expect(issuePaths({ bucket: 'b', buckets: 'x' })).toEqual(['']);
  });

  it('describes every option (for the JSON Schema and the docs)', () => {
    const json = z.toJSONSchema(s3SinkSchema, { io: 'input', unrepresentable: 'any' }) as { properties: Record<string, { description?: string }> };
    for (const [name, property] of Object.entries(json.properties)) expect(property.description, name).toBeTruthy();
  });

  it('reports a misplaced kms_key_id in a pipeline file at its line', async () => {
    const text = `sources:
  jobs: { type: job_log_tail, include: ["./logs/*.ndjson"] }
transforms:
  keyed: { type: path_format, inputs: [jobs], user_id: 5234 }
sinks:
  archive:
    type: s3
    inputs: [keyed]
    bucket: my-bucket
    kms_key_id: alias/logs
`;
    const error = await parseConfigText(text, 'pipeline.yaml', builtinRegistry(), { env: {}, cwd: '/srv' }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems).toEqual([expect.objectContaining({ path: 'sinks.archive.kms_key_id', line: 10 })]);
  });

  it('is registered as a keyed sink of type s3', () => {
    expect(s3Sink).toMatchObject({ kind: 'sink', type: 's3', requiresKey: true });
    expect(builtinRegistry().get('sink', 's3')).toBe(s3Sink);
  });
});

describe('classifyS3Error', () => {
  const classify = (err: unknown) => classifyS3Error(err, 'logs-bucket', 'logs/4848/job.json', 'eu-central-1');
  const reasonAndAdvice = (verdict: ReturnType<typeof classify>): string =>
    verdict.kind === 'destination' ? `${verdict.reason} | ${verdict.advice ?? ''}` : verdict.kind === 'record' ? verdict.reason : '';

  it('holds records through throttling and server errors (retrying, not blocked), honouring Retry-After', () => {
    expect(classify(s3Error(503, 'SlowDown', 'Please reduce your request rate.', { 'retry-after': '2' }))).toMatchObject({
      kind: 'destination',
      reason: '503 SlowDown: Please reduce your request rate.',
      afterMs: 2000,
    });
    for (const verdict of [
      classify(s3Error(500, 'InternalError', 'We encountered an internal error.')),
      classify(s3Error(429, 'TooManyRequests')),
      classify(s3Error(408, 'RequestTimeout')),
      classify(s3Error(400, 'RequestTimeout', 'Your socket connection to the server was not read from or written to')),
      classify(s3Error(400, 'ThrottlingException')),
      // The body changed on its way (a proxy): another attempt sends it again.
      classify(s3Error(400, 'BadDigest')),
      classify(s3Error(400, 'InvalidDigest')),
    ]) {
      expect(verdict).toMatchObject({ kind: 'destination' });
      expect(verdict.kind === 'destination' && verdict.blocked).toBeFalsy();
    }
  });

  it('holds records through timeouts and connection errors (no HTTP status)', () => {
    expect(classify(networkError('Error', 'ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:1'))).toMatchObject({
      kind: 'destination',
      reason: 'ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:1',
    });
    // The SDK renames ECONNRESET to TimeoutError; the code is the better explanation.
    expect(classify(networkError('TimeoutError', 'ECONNRESET', 'socket hang up'))).toMatchObject({ kind: 'destination', reason: 'ECONNRESET: socket hang up' });
    expect(classify(networkError('TimeoutError', 'EPIPE', 'write EPIPE'))).toMatchObject({ kind: 'destination' });
    expect(classify(networkError('TimeoutError', 'ETIMEDOUT', 'a request has exceeded the configured 30000 ms requestTimeout.'))).toMatchObject({
      kind: 'destination',
      reason: expect.stringMatching(/^TimeoutError: .*requestTimeout/),
    });
    expect(classify(networkError('AbortError', undefined, 'Request aborted'))).toMatchObject({ kind: 'destination' });
    expect(classify('something odd')).toMatchObject({ kind: 'destination' });
    // A host name that does not resolve needs an operator.
    expect(classify(networkError('Error', 'ENOTFOUND', 'getaddrinfo ENOTFOUND logs-bucket.s3.example'))).toMatchObject({ kind: 'destination', blocked: true });
  });

  it('blocks on AccessDenied, with what to check', () => {
    const verdict = classify(s3Error(403, 'AccessDenied', 'Access Denied'));
    expect(verdict).toMatchObject({ kind: 'destination', blocked: true, reason: '403 AccessDenied: Access Denied' });
    expect(reasonAndAdvice(verdict)).toMatch(/the credentials \(AWS_ACCESS_KEY_ID\/profile\/role\) and that the bucket policy allows s3:PutObject on logs-bucket\/logs\/4848\/job\.json/);
  });

  it('blocks on refused credentials, pointing at the default chain', () => {
    for (const name of ['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken']) {
      const verdict = classify(s3Error(403, name, 'The AWS Access Key Id you provided does not exist in our records.'));
      expect(verdict).toMatchObject({ kind: 'destination', blocked: true, reason: expect.stringContaining(`403 ${name}`) });
      expect(reasonAndAdvice(verdict)).toMatch(/the credentials were refused.*AWS_ACCESS_KEY_ID.*AWS_PROFILE.*role/);
    }
  });

  it('blocks on a missing bucket, naming bucket and region', () => {
    expect(classify(s3Error(404, 'NoSuchBucket', 'The specified bucket does not exist'))).toEqual({
      kind: 'destination',
      blocked: true,
      reason: '404 NoSuchBucket: The specified bucket does not exist',
      advice: 'bucket and region: bucket "logs-bucket" does not exist in region eu-central-1',
    });
  });

  it('blocks on a bucket in another region, naming it when S3 tells', () => {
    const redirect = classify(s3Error(301, 'PermanentRedirect', 'use the specified endpoint', { 'x-amz-bucket-region': 'us-west-2' }));
    expect(redirect).toMatchObject({ kind: 'destination', blocked: true, advice: expect.stringMatching(/^region: .*another region.*\(us-west-2\)$/) });
    const malformed = classify(s3Error(400, 'AuthorizationHeaderMalformed', 'the region is wrong', {}, { Region: 'ap-south-1' }));
    expect(malformed).toMatchObject({ kind: 'destination', blocked: true, advice: expect.stringMatching(/\(ap-south-1\)$/) });
  });

  it('blocks on refused options: every object would be refused the same way', () => {
    expect(classify(s3Error(400, 'InvalidRequest', 'SSE-KMS requires SigV4'))).toMatchObject({ kind: 'destination', blocked: true, advice: expect.stringMatching(/server_side_encryption.*SSE-KMS/) });
    expect(classify(s3Error(400, 'KMS.NotFoundException', 'Invalid keyId'))).toMatchObject({ kind: 'destination', blocked: true, advice: expect.stringContaining('kms_key_id') });
    expect(classify(s3Error(400, 'InvalidStorageClass'))).toMatchObject({ kind: 'destination', blocked: true, advice: expect.stringContaining('storage_class') });
    // An unknown refusal holds the records rather than dead-lettering them.
    expect(classify(s3Error(409, 'BucketAlreadyExists', 'conflict'))).toMatchObject({ kind: 'destination', blocked: true, advice: 'conflict' });
  });

  it('dead-letters only refusals about this object: its arguments, key or size', () => {
    expect(classify(s3Error(400, 'InvalidArgument', 'Invalid argument'))).toEqual({ kind: 'record', reason: '400 InvalidArgument: Invalid argument' });
    expect(classify(s3Error(400, 'KeyTooLongError'))).toMatchObject({ kind: 'record', reason: expect.stringMatching(/^400 KeyTooLongError: the key logs\/4848\/job.json is longer than 1024 bytes/) });
    expect(classify(s3Error(400, 'EntityTooLarge'))).toMatchObject({ kind: 'record', reason: expect.stringContaining('multipart_threshold_bytes') });
  });

  it('blocks on missing credentials, naming the default chain', () => {
    const err = Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError', tryNextLink: false });
    const verdict = classify(err);
    expect(verdict).toMatchObject({ kind: 'destination', blocked: true });
    const text = reasonAndAdvice(verdict);
    for (const part of ['no AWS credentials found', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_PROFILE', 'instance role']) expect(text).toContain(part);
  });
});
