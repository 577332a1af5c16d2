import { createServer, type IncomingHttpHeaders } from 'node:http';
import { createRequire } from 'node:module';
import { closeServer, decodeBody, listenLocal, readBody } from '../../src/testkit/receiver.js';

/**
 * A test OTLP/HTTP receiver on 127.0.0.1 that decodes what it gets with the OpenTelemetry
 * project's code generated from the official .proto files (otlp-proto-decoder): protobuf bodies
 * with `decode`, JSON bodies (the OTLP JSON mapping) with `fromObject`, so a field the definitions
 * do not know, or of the wrong type, fails here as it would at a collector.
 */

interface ProtoMessage<T> {
  decode(buffer: Uint8Array): T;
  fromObject(object: unknown): T;
  toObject(message: T, options: { longs: typeof String; bytes: typeof String; defaults: boolean }): Record<string, unknown>;
  encode(message: unknown): { finish(): Uint8Array };
}
interface OtlpRoot {
  opentelemetry: {
    proto: {
      collector: { logs: { v1: { ExportLogsServiceRequest: ProtoMessage<unknown>; ExportLogsServiceResponse: ProtoMessage<unknown> } } };
      trace: { v1: { Status: ProtoMessage<unknown> } };
    };
  };
}
const proto = (createRequire(import.meta.url)('otlp-proto-decoder/build/src/generated/root.js') as OtlpRoot).opentelemetry.proto;
const root = proto.collector.logs.v1;

/**
 * The protobuf body of an OTLP/HTTP error answer: a google.rpc.Status with only its `message`
 * (field 2, a string). The generated code has no google.rpc.Status; the span Status has `message`
 * as field 2 too, so with only a message its bytes are the same.
 */
export function statusBody(message: string): Buffer {
  return Buffer.from(proto.trace.v1.Status.encode({ message }).finish());
}

/** One log record as it arrived, with its AnyValues turned into plain values (int64 as numbers). */
export interface ReceivedLog {
  resource: Record<string, unknown>;
  scope: string;
  timeUnixNano: string;
  observedTimeUnixNano: string;
  severityNumber: number;
  severityText: string;
  body: unknown;
  attributes: Record<string, unknown>;
}

export interface OtlpRequest {
  url: string;
  headers: IncomingHttpHeaders;
  protocol: 'http/protobuf' | 'http/json';
  /** The body with its Content-Encoding undone. */
  body: Buffer;
  logs: ReceivedLog[];
  /** The HTTP status it was answered with. */
  status?: number;
}

export interface OtlpAnswer {
  status?: number;
  /** Sent as the ExportLogsServiceResponse's partial_success, in the request's protocol. */
  partialSuccess?: { rejectedLogRecords: number; errorMessage: string };
  headers?: Record<string, string>;
  /** A body of its own (for error statuses, e.g. statusBody()); replaces the encoded response. */
  body?: string | Buffer;
}

interface AnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string | number;
  doubleValue?: number;
  arrayValue?: { values?: AnyValue[] };
  kvlistValue?: { values?: KeyValue[] };
  bytesValue?: string;
}
interface KeyValue {
  key: string;
  value?: AnyValue;
}

function plain(value: AnyValue | undefined): unknown {
  if (value === undefined) return null;
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.boolValue !== undefined) return value.boolValue;
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.doubleValue !== undefined) return value.doubleValue;
  if (value.bytesValue !== undefined) return value.bytesValue;
  if (value.arrayValue !== undefined) return (value.arrayValue.values ?? []).map(plain);
  if (value.kvlistValue !== undefined) return attributesOf(value.kvlistValue.values);
  return null;
}

function attributesOf(values: KeyValue[] | undefined): Record<string, unknown> {
  return Object.fromEntries((values ?? []).map((kv) => [kv.key, plain(kv.value)]));
}

interface RequestObject {
  resourceLogs?: {
    resource?: { attributes?: KeyValue[] };
    scopeLogs?: {
      scope?: { name?: string };
      logRecords?: {
        timeUnixNano?: string;
        observedTimeUnixNano?: string;
        severityNumber?: number;
        severityText?: string;
        body?: AnyValue;
        attributes?: KeyValue[];
      }[];
    }[];
  }[];
}

