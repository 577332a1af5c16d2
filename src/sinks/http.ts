import { createHash, createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { promisify } from 'node:util';
import { gzip as gzipCallback } from 'node:zlib';
import type { Agent, Dispatcher } from 'undici';
import { z } from 'zod';
import { MiB, MINUTE_MS } from '../config/limits.js';
import { LogferryError } from '../errors.js';
import type { ComponentDefinition, Delivery, HealthcheckResult, LogRecord, PreflightProblem, Sink, SinkContext } from '../engine/types.js';
import {
  ConcurrencyLimit,
  parseRetryAfter,
  statusFailureClass,
  retrySchema,
  retryUntilFinal,
  safeUrl,
  settleAll,
  type Verdict,
} from './delivery.js';
import { documentBody, preparedGzip } from '../records/body.js';
import { SecretScrubber, urlSecrets } from '../engine/secrets.js';
import { plural } from '../plural.js';

const gzip = promisify(gzipCallback);

/** How much of a refusal's body goes into the dead letter: enough to read the server's reason. */
const REASON_BODY_BYTES = 512;
/**
 * Read past the excerpt, so a secret the server echoes across its end is still whole when the
 * body is scrubbed, and no prefix of it survives the cut.
 */
const REASON_READ_BYTES = REASON_BODY_BYTES + 16 * 1024;

/** Header names whose values are credentials; `*` at the end matches any rest of the name. */
export const DEFAULT_SECRET_HEADERS = ['authorization', 'proxy-authorization', 'x-api-key', 'api-key', 'x-auth-token', 'cookie', 'x-sumo-*'];

const batchSchema = z
  .object({
    max_events: z.number().int().min(1).max(100_000).default(500).describe('Records per request at most (ndjson).'),
    max_bytes: z
      .number()
      .int()
      .min(1024)
      .max(64 * MiB)
      .default(1024 * 1024)
      .describe('Uncompressed bytes per request at most (1 KiB to 64 MiB); a single larger record is sent alone.'),
    timeout_ms: z
      .number()
      .int()
      .min(1)
      .max(10 * MINUTE_MS)
      .default(1000)
      .describe('A batch that is not full is sent this long after its first record (at most 10 minutes).'),
  })
  .strict();

/** RFC 7230 `token`: the characters a header name may have. */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/**
 * RFC 7230 `field-value`: visible ASCII, space, tab and obs-text. CR, LF and NUL would split the
 * request; undici refuses them on every attempt, so they must be config errors, not retries.
 */
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
/** Headers the HTTP client sets from the body and connection itself; undici refuses them from a caller. */
const RESERVED_HEADERS = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade', 'expect']);

const headerValueSchema = z
  .string()
  .regex(HEADER_VALUE, 'must not contain line breaks, NUL or other control characters (a header value is one line of text)');

const headersSchema = z.record(
  z
    .string()
    .regex(HEADER_NAME, 'is not a valid header name: letters, digits and !#$%&\'*+-.^_`|~ only, no spaces or colons')
    .refine((name) => !RESERVED_HEADERS.has(name.toLowerCase()), 'is set by the HTTP client from the request itself and cannot be configured'),
  headerValueSchema,
);

const authSchema = z.discriminatedUnion('strategy', [
  z.object({ strategy: z.literal('bearer'), token: headerValueSchema.min(1).describe('Sent as `Authorization: Bearer <token>`.') }).strict(),
  z
    .object({
      strategy: z.literal('basic'),
      user: z.string().min(1).regex(/^[^:]*$/, 'must not contain ":" (basic auth joins user and password with it)'),
      password: z.string().describe('Sent with the user as `Authorization: Basic ...`.'),
    })
    .strict(),
]);

const tlsSchema = z
  .object({
    ca_file: z.string().default('').describe('PEM file of the CA that signed the server certificate (empty: the system CAs).'),
    cert_file: z.string().default('').describe('PEM client certificate, for servers that require mutual TLS.'),
    key_file: z.string().default('').describe('PEM private key of cert_file.'),
    verify: z.boolean().default(true).describe('Check the server certificate and name. Turn off only for tests.'),
  })
  .strict();

export const httpHealthcheckSchema = z
  .object({
    enabled: z.boolean().default(true).describe('Check the destination at start, before records flow.'),
    uri: z
      .url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' })
      .optional()
      .describe(
        "A health endpoint, requested with the sink's headers, auth and TLS; healthy on 2xx. Unset: only a connection (DNS, TCP and the TLS handshake) is made to the uri's host, and no request is sent.",
      ),
    method: z.enum(['GET', 'HEAD', 'OPTIONS']).default('GET').describe('Method of the healthcheck.uri request.'),
    timeout_ms: z
      .number()
      .int()
      .min(1)
      .max(MINUTE_MS)
      .default(10_000)
      .describe('The check fails when it takes longer than this (at most 1 minute).'),
  })
  .strict();

export const httpSinkSchema = z
  .object({
    uri: z.url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' }).describe('Where records are sent. Tokens in the URL are never logged.'),
    method: z.enum(['POST', 'PUT']).default('POST'),
    encoding: z
      .enum(['json', 'ndjson'])
      .default('ndjson')
      .describe('json: one record per request, the document as the body. ndjson: batches, one record a line.'),
    batch: batchSchema.prefault({}),
    compression: z.enum(['none', 'gzip']).default('none').describe('gzip sets Content-Encoding: gzip.'),
    headers: headersSchema.default({}).describe('Extra request headers: names are RFC 7230 tokens, values one line of text.'),
    idempotency_header: z
      .string()
      .max(256)
      .regex(HEADER_NAME, 'is not a valid header name: letters, digits and !#$%&\'*+-.^_`|~ only, no spaces or colons')
      .refine((name) => !RESERVED_HEADERS.has(name.toLowerCase()), 'is set by the HTTP client from the request itself and cannot be configured')
      .optional()
      .describe(
        'encoding json only: a header (e.g. Idempotency-Key) whose value is the record\'s deterministic identity, the same on every attempt and every ' +
          'redelivery: its key (path_format), else the digest of the event as received. Unset by default. NDJSON batches cannot carry one: ' +
          'the records a batch holds change between attempts.',
      ),
    secret_headers: z
      .array(z.string().min(1).max(256).regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'expected a header name, optionally ending in *'))
      .max(256)
      .default(DEFAULT_SECRET_HEADERS)
      .describe(
        'Names of headers (case-insensitive; a trailing * matches any rest) whose values are credentials: they are ' +
          'scrubbed from every log line and dead letter, as the auth token and password are. Setting it replaces the default list.',
      ),
    auth: authSchema.optional().describe('bearer {token} or basic {user, password}.'),
    tls: tlsSchema.prefault({}),
    request: z
      .object({
        concurrency: z.number().int().min(1).max(1024).default(8).describe('Requests in flight at most (and connections per origin).'),
        timeout_ms: z
          .number()
          .int()
          .min(1)
          .max(10 * MINUTE_MS)
          .default(30_000)
          .describe('An answer slower than this is a failed attempt, retried (at most 10 minutes).'),
      })
      .strict()
      .prefault({}),
    retry: retrySchema.prefault({}),
    healthcheck: httpHealthcheckSchema
      .prefault({})
      .describe('The check at start (run logs it; run --require-healthy and validate --check-destinations exit 69 when it fails).'),
  })
  .strict()
  .superRefine((options, ctx) => {
    if (options.idempotency_header !== undefined && options.encoding !== 'json') {
      ctx.addIssue({
        code: 'custom',
        path: ['idempotency_header'],
        message: 'needs encoding: json (one record per request); an NDJSON batch holds other records on each attempt, so no one key can name it',
      });
    }
    if (options.idempotency_header !== undefined && Object.keys(options.headers).some((name) => name.toLowerCase() === options.idempotency_header!.toLowerCase())) {
      ctx.addIssue({ code: 'custom', path: ['idempotency_header'], message: `is also set under headers: remove it there (its value is the record's identity)` });
    }
  });

