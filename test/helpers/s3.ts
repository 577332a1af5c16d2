import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, request, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';

interface S3rverOptions {
  port: number;
  address: string;
  silent: boolean;
  directory: string;
  configureBuckets?: { name: string }[];
}

interface S3rverInstance {
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
  /** Set by run(); s3rver keeps it to close it again. */
  readonly httpServer?: Server;
}

// s3rver is CommonJS without type declarations; requiring it through a typed constructor keeps `any` out.
const S3rver = createRequire(import.meta.url)('s3rver') as new (options: S3rverOptions) => S3rverInstance;

/** The only key pair s3rver knows. It checks the key id, but not SigV4 signatures (so any secret passes). */
export const S3RVER_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;

/** The environment a spawned CLI needs to reach s3rver: its key pair and a region. */
export const S3RVER_ENV = { AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey, AWS_REGION: 'us-east-1' } as const;

export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
}

export interface S3Server {
  /** `http://127.0.0.1:PORT`; clients need forcePathStyle: true. */
  endpoint: string;
  /** A client with s3rver's credentials, for setting up and checking what a test did. */
  client: S3Client;
  /** Every request the server received, in order. */
  requests: SeenRequest[];
  bucket(name: string): Promise<void>;
  stop(): Promise<void>;
}

/** Starts s3rver on a free port of 127.0.0.1 with a fresh data folder that stop() removes. */
export async function startS3(buckets: string[] = []): Promise<S3Server> {
  const directory = await mkdtemp(join(tmpdir(), 'logferry-s3rver-'));
  const server = new S3rver({
    port: 0,
    address: '127.0.0.1',
    silent: true,
    directory,
    configureBuckets: buckets.map((name) => ({ name })),
  });
  let address: AddressInfo;
  try {
    address = await server.run();
  } catch (err) {
    await rm(directory, { recursive: true, force: true });
    throw err;
  }
  const endpoint = `http://127.0.0.1:${address.port}`;
  const requests: SeenRequest[] = [];
  server.httpServer?.on('request', (req: IncomingMessage) => requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers }));
  const client = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: S3RVER_CREDENTIALS });
  return {
    endpoint,
    client,
    requests,
    async bucket(name) {
      await client.send(new CreateBucketCommand({ Bucket: name }));
    },
    async stop() {
      client.destroy();
      // Keep-alive sockets of the clients under test would otherwise hold close() for seconds.
      server.httpServer?.closeAllConnections();
      await server.close();
      await rm(directory, { recursive: true, force: true });
    },
  };
}

/** What the proxy does with one request: pass it on, never answer, or answer with an S3 error. */
export type ProxyAnswer = 'pass' | 'hang' | { status: number; code: string; message?: string; headers?: Record<string, string> };

export interface S3Proxy {
  endpoint: string;
  stop(): Promise<void>;
}

/**
 * An HTTP proxy in front of s3rver that can fail chosen requests the way S3 does (503 SlowDown
 * with Retry-After, 403 AccessDenied, a request that never gets an answer), which s3rver itself
 * never does. The SDK under test still speaks real HTTP to it.
 */
export async function startS3Proxy(target: string, decide: (req: SeenRequest) => ProxyAnswer): Promise<S3Proxy> {
  const upstream = new URL(target);
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const answer = decide({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    if (answer === 'hang') {
      req.resume();
      return;
    }
    if (answer !== 'pass') {
      req.resume();
      req.on('end', () => {
        const xml =
          '<?xml version="1.0" encoding="UTF-8"?>\n' +
          `<Error><Code>${answer.code}</Code><Message>${answer.message ?? answer.code}</Message><RequestId>proxy</RequestId></Error>`;
        res.writeHead(answer.status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(xml), ...answer.headers });
        res.end(xml);
      });
      return;
    }
    const forward = request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      (upstreamRes) => {
        res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.headers);
        upstreamRes.pipe(res);
      },
    );
    forward.on('error', () => res.destroy());
    req.pipe(forward);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A port on 127.0.0.1 that nothing listens on (it was free a moment ago): connections are refused. */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
