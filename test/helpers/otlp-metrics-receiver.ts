import { createRequire } from 'node:module';
import { createServer } from 'node:http';
import { gunzipSync } from 'node:zlib';
import { closeServer, listenLocal, readBody } from '../../src/testkit/receiver.js';

/**
 * A tiny OTLP/HTTP receiver on 127.0.0.1 for tests: it decodes each protobuf request to
 * /v1/metrics or /v1/logs with the OpenTelemetry project's code generated from the official
 * .proto files (the `otlp-proto-decoder` devDependency), and answers with an empty
 * Export*ServiceResponse, as a collector does.
 */

interface ProtoType {
  decode(bytes: Uint8Array): unknown;
  toObject(message: unknown, options: Record<string, unknown>): Record<string, unknown>;
  encode(message: Record<string, unknown>): { finish(): Uint8Array };
}

interface OtlpRoot {
  opentelemetry: {
    proto: {
      collector: {
        metrics: { v1: { ExportMetricsServiceRequest: ProtoType; ExportMetricsServiceResponse: ProtoType } };
        logs: { v1: { ExportLogsServiceRequest: ProtoType; ExportLogsServiceResponse: ProtoType } };
      };
    };
  };
}

const root = createRequire(import.meta.url)('otlp-proto-decoder/build/src/generated/root.js') as OtlpRoot;
const { metrics, logs } = root.opentelemetry.proto.collector;

/** Plain objects: enums as names, 64-bit numbers as strings (use Number() on them), bytes as base64. */
const TO_OBJECT = { longs: String, enums: String, bytes: String, defaults: true, arrays: true };

export interface OtlpReceiver {
  /** `http://127.0.0.1:{port}`, the value for OTEL_EXPORTER_OTLP_ENDPOINT. */
  readonly url: string;
  /** Decoded ExportMetricsServiceRequest messages, in arrival order. */
  readonly metricRequests: Record<string, unknown>[];
  /** Decoded ExportLogsServiceRequest messages, in arrival order. */
  readonly logRequests: Record<string, unknown>[];
  close(): Promise<void>;
}

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const metricRequests: Record<string, unknown>[] = [];
  const logRequests: Record<string, unknown>[] = [];
  const server = createServer((req, res) => {
    void readBody(req).then(
      (raw) => {
        const body = req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw;
        const path = (req.url ?? '').split('?')[0];
        const kind = path === '/v1/metrics' ? metrics.v1 : path === '/v1/logs' ? logs.v1 : undefined;
        if (!kind || req.method !== 'POST') {
          res.writeHead(404).end();
          return;
        }
        const request = 'ExportMetricsServiceRequest' in kind ? kind.ExportMetricsServiceRequest : kind.ExportLogsServiceRequest;
        const response = 'ExportMetricsServiceResponse' in kind ? kind.ExportMetricsServiceResponse : kind.ExportLogsServiceResponse;
        let decoded: Record<string, unknown>;
        try {
          decoded = request.toObject(request.decode(body), TO_OBJECT);
        } catch (err) {
          res.writeHead(400, { 'content-type': 'text/plain' }).end(`cannot decode: ${(err as Error).message}`);
          return;
        }
        (path === '/v1/metrics' ? metricRequests : logRequests).push(decoded);
        res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end(Buffer.from(response.encode({}).finish()));
      },
      () => res.destroy(),
    );
  });
  const port = await listenLocal(server);
  return { url: `http://127.0.0.1:${port}`, metricRequests, logRequests, close: () => closeServer(server) };
}

/** One OTLP metric as decoded: its name and its data points (sum, gauge or histogram). */
export interface DecodedMetric {
  name: string;
  sum?: { dataPoints: DecodedPoint[]; isMonotonic: boolean };
  gauge?: { dataPoints: DecodedPoint[] };
  histogram?: { dataPoints: { count: string; sum?: number; bucketCounts: string[]; explicitBounds: number[]; attributes: DecodedAttribute[] }[] };
}

export interface DecodedPoint {
  asInt?: string;
  asDouble?: number;
  attributes: DecodedAttribute[];
}

export interface DecodedAttribute {
  key: string;
  value: { stringValue?: string; intValue?: string; boolValue?: boolean; doubleValue?: number };
}

/** Every metric of a decoded ExportMetricsServiceRequest, across its resources and scopes. */
export function metricsOf(request: Record<string, unknown>): DecodedMetric[] {
  const resourceMetrics = request.resourceMetrics as { scopeMetrics: { metrics: DecodedMetric[] }[] }[];
  return resourceMetrics.flatMap((r) => r.scopeMetrics.flatMap((s) => s.metrics));
}

/** A data point's value as a number (OTLP carries integers as int64: strings here). */
export function pointValue(point: DecodedPoint): number {
  // A oneof: only the member that was set is present.
  return point.asInt !== undefined ? Number(point.asInt) : (point.asDouble ?? Number.NaN);
}

/** Attributes as a plain string map. */
export function attributesOf(point: { attributes: DecodedAttribute[] }): Record<string, string> {
  return Object.fromEntries(point.attributes.map((a) => [a.key, String(a.value.stringValue ?? a.value.intValue ?? a.value.boolValue ?? a.value.doubleValue)]));
}
