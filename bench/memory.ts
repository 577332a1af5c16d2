/**
 * How much memory logferry holds when its destination stops answering: the real CLI tails a file
 * much larger than `buffer.max_bytes` into a sink whose server accepts connections and never
 * answers (http, and s3 with that server as its endpoint), until the buffer is full and reading has
 * paused. RSS is sampled from /proc/<pid>/status; the table shows the peak (VmHWM) and the RSS at
 * the pause. Run: `npm run bench:memory` (options: --sizes 1k,10k --sinks http --mib 256
 * --max-bytes 67108864 --json).
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { PAYLOADS, writeCorpus, type PayloadName } from './corpus.js';

const CLI = resolve(import.meta.dirname, '../src/cli/main.js');
const MiB = 1024 * 1024;
const SINKS = ['http', 's3'] as const;
type SinkName = (typeof SINKS)[number];

export interface MemoryResult {
  size: PayloadName;
  sink: SinkName;
  /** Records admitted into the pipeline when reading paused. */
  recordsIn: number;
  /** MiB of lines admitted when reading paused. */
  mibIn: number;
  rssAtPauseMiB: number;
  peakRssMiB: number;
  /** Seconds from start until reading paused. */
  seconds: number;
}

/** Accepts connections, reads and discards what is sent, never answers. */
async function silentServer(): Promise<{ server: Server; port: number; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('data', () => {});
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return { server, port: address.port, sockets };
}

function sinkYaml(sink: SinkName, port: number): string {
  if (sink === 'http') {
    return `  out:
    type: http
    inputs: [keyed]
    uri: http://127.0.0.1:${port}/ingest`;
  }
  return `  out:
    type: s3
    inputs: [keyed]
    bucket: bench
    region: us-east-1
    endpoint: http://127.0.0.1:${port}
    force_path_style: true`;
}

/** Defaults everywhere except what the measurement needs (a status line often enough to see the pause). */
function pipelineYaml(corpus: string, dataDir: string, sink: string, maxBytes: number | undefined): string {
  return `data_dir: ${JSON.stringify(dataDir)}
status_interval_ms: 250
${maxBytes === undefined ? '' : `buffer: { max_bytes: ${maxBytes} }\n`}sources:
  jobs: { type: job_log_tail, include: [${JSON.stringify(corpus)}] }
transforms:
  redacted: { type: redact, inputs: [jobs], mask_data: true }
  keyed: { type: path_format, inputs: [redacted] }
sinks:
${sink}
`;
}

function procStatus(pid: number): { rss: number; hwm: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kib = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
    return { rss: kib('VmRSS') * 1024, hwm: kib('VmHWM') * 1024 };
  } catch {
    return undefined;
  }
}

/**
 * Runs the CLI (as its shebang would: with --max-semi-space-size=64) until reading has paused: the
 * status line shows the same records_in for two seconds while bytes remain behind.
 */
