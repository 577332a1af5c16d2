import { setMaxListeners } from 'node:events';
import { Agent, createServer, request as httpRequest, STATUS_CODES, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { errorMessage, LogferryError } from '../errors.js';
import { mulberry32 } from './random.js';
import { closeServer, decodeBody, documentIds, listenLocal, parseDocuments, readBody } from './receiver.js';

/** What the proxy does with one request. */
export type Fault =
  | { kind: 'pass' }
  /** Answered by the proxy itself; the destination never sees the request. */
  | { kind: 'status'; status: number; retryAfter?: string; body?: string }
  /** The socket is destroyed without an answer, after the request was read (and not forwarded). */
  | { kind: 'drop' }
  /** Forwarded, but the answer is held back this long: longer than the client's timeout, it never arrives. */
  | { kind: 'delay'; ms: number };

export type FaultKind = Fault['kind'];

export interface FaultRequest {
  /** 0 for the first request the proxy read in full, 1 for the next, and so on. */
  readonly index: number;
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  /** The body with its Content-Encoding undone (the raw bytes when that fails). */
  readonly body: Buffer;
  /** Numeric `id`s of the documents in the body (see documentIds, or FaultProxyOptions.recordIds), empty when none can be read. */
  readonly ids: readonly number[];
}

export type FaultPlan = (request: FaultRequest) => Fault;

/** One request through the proxy, for assertions and for failure messages. */
export interface ProxyExchange {
  readonly index: number;
  readonly method: string;
  readonly url: string;
  readonly ids: readonly number[];
  readonly fault: Fault;
  /** The status the client got, when it got one. */
  status?: number;
  outcome: 'pending' | 'answered' | 'dropped' | 'client-gone' | 'upstream-error';
  /** A 2xx answer from the destination reached the client: its ids are in acknowledgedIds. */
  acknowledged: boolean;
}

export interface FaultProxyOptions {
  /** Origin of the destination, e.g. `http://127.0.0.1:8080`; the request's path and query are kept. */
  upstream: string;
  plan: FaultPlan;
  /**
   * Reads the record ids out of a body (its Content-Encoding undone) for a sink whose bodies are
   * not JSON or NDJSON documents (OTLP protobuf, a vendor envelope). Default: documentIds of the
   * parsed documents.
   */
  recordIds?: RecordIds;
}

/** The numeric ids of the records one request body carries; may throw on a body it cannot read (no ids then). */
export type RecordIds = (body: Buffer, headers: IncomingHttpHeaders) => number[];

export interface FaultProxy {
  /** `http://127.0.0.1:{port}`: give this to the sink instead of the destination's URL. */
  readonly url: string;
  readonly port: number;
  /** Requests read in full so far. */
  readonly requests: number;
  readonly faultsByKind: Record<FaultKind, number>;
  /**
   * Ids of the records in requests whose 2xx answer from the destination was passed back to a
   * client that was still connected. A record that a sink acknowledges while its id is missing
   * here was acknowledged before its success answer.
   */
  readonly acknowledgedIds: Set<number>;
  readonly exchanges: ProxyExchange[];
  /** Stops listening and destroys every socket, including those whose answer is being held. */
  close(): Promise<void>;
}

/**
 * Headers that describe one connection, not the message: never forwarded (RFC 9110 §7.6.1).
 * `expect` too: the proxy has already read the whole body, so there is nothing left to continue.
 */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect']);

function endToEnd(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const named = new Set(
    String(headers.connection ?? '')
      .split(',')
      .map((h) => h.trim().toLowerCase()),
  );
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || named.has(name)) continue;
    out[name] = value;
  }
  return out;
}

const isSuccess = (status: number | undefined): boolean => status !== undefined && status >= 200 && status < 300;

/**
 * An HTTP proxy on 127.0.0.1 that injects faults between a sink and its destination, and records
 * which records were really confirmed to the sink.
 */