export type HttpSinkOptions = z.output<typeof httpSinkSchema>;

/** A group of deliveries sent in one request. */
interface Batch {
  deliveries: Delivery[];
  lines: Buffer[];
  bytes: number;
}

const NEWLINE = Buffer.from('\n');

function sliceBatch(batch: Batch, from: number, to: number): Batch {
  const lines = batch.lines.slice(from, to);
  return { deliveries: batch.deliveries.slice(from, to), lines, bytes: lines.reduce((sum, line) => sum + line.length + 1, 0) };
}

/**
 * Sends records to an HTTP endpoint, one JSON document per request or NDJSON batches, and
 * acknowledges each record only once the server answered 2xx for the request that carried it.
 */
type Undici = typeof import('undici');

/**
 * A protocol carried by the http sink (the otlp sink): how a batch becomes a request body, and
 * what a 2xx answer's body says. Batching, retries, splitting of refused batches and
 * acknowledgement stay the http sink's; the sink's `encoding` must be `ndjson` (batches).
 */
export interface BatchFormat {
  readonly contentType: string;
  /** The uncompressed body of one request carrying these records, in their order. */
  encode(records: readonly LogRecord[]): Buffer;
  /**
   * Reads the body of a 2xx answer to a request that carried `count` records: `ok`, or a `record`
   * verdict when the server says it refused some of them (with `resend: 'singly'` a batch of
   * several is then sent again one record at a time, so the refused ones end alone as dead letters
   * and the accepted ones reach the server at most twice). It must not throw.
   */
  readAnswer(body: Buffer, count: number): Verdict;
}

