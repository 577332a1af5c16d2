import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { setMaxListeners } from 'node:events';
import { promisify } from 'node:util';
import { gzip as gzipCallback } from 'node:zlib';
import type { PutObjectCommandInput, S3Client, StorageClass } from '@aws-sdk/client-s3';
import { z } from 'zod';
import { HOUR_MS, MINUTE_MS } from '../config/limits.js';
import type { ComponentDefinition, Delivery, HealthcheckResult, PreflightProblem, Sink, SinkContext } from '../engine/types.js';
import { ConcurrencyLimit, healthcheckEnabledSchema, isRetryableStatus, parseRetryAfter, retrySchema, retryUntilFinal, settleAll, type Verdict } from './delivery.js';
import { documentBody, preparedGzip } from '../records/body.js';
import { urlSecrets } from '../engine/secrets.js';

const gzip = promisify(gzipCallback);

type S3Sdk = typeof import('./s3-sdk.js');
/** The SDK, imported by the first s3 sink built (see s3-sdk.ts). */
const loadSdk = (): Promise<S3Sdk> => import('./s3-sdk.js');

/** S3 refuses multipart parts below 5 MiB (except the last one). */
const MIN_PART_BYTES = 5 * 1024 * 1024;
/** Largest object a single PutObject may carry. */
const MAX_PUT_BYTES = 5 * 1024 * 1024 * 1024;
/** Parts of one multipart upload sent at the same time. */
const PART_QUEUE_SIZE = 4;
/** A dead endpoint should be noticed (and retried) well before a whole request_timeout_ms has passed. */
const MAX_CONNECT_TIMEOUT_MS = 10_000;
const FALLBACK_REGION = 'us-east-1';
/** A start-up check waits at most this long (or request_timeout_ms when smaller): a dead endpoint must not hold the start. */
const MAX_HEALTHCHECK_TIMEOUT_MS = 10_000;

/**
 * The SDK's default credential chain reads the shared files (~/.aws/credentials and config)
 * through a per-process cache that keeps the first answer, a missing file included: a credentials
 * file written after logferry started would never be seen, and the sink would stay blocked until a
 * restart. The client passes its config to the chain, and `ignoreCache` makes the ini provider read
 * the files again on each run of the chain. The chain only runs again while it has found nothing
 * (the SDK memoizes found credentials until their expiry), so this costs one file read per probe
 * of a sink that has no credentials, and nothing once it has them. It is spread into the config
 * because it is an option of the chain (DefaultProviderInit), not of the client's type.
 */
const REREAD_SHARED_FILES_UNTIL_FOUND = { ignoreCache: true };

const STORAGE_CLASSES = [
  'STANDARD',
  'REDUCED_REDUNDANCY',
  'STANDARD_IA',
  'ONEZONE_IA',
  'INTELLIGENT_TIERING',
  'GLACIER',
  'GLACIER_IR',
  'DEEP_ARCHIVE',
  'OUTPOSTS',
  'SNOW',
  'EXPRESS_ONEZONE',
] as const satisfies readonly StorageClass[];

const s3RetrySchema = retrySchema
  .extend({
    max_backoff_ms: z.number().int().positive().max(HOUR_MS).default(20_000).describe('Largest delay between two attempts (at most 1 hour).'),
  })
  .prefault({})
  .describe('Backoff while the store fails (throttling, 5xx, timeouts, refused credentials, a missing bucket): records are held and retried; with max_duration_s set, a record held longer goes to the dead letters.');

