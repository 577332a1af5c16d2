import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { gunzipSync } from 'node:zlib';

/**
 * An OTLP/HTTP receiver on 127.0.0.1 for tests: it takes POST /v1/logs in protobuf, decodes it
 * with the OpenTelemetry project's code generated from the official .proto files (the
 * otlp-proto-decoder devDependency), and answers as a collector does.
 */

interface ProtoType {
  decode(buffer: Uint8Array): unknown;
  toObject(message: unknown, options: Record<string, unknown>): unknown;
  encode(value: unknown): { finish(): Uint8Array };
}
interface GeneratedRoot {
  opentelemetry: { proto: { collector: { logs: { v1: { ExportLogsServiceRequest: ProtoType; ExportLogsServiceResponse: ProtoType } } } } };
}
const root = createRequire(import.meta.url)('otlp-proto-decoder/build/src/generated/root.js') as GeneratedRoot;
const { ExportLogsServiceRequest, ExportLogsServiceResponse } = root.opentelemetry.proto.collector.logs.v1;

/** An AnyValue as protobufjs's toObject gives it (64-bit integers as strings). */
export interface OtlpAnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string;
  doubleValue?: number;
  arrayValue?: { values?: OtlpAnyValue[] };
  kvlistValue?: { values?: OtlpKeyValue[] };
}
export interface OtlpKeyValue {
  key: string;
  value?: OtlpAnyValue;
}
export interface OtlpLogRecord {
  timeUnixNano?: string;
  severityNumber?: number;
  severityText?: string;
  body?: OtlpAnyValue;
  attributes?: OtlpKeyValue[];
}
export interface OtlpLogsRequest {
  resourceLogs?: { resource?: { attributes?: OtlpKeyValue[] }; scopeLogs?: { scope?: { name?: string; version?: string }; logRecords?: OtlpLogRecord[] }[] }[];
}

/** One received log record with its attributes and its resource's as plain values. */
export interface ReceivedLogRecord {
  resource: Record<string, unknown>;
  severityNumber?: number;
  severityText?: string;
  timeUnixNano?: string;
  body: unknown;
  attributes: Record<string, unknown>;
}

export function plainValue(value: OtlpAnyValue | undefined): unknown {
  if (value === undefined) return undefined;
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.boolValue !== undefined) return value.boolValue;
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.doubleValue !== undefined) return value.doubleValue;
  if (value.arrayValue) return (value.arrayValue.values ?? []).map(plainValue);
  if (value.kvlistValue) return attributeMap(value.kvlistValue.values);
  return undefined;
}

export function attributeMap(pairs: OtlpKeyValue[] | undefined): Record<string, unknown> {
  return Object.fromEntries((pairs ?? []).map((kv) => [kv.key, plainValue(kv.value)]));
}

export interface OtlpReceiver {
  /** The base URL, for OTEL_EXPORTER_OTLP_ENDPOINT (the exporters append /v1/logs). */
  url: string;
  /** The requests it accepted, decoded. */
  requests: OtlpLogsRequest[];
  /** Every POST /v1/logs, accepted or not. */
  attempts: number;
  /** While set, each request is answered with this HTTP status instead (a collector that refuses). */
  failWith: number | undefined;
  logRecords(): ReceivedLogRecord[];
  close(): Promise<void>;
}

async function body(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const raw = Buffer.concat(chunks);
  return req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw;
}

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const requests: OtlpLogsRequest[] = [];
  const server = createServer((req, res) => {
    if (req.method !== 'POST' || req.url !== '/v1/logs' || req.headers['content-type'] !== 'application/x-protobuf') {
      res.writeHead(404).end();
      return;
    }
    receiver.attempts++;
    if (receiver.failWith !== undefined) {
      res.writeHead(receiver.failWith).end('refused (test)');
      return;
    }
    body(req).then(
      (buffer) => {
        const decoded = ExportLogsServiceRequest.decode(buffer);
        requests.push(ExportLogsServiceRequest.toObject(decoded, { longs: String, defaults: false }) as OtlpLogsRequest);
        res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end(Buffer.from(ExportLogsServiceResponse.encode({}).finish()));
      },
      (err: unknown) => res.writeHead(400).end(String(err)),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const receiver: OtlpReceiver = {
    url: `http://127.0.0.1:${port}`,
    requests,
    attempts: 0,
    failWith: undefined,
    logRecords: () =>
      requests.flatMap((request) =>
        (request.resourceLogs ?? []).flatMap((rl) =>
          (rl.scopeLogs ?? []).flatMap((sl) =>
            (sl.logRecords ?? []).map((r) => ({
              resource: attributeMap(rl.resource?.attributes),
              severityNumber: r.severityNumber,
              severityText: r.severityText,
              timeUnixNano: r.timeUnixNano,
              body: plainValue(r.body),
              attributes: attributeMap(r.attributes),
            })),
          ),
        ),
      ),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return receiver;
}