export async function startFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  const upstream = new URL(options.upstream);
  if (upstream.protocol !== 'http:') {
    throw new LogferryError('LF_TESTKIT_MISUSE', `fault proxy: upstream must be an http:// URL, got ${options.upstream}: point it at the receiver (startReceiver) or another plain-HTTP server`);
  }
  // Keep-alive to the destination, so 1000 forwarded requests do not leave 1000 sockets in TIME_WAIT.
  const agent = new Agent({ keepAlive: true });
  const lifetime = new AbortController();
  // One listener per held answer; many may be held at once.
  setMaxListeners(0, lifetime.signal);
  const sockets = new Set<Socket>();
  const faultsByKind: Record<FaultKind, number> = { pass: 0, status: 0, drop: 0, delay: 0 };
  const acknowledgedIds = new Set<number>();
  const exchanges: ProxyExchange[] = [];
  let requests = 0;

  const forward = (method: string, path: string, headers: IncomingHttpHeaders, body: Buffer): Promise<IncomingMessage> =>
    new Promise((resolve, reject) => {
      const outgoing = endToEnd(headers);
      delete outgoing.host;
      outgoing.host = upstream.host;
      // The body was read whole, so its length is known and chunked framing is not needed.
      outgoing['content-length'] = body.length;
      const req = httpRequest({ hostname: upstream.hostname, port: upstream.port, method, path, headers: outgoing, agent }, resolve);
      req.on('error', reject);
      req.end(body);
    });

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    let clientClosed = false;
    res.on('close', () => {
      if (!res.writableFinished) clientClosed = true;
    });
    const clientGone = (): boolean => clientClosed || res.destroyed || !res.socket || res.socket.destroyed || lifetime.signal.aborted;

    let raw: Buffer;
    try {
      raw = await readBody(req);
    } catch {
      return;
    }
    if (lifetime.signal.aborted) return;
    let body = raw;
    let ids: number[] = [];
    try {
      body = decodeBody(raw, req.headers['content-encoding']);
      ids = options.recordIds ? options.recordIds(body, req.headers) : documentIds(parseDocuments(body));
    } catch {
      // Not JSON: it can still be forwarded, it just names no records.
    }
    const index = requests++;
    const method = req.method ?? 'GET';
    const url = req.url ?? '/';
    let fault: Fault;
    try {
      fault = options.plan({ index, method, url, headers: req.headers, body, ids });
    } catch (err) {
      fault = { kind: 'status', status: 500, body: `fault plan threw: ${(err as Error).message}` };
    }
    faultsByKind[fault.kind]++;
    const exchange: ProxyExchange = { index, method, url, ids, fault, outcome: 'pending', acknowledged: false };
    exchanges.push(exchange);

    if (fault.kind === 'drop') {
      exchange.outcome = 'dropped';
      req.socket.destroy();
      return;
    }
    if (fault.kind === 'status') {
      const text = fault.body ?? STATUS_CODES[fault.status] ?? '';
      const headers: OutgoingHttpHeaders = { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text) };
      if (fault.retryAfter !== undefined) headers['retry-after'] = fault.retryAfter;
      exchange.status = fault.status;
      exchange.outcome = 'answered';
      res.writeHead(fault.status, headers);
      res.end(text);
      return;
    }

    let answer: IncomingMessage;
    try {
      answer = await forward(method, url, req.headers, raw);
    } catch (err) {
      exchange.outcome = 'upstream-error';
      if (!clientGone()) {
        exchange.status = 502;
        res.writeHead(502, { 'content-type': 'text/plain; charset=utf-8' });
        res.end(`fault proxy: upstream ${upstream.origin} failed: ${(err as Error).message}`);
      }
      return;
    }
    if (fault.kind === 'delay') {
      await sleep(fault.ms, undefined, { signal: lifetime.signal }).catch(() => undefined);
    }
    if (clientGone()) {
      // The destination has the records, the client gave up: the sink must send them again.
      exchange.outcome = 'client-gone';
      answer.resume();
      return;
    }
    const status = answer.statusCode ?? 502;
    exchange.status = status;
    res.writeHead(status, answer.statusMessage, endToEnd(answer.headers));
    answer.pipe(res, { end: false });
    answer.on('error', () => {
      exchange.outcome = 'upstream-error';
      res.destroy();
    });
    answer.on('end', () => {
      // Recorded just before the last bytes are handed to the socket, not on 'finish': a client in
      // this same process may read them before the write callback runs, and must not be blamed.
      if (isSuccess(status) && !clientGone()) {
        for (const id of ids) acknowledgedIds.add(id);
        exchange.acknowledged = true;
      }
      exchange.outcome = clientGone() ? 'client-gone' : 'answered';
      res.end();
    });
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      // A bug here must not become an unhandled rejection that kills the test run; the client sees a reset.
      res.destroy(err instanceof Error ? err : new LogferryError('LF_INTERNAL', `the fault proxy failed on a request (a bug in the testkit): ${errorMessage(err)}`));
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const port = await listenLocal(server);

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    get requests() {
      return requests;
    },
    faultsByKind,
    acknowledgedIds,
    exchanges,
    async close() {
      lifetime.abort();
      const closed = closeServer(server);
      for (const socket of sockets) socket.destroy();
      agent.destroy();
      await closed;
    },
  };
}

export interface MixedFaultOptions {
  /** Share of requests answered 503 with Retry-After '0' or '1'. Default 0.3. */
  unavailable?: number;
  /** Share of requests whose connection is dropped without an answer. Default 0.05. */
  drop?: number;
  /** Share of requests whose answer is held for `slowMs`. Default 0.05. */
  slow?: number;
  /** How long slow answers are held: make it longer than the sink's request timeout. Default 2500. */
  slowMs?: number;
  seed?: number;
}

const none: FaultPlan = () => ({ kind: 'pass' });

export const faultPlans = {
  /** Every request goes through untouched. */
  none,

  always(fault: Fault): FaultPlan {
    return () => fault;
  },

  /** The first requests get these faults, in order (so each kind is seen however few requests a sink makes); then `then`. */
  sequence(faults: readonly Fault[], then: FaultPlan = none): FaultPlan {
    return (request) => faults[request.index] ?? then(request);
  },

  /**
   * Random faults, a pure function of (seed, request index): the same seed gives the same fault to
   * the same request number, whatever the timing.
   */
  mixed(options: MixedFaultOptions = {}): FaultPlan {
    const { unavailable = 0.3, drop = 0.05, slow = 0.05, slowMs = 2500, seed = 1 } = options;
    return ({ index }) => {
      const random = mulberry32((seed ^ Math.imul(index + 1, 0x9e3779b9)) >>> 0);
      const roll = random();
      if (roll < unavailable) return { kind: 'status', status: 503, retryAfter: random() < 0.5 ? '0' : '1', body: 'service unavailable (fault proxy)' };
      if (roll < unavailable + drop) return { kind: 'drop' };
      if (roll < unavailable + drop + slow) return { kind: 'delay', ms: slowMs };
      return { kind: 'pass' };
    };
  },

  /** A permanent answer (e.g. 403) for the requests `predicate` picks; the others follow `otherwise`. */
  rejectWhen(predicate: (request: FaultRequest) => boolean, status: number, body?: string, otherwise: FaultPlan = none): FaultPlan {
    return (request) => (predicate(request) ? { kind: 'status', status, ...(body === undefined ? {} : { body }) } : otherwise(request));
  },
};
