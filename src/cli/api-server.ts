import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseApiAddress } from '../config/load.js';
import type { PipelineConfig } from '../config/types.js';
import type { Logger } from '../engine/logger.js';
import type { Pipeline } from '../engine/pipeline.js';
import type { Telemetry } from '../engine/telemetry.js';
import { LogferryError } from '../errors.js';

/**
 * The operators' HTTP API (`api.address`): /health (liveness), /ready (readiness), /metrics
 * (Prometheus text, from the OpenTelemetry Prometheus exporter) and /status (the status line's
 * figures per component, as JSON). node:http, one server; loaded only when the API is on.
 */
export interface ApiServer {
  /** `http://host:port` as listened on (the real port when api.address asked for port 0). */
  readonly url: string;
  close(): Promise<void>;
}

const ENDPOINTS = ['/health', '/ready', '/metrics', '/status'];

/** The body of /ready, and whether it is a 200. */
export function readiness(pipeline: Pipeline): { ready: boolean; body: Record<string, unknown> } {
  const notReady: Record<string, unknown>[] = [];
  for (const s of pipeline.sourceStates()) {
    if (s.state === 'reading') continue;
    const reason = s.reason ?? (s.state === 'starting' ? 'the source has not started reading yet' : 'the source stopped reading');
    notReady.push({ component_id: s.source, component_kind: 'source', state: s.state, reason });
  }
  for (const s of pipeline.sinkStates()) {
    if (s.state === 'healthy') continue;
    notReady.push({
      component_id: s.sink,
      component_kind: 'sink',
      state: s.state,
      reason: s.reason,
      advice: s.advice,
      since: new Date(s.sinceMs).toISOString(),
      failed_attempts: s.failedAttempts,
      pending_records: s.pendingRecords,
    });
  }
  return notReady.length === 0 ? { ready: true, body: { status: 'ready' } } : { ready: false, body: { status: 'not_ready', components: notReady } };
}

/** The body of /status: the status line's figures, in total and per component. */
export function statusReport(pipeline: Pipeline, config: PipelineConfig, startedAt: number): Record<string, unknown> {
  const m = pipeline.metrics;
  const states = new Map(pipeline.sinkStates().map((s) => [s.sink, s]));
  const sources = new Map(pipeline.sourceStates().map((s) => [s.source, s]));
  const behind = new Map<string, number>();
  for (const f of pipeline.bytesBehindByFile()) behind.set(f.source, (behind.get(f.source) ?? 0) + f.bytes);
  const components: Record<string, unknown> = {};
  for (const c of [...config.sources, ...config.transforms, ...config.sinks]) {
    const counts = m.perComponent.get(c.id) ?? {};
    const entry: Record<string, unknown> = { kind: c.kind, type: c.type, ...counts };
    const sink = states.get(c.id);
    if (sink) Object.assign(entry, { state: sink.state, reason: sink.reason, pending_records: sink.pendingRecords, since: new Date(sink.sinceMs).toISOString() });
    const source = sources.get(c.id);
    if (source) Object.assign(entry, { state: source.state, reason: source.reason, bytes_behind: behind.get(c.id) ?? 0 });
    components[c.id] = entry;
  }
  return {
    uptime_s: Math.round((Date.now() - startedAt) / 100) / 10,
    records_in: m.recordsIn,
    bytes_in: m.bytesIn,
    records_out: m.recordsOut,
    dead_letters: m.deadLetters,
    skipped: m.skipped,
    in_flight: pipeline.recordsInFlight,
    buffer_bytes: pipeline.bytesInFlight,
    buffer_max_bytes: pipeline.bufferMaxBytes,
    bytes_behind: pipeline.bytesBehind(),
    components,
  };
}

function sendJson(response: ServerResponse, status: number, body: unknown, scrub?: (text: string) => string): void {
  // Reasons come from destinations' answers (a plugin may quote a token): scrubbed as log lines are,
  // each string before JSON escapes it, so a secret is found however it would be escaped.
  const replacer = scrub ? (_key: string, value: unknown): unknown => (typeof value === 'string' ? scrub(value) : value) : undefined;
  const text = JSON.stringify(body, replacer) + '\n';
  response.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  response.end(text);
}

export async function startApiServer(options: {
  address: string;
  pipeline: Pipeline;
  /** Where `address` came from, for messages: `api.address` or `LOGFERRY_API_ADDRESS`. */
  setting?: string;
  config: PipelineConfig;
  telemetry: Telemetry;
  log: Logger;
  /** Replaces secrets in every string of a JSON answer (the logger's scrubber). */
  scrub?: (text: string) => string;
}): Promise<ApiServer> {
  const { pipeline, config, telemetry, log, scrub } = options;
  const setting = options.setting ?? 'api.address';
  const where = parseApiAddress(options.address);
  if (!where) throw new LogferryError('LF_CONFIG_INVALID', `${setting} must be host:port, got "${options.address}"`);
  const startedAt = Date.now();
  const handle = (request: IncomingMessage, response: ServerResponse): void => {
    const path = (request.url ?? '/').split('?')[0];
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.setHeader('allow', 'GET, HEAD');
      sendJson(response, 405, { error: `${request.method} is not allowed: the API only answers GET` }, scrub);
      return;
    }
    switch (path) {
      case '/health':
        // Answered from the event loop: a stuck loop answers nothing, which is what liveness asks.
        sendJson(response, 200, { status: 'ok' }, scrub);
        return;
      case '/ready': {
        const { ready, body } = readiness(pipeline);
        sendJson(response, ready ? 200 : 503, body, scrub);
        return;
      }
      case '/status':
        sendJson(response, 200, statusReport(pipeline, config, startedAt), scrub);
        return;
      case '/metrics':
        if (telemetry.serveMetrics) telemetry.serveMetrics(request, response);
        else sendJson(response, 404, { error: 'metrics are not served' }, scrub);
        return;
      default:
        sendJson(response, 404, { error: `no such endpoint: ${path}`, endpoints: ENDPOINTS }, scrub);
    }
  };
  const server: Server = createServer((request, response) => {
    try {
      handle(request, response);
    } catch (err) {
      log.error('the operators\' API failed to answer a request', { path: request.url, error: err instanceof Error ? err.message : String(err) });
      if (!response.headersSent) sendJson(response, 500, { error: 'internal error' }, scrub);
      else response.end();
    }
  });
  // A slow or idle client must not hold a socket for long: probes and scrapes are quick.
  server.requestTimeout = 10_000;
  server.headersTimeout = 10_000;
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      const why =
        err.code === 'EADDRINUSE'
          ? 'the port is in use by another process (another logferry?)'
          : err.code === 'EACCES'
            ? 'the port needs privileges (ports below 1024 do)'
            : err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND'
              ? 'the host is not an address of this machine'
              : err.message;
      reject(
        new LogferryError(
          'LF_API_ADDRESS_IN_USE',
          `the operators' API cannot listen on ${setting} ${options.address}: ${why} (${err.code ?? 'error'}); set ${setting} to a free host:port (port 0 takes any free port), or api.enabled: false`,
          { cause: err },
        ),
      );
    };
    server.once('error', onError);
    server.listen(where.port, where.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  const host = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
  const url = `http://${host}:${bound.port}`;
  server.on('error', (err) => log.error('the operators\' API server failed', { error: err.message }));
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