async function measure(corpus: string, size: PayloadName, sink: SinkName, maxBytes: number | undefined): Promise<MemoryResult> {
  const dir = await mkdtemp(join(tmpdir(), 'logferry-memory-'));
  const { server, port, sockets } = await silentServer();
  try {
    const config = join(dir, 'pipeline.yaml');
    await writeFile(config, pipelineYaml(corpus, join(dir, 'data'), sinkYaml(sink, port), maxBytes));
    const started = Date.now();
    const child = spawn(process.execPath, ['--max-semi-space-size=64', CLI, 'run', '-c', config, '--log-format', 'json'], {
      env: { ...process.env, AWS_ACCESS_KEY_ID: 'memory-bench', AWS_SECRET_ACCESS_KEY: 'memory-bench', AWS_SESSION_TOKEN: '' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let recordsIn = -1;
    let bytesIn = 0;
    let sameSince = Date.now();
    let paused: { at: number; rss: number } | undefined;
    let peak = 0;
    const sampler = setInterval(() => {
      const s = procStatus(child.pid!);
      if (s) peak = Math.max(peak, s.hwm, s.rss);
    }, 50);
    const lines = createInterface({ input: child.stderr! });
    const done = new Promise<void>((finish, fail) => {
      const deadline = setTimeout(() => fail(new Error(`${size} ${sink}: reading did not pause within 300 s`)), 300_000);
      lines.on('line', (line) => {
        let entry: { msg?: string; records_in?: number; bytes_behind?: number; level?: string };
        try {
          entry = JSON.parse(line) as typeof entry;
        } catch {
          return;
        }
        if (entry.level === 'error') process.stderr.write(`${line}\n`);
        if (entry.msg !== 'status' || entry.records_in === undefined) return;
        if (entry.records_in !== recordsIn) {
          recordsIn = entry.records_in;
          sameSince = Date.now();
          return;
        }
        if (recordsIn > 0 && (entry.bytes_behind ?? 0) > 0 && Date.now() - sameSince >= 2000) {
          const s = procStatus(child.pid!);
          paused = { at: Date.now(), rss: s?.rss ?? 0 };
          peak = Math.max(peak, s?.hwm ?? 0);
          clearTimeout(deadline);
          finish();
        }
      });
      child.on('exit', (code) => fail(new Error(`${size} ${sink}: the CLI exited (${code}) before reading paused`)));
    });
    await done.finally(() => clearInterval(sampler));
    bytesIn = recordsIn * (PAYLOADS[size] + 1);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('close', r));
    return {
      size,
      sink,
      recordsIn,
      mibIn: Math.round((bytesIn / MiB) * 10) / 10,
      rssAtPauseMiB: Math.round(paused!.rss / MiB),
      peakRssMiB: Math.round(peak / MiB),
      seconds: Math.round((paused!.at - started) / 100) / 10,
    };
  } finally {
    for (const socket of sockets) socket.destroy();
    server.close();
    await rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      sizes: { type: 'string', default: '1k,10k,100k,1m' },
      sinks: { type: 'string', default: SINKS.join(',') },
      mib: { type: 'string', default: '256' },
      'max-bytes': { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  const sizes = values.sizes.split(',') as PayloadName[];
  for (const s of sizes) if (!(s in PAYLOADS)) throw new Error(`unknown size ${s}: use ${Object.keys(PAYLOADS).join(', ')}`);
  const sinks = values.sinks.split(',') as SinkName[];
  for (const s of sinks) if (!SINKS.includes(s)) throw new Error(`unknown sink ${s}: use ${SINKS.join(', ')}`);
  const maxBytes = values['max-bytes'] === undefined ? undefined : Number(values['max-bytes']);
  const work = await mkdtemp(join(tmpdir(), 'logferry-memory-corpus-'));
  const results: MemoryResult[] = [];
  try {
    for (const size of sizes) {
      const corpus = join(work, `${size}.ndjson`);
      await writeCorpus(corpus, size, Number(values.mib) * MiB);
      for (const sink of sinks) {
        const result = await measure(corpus, size, sink, maxBytes);
        results.push(result);
        if (!values.json) process.stderr.write(`${size} ${sink}: peak ${result.peakRssMiB} MiB\n`);
      }
      await rm(corpus, { force: true });
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  const machine = `${cpus().length} x ${cpus()[0]?.model ?? '?'}, ${Math.round(totalmem() / 1024 ** 3)} GiB, Node ${process.version}`;
  if (values.json) {
    process.stdout.write(JSON.stringify({ machine, maxBytes: maxBytes ?? 'default', results }, null, 2) + '\n');
    return;
  }
  process.stdout.write(`buffer.max_bytes: ${maxBytes ?? 'default'}; ${machine}\n`);
  process.stdout.write('| record size | sink | records in when paused | MiB of lines | RSS at pause MiB | peak RSS MiB | s to pause |\n|---|---|---|---|---|---|---|\n');
  for (const r of results) {
    process.stdout.write(`| ${r.size} | ${r.sink} | ${r.recordsIn} | ${r.mibIn} | ${r.rssAtPauseMiB} | ${r.peakRssMiB} | ${r.seconds} |\n`);
  }
}

await main();