/** The most of a 2xx answer's body a BatchFormat reads (OTLP answers are a few bytes). */
const ANSWER_READ_BYTES = 64 * 1024;

/**
 * Builds an HttpSink. undici is imported here, by the first http sink built, not when the module
 * loads: its import costs every command (`--version`, `validate`, a pipeline without HTTP) start-up
 * time. Plugins that wrap the http sink (plugins/sumologic) build it through this function too.
 */
export async function buildHttpSink(options: HttpSinkOptions, ctx: SinkContext, format?: BatchFormat): Promise<HttpSink> {
  return new HttpSink(options, ctx, await import('undici'), format);
}

export class HttpSink implements Sink {
  readonly bodyCompression: 'gzip' | undefined;
  private readonly dispatcher: Dispatcher;
  private readonly limit: ConcurrencyLimit;
  private readonly headers: Record<string, string>;
  private readonly target: string;
  private current: Batch | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  private requests = 0;
  private delivered = 0;
  private readonly warnedAbout = new Set<string>();
  /** Its own secrets, scrubbed from an answer before it is cut to an excerpt (the engine scrubs again). */
  private readonly scrubber: SecretScrubber;
  /** The TLS options every connection uses; the connection check opens one with the same. */
  private readonly connectOptions: Agent.Options['connect'];

  constructor(
    private readonly options: HttpSinkOptions,
    private readonly ctx: SinkContext,
    private readonly undici: Undici,
    private readonly format?: BatchFormat,
  ) {
    this.target = safeUrl(options.uri);
    this.limit = new ConcurrencyLimit(options.request.concurrency);
    this.connectOptions = tlsConnectOptions(options.tls);
    this.dispatcher = new undici.Agent({
      connections: options.request.concurrency,
      headersTimeout: options.request.timeout_ms,
      bodyTimeout: options.request.timeout_ms,
      connect: this.connectOptions,
    });
    this.headers = buildHeaders(options);
    if (format) this.headers['content-type'] = format.contentType;
    this.scrubber = new SecretScrubber(httpSecrets(options));
    // One document per request: the pool can compress it; NDJSON batches are compressed as a whole.
    this.bodyCompression = options.encoding === 'json' && options.compression === 'gzip' ? 'gzip' : undefined;
  }

  async run(input: AsyncIterable<Delivery[]>): Promise<void> {
    for await (const group of input) {
      for (const delivery of group) {
        // Most records only join the open batch; only a full batch (or json encoding) waits.
        const sending = this.add(delivery);
        if (sending) await sending;
      }
    }
    await this.flush();
    await this.limit.drain();
  }

  private add(delivery: Delivery): Promise<void> | undefined {
    const line = documentBody(delivery.record);
    const bytes = line.length + 1;
    const { max_events, max_bytes } = this.options.batch;
    if (this.options.encoding === 'json') return this.send({ deliveries: [delivery], lines: [line], bytes });
    // A batch never grows past max_bytes; a record larger than that on its own travels alone.
    if (this.current && this.current.bytes + bytes > max_bytes) return this.flush().then(() => this.add(delivery));
    if (!this.current) {
      this.current = { deliveries: [], lines: [], bytes: 0 };
      this.flushTimer = setTimeout(() => {
        // Detached: a timer cannot wait. deliver() settles every batch it is given, so this only
        // logs a bug, which would otherwise be an unhandled rejection that ends the process.
        void this.flush().catch((err: unknown) =>
          this.ctx.log.error('failed to send a batch on its timeout', { code: 'LF_SINK_FAILED', uri: this.target, error: err }),
        );
      }, this.options.batch.timeout_ms);
    }
    this.current.deliveries.push(delivery);
    this.current.lines.push(line);
    this.current.bytes += bytes;
    if (this.current.deliveries.length >= max_events || this.current.bytes >= max_bytes) return this.flush();
    return undefined;
  }

