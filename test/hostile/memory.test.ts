import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI, makeJob, removeAll, scratch, startCli, waitFor, writePipeline, type Running } from '../helpers/cli.js';

const cleanup: string[] = [];
const stops: (() => void)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) stop();
  await removeAll(cleanup);
});

const MiB = 1024 * 1024;
const BLANK_LINES = 20_000_000;
/**
 * The CLI's RSS while it reads past every blank line. Before the offset tracker coalesced finished
 * lines it kept an entry per line behind the stuck record: 20 million blank lines took it to
 * 876 MiB (108 MiB after). Idle, the CLI uses 60 to 90 MiB.
 */
const RSS_BOUND = 200 * MiB;

/** An HTTP "server" that accepts connections and never answers: records sent to it stay in flight. */
async function silentServer(): Promise<number> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('data', () => {});
    socket.on('error', () => {});
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  stops.push(() => {
    for (const socket of sockets) socket.destroy();
    server.close();
  });
  return (server.address() as { port: number }).port;
}

function rssOf(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
}

describe('memory behind a stuck record', () => {
  it.skipIf(process.platform !== 'linux')(
    'one record stuck at a sink that never answers, then 20 million blank lines: RSS stays bounded while the tail reads past them',
    async () => {
      const dir = await scratch(cleanup);
      const input = join(dir, 'jobs.ndjson');
      const handle = await open(input, 'w');
      await handle.write(JSON.stringify(makeJob(1)) + '\n');
      const blanks = Buffer.alloc(MiB, 0x0a);
      for (let written = 0; written < BLANK_LINES; written += blanks.length) await handle.write(blanks);
      const size = (await handle.stat()).size;
      await handle.close();

      const port = await silentServer();
      const config = await writePipeline(
        dir,
        `data_dir: ${JSON.stringify(join(dir, 'data'))}
buffer: { max_bytes: 1048576 }
shutdown_timeout: 1s
sources:
  jobs: { type: job_log_tail, include: [${JSON.stringify(input)}], poll_interval_ms: 20 }
transforms:
  keyed: { type: path_format, inputs: [jobs], user_id: 1 }
sinks:
  stuck:
    type: http
    inputs: [keyed]
    uri: http://127.0.0.1:${port}/ingest
    batch: { timeout_ms: 10 }
`,
      );
      const running: Running = startCli(['run', '-c', config, '--log-level', 'debug'], { cwd: dir });
      stops.push(() => running.child.kill('SIGKILL'));
      let peak = 0;
      const sampler = setInterval(() => (peak = Math.max(peak, rssOf(running.child.pid!))), 20);
      stops.push(() => clearInterval(sampler));
      const endOfFile = new RegExp(`read to the end of the file .*offset=${size}\\b`);
      await waitFor(() => endOfFile.test(running.stderr()), 120_000, 'the tail to read to the end of the file').catch((err: Error) => {
        throw new Error(`${err.message}\n${running.stderr().slice(-2000)}`);
      });
      peak = Math.max(peak, rssOf(running.child.pid!));
      // The record is still in flight: nothing was acknowledged, the position has not moved.
      expect(running.stderr()).not.toContain('LF_');
      expect(peak).toBeGreaterThan(0);
      expect(peak).toBeLessThan(RSS_BOUND);
      console.log(`stuck record + ${BLANK_LINES} blank lines: peak RSS ${(peak / MiB).toFixed(1)} MiB`);
    },
    180_000,
  );

  it.skipIf(process.platform !== 'linux')(
    'a stalled sink fed 1 kB records with the default budget: RSS stays under 300 MiB once reading has paused',
    async () => {
      const dir = await scratch(cleanup);
      const input = join(dir, 'jobs.ndjson');
      // About 1 kB per line, 96 MiB: more than the budget holds, whatever a record is charged.
      let chunk = '';
      for (let i = 0; chunk.length < MiB; i++) chunk += JSON.stringify(makeJob(10_000_000 + i, { note: 'x'.repeat(450) })) + '\n';
      const handle = await open(input, 'w');
      for (let i = 0; i < 96; i++) await handle.write(chunk);
      await handle.close();

      const port = await silentServer();
      const config = await writePipeline(
        dir,
        `data_dir: ${JSON.stringify(join(dir, 'data'))}
status_interval_ms: 200
shutdown_timeout: 1s
sources:
  jobs: { type: job_log_tail, include: [${JSON.stringify(input)}] }
transforms:
  redacted: { type: redact, inputs: [jobs], mask_data: true }
  keyed: { type: path_format, inputs: [redacted], user_id: 1 }
sinks:
  stalled: { type: http, inputs: [keyed], uri: "http://127.0.0.1:${port}/ingest" }
`,
      );
      // As the logferry command starts Node (its shebang).
      const child = spawn(process.execPath, ['--max-semi-space-size=64', CLI, 'run', '-c', config, '--log-format', 'json'], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
      stops.push(() => child.kill('SIGKILL'));
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      let peak = 0;
      const sampler = setInterval(() => (peak = Math.max(peak, rssOf(child.pid!))), 20);
      stops.push(() => clearInterval(sampler));
      // Paused: five status lines in a row with the same records_in, and bytes still to read.
      await waitFor(
        () => {
          const status = stderr
            .split('\n')
            .filter((l) => l.includes('"msg":"status"'))
            .map((l) => JSON.parse(l) as { records_in: number; bytes_behind: number });
          const last = status.slice(-5);
          return last.length === 5 && last[0]!.records_in > 0 && last.every((s) => s.records_in === last[0]!.records_in && s.bytes_behind > 0);
        },
        120_000,
        'reading to pause',
      );
      peak = Math.max(peak, rssOf(child.pid!));
      expect(peak).toBeLessThan(300 * MiB);
      console.log(`stalled http sink, 1 kB records, default budget: peak RSS ${(peak / MiB).toFixed(1)} MiB`);
    },
    180_000,
  );
});
