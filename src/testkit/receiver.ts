import { createServer, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { brotliDecompressSync, gunzipSync, inflateSync } from 'node:zlib';
import type { JsonObject, JsonValue } from '../engine/types.js';
import { LogferryError } from '../errors.js';

/** One request as the destination saw it. */
export interface ReceivedRequest {
  readonly method: string;
  /** Path and query, as sent. */
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  /** The body after Content-Encoding is undone (gzip, deflate, br): what the sink meant to send. */
  readonly body: Buffer;
  /** The bytes on the wire, to check that a sink really compresses. */
  readonly rawBody: Buffer;
  /** Set when the Content-Encoding could not be undone; `body` is then the raw bytes. */
  readonly decodeError?: string;
  /** Date.now() when the whole body had arrived. */
  readonly receivedAt: number;
}

export interface ReceiverAnswer {
  status: number;
  headers?: OutgoingHttpHeaders;
  body?: string | Buffer;
}

export interface ReceiverOptions {
  /**
   * Chooses the answer to a request (already stored in `requests`). Undefined, or no hook, answers
   * 200 with an empty body; a body that cannot be decoded is answered 400, like a real service.
   */
  respond?: (request: ReceivedRequest) => ReceiverAnswer | undefined;
}

export interface Receiver {
  /** `http://127.0.0.1:{port}`, without a trailing slash. */
  readonly url: string;
  readonly port: number;
  /** Every complete request, in arrival order. */
  readonly requests: ReceivedRequest[];
  /** Every document of every request: JSON (one document or an array of them) or NDJSON. */
  records(): JsonObject[];
  /** The numeric `id` of every document, in arrival order, duplicates included (redeliveries show). */
  ids(): number[];
  /** Stops listening and closes every connection, keep-alive ones included. */
  close(): Promise<void>;
}

/** Undoes Content-Encoding; throws when the bytes do not match it. */
export function decodeBody(raw: Buffer, contentEncoding: string | string[] | undefined): Buffer {
  const encodings = (Array.isArray(contentEncoding) ? contentEncoding.join(',') : (contentEncoding ?? ''))
    .split(',')
    .map((e) => e.trim().toLowerCase())
    .filter((e) => e !== '' && e !== 'identity');
  let body = raw;
  // Codings are listed in the order they were applied, so they are undone from the last one.
  for (const encoding of encodings.reverse()) {
    if (encoding === 'gzip' || encoding === 'x-gzip') body = gunzipSync(body);
    else if (encoding === 'deflate') body = inflateSync(body);
    else if (encoding === 'br') body = brotliDecompressSync(body);
    else throw new LogferryError('LF_TESTKIT_BAD_BODY', `unsupported content-encoding ${JSON.stringify(encoding)}: the receiver undoes gzip, x-gzip, deflate and br`);
  }
  return body;
}

function isObject(value: JsonValue): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function documentsOf(value: JsonValue, where: string): JsonObject[] {
  if (isObject(value)) return [value];
  if (Array.isArray(value) && value.every(isObject)) return value;
  throw new LogferryError('LF_TESTKIT_BAD_BODY', `${where} is JSON but not an object or an array of objects: the receiver reads one record per object`);
}

/**
 * The documents in a body: one JSON document (an object, or an array of objects), else NDJSON.
 * Trying the whole body first also accepts pretty-printed documents, which NDJSON cannot be.
 */
export function parseDocuments(body: Buffer | string): JsonObject[] {
  const text = typeof body === 'string' ? body : body.toString('utf8');
  if (text.trim() === '') return [];
  let whole: JsonValue | undefined;
  try {
    whole = JSON.parse(text) as JsonValue;
  } catch {
    whole = undefined;
  }
  if (whole !== undefined) return documentsOf(whole, 'the body');
  const docs: JsonObject[] = [];
  const lines = text.split('\n');
  for (const [i, line] of lines.entries()) {
    if (line.trim() === '') continue;
    let value: JsonValue;
    try {
      value = JSON.parse(line) as JsonValue;
    } catch (err) {
      throw new LogferryError('LF_TESTKIT_BAD_BODY', `the body is neither JSON nor NDJSON: line ${i + 1}: ${(err as Error).message}`);
    }
    docs.push(...documentsOf(value, `line ${i + 1}`));
  }
  return docs;
}

/**
 * The numeric `id` of each document. A document without one is looked into one level deep, so
 * envelopes such as `{"event": {...}}` (Splunk HEC) or `{"log": {...}}` still name their record.
 */
export function documentIds(docs: readonly JsonObject[]): number[] {
  const ids: number[] = [];
  for (const doc of docs) {
    if (typeof doc.id === 'number') {
      ids.push(doc.id);
      continue;
    }
    for (const value of Object.values(doc)) {
      if (isObject(value) && typeof value.id === 'number') {
        ids.push(value.id);
        break;
      }
    }
  }
  return ids;
}

/** Reads a whole request body; rejects when the client goes away before its end. */
export async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Resolves once the server no longer listens and no connection is left open. */
export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      server.closeAllConnections();
      resolve();
      return;
    }
    server.close(() => resolve());
    // close() alone waits for keep-alive connections to time out, which would hold a test run open.
    server.closeAllConnections();
  });
}