  private async flush(): Promise<void> {
    const batch = this.current;
    if (!batch) return;
    this.current = undefined;
    clearTimeout(this.flushTimer);
    await this.send(batch);
  }

  /** Waits for a free request slot (so a slow server slows the input), then sends in the background. */
  private send(batch: Batch): Promise<void> {
    return this.limit.run(batch.deliveries, () => this.deliver(batch));
  }

  /**
   * Sends one batch until it has a final answer. A refusal about the body of a batch of several
   * records (400, 413, 422) says nothing about which of them is at fault: the batch is split in two
   * and each half sent on its own, down to single records, so only the refused ones end as dead
   * letters (and a 413 finds the size that passes).
   */
  private async deliver(batch: Batch): Promise<void> {
    const body = await this.encode(batch);
    const identity = this.identityHeader(batch, body);
    const verdict = await retryUntilFinal(() => this.attempt(body, identity, batch.deliveries.length), {
      retry: this.options.retry,
      signal: this.ctx.signal,
      state: this.ctx.state,
      onRetry: (reason, attempt, delayMs) =>
        this.ctx.log.debug('request failed; retrying', { uri: this.target, reason, attempt, records: batch.deliveries.length, retry_in_ms: delayMs }),
    });
    // On shutdown the records stay unacknowledged; they are read again after the restart.
    if (verdict === 'aborted') return;
    if (verdict.kind === 'ok') {
      this.delivered += batch.deliveries.length;
      this.ctx.metrics.bytesOut += batch.bytes;
    } else if (batch.deliveries.length > 1 && verdict.code === undefined) {
      const count = batch.deliveries.length;
      const singly = verdict.resend === 'singly';
      this.ctx.log.debug(
        singly
          ? 'the server refused part of a batch without saying which records; sending each once more on its own'
          : 'a batch was refused for its body; sending it in halves to find the records at fault',
        { uri: this.target, records: count, reason: verdict.reason },
      );
      const half = Math.ceil(count / 2);
      const parts = singly ? batch.deliveries.map((_, i) => sliceBatch(batch, i, i + 1)) : [sliceBatch(batch, 0, half), sliceBatch(batch, half, count)];
      for (const part of parts) await this.deliver(part);
      return;
    } else {
      this.warnOnce(verdict.reason);
    }
    settleAll(batch.deliveries, verdict);
  }

  /**
   * The idempotency header of a one-record request: the record's key, else the digest of the event
   * as received (both set before the record reaches a sink, and the same when it is read again
   * after a restart), else the digest of the body, for a plugin's record that has neither.
   */
  private identityHeader(batch: Batch, body: Buffer): Record<string, string> | undefined {
    const name = this.options.idempotency_header;
    if (name === undefined || batch.deliveries.length !== 1) return undefined;
    const record = batch.deliveries[0]!.record;
    const value = record.key ?? record.receivedDigest ?? createHash('sha256').update(body).digest('hex').slice(0, 32);
    // Keys are paths and may hold any text; a header value is sent as visible ASCII, else percent-encoded.
    return { [name.toLowerCase()]: /^[\x21-\x7e]+$/.test(value) ? value : encodeURIComponent(value) };
  }

  private async encode(batch: Batch): Promise<Buffer> {
    if (this.options.encoding === 'json') {
      const ready = this.options.compression === 'gzip' ? preparedGzip(batch.deliveries[0]!.record) : undefined;
      if (ready) return Buffer.from(ready.buffer, ready.byteOffset, ready.byteLength);
      const body = batch.lines[0]!;
      return this.options.compression === 'gzip' ? gzip(body) : body;
    }
    let raw: Buffer;
    if (this.format) {
      raw = this.format.encode(batch.deliveries.map((delivery) => delivery.record));
    } else {
      const parts: Buffer[] = [];
      for (const line of batch.lines) parts.push(line, NEWLINE);
      raw = Buffer.concat(parts, batch.bytes);
    }
    return this.options.compression === 'gzip' ? gzip(raw) : raw;
  }