export const s3SinkSchema = z
  .object({
    bucket: z
      .string()
      .min(1)
      .regex(/^[^/\s]+$/, 'expected a bucket name only, without s3:// or slashes (use prefix for a folder)')
      .describe('Bucket that receives each record as an object at {prefix}{key}.'),
    region: z
      .string()
      .min(1)
      .optional()
      .describe("The bucket's region. Default: AWS_REGION, AWS_DEFAULT_REGION or the profile's region, else us-east-1."),
    prefix: z
      .string()
      .default('')
      .refine((p) => !p.startsWith('/'), 'must not start with "/": S3 keys have no leading slash')
      .describe('Prepended to every key verbatim, e.g. "logs/" (include the trailing slash for a folder).'),
    endpoint: z
      .url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' })
      .optional()
      .describe('URL of an S3-compatible store (MinIO, Ceph, R2…); empty for AWS S3.'),
    force_path_style: z
      .boolean()
      .default(false)
      .describe('Address buckets as {endpoint}/{bucket} instead of {bucket}.{endpoint}; most S3-compatible stores need it.'),
    compression: z.enum(['none', 'gzip']).default('none').describe('gzip stores the objects compressed, with Content-Encoding: gzip.'),
    gzip_suffix: z.boolean().default(false).describe('Append ".gz" to the key of gzip-compressed objects.'),
    storage_class: z.enum(STORAGE_CLASSES).default('STANDARD').describe('S3 storage class of the objects.'),
    server_side_encryption: z
      .enum(['none', 'AES256', 'aws:kms'])
      .default('none')
      .describe('Encryption at rest requested per object (none: the bucket default applies).'),
    kms_key_id: z.string().min(1).optional().describe('KMS key id or ARN for server_side_encryption aws:kms (default: the aws/s3 key).'),
    concurrency: z.number().int().min(1).max(1024).default(32).describe('Requests in flight at most.'),
    multipart_threshold_bytes: z
      .number()
      .int()
      .min(1)
      .max(MAX_PUT_BYTES)
      .default(8 * 1024 * 1024)
      .describe('Bodies larger than this (and than 5 MiB, the smallest part S3 accepts) are uploaded in parts of this size.'),
    request_timeout_ms: z
      .number()
      .int()
      .min(1)
      .max(10 * MINUTE_MS)
      .default(30_000)
      .describe('One request (or one part) that takes longer than this is a failed attempt, retried (at most 10 minutes).'),
    retry: s3RetrySchema,
    healthcheck: healthcheckEnabledSchema(
      'At start, send HeadBucket: a missing bucket, another region, refused credentials or an unreachable endpoint fail the check; a 403 (HeadBucket needs s3:ListBucket, which writing does not) is only a warning.',
    )
      .describe('The check at start (run logs it; run --require-healthy and validate --check-destinations exit 69 when it fails).'),
  })
  .strict()
  .superRefine((options, ctx) => {
    if (options.kms_key_id !== undefined && options.server_side_encryption !== 'aws:kms') {
      ctx.addIssue({ code: 'custom', path: ['kms_key_id'], message: 'kms_key_id needs server_side_encryption: aws:kms' });
    }
    if (options.gzip_suffix && options.compression !== 'gzip') {
      ctx.addIssue({ code: 'custom', path: ['gzip_suffix'], message: 'gzip_suffix needs compression: gzip' });
    }
  });

export type S3SinkOptions = z.output<typeof s3SinkSchema>;

/** The parts of an AWS SDK error (or a Node network error) that tell what went wrong. */
interface S3ErrorLike {
  name?: unknown;
  message?: unknown;
  code?: unknown;
  Region?: unknown;
  $metadata?: { httpStatusCode?: unknown };
  $response?: { headers?: Record<string, string | undefined> };
}

const RETRYABLE_NAMES = new Set([
  'SlowDown',
  'ThrottlingException',
  'Throttling',
  'ThrottledException',
  'RequestThrottled',
  'TooManyRequestsException',
  'RequestLimitExceeded',
  'BandwidthLimitExceeded',
  'RequestTimeout',
  'RequestTimeoutException',
  'InternalError',
  'ServiceUnavailable',
  'OperationAborted',
  'TimeoutError',
  'AbortError',
]);

const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ENETUNREACH',
  'ENETDOWN',
  'EHOSTUNREACH',
  'EHOSTDOWN',
]);