export async function listenLocal(server: Server): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

/** A destination on 127.0.0.1 that keeps every request for later assertions. */
export async function startReceiver(options: ReceiverOptions = {}): Promise<Receiver> {
  const requests: ReceivedRequest[] = [];
  const server = createServer((req, res) => {
    void (async () => {
      let raw: Buffer;
      try {
        raw = await readBody(req);
      } catch {
        return; // the client went away mid-body: nothing arrived
      }
      let body = raw;
      let decodeError: string | undefined;
      try {
        body = decodeBody(raw, req.headers['content-encoding']);
      } catch (err) {
        decodeError = (err as Error).message;
      }
      const request: ReceivedRequest = {
        method: req.method ?? 'GET',
        url: req.url ?? '/',
        headers: req.headers,
        body,
        rawBody: raw,
        receivedAt: Date.now(),
        ...(decodeError === undefined ? {} : { decodeError }),
      };
      requests.push(request);
      let answer: ReceiverAnswer | undefined;
      try {
        answer = options.respond?.(request);
      } catch (err) {
        answer = { status: 500, body: `receiver respond() threw: ${(err as Error).message}` };
      }
      answer ??= decodeError === undefined ? { status: 200 } : { status: 400, body: `cannot decode body: ${decodeError}` };
      const payload = answer.body ?? '';
      const headers: OutgoingHttpHeaders = { 'content-type': 'text/plain; charset=utf-8' };
      // Lower-cased so a hook's `Content-Type` replaces the default instead of adding a second one.
      for (const [name, value] of Object.entries(answer.headers ?? {})) headers[name.toLowerCase()] = value;
      headers['content-length'] = Buffer.byteLength(payload);
      res.writeHead(answer.status, headers);
      res.end(payload);
    })().catch((err: unknown) => {
      // Detached, as a request handler cannot be awaited. An answer that cannot be written (a
      // respond() hook's status or header that Node refuses) resets the connection, so the sink
      // under test sees a failure, and is reported here instead of ending the test process.
      process.stderr.write(`logferry test receiver: cannot answer ${req.method ?? 'GET'} ${req.url ?? '/'}: ${err instanceof Error ? err.message : String(err)}\n`);
      res.destroy();
    });
  });
  const port = await listenLocal(server);
  const records = (): JsonObject[] =>
    requests.flatMap((r, i) => {
      try {
        return parseDocuments(r.body);
      } catch (err) {
        throw new LogferryError('LF_TESTKIT_BAD_BODY', `request #${i} (${r.method} ${r.url}): ${(err as Error).message}`, { cause: err });
      }
    });
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    records,
    ids: () => documentIds(records()),
    close: () => closeServer(server),
  };
}