  private async attempt(body: Buffer, identity: Record<string, string> | undefined, count: number): Promise<Verdict> {
    this.requests++;
    this.ctx.metrics.count(this.ctx.id, 'requests');
    try {
      const response = await this.undici.request(this.options.uri, {
        dispatcher: this.dispatcher,
        method: this.options.method,
        headers: { ...this.headers, ...identity, 'content-length': String(body.length) },
        body,
        signal: AbortSignal.any([this.ctx.signal, AbortSignal.timeout(this.options.request.timeout_ms)]),
      });
      const status = response.statusCode;
      if (status >= 200 && status < 300) {
        if (!this.format) {
          await response.body.dump();
          return { kind: 'ok' };
        }
        const verdict = this.format.readAnswer(await readAnswer(response.body), count);
        return verdict.kind === 'record' ? { ...verdict, reason: this.scrubber.scrub(`HTTP ${status} from ${this.target}: ${verdict.reason}`) } : verdict;
      }
      const excerpt = await bodyExcerpt(response.body, this.scrubber);
      const reason = `HTTP ${status} from ${this.target}${excerpt ? `: ${excerpt}` : ''}`;
      const failure = statusFailureClass(status);
      if (failure === 'record') return { kind: 'record', reason: `${reason}${explainStatus(status)}` };
      return {
        kind: 'destination',
        reason,
        blocked: failure === 'blocked',
        advice: adviceForStatus(status, response.headers.location),
        afterMs: parseRetryAfter(response.headers['retry-after']),
      };
    } catch (err) {
      return networkFailure(err, this.options.request.timeout_ms, 'request.timeout_ms');
    }
  }

  /**
   * With healthcheck.uri: one request there with the sink's headers, auth and TLS, healthy on 2xx.
   * Without: a connection to the uri's host (DNS, TCP, the TLS handshake with the sink's TLS
   * options) and no request, so the receiver gets no data and does nothing.
   */
  async healthcheck(signal: AbortSignal): Promise<HealthcheckResult | undefined> {
    const check = this.options.healthcheck;
    if (!check.enabled) return undefined;
    const result = check.uri ? await this.requestCheck(check.uri, check.method, check.timeout_ms, signal) : await this.connectionCheck(check.timeout_ms, signal);
    // One line: OpenSSL's messages end in a newline.
    return { status: result.status, message: this.scrubber.scrub(result.message).replace(/\s+/g, ' ').trim() };
  }

  private async requestCheck(uri: string, method: string, timeoutMs: number, signal: AbortSignal): Promise<HealthcheckResult> {
    const target = `${method} ${safeUrl(uri)}`;
    // No body: the headers that describe one are left out, the rest (auth, the operator's headers) sent.
    const headers = Object.fromEntries(Object.entries(this.headers).filter(([name]) => name !== 'content-type' && name !== 'content-encoding'));
    const timeout = AbortSignal.timeout(timeoutMs);
    try {
      const response = await this.undici.request(uri, { dispatcher: this.dispatcher, method, headers, signal: AbortSignal.any([signal, timeout]) });
      const status = response.statusCode;
      if (status >= 200 && status < 300) {
        await response.body.dump();
        return { status: 'ok', message: `${target} answered ${status}` };
      }
      const excerpt = await bodyExcerpt(response.body, this.scrubber);
      const advice = adviceForStatus(status, response.headers.location);
      return { status: 'failed', message: `${target} answered HTTP ${status}${excerpt ? `: ${excerpt}` : ''}${advice ? `; check ${advice}` : ''}` };
    } catch (err) {
      if (signal.aborted) return { status: 'failed', message: `${target}: stopped before the server answered` };
      return failedCheck(target, networkFailure(timeout.aborted ? { name: 'TimeoutError' } : err, timeoutMs, 'healthcheck.timeout_ms'));
    }
  }

