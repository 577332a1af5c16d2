import { access, appendFile, chmod, mkdir, readdir, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { afterEach, describe, expect, it } from 'vitest';
import { jobKey, makeJob, removeAll, runCli, scratch, standardPipeline, writePipeline } from '../helpers/cli.js';
import { closedPort, S3RVER_ENV, startS3, startS3Proxy } from '../helpers/s3.js';

const cleanup: string[] = [];
const servers: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
  await removeAll(cleanup);
});

const env = S3RVER_ENV;
const FIRST = 5_000_000;
const TOKEN = 'tok-healthcheck-5f2a9c';

async function jobsFile(dir: string, count: number): Promise<string> {
  const logs = join(dir, 'logs');
  await mkdir(logs, { recursive: true });
  let text = '';
  for (let i = 0; i < count; i++) text += JSON.stringify(makeJob(FIRST + i)) + '\n';
  await appendFile(join(logs, 'jobs.ndjson'), text);
  return join(logs, '*.ndjson');
}

function s3SinkYaml(endpoint: string, bucket: string): string {
  return `  archive:
    type: s3
    inputs: [keyed]
    bucket: ${bucket}
    endpoint: ${JSON.stringify(endpoint)}
    force_path_style: true
    prefix: "ferry/"
    request_timeout_ms: 2000
    retry: { initial_backoff_ms: 10, max_backoff_ms: 200 }
`;
}

function httpSinkYaml(uri: string, healthcheck = ''): string {
  return `  collector:
    type: http
    inputs: [keyed]
    uri: ${JSON.stringify(uri)}
    auth: { strategy: bearer, token: ${TOKEN} }
    batch: { max_events: 50, timeout_ms: 50 }
    request: { timeout_ms: 2000 }
    retry: { initial_backoff_ms: 10, max_backoff_ms: 200 }
${healthcheck}`;
}

/**
 * An HTTP server on 127.0.0.1: `/health` answers `healthStatus` with a body that echoes the
 * Authorization header (as careless servers do); `/ingest` takes NDJSON and counts the lines.
 */
async function startServer(healthStatus: number): Promise<{ url: string; lines: string[]; healthRequests: string[]; requests(): number }> {
  let requests = 0;
  const lines: string[] = [];
  const healthRequests: string[] = [];
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    requests++;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url === '/health') {
        healthRequests.push(`${req.method} ${req.headers.authorization ?? ''}`);
        res.writeHead(healthStatus, { 'content-type': 'text/plain' });
        res.end(`not allowed with ${req.headers.authorization ?? 'nothing'}`);
        return;
      }
      for (const line of Buffer.concat(chunks).toString('utf8').split('\n')) if (line) lines.push(line);
      res.writeHead(200);
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push({
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, lines, healthRequests, requests: () => requests };
}

async function s3Server(buckets: string[]): Promise<Awaited<ReturnType<typeof startS3>>> {
  const s3 = await startS3(buckets);
  servers.push({ close: () => s3.stop() });
  return s3;
}