/** The body arrived damaged or cut off (a proxy, a dropped connection): another attempt sends it again. */
const BODY_DAMAGED_NAMES = new Set(['InvalidDigest', 'BadDigest', 'IncompleteBody', 'XAmzContentSHA256Mismatch']);
const CREDENTIAL_NAMES = new Set(['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'InvalidToken', 'ExpiredToken', 'TokenRefreshRequired', 'InvalidSecurity']);
const REGION_NAMES = new Set(['PermanentRedirect', 'AuthorizationHeaderMalformed', 'IllegalLocationConstraintException']);
/** Refusals about this object only: its key, its size, its arguments. Every other refusal holds the records. */
const RECORD_LEVEL_NAMES = new Set(['InvalidArgument', 'KeyTooLongError', 'EntityTooLarge', 'MetadataTooLarge', 'InvalidObjectName']);

const CHECK_CREDENTIALS =
  'the credentials: the default chain reads AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), then AWS_PROFILE and the shared files, then the container or instance role';

interface Explained {
  /** What the operator should check. */
  advice: string;
  /** Refusals that concern only this object (dead letter). */
  record?: boolean;
}

type Explainer = (c: { name: string; status: number; message: string; bucket: string; key: string; region: string; e: S3ErrorLike }) => Explained;

/** What each refusal means, by error name, in the order they are tried; the last ones match by status. */
const EXPLAINERS: readonly [(name: string, status: number) => boolean, Explainer][] = [
  [(n) => n === 'AccessDenied' || n === 'AllAccessDisabled', ({ bucket, key, message }) => ({
    advice: `the credentials (AWS_ACCESS_KEY_ID/profile/role) and that the bucket policy allows s3:PutObject on ${bucket}/${shorten(key)}${message ? ` (${message})` : ''}`,
  })],
  [(n) => CREDENTIAL_NAMES.has(n), () => ({ advice: `the credentials were refused; check ${CHECK_CREDENTIALS}` })],
  [(n) => n === 'RequestTimeTooSkewed', () => ({ advice: "the system clock: it differs from the server's by more than 15 minutes (NTP)" })],
  [(n) => n === 'NoSuchBucket', ({ bucket, region }) => ({ advice: `bucket and region: bucket "${bucket}" does not exist in region ${region}` })],
  [(n, status) => REGION_NAMES.has(n) || status === 301 || status === 307, ({ bucket, region, e }) => {
    const actual = typeof e.Region === 'string' ? e.Region : e.$response?.headers?.['x-amz-bucket-region'];
    return { advice: `region: the bucket "${bucket}" is in another region than ${region}${actual ? ` (${actual})` : ''}` };
  }],
  [(n) => n === 'InvalidStorageClass', () => ({ advice: 'storage_class: the store does not accept it' })],
  [(n) => n.startsWith('KMS.'), ({ message }) => ({ advice: `kms_key_id, and that the credentials may use the key (kms:GenerateDataKey)${message ? ` (${message})` : ''}` })],
  [(n) => n === 'InvalidRequest' || n === 'InvalidEncryptionAlgorithmError', ({ message }) => ({
    advice: `storage_class, server_side_encryption and kms_key_id${message ? ` (${message})` : ''}`,
  })],
  [(n) => n === 'InvalidBucketName', ({ bucket }) => ({ advice: `bucket: "${bucket}" is not a valid bucket name` })],
  [(n) => n === 'KeyTooLongError', ({ key }) => ({ record: true, advice: `the key ${shorten(key)} is longer than 1024 bytes: shorten prefix or the path_format template` })],
  [(n) => n === 'EntityTooLarge', () => ({ record: true, advice: 'the object is larger than the store accepts in one request: lower multipart_threshold_bytes' })],
  [(n) => RECORD_LEVEL_NAMES.has(n), ({ message }) => ({ record: true, advice: message || 'the store refused this object' })],
  [(_n, status) => status === 404, ({ message }) => ({ advice: `bucket, endpoint and force_path_style${message ? ` (${message})` : ''}` })],
  // The 400s about the credentials, region, bucket or options are named above; any other 400 is
  // about this request (MalformedXML, IncompleteBody, a proxy's refusal of the body), as for HTTP.
  [(_n, status) => status === 400, ({ message }) => ({ record: true, advice: message || 'the store refused this object (400 Bad Request)' })],
];

const REACHABLE = 'that the endpoint is up and reachable from here';

interface NoAnswer {
  /** Needs an operator (a host name that does not resolve, TLS that cannot work); the rest pass by themselves. */
  blocked?: boolean;
  advice: string;
  reason: (c: { name: string; code: string | undefined; message: string }) => string;
}

/**
 * Failures without an HTTP answer (the request never reached S3 or broke off), by the error's code
 * and name, in the order they are tried; the last row takes the rest. The SDK renames ECONNRESET
 * and EPIPE to TimeoutError, so the code is asked before the name.
 */
const NO_ANSWER: readonly [(name: string, code: string | undefined) => boolean, NoAnswer][] = [
  [(_n, code) => code === 'ENOTFOUND', { blocked: true, advice: "endpoint and region: the store's host name does not resolve", reason: ({ code, message }) => `${code}: ${message}` }],
  [(_n, code) => code !== undefined && code !== 'ETIMEDOUT' && NETWORK_CODES.has(code), { advice: REACHABLE, reason: ({ code, message }) => `${code}: ${message}` }],
  [(name, code) => name === 'TimeoutError' || code === 'ETIMEDOUT', { advice: REACHABLE, reason: ({ message }) => `TimeoutError: ${message || 'the request timed out'}` }],
  [
    (_n, code) => code !== undefined && (code.startsWith('ERR_TLS') || code.startsWith('ERR_SSL') || code.includes('CERT')),
    { blocked: true, advice: 'the endpoint and its TLS certificate (NODE_EXTRA_CA_CERTS for a private CA)', reason: ({ code, message }) => `${code}: ${message}` },
  ],
  [() => true, { advice: REACHABLE, reason: ({ name, code, message }) => `${name}${code ? ` ${code}` : ''}: ${message || 'no answer from the server'}` }],
];

/**
 * Turns a failed request into a verdict. Only refusals about this object (its key, size or
 * arguments) are record-level: the record goes to the dead letters. Everything else would fail the
 * same way for every record and holds them: throttling, 5xx, timeouts and network errors pass by
 * themselves (`retrying`, honouring Retry-After); credentials, a missing bucket, another region or
 * a refused option need an operator (`blocked`). Reasons carry names and statuses, never credentials.
 */
export function classifyS3Error(err: unknown, bucket: string, key: string, region: string): Verdict {
  const e: S3ErrorLike = typeof err === 'object' && err !== null ? (err as S3ErrorLike) : { message: String(err) };
  const name = typeof e.name === 'string' && e.name ? e.name : 'Error';
  const message = typeof e.message === 'string' ? e.message : '';
  const code = typeof e.code === 'string' ? e.code : undefined;
  const status = typeof e.$metadata?.httpStatusCode === 'number' ? e.$metadata.httpStatusCode : undefined;

  if (name === 'CredentialsProviderError') {
    return { kind: 'destination', blocked: true, reason: `no AWS credentials found (${message || name})`, advice: CHECK_CREDENTIALS };
  }
  if (status === undefined) {
    // Without an HTTP answer the request never reached S3 or broke off: another try may well work.
    const [, row] = NO_ANSWER.find(([matches]) => matches(name, code))!;
    const verdict: Verdict = { kind: 'destination', reason: row.reason({ name, code, message }), advice: row.advice };
    return row.blocked ? { ...verdict, blocked: true } : verdict;
  }

  const head = `${status} ${name}`;
  // A 2xx that is still an error is a reply the SDK could not read (a proxy's page, a cut-off body).
  if (isRetryableStatus(status) || RETRYABLE_NAMES.has(name) || status < 300 || BODY_DAMAGED_NAMES.has(name)) {
    return {
      kind: 'destination',
      reason: message ? `${head}: ${message}` : head,
      afterMs: parseRetryAfter(e.$response?.headers?.['retry-after']),
      advice: 'nothing: the store is busy or failing (5xx, throttling); records wait until it answers',
    };
  }
  const explainer = EXPLAINERS.find(([matches]) => matches(name, status))?.[1];
  const explained = explainer?.({ name, status, message, bucket, key, region, e }) ?? { advice: message || 'the store refused the request' };
  if (explained.record) return { kind: 'record', reason: `${head}: ${explained.advice}` };
  return { kind: 'destination', blocked: true, reason: message ? `${head}: ${message}` : head, advice: explained.advice };
}

function shorten(key: string): string {
  return key.length > 60 ? `${key.slice(0, 60)}…` : key;
}

function errorKind(err: unknown): string {
  const e = (typeof err === 'object' && err !== null ? err : {}) as S3ErrorLike;
  return `${String(e.$metadata?.httpStatusCode ?? '')} ${String(e.name ?? 'Error')}`;
}

/**
 * A HEAD answer has no body, so the SDK names a refused HeadBucket by its status only (`NotFound`,
 * `Unknown`). This gives it the name a GET's body would have carried, for classifyS3Error: 404 is
 * NoSuchBucket; 301/307, and a 400 naming another region in x-amz-bucket-region, are a redirect to
 * that region. Other errors (no credentials, network, timeouts) are returned as they are.
 */
export function nameHeadBucketError(err: unknown, region: string): unknown {
  const e = (typeof err === 'object' && err !== null ? err : { message: String(err) }) as S3ErrorLike;
  const status = e.$metadata?.httpStatusCode;
  if (typeof status !== 'number') return err;
  const bucketRegion = e.$response?.headers?.['x-amz-bucket-region'];
  const renamed = (name: string, message: string): S3ErrorLike => ({ ...e, name, message, Region: bucketRegion });
  if (status === 404) return renamed('NoSuchBucket', 'HeadBucket: the bucket does not exist');
  if (status === 301 || status === 307 || (status === 400 && bucketRegion && bucketRegion !== region)) {
    return renamed('PermanentRedirect', 'HeadBucket: the bucket answers from another region');
  }
  return err;
}

/** A 403 whose name the HEAD answer could not carry: credentials and permission refusals look the same. */
export function isBodiless403(err: unknown): boolean {
  const e = (typeof err === 'object' && err !== null ? err : {}) as S3ErrorLike;
  return e.$metadata?.httpStatusCode === 403 && !CREDENTIAL_NAMES.has(String(e.name));
}

/**
 * What a failed start-up check of `bucket` means. AccessDenied is a warning: HeadBucket needs
 * s3:ListBucket, which writing objects does not, so a writer's credentials may well be refused
 * here and still deliver. Everything else fails, with the advice a delivery would get.
 */
export function headBucketResult(err: unknown, bucket: string, region: string): HealthcheckResult {
  const name = typeof err === 'object' && err !== null ? String((err as S3ErrorLike).name) : '';
  if (name === 'AccessDenied') {
    return {
      status: 'warning',
      message: `HeadBucket on s3://${bucket} was refused (403 AccessDenied): it needs s3:ListBucket on arn:aws:s3:::${bucket}, which the sink does not need to write, so whether writes work is not known until the first upload`,
    };
  }
  const verdict = classifyS3Error(err, bucket, '', region);
  const found = verdict.kind === 'ok' ? 'no error' : verdict.reason;
  const advice = verdict.kind === 'destination' && verdict.advice ? `; check ${verdict.advice}` : '';
  // One line: OpenSSL's messages end in a newline.
  return { status: 'failed', message: `HeadBucket on s3://${bucket} (region ${region}) failed: ${found}${advice}`.replace(/\s+/g, ' ').trim() };
}

/** The region when the options do not name one: the environment, then the SDK's profile, then us-east-1. */
async function defaultRegion(sdk: S3Sdk): Promise<string> {
  const fromEnv = process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION;
  if (fromEnv) return fromEnv;
  // A bare client resolves the region the SDK way (AWS_PROFILE and the config file) without us
  // re-implementing it; it throws "Region is missing" when nothing is configured.
  const probe = new sdk.S3Client({});
  try {
    return await probe.config.region();
  } catch {
    return FALLBACK_REGION;
  } finally {
    probe.destroy();
  }
}

/**
 * Puts each record as one object at `{prefix}{key}`. Keys are deterministic, so a redelivery after
 * a crash overwrites the object with the same bytes instead of adding a duplicate.
 */
class S3Sink implements Sink {
  readonly bodyCompression: 'gzip' | undefined;
  private readonly client: S3Client;
  private readonly limit: ConcurrencyLimit;
  private readonly partSize: number;
  private readonly warnedAbout = new Set<string>();
  /** Follows ctx.signal; each request and retry wait listens to this one instead of the pipeline's. */
  private readonly stop = new AbortController();
  private readonly onStop = (): void => this.stop.abort(this.ctx.signal.reason);
  private uploaded = 0;

  constructor(
    private readonly options: S3SinkOptions,
    private readonly ctx: SinkContext,
    private readonly region: string,
    private readonly sdk: S3Sdk,
  ) {
    this.limit = new ConcurrencyLimit(options.concurrency);
    this.bodyCompression = options.compression === 'gzip' ? 'gzip' : undefined;
    if (ctx.signal.aborted) this.stop.abort(ctx.signal.reason);
    else ctx.signal.addEventListener('abort', this.onStop, { once: true });
    // Each record in flight listens for the stop at most twice (its request and its retry wait);
    // Node's default limit of 10 would warn about a leak at any concurrency above 5.
    setMaxListeners(options.concurrency * 2 + 10, this.stop.signal);
    this.partSize = Math.max(MIN_PART_BYTES, options.multipart_threshold_bytes);
    const agent = { keepAlive: true, maxSockets: options.concurrency * PART_QUEUE_SIZE };
    this.client = new sdk.S3Client({
      ...REREAD_SHARED_FILES_UNTIL_FOUND,
      region,
      endpoint: options.endpoint,
      forcePathStyle: options.force_path_style,
      // retryUntilFinal owns retries (backoff, max_duration_s, shutdown); SDK retries would multiply them.
      maxAttempts: 1,
      // Single PUTs carry Content-MD5 and parts an explicit CRC32; the SDK default would hash every body twice.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      requestHandler: new sdk.NodeHttpHandler({
        connectionTimeout: Math.min(options.request_timeout_ms, MAX_CONNECT_TIMEOUT_MS),
        requestTimeout: options.request_timeout_ms,
        // Without it the SDK only logs a warning when requestTimeout passes and keeps waiting.
        throwOnRequestTimeout: true,
        socketTimeout: options.request_timeout_ms,
        httpAgent: agent,
        httpsAgent: agent,
      }),
    });
    this.makeAbortBestEffort();
  }

  /**
   * When a part fails, Upload aborts the multipart upload and, if that abort fails too, throws the
   * abort's error instead of the part's: a 503 on a part would then be judged by whatever the abort
   * got (a 405 from stores without AbortMultipartUpload, or the same outage). Turning a failed abort
   * into a warning keeps the part's error, which is the one that says whether to retry.
   */
  private makeAbortBestEffort(): void {
    this.client.middlewareStack.add(
      (next, context) => async (args) => {
        if (context.commandName !== 'AbortMultipartUploadCommand') return next(args);
        try {
          return await next(args);
        } catch (err) {
          const key = (args.input as { Key?: string }).Key;
          this.ctx.log.warn('could not abort a failed multipart upload; its parts stay billed until a lifecycle rule (AbortIncompleteMultipartUpload) removes them', {
            bucket: this.options.bucket,
            key,
            error: errorKind(err).trim(),
          });
          return { output: { $metadata: {} }, response: undefined };
        }
      },
      { step: 'initialize', name: 'logferryBestEffortMultipartAbort' },
    );
  }

  async run(input: AsyncIterable<Delivery[]>): Promise<void> {
    for await (const batch of input) {
      for (const delivery of batch) {
        const key = delivery.record.key;
        if (!key) {
          delivery.rejected('record has no key: put a path_format transform before this sink', 'LF_RECORD_NO_KEY');
          continue;
        }
        await this.limit.run([delivery], () => this.deliver(delivery, key));
      }
    }
    await this.limit.drain();
  }

  private async deliver(delivery: Delivery, recordKey: string): Promise<void> {
    const gzipped = this.options.compression === 'gzip';
    const key = this.options.prefix + recordKey + (gzipped && this.options.gzip_suffix ? '.gz' : '');
    const json = documentBody(delivery.record);
    const ready = gzipped ? preparedGzip(delivery.record) : undefined;
    const body = ready ? Buffer.from(ready.buffer, ready.byteOffset, ready.byteLength) : gzipped ? await gzip(json) : json;
    const md5 = body.length > this.partSize ? undefined : md5Base64(body);
    const verdict = await retryUntilFinal(() => this.put(key, body, md5), {
      retry: this.options.retry,
      signal: this.stop.signal,
      state: this.ctx.state,
      onRetry: (reason, attempt, delayMs) => this.logRetry(key, reason, attempt, delayMs),
    });
    // On shutdown the record stays unacknowledged: it is read again after the restart.
    if (verdict === 'aborted') return;
    if (verdict.kind === 'ok') {
      this.uploaded++;
      this.ctx.metrics.bytesOut += body.length;
    } else if (verdict.code === 'LF_SINK_RETRY_EXPIRED') {
      this.warnOnce('expired', key, verdict.reason);
    }
    settleAll([delivery], verdict);
  }

  /** One attempt; `md5` is set for bodies small enough for a single PUT. */
  private async put(key: string, body: Buffer, md5: string | undefined): Promise<Verdict> {
    const params: PutObjectCommandInput = {
      Bucket: this.options.bucket,
      Key: key,
      Body: body,
      ContentType: 'application/json',
      ContentEncoding: this.options.compression === 'gzip' ? 'gzip' : undefined,
      // STANDARD is S3's default; leaving the header out keeps stores that know no storage classes happy.
      StorageClass: this.options.storage_class === 'STANDARD' ? undefined : this.options.storage_class,
      ServerSideEncryption: this.options.server_side_encryption === 'none' ? undefined : this.options.server_side_encryption,
      SSEKMSKeyId: this.options.kms_key_id,
    };
    this.ctx.metrics.count(this.ctx.id, 'attempts');
    try {
      if (md5 === undefined) await this.putInParts(params);
      else await this.client.send(new this.sdk.PutObjectCommand({ ...params, ContentMD5: md5 }), { abortSignal: this.stop.signal });
      return { kind: 'ok' };
    } catch (err) {
      if (this.stop.signal.aborted) return { kind: 'destination', reason: 'stopping' };
      const verdict = classifyS3Error(err, this.options.bucket, key, this.region);
      if (verdict.kind === 'record') this.warnOnce(errorKind(err), key, verdict.reason);
      return verdict;
    }
  }

  /**
   * Large bodies go up in parts: each part is a request of bounded size (so request_timeout_ms
   * stays meaningful) and S3 checks a CRC32 per part. Content-MD5 of the whole body would be wrong
   * on every part, so it is not sent here. A failed upload is aborted so no parts are left behind.
   */
  private async putInParts(params: PutObjectCommandInput): Promise<void> {
    const controller = new AbortController();
    const onAbort = (): void => controller.abort();
    // Upload assigns `onabort` of the signal it is given, so uploads cannot share one controller.
    this.stop.signal.addEventListener('abort', onAbort, { once: true });
    try {
      const upload = new this.sdk.Upload({
        client: this.client,
        params: { ...params, ChecksumAlgorithm: 'CRC32' },
        partSize: this.partSize,
        queueSize: PART_QUEUE_SIZE,
        leavePartsOnError: false,
        abortController: controller,
      });
      await upload.done();
    } finally {
      this.stop.signal.removeEventListener('abort', onAbort);
    }
  }

  /** The operator's lines come from the sink state (once per outage); each retry is a debug line and a count. */
  private logRetry(key: string, reason: string, attempt: number, delayMs: number): void {
    this.ctx.metrics.count(this.ctx.id, 'retries');
    this.ctx.log.debug('upload failed; retrying', { bucket: this.options.bucket, key, reason, attempt, retry_in_ms: delayMs });
  }

  private warnOnce(kind: string, key: string, reason: string): void {
    if (this.warnedAbout.has(kind)) return;
    this.warnedAbout.add(kind);
    this.ctx.log.warn('S3 refused an object for good (a refusal about this object only); it goes to the dead letters (further errors of this kind are not logged)', {
      bucket: this.options.bucket,
      key,
      reason,
    });
  }

  /**
   * HeadBucket with the sink's client (its endpoint, region and credentials), bounded by
   * request_timeout_ms or 10 s. A refused HEAD carries no error code, so on a 403 one listing
   * request of no keys (a GET, whose refusal has a body) tells refused credentials
   * (InvalidAccessKeyId, SignatureDoesNotMatch, ExpiredToken: failed) from a missing permission
   * (AccessDenied: a warning).
   */
  async healthcheck(signal: AbortSignal): Promise<HealthcheckResult | undefined> {
    if (!this.options.healthcheck.enabled) return undefined;
    const { bucket } = this.options;
    const timeoutMs = Math.min(this.options.request_timeout_ms, MAX_HEALTHCHECK_TIMEOUT_MS);
    const timeout = AbortSignal.timeout(timeoutMs);
    const abortSignal = AbortSignal.any([signal, timeout]);
    let failure: unknown;
    try {
      await this.client.send(new this.sdk.HeadBucketCommand({ Bucket: bucket }), { abortSignal });
      return { status: 'ok', message: `bucket s3://${bucket} answers HeadBucket (region ${this.region})` };
    } catch (err) {
      failure = nameHeadBucketError(err, this.region);
    }
    if (isBodiless403(failure) && !abortSignal.aborted) {
      try {
        await this.client.send(new this.sdk.ListObjectsV2Command({ Bucket: bucket, MaxKeys: 0 }), { abortSignal });
        // Listing works with these credentials: only HEAD was refused, by a policy; still a permission matter.
        failure = { ...(failure as object), name: 'AccessDenied' };
      } catch (err) {
        failure = isBodiless403(err) ? { ...(err as object), name: 'AccessDenied' } : err;
      }
    }
    if (signal.aborted) return { status: 'failed', message: `HeadBucket on s3://${bucket}: stopped before the store answered` };
    if (timeout.aborted) failure = { name: 'TimeoutError', message: `HeadBucket got no answer within ${timeoutMs} ms` };
    return headBucketResult(failure, bucket, this.region);
  }

  async close(): Promise<void> {
    this.ctx.signal.removeEventListener('abort', this.onStop);
    this.client.destroy();
    if (this.uploaded > 0) {
      this.ctx.log.info(`uploaded ${this.uploaded} objects to s3://${this.options.bucket}/${this.options.prefix}`, { region: this.region });
    }
  }
}