  private async connectionCheck(timeoutMs: number, signal: AbortSignal): Promise<HealthcheckResult> {
    const url = new URL(this.options.uri);
    const tls = url.protocol === 'https:';
    const what = `connection to ${url.origin}`;
    const connect = this.undici.buildConnector({ ...this.connectOptions, timeout: timeoutMs });
    // The IPv6 literal of a URL is in brackets; the socket wants the address alone (as undici does).
    const hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    if (signal.aborted) return { status: 'failed', message: `${what}: stopped before it was made` };
    const outcome = await new Promise<{ error: Error | null }>((resolve) => {
      const onAbort = (): void => resolve({ error: null });
      signal.addEventListener('abort', onAbort, { once: true });
      connect({ hostname, host: url.host, protocol: url.protocol, port: url.port || (tls ? '443' : '80') }, (error, socket) => {
        signal.removeEventListener('abort', onAbort);
        socket?.destroy();
        resolve({ error });
      });
    });
    if (signal.aborted) return { status: 'failed', message: `${what}: stopped before it was made` };
    if (outcome.error) return failedCheck(what, networkFailure(outcome.error, timeoutMs, 'healthcheck.timeout_ms'));
    return { status: 'ok', message: `${what} accepted (TCP${tls ? ' and TLS' : ''}; no request sent: set healthcheck.uri to check a health endpoint)` };
  }

  private warnOnce(reason: string): void {
    const kind = reason.slice(0, reason.indexOf(':') + 1 || 40);
    if (this.warnedAbout.has(kind)) return;
    this.warnedAbout.add(kind);
    this.ctx.log.warn('the server refused records for good (an answer about their body); they go to the dead letters (further refusals of this kind are not logged)', {
      uri: this.target,
      reason,
    });
  }

  async close(): Promise<void> {
    clearTimeout(this.flushTimer);
    await this.dispatcher.close().catch(() => {});
    if (this.delivered > 0) {
      this.ctx.log.info(`sent ${plural(this.delivered, 'record')} to ${this.target} in ${plural(this.requests, 'request')}`);
    }
  }
}

function buildHeaders(options: HttpSinkOptions): Record<string, string> {
  const headers: Record<string, string> = {
    'content-type': options.encoding === 'json' ? 'application/json' : 'application/x-ndjson',
    'user-agent': 'logferry',
  };
  if (options.compression === 'gzip') headers['content-encoding'] = 'gzip';
  for (const [name, value] of Object.entries(options.headers)) headers[name.toLowerCase()] = value;
  if (options.auth?.strategy === 'bearer') headers.authorization = `Bearer ${options.auth.token}`;
  if (options.auth?.strategy === 'basic') {
    headers.authorization = `Basic ${Buffer.from(`${options.auth.user}:${options.auth.password}`).toString('base64')}`;
  }
  return headers;
}

function tlsConnectOptions(tls: HttpSinkOptions['tls']): Agent.Options['connect'] {
  const read = (file: string, what: string): Buffer | undefined => {
    if (!file) return undefined;
    try {
      return readFileSync(file);
    } catch (err) {
      throw new LogferryError('LF_CONFIG_INVALID', `tls.${what}: cannot read ${file}: ${(err as Error).message}`);
    }
  };
  return {
    ca: read(tls.ca_file, 'ca_file'),
    cert: read(tls.cert_file, 'cert_file'),
    key: read(tls.key_file, 'key_file'),
    rejectUnauthorized: tls.verify,
  };
}

/** The body of a 2xx answer, up to ANSWER_READ_BYTES: a success stays one however long its body. */
async function readAnswer(body: Dispatcher.ResponseData['body']): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const buffer = chunk as Buffer;
    chunks.push(buffer);
    size += buffer.length;
    if (size >= ANSWER_READ_BYTES) break;
  }
  return Buffer.concat(chunks);
}

/** Control characters other than whitespace: an answer that has them is binary. */
const BINARY_CHARACTER = /[^\P{Cc}\s]/u;
/** Runs of 4 or more readable characters, as `strings` finds them. */
const READABLE_RUN = /[^\p{Cc}\uFFFD]{4,}/gu;

/**
 * A binary answer (an OTLP receiver's protobuf google.rpc.Status, say) as its readable runs, which
 * hold its message; text as it is.
 */
function readableText(text: string): string {
  return BINARY_CHARACTER.test(text) ? (text.match(READABLE_RUN) ?? []).join(' ') : text;
}

async function bodyExcerpt(body: Dispatcher.ResponseData['body'], scrubber: SecretScrubber): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      const buffer = chunk as Buffer;
      chunks.push(buffer);
      size += buffer.length;
      if (size >= REASON_READ_BYTES) break;
    }
  } catch {
    // A body that breaks off still leaves the status as the reason.
  }
  const text = scrubber.scrub(readableText(Buffer.concat(chunks).subarray(0, REASON_READ_BYTES).toString('utf8'))).replace(/\s+/g, ' ').trim();
  // Cut at REASON_BODY_BYTES bytes of UTF-8, never inside a character.
  const cut = Buffer.from(text).subarray(0, REASON_BODY_BYTES).toString('utf8');
  return cut.endsWith('\uFFFD') && !text.startsWith(cut) ? cut.slice(0, -1) : cut;
}