describe('health checks at start', () => {
  it('validate --check-destinations exits 69 naming a missing bucket, and 0 once it exists, without a data_dir', async () => {
    const dir = await scratch(cleanup);
    const s3 = await s3Server([]);
    const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include: join(dir, 'logs', '*.ndjson'), out: '', sinks: s3SinkYaml(s3.endpoint, 'no-such-bucket') }));
    const missing = await runCli(['validate', '-c', config, '--check-destinations'], { cwd: dir, env });
    expect(missing.code, missing.stderr).toBe(69);
    expect(missing.stdout).toMatch(/^archive: failed: HeadBucket on s3:\/\/no-such-bucket .*404 NoSuchBucket.*bucket "no-such-bucket" does not exist in region us-east-1/m);
    expect(missing.stderr).toContain('LF_HEALTHCHECK_FAILED');

    await s3.bucket('no-such-bucket');
    const present = await runCli(['validate', '-c', config, '--check-destinations'], { cwd: dir, env });
    expect(present.code, present.stderr).toBe(0);
    expect(present.stdout).toMatch(/^archive: ok: bucket s3:\/\/no-such-bucket answers HeadBucket/m);
    // Only the sinks were built: no lock, no checkpoints, no dead letters, not even the folder.
    await expect(access(join(dir, 'data'))).rejects.toThrow();
  });

  it('a 403 on HeadBucket is a warning that names s3:ListBucket; refused credentials fail', async () => {
    const dir = await scratch(cleanup);
    const s3 = await s3Server(['jobs']);
    // Every bucket-level request is refused the way a policy without s3:ListBucket refuses it.
    const proxy = await startS3Proxy(s3.endpoint, (req) => (/^\/jobs\/[^?]/.test(req.url) ? 'pass' : { status: 403, code: 'AccessDenied' }));
    servers.push({ close: () => proxy.stop() });
    const denied = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include: join(dir, 'logs', '*.ndjson'), out: '', sinks: s3SinkYaml(proxy.endpoint, 'jobs') }));
    const warned = await runCli(['validate', '-c', denied, '--check-destinations'], { cwd: dir, env });
    expect(warned.code, warned.stderr).toBe(0);
    expect(warned.stdout).toMatch(/^archive: warning: .*403 AccessDenied.*s3:ListBucket on arn:aws:s3:::jobs/m);

    const direct = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include: join(dir, 'logs', '*.ndjson'), out: '', sinks: s3SinkYaml(s3.endpoint, 'jobs') }));
    const refused = await runCli(['validate', '-c', direct, '--check-destinations'], { cwd: dir, env: { ...env, AWS_ACCESS_KEY_ID: 'NOT-A-KNOWN-KEY' } });
    expect(refused.code, refused.stderr).toBe(69);
    expect(refused.stdout).toMatch(/^archive: failed: .*InvalidAccessKeyId.*AWS_ACCESS_KEY_ID/m);
  });

  it('an http healthcheck.uri answering 403 fails with the advice and without the token; a refused port fails', async () => {
    const dir = await scratch(cleanup);
    const server = await startServer(403);
    const config = await writePipeline(
      dir,
      standardPipeline({
        dataDir: join(dir, 'data'),
        include: join(dir, 'logs', '*.ndjson'),
        out: '',
        sinks: httpSinkYaml(`${server.url}/ingest`, `    healthcheck: { uri: ${JSON.stringify(`${server.url}/health`)}, method: HEAD }\n`),
      }),
    );
    const forbidden = await runCli(['validate', '-c', config, '--check-destinations'], { cwd: dir });
    expect(forbidden.code, forbidden.stderr).toBe(69);
    expect(forbidden.stdout).toMatch(/^collector: failed: HEAD http:\/\/127\.0\.0\.1:\d+\/… answered HTTP 403; check the credentials are not allowed to write here/m);
    // The request carried the sink's auth; the token is in neither output.
    expect(server.healthRequests).toEqual([`HEAD Bearer ${TOKEN}`]);
    expect(forbidden.stdout + forbidden.stderr).not.toContain(TOKEN);

    const port = await closedPort();
    const refusedConfig = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include: join(dir, 'logs', '*.ndjson'), out: '', sinks: httpSinkYaml(`http://127.0.0.1:${port}/ingest`) }));
    const refused = await runCli(['validate', '-c', refusedConfig, '--check-destinations'], { cwd: dir });
    expect(refused.code, refused.stderr).toBe(69);
    expect(refused.stdout).toMatch(new RegExp(`^collector: failed: connection to http://127\\.0\\.0\\.1:${port} failed: ECONNREFUSED.*check that the receiver is up`, 'm'));
  });

  it('the connection check sends no request to the receiver', async () => {
    const dir = await scratch(cleanup);
    const server = await startServer(200);
    const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include: join(dir, 'logs', '*.ndjson'), out: '', sinks: httpSinkYaml(`${server.url}/ingest`) }));
    const result = await runCli(['validate', '-c', config, '--check-destinations'], { cwd: dir });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^collector: ok: connection to http:\/\/127\.0\.0\.1:\d+ accepted \(TCP; no request sent/m);
    expect(server.requests()).toBe(0);
  });

  it('run --once --require-healthy exits 69 before reading; after the fix the next run delivers every record', async () => {
    const dir = await scratch(cleanup);
    const s3 = await s3Server([]);
    const include = await jobsFile(dir, 24);
    const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include, out: '', sinks: s3SinkYaml(s3.endpoint, 'jobs') }));
    const refused = await runCli(['run', '-c', config, '--once', '--require-healthy'], { cwd: dir, env });
    expect(refused.code, refused.stderr).toBe(69);
    expect(refused.stderr).toMatch(/destination check failed: .*NoSuchBucket.*code=LF_HEALTHCHECK_FAILED/);
    expect(refused.stderr).toMatch(/exit 69: the health check of archive failed \(--require-healthy\); nothing was read/);
    // No checkpoint was written and no request other than the check reached the store.
    expect(await readdir(join(dir, 'data')).catch(() => [])).not.toContain('checkpoints');
    expect(s3.requests.filter((r) => r.method === 'PUT')).toEqual([]);

    await s3.bucket('jobs');
    const delivered = await runCli(['run', '-c', config, '--once', '--require-healthy'], { cwd: dir, env });
    expect(delivered.code, delivered.stderr).toBe(0);
    expect(delivered.stderr).toMatch(/destination check ok: bucket s3:\/\/jobs answers HeadBucket/);
    const missingKeys: string[] = [];
    for (let i = 0; i < 24; i++) {
      const key = `ferry/${jobKey(FIRST + i)}`;
      const found = await s3.client.send(new HeadObjectCommand({ Bucket: 'jobs', Key: key })).then(() => true, () => false);
      if (!found) missingKeys.push(key);
    }
    expect(missingKeys).toEqual([]);
  });

  it('run --once without --require-healthy logs a failed check and goes on', async () => {
    const dir = await scratch(cleanup);
    const server = await startServer(503);
    const include = await jobsFile(dir, 30);
    const config = await writePipeline(
      dir,
      standardPipeline({ dataDir: join(dir, 'data'), include, out: '', sinks: httpSinkYaml(`${server.url}/ingest`, `    healthcheck: { uri: ${JSON.stringify(`${server.url}/health`)} }\n`) }),
    );
    const result = await runCli(['run', '-c', config, '--once'], { cwd: dir });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/error destination check failed: GET http:\/\/127\.0\.0\.1:\d+\/… answered HTTP 503.*code=LF_HEALTHCHECK_FAILED/);
    expect(server.lines).toHaveLength(30);
  });

  it('the file sink check fails on a folder it may not write', async (ctx) => {
    const dir = await scratch(cleanup);
    const locked = join(dir, 'locked');
    await mkdir(locked);
    await chmod(locked, 0o500);
    // Root writes through permissions, so as root the CLI runs as the unprivileged user instead.
    const asUser = process.getuid?.() === 0 ? await unprivilegedUser() : {};
    if (asUser === undefined) ctx.skip(); // root, and no user here can run this Node: nothing to test.
    try {
      await chmod(dir, 0o755);
      const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include: join(dir, 'logs', '*.ndjson'), out: join(locked, 'out') }));
      const result = await runCli(['validate', '-c', config, '--check-destinations'], { cwd: dir, ...asUser });
      expect(result.code, result.stderr).toBe(69);
      expect(result.stdout).toMatch(/^archive: failed: cannot write .*locked\/out\/\.logferry-healthcheck-\d+: .*EACCES.*check free space, or fix permissions/m);
    } finally {
      await chmod(locked, 0o700);
    }
  });

  it('the file sink check fails on a path under a regular file, even as root', async () => {
    const dir = await scratch(cleanup);
    await writeFile(join(dir, 'not-a-folder'), 'x');
    const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include: join(dir, 'logs', '*.ndjson'), out: join(dir, 'not-a-folder', 'out') }));
    const result = await runCli(['validate', '-c', config, '--check-destinations'], { cwd: dir });
    expect(result.code, result.stderr).toBe(69);
    expect(result.stdout).toMatch(/^archive: failed: cannot write .*not-a-folder\/out\/\.logferry-healthcheck-\d+: .*ENOTDIR/m);
  });
});

/** `nobody`, when it can run this Node and the CLI (a Node under a private folder such as /root cannot be). */
async function unprivilegedUser(): Promise<{ uid: number; gid: number } | undefined> {
  const nobody = { uid: 65534, gid: 65534 };
  const ran = await new Promise<boolean>((resolveRun) => {
    const child = spawn(process.execPath, ['-e', '0'], { ...nobody, stdio: 'ignore' });
    child.on('error', () => resolveRun(false));
    child.on('close', (code) => resolveRun(code === 0));
  });
  return ran ? nobody : undefined;
}