/** The log records of an ExportLogsServiceRequest body; throws when it does not decode. */
export function decodeLogsRequest(body: Buffer, contentType: string | undefined): ReceivedLog[] {
  const json = (contentType ?? '').startsWith('application/json');
  const message = json ? root.ExportLogsServiceRequest.fromObject(JSON.parse(body.toString('utf8'))) : root.ExportLogsServiceRequest.decode(body);
  const request = root.ExportLogsServiceRequest.toObject(message, { longs: String, bytes: String, defaults: false }) as RequestObject;
  return (request.resourceLogs ?? []).flatMap((resourceLogs) =>
    (resourceLogs.scopeLogs ?? []).flatMap((scopeLogs) =>
      (scopeLogs.logRecords ?? []).map((log) => ({
        resource: attributesOf(resourceLogs.resource?.attributes),
        scope: scopeLogs.scope?.name ?? '',
        timeUnixNano: log.timeUnixNano ?? '0',
        observedTimeUnixNano: log.observedTimeUnixNano ?? '0',
        severityNumber: log.severityNumber ?? 0,
        severityText: log.severityText ?? '',
        body: plain(log.body),
        attributes: attributesOf(log.attributes),
      })),
    ),
  );
}

/** The `id` of the document each log record carries (as a map body or as JSON text). */
export function logIds(logs: readonly ReceivedLog[]): number[] {
  return logs.flatMap((log) => {
    const doc = typeof log.body === 'string' ? (JSON.parse(log.body) as unknown) : log.body;
    const id = (doc as { id?: unknown } | null)?.id;
    return typeof id === 'number' ? [id] : [];
  });
}

/** For the conformance kit's fault proxy: the ids of an OTLP request body. */
export const otlpRecordIds = (body: Buffer, headers: IncomingHttpHeaders): number[] => logIds(decodeLogsRequest(body, headers['content-type']));

export interface OtlpReceiver {
  readonly url: string;
  readonly requests: OtlpRequest[];
  /** Every log record received, in refused requests too. */
  logs(): ReceivedLog[];
  /** The log records of the requests answered with a 2xx status. */
  accepted(): ReceivedLog[];
  ids(): number[];
  close(): Promise<void>;
}

/** Starts the receiver; `respond` may choose a status or a partial_success per request (default: 200, full success). */
export async function startOtlpReceiver(respond?: (request: OtlpRequest) => OtlpAnswer | undefined): Promise<OtlpReceiver> {
  const requests: OtlpRequest[] = [];
  const server = createServer((req, res) => {
    void (async () => {
      const raw = await readBody(req);
      const protocol = (req.headers['content-type'] ?? '').startsWith('application/json') ? 'http/json' : 'http/protobuf';
      let request: OtlpRequest;
      try {
        const body = decodeBody(raw, req.headers['content-encoding']);
        request = { url: req.url ?? '/', headers: req.headers, protocol, body, logs: decodeLogsRequest(body, req.headers['content-type']) };
      } catch (err) {
        res.writeHead(400, { 'content-type': 'text/plain' });
        res.end(`cannot decode the OTLP request: ${(err as Error).message}`);
        return;
      }
      requests.push(request);
      const answer = respond?.(request) ?? {};
      request.status = answer.status ?? 200;
      const response = { partialSuccess: answer.partialSuccess };
      const payload =
        answer.body !== undefined
          ? Buffer.from(answer.body)
          : protocol === 'http/json'
            ? Buffer.from(JSON.stringify(answer.partialSuccess ? response : {}))
            : Buffer.from(root.ExportLogsServiceResponse.encode(answer.partialSuccess ? response : {}).finish());
      res.writeHead(answer.status ?? 200, {
        'content-type': typeof answer.body === 'string' ? 'text/plain' : protocol === 'http/json' ? 'application/json' : 'application/x-protobuf',
        'content-length': payload.length,
        ...answer.headers,
      });
      res.end(payload);
    })().catch(() => res.destroy());
  });
  const port = await listenLocal(server);
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    logs: () => requests.flatMap((r) => r.logs),
    accepted: () => requests.filter((r) => r.status !== undefined && r.status < 300).flatMap((r) => r.logs),
    ids: () => logIds(requests.flatMap((r) => r.logs)),
    close: () => closeServer(server),
  };
}