/**
 * The values of an http sink's options that are credentials: the bearer token, the basic password
 * (and `user:password` and its base64, as the Authorization header carries it), the tokens of the
 * uri (see urlSecrets) and the values of the headers named by `secret_headers`.
 */
export function httpSecrets(options: HttpSinkOptions): string[] {
  const secrets = urlSecrets(options.uri);
  if (options.healthcheck.uri) secrets.push(...urlSecrets(options.healthcheck.uri));
  if (options.auth?.strategy === 'bearer') secrets.push(options.auth.token);
  if (options.auth?.strategy === 'basic') {
    const pair = `${options.auth.user}:${options.auth.password}`;
    secrets.push(options.auth.password, pair, Buffer.from(pair).toString('base64'));
  }
  const names = options.secret_headers.map((name) => name.toLowerCase());
  const isSecret = (header: string): boolean => names.some((name) => (name.endsWith('*') ? header.startsWith(name.slice(0, -1)) : header === name));
  for (const [name, value] of Object.entries(options.headers)) {
    if (!isSecret(name.toLowerCase())) continue;
    secrets.push(value);
    // `Bearer abc`, `Basic abc`: the credential alone too, since servers echo it on its own.
    const space = value.indexOf(' ');
    if (space > 0) secrets.push(value.slice(space + 1).trim());
  }
  return secrets;
}

const BODY_REFUSED = 'the server refused this body: see its answer';

/** Said with a record-level refusal (dead letter), by status; 409 needs no more than the server's answer. */
const RECORD_STATUS_EXPLANATION: ReadonlyMap<number, string> = new Map([
  [400, BODY_REFUSED],
  [413, 'body too large: lower batch.max_bytes, or max_line_bytes for single records'],
  [422, BODY_REFUSED],
]);

function explainStatus(status: number): string {
  const explanation = RECORD_STATUS_EXPLANATION.get(status);
  return explanation ? ` (${explanation})` : '';
}

/** What to check when a status says the destination refuses every record. */
const STATUS_ADVICE: ReadonlyMap<number, string> = new Map([
  [401, 'auth: the token or user/password (expired or wrong)'],
  [403, 'the credentials are not allowed to write here: the token and its permissions'],
  [404, 'the uri: no receiver at this address'],
  [405, `the method and the uri: the server does not take this method there`],
  [407, 'the proxy credentials'],
  [410, 'the uri: the receiver was removed'],
  [415, 'encoding and compression: the server does not take this content type'],
  [429, 'nothing: the server asks to slow down; records wait'],
]);

function adviceForStatus(status: number, location: string | string[] | undefined): string | undefined {
  if (status >= 300 && status < 400) {
    const to = Array.isArray(location) ? location[0] : location;
    return `the uri: the server redirects${to ? ` to ${safeUrl(to)}` : ''}, which logferry does not follow (set uri to the final address)`;
  }
  if (status >= 500) return 'the receiver: it fails (5xx); records wait until it answers';
  return STATUS_ADVICE.get(status);
}

function failedCheck(what: string, verdict: Verdict): HealthcheckResult {
  const reason = verdict.kind === 'ok' ? 'no error' : verdict.reason;
  const advice = verdict.kind === 'destination' && verdict.advice ? `; check ${verdict.advice}` : '';
  return { status: 'failed', message: `${what} failed: ${reason}${advice}` };
}

/** Network errors that need an operator (a name that does not resolve, TLS that cannot work) rather than patience. */
const BLOCKING_NETWORK_CODES = new Set([
  'ENOTFOUND',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'CERT_HAS_EXPIRED',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'ERR_SSL_WRONG_VERSION_NUMBER',
  'EPROTO',
]);