function md5Base64(body: Buffer): string {
  return createHash('md5').update(body).digest('base64');
}

/** Environment variables of the SDK's default chain that hold credentials. */
const CREDENTIAL_ENV = ['AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_ACCESS_KEY_ID'] as const;

/**
 * The options hold no credentials (the SDK's default chain finds them): the secrets are those of
 * the environment it reads, and any user, password or token written into the endpoint URL.
 */
export function s3Secrets(options: S3SinkOptions, env: NodeJS.ProcessEnv = process.env): string[] {
  const secrets = options.endpoint ? urlSecrets(options.endpoint) : [];
  for (const name of CREDENTIAL_ENV) {
    const value = env[name];
    if (value) secrets.push(value);
  }
  return secrets;
}

export const s3Sink: ComponentDefinition<'sink', typeof s3SinkSchema> = {
  kind: 'sink',
  type: 's3',
  description: 'Puts each record as one JSON object at s3://{bucket}/{prefix}{key} (AWS S3 or an S3-compatible store).',
  schema: s3SinkSchema,
  requiresKey: true,
  secrets: s3Secrets,
  preflight: (_options, env) => preflightCredentials(env),
  build: async (options, ctx) => {
    const sdk = await loadSdk();
    return new S3Sink(options, ctx, options.region ?? (await defaultRegion(sdk)), sdk);
  },
};

/**
 * The credential settings that are certainly wrong. They are warnings, not errors: the SDK goes on
 * down its chain (the container or instance role), which may still find credentials where it runs.
 */
export function preflightCredentials(env: NodeJS.ProcessEnv): PreflightProblem[] {
  const warnings: PreflightProblem[] = [];
  const warn = (message: string): void => void warnings.push({ path: '', message, warning: true });
  if (Boolean(env.AWS_ACCESS_KEY_ID) !== Boolean(env.AWS_SECRET_ACCESS_KEY)) {
    const set = env.AWS_ACCESS_KEY_ID ? 'AWS_ACCESS_KEY_ID' : 'AWS_SECRET_ACCESS_KEY';
    warn(`only ${set} is set; the AWS SDK uses the key pair only when AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are both set`);
  }
  const home = env.HOME ?? homedir();
  const files = {
    credentials: env.AWS_SHARED_CREDENTIALS_FILE || join(home, '.aws', 'credentials'),
    config: env.AWS_CONFIG_FILE || join(home, '.aws', 'config'),
  };
  const sections = new Set<string>();
  for (const [kind, file] of Object.entries(files)) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      const variable = kind === 'credentials' ? 'AWS_SHARED_CREDENTIALS_FILE' : 'AWS_CONFIG_FILE';
      if (env[variable]) warn(`${variable} names ${file}, which cannot be read`);
      continue;
    }
    for (const match of text.matchAll(/^\s*\[\s*(?:profile\s+)?([^\]]+?)\s*\]/gm)) sections.add(match[1]!);
  }
  const profile = env.AWS_PROFILE;
  if (profile && !sections.has(profile)) {
    warn(`AWS_PROFILE is "${profile}", but neither ${files.credentials} nor ${files.config} has that profile`);
  }
  return warnings;
}