/** A request that got no answer: the destination is unreachable, every record would fail the same way. */
function networkFailure(err: unknown, timeoutMs: number, setting: string): Verdict {
  const error = err as { name?: string; code?: unknown; message?: string };
  if (error.name === 'TimeoutError' || error.code === 'UND_ERR_HEADERS_TIMEOUT' || error.code === 'UND_ERR_BODY_TIMEOUT' || error.code === 'UND_ERR_CONNECT_TIMEOUT') {
    return { kind: 'destination', reason: `no answer within ${setting} (${timeoutMs} ms)`, advice: 'that the receiver is up and reachable from here' };
  }
  const cause = (err as { cause?: { code?: unknown; message?: string } }).cause;
  // Not every error's code is a string: an AbortError (a stop during a request) has the number 20.
  const rawCode: unknown = cause?.code ?? error.code;
  const code = typeof rawCode === 'string' ? rawCode : undefined;
  const reason = `${code ? `${code}: ` : ''}${cause?.message ?? error.message ?? String(err)}`;
  if (code && (BLOCKING_NETWORK_CODES.has(code) || code.startsWith('ERR_TLS') || code.startsWith('ERR_SSL'))) {
    return { kind: 'destination', reason, blocked: true, advice: code === 'ENOTFOUND' ? "the uri's host name: it does not resolve" : 'tls.ca_file, the certificate and the uri (TLS cannot be set up)' };
  }
  return { kind: 'destination', reason, advice: 'that the receiver is up and listens at the uri (refused or broken connections)' };
}

export const httpSink: ComponentDefinition<'sink', typeof httpSinkSchema> = {
  kind: 'sink',
  type: 'http',
  description: 'Sends records to an HTTP endpoint as JSON documents or NDJSON batches, with retries and backoff.',
  schema: httpSinkSchema,
  secrets: httpSecrets,
  preflight: (options) => preflightTls(options.tls),
  build: (options, ctx) => buildHttpSink(options, ctx),
};

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/**
 * The TLS files exist and parse, and the key belongs to the certificate: otherwise every request
 * would fail its handshake and be retried until retry.max_duration_s, then dead-lettered.
 */
export function preflightTls(tls: HttpSinkOptions['tls']): PreflightProblem[] {
  const problems: PreflightProblem[] = [];
  const read = (field: 'ca_file' | 'cert_file' | 'key_file'): string | undefined => {
    const file = tls[field];
    if (!file) return undefined;
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const reason = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a folder' : (err as Error).message;
      problems.push({ path: `tls.${field}`, message: `cannot read ${file}: ${reason}` });
      return undefined;
    }
  };
  const certificates = (field: 'ca_file' | 'cert_file', pem: string | undefined): X509Certificate[] => {
    if (pem === undefined) return [];
    const blocks = pem.match(PEM_CERTIFICATE) ?? [];
    if (blocks.length === 0) {
      problems.push({ path: `tls.${field}`, message: `${tls[field]} holds no PEM certificate (-----BEGIN CERTIFICATE-----)` });
      return [];
    }
    const parsed: X509Certificate[] = [];
    blocks.forEach((block, index) => {
      try {
        parsed.push(new X509Certificate(block));
      } catch (err) {
        problems.push({ path: `tls.${field}`, message: `certificate ${index + 1} of ${tls[field]} does not parse: ${(err as Error).message}` });
      }
    });
    return parsed;
  };
  const ca = read('ca_file');
  const certPem = read('cert_file');
  const keyPem = read('key_file');
  certificates('ca_file', ca);
  const [cert] = certificates('cert_file', certPem);
  let key: KeyObject | undefined;
  if (keyPem !== undefined) {
    try {
      key = createPrivateKey(keyPem);
    } catch (err) {
      problems.push({ path: 'tls.key_file', message: `${tls.key_file} is not an unencrypted PEM private key: ${(err as Error).message}` });
    }
  }
  if (tls.cert_file && !tls.key_file) problems.push({ path: 'tls.cert_file', message: 'a client certificate needs its private key: set key_file too' });
  if (tls.key_file && !tls.cert_file) problems.push({ path: 'tls.key_file', message: 'a private key needs its client certificate: set cert_file too' });
  if (cert && key && !cert.checkPrivateKey(key)) {
    problems.push({ path: 'tls.key_file', message: `${tls.key_file} is not the private key of the certificate in ${tls.cert_file}` });
  }
  if (problems.length === 0 && (ca !== undefined || certPem !== undefined)) {
    // What the connection will do with them, as a last check (it catches what the parsers above let pass).
    try {
      createSecureContext({ ca, cert: certPem, key: keyPem });
    } catch (err) {
      problems.push({ path: 'tls', message: `the TLS files cannot be used: ${(err as Error).message}` });
    }
  }
  return problems;
}
