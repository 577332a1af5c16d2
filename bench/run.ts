import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { builtinRegistry } from '../src/builtins.js';
import { parseConfigText } from '../src/config/load.js';
import { silentLogger } from '../src/engine/logger.js';
import { Metrics } from '../src/engine/metrics.js';
import { Pipeline } from '../src/engine/pipeline.js';
import { DEFAULT_THRESHOLD_BYTES, autoThreads } from '../src/engine/record-pool.js';
import { UsageError } from '../src/errors.js';
import { PAYLOADS, writeCorpus, type Corpus, type ScenarioName } from './corpus.js';

const SCENARIOS: ScenarioName[] = ['1k', '10k', '100k', '1m', 'mix'];
const SINKS = ['file', 'http', 's3'] as const;
type SinkName = (typeof SINKS)[number];
const POOL_SETTINGS = ['on', 'off'] as const;
type PoolSetting = (typeof POOL_SETTINGS)[number];
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

export interface ScenarioResult {
  scenario: ScenarioName;
  sink: SinkName;
  pool: PoolSetting;
  records: number;
  mib: number;
  seconds: number;
  recordsPerSecond: number;
  mibPerSecond: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  cpuSecondsPerGiB: number;
  /** CPU time over wall time: how many cores logferry kept busy. */
  coresUsed: number;
  peakRssMiB: number;
  eventLoopDelayP99Ms: number;
  /** JSON.parse + JSON.stringify of the same documents on one thread, MiB/s. */
  floorMibPerSecond: number;
  /** Throughput over (one-thread floor x cores used). */
  ratioToFloor: number;
  /** Throughput over (one-thread floor x cores of the machine). */
  ratioToMachineFloor: number;
}

export interface BenchReport {
  command: string;
  machine: { cpus: number; model: string; memoryGiB: number; node: string; nodeFlags?: string; platform: string };
  startedAt: string;
  results: ScenarioResult[];
  notes: string[];
}

interface BenchOptions {
  scenarios: ScenarioName[];
  sinks: SinkName[];
  pools: PoolSetting[];
  /** pool.threads for the pool-on runs: a number of at least 1. */
  threads: string;
  thresholdBytes: number;
  mib: number;
  json: boolean;
  svg: string;
  out: string;
}

/** A server process the scenarios send to; its CPU is not logferry's. */
async function startHelper(script: string): Promise<{ port: number; child: ChildProcess } | { unavailable: string }> {
  const child = spawn(process.execPath, [script], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! });
  for await (const line of lines) {
    if (line.startsWith('PORT ')) return { port: Number(line.slice(5)), child };
    if (line.startsWith('UNAVAILABLE ')) {
      child.stdin!.end();
      return { unavailable: line.slice(12) };
    }
  }
  return { unavailable: `${script} exited before listening` };
}

function sinkYaml(sink: SinkName, target: { out: string; port?: number }): string {
  switch (sink) {
    case 'file':
      return `  out: { type: file, inputs: [keyed], path: ${JSON.stringify(target.out)}, concurrency: 64 }`;
    case 'http':
      return `  out:
    type: http
    inputs: [keyed]
    uri: http://127.0.0.1:${target.port}/ingest
    encoding: ndjson
    compression: none
    batch: { max_events: 500, max_bytes: 1048576, timeout_ms: 100 }
    request: { concurrency: 8 }`;
    case 's3':
      return `  out:
    type: s3
    inputs: [keyed]
    bucket: bench
    region: us-east-1
    endpoint: http://127.0.0.1:${target.port}
    force_path_style: true
    concurrency: 32`;
  }
}

/** The pipeline of the issue's target: tail -> select -> redact -> path_format -> sink. */
function pipelineYaml(corpusPath: string, dataDir: string, sink: string, pool: string): string {
  return `data_dir: ${JSON.stringify(dataDir)}
status_interval_ms: 3600000
pool: ${pool}
sources:
  jobs: { type: job_log_tail, include: [${JSON.stringify(corpusPath)}], read_buffer_bytes: 1048576 }
transforms:
  selected: { type: select, inputs: [jobs] }
  redacted: { type: redact, inputs: [selected], mask_data: true, fields: ["report.workato.job_context.user_email"] }
  keyed: { type: path_format, inputs: [redacted] }
sinks:
${sink}
`;
}

/** The V8 flags the figures were measured with: the young generation's size changes them by a quarter. */
function nodeFlags(): string {
  return [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].filter((f) => f.startsWith('--')).join(' ') || '(none)';
}

/** The machine's floor for the same bytes: what one thread does with JSON.parse + JSON.stringify alone. */
function measureFloor(corpus: Corpus): number {
  const bytes = corpus.sample.reduce((n, s) => n + s.length, 0);
  let rounds = 0;
  const started = performance.now();
  do {
    for (const line of corpus.sample) JSON.stringify(JSON.parse(line));
    rounds++;
  } while (performance.now() - started < 2000);
  const seconds = (performance.now() - started) / 1000;
  return (bytes * rounds) / MiB / seconds;
}

interface RunTarget {
  sink: SinkName;
  port: number | undefined;
  pool: PoolSetting;
  threads: string;
  thresholdBytes: number;
}

async function runScenario(
  corpus: Corpus,
  scenario: ScenarioName,
  target: RunTarget,
  floor: number,
  progress: (fraction: number, mibPerSecond: number) => void,
): Promise<ScenarioResult> {
  const work = await mkdtemp(join(tmpdir(), 'logferry-bench-run-'));
  try {
    const { sink, port } = target;
    const pool = target.pool === 'off' ? '{ threads: 0 }' : `{ threads: ${target.threads}, threshold_bytes: ${target.thresholdBytes} }`;
    const yaml = pipelineYaml(corpus.path, join(work, 'data'), sinkYaml(sink, { out: join(work, 'out'), port }), pool);
    const config = await parseConfigText(yaml, 'bench.yaml', builtinRegistry());
    const metrics = new Metrics();
    const pipeline = new Pipeline(config, { once: true, log: silentLogger, metrics });
    // s3rver knows one key pair; the sink reads credentials from the environment, as in production.
    const restoreEnv = sink === 's3' ? withEnv({ AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_SESSION_TOKEN: undefined }) : () => {};
    await pipeline.build();
    const eventLoop = monitorEventLoopDelay({ resolution: 1 });
    let peakRss = process.memoryUsage().rss;
    const cpuBefore = process.cpuUsage();
    const started = performance.now();
    const sampler = setInterval(() => {
      peakRss = Math.max(peakRss, process.memoryUsage().rss);
      const seconds = (performance.now() - started) / 1000;
      progress(metrics.bytesIn / corpus.bytes, metrics.bytesIn / MiB / Math.max(seconds, 0.001));
    }, 100);
    eventLoop.enable();
    try {
      await pipeline.run();
    } finally {
      eventLoop.disable();
      clearInterval(sampler);
      restoreEnv();
    }
    const seconds = (performance.now() - started) / 1000;
    const cpu = process.cpuUsage(cpuBefore);
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
    const cpuSeconds = (cpu.user + cpu.system) / 1e6;
    const mib = metrics.bytesIn / MiB;
    const mibPerSecond = mib / seconds;
    const coresUsed = cpuSeconds / seconds;
    return {
      scenario,
      sink,
      pool: target.pool,
      records: metrics.recordsIn,
      mib: round(mib, 1),
      seconds: round(seconds, 2),
      recordsPerSecond: Math.round(metrics.recordsIn / seconds),
      mibPerSecond: round(mibPerSecond, 1),
      latencyP50Ms: round(metrics.latency.quantile(0.5), 1),
      latencyP99Ms: round(metrics.latency.quantile(0.99), 1),
      cpuSecondsPerGiB: round(cpuSeconds / (metrics.bytesIn / GiB), 1),
      coresUsed: round(coresUsed, 2),
      peakRssMiB: Math.round(peakRss / MiB),
      eventLoopDelayP99Ms: round(eventLoop.percentile(99) / 1e6, 1),
      floorMibPerSecond: round(floor, 1),
      ratioToFloor: round(mibPerSecond / (floor * Math.max(coresUsed, 1)), 2),
      ratioToMachineFloor: round(mibPerSecond / (floor * availableParallelism()), 2),
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

function withEnv(values: Record<string, string | undefined>): () => void {
  const saved = Object.fromEntries(Object.keys(values).map((k) => [k, process.env[k]]));
  const apply = (from: Record<string, string | undefined>): void => {
    for (const [k, v] of Object.entries(from)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
  apply(values);
  return () => apply(saved);
}

function round(value: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

export function formatTable(results: ScenarioResult[]): string {
  const header = ['scenario', 'sink', 'pool', 'records/s', 'MiB/s', 'p50 ms', 'p99 ms', 'CPU s/GiB', 'cores', 'peak RSS MiB', 'ELD p99 ms', 'floor MiB/s', 'x floor', 'x 2-core floor'];
  const rows = results.map((r) => [
    r.scenario,
    r.sink,
    r.pool,
    String(r.recordsPerSecond),
    r.mibPerSecond.toFixed(1),
    r.latencyP50Ms.toFixed(1),
    r.latencyP99Ms.toFixed(1),
    r.cpuSecondsPerGiB.toFixed(1),
    r.coresUsed.toFixed(2),
    String(r.peakRssMiB),
    r.eventLoopDelayP99Ms.toFixed(1),
    r.floorMibPerSecond.toFixed(1),
    r.ratioToFloor.toFixed(2),
    r.ratioToMachineFloor.toFixed(2),
  ]);
  const lines = [header, header.map(() => '---'), ...rows].map((cells) => `| ${cells.join(' | ')} |`);
  return lines.join('\n') + '\n';
}

/** Throughput against payload size (log scale), one line per sink. */
export function throughputSvg(results: ScenarioResult[]): string {
  const width = 720;
  const height = 420;
  const margin = { left: 70, right: 130, top: 40, bottom: 60 };
  const sized = results.filter((r) => r.scenario !== 'mix');
  const maxY = Math.max(10, ...results.map((r) => r.mibPerSecond)) * 1.1;
  const sizes = Object.values(PAYLOADS);
  const minX = Math.log10(sizes[0]!);
  const maxX = Math.log10(sizes[sizes.length - 1]!);
  const x = (bytes: number): number => margin.left + ((Math.log10(bytes) - minX) / (maxX - minX)) * (width - margin.left - margin.right);
  const y = (v: number): number => height - margin.bottom - (v / maxY) * (height - margin.top - margin.bottom);
  const colours: Record<SinkName, string> = { file: '#1f77b4', http: '#d62728', s3: '#2ca02c' };
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15">logferry throughput by payload size (MiB/s)</text>`,
    `<line x1="${margin.left}" y1="${y(0)}" x2="${width - margin.right}" y2="${y(0)}" stroke="black"/>`,
    `<line x1="${margin.left}" y1="${y(0)}" x2="${margin.left}" y2="${margin.top}" stroke="black"/>`,
  ];
  for (const [name, bytes] of Object.entries(PAYLOADS)) {
    parts.push(`<text x="${x(bytes)}" y="${y(0) + 18}" text-anchor="middle">${name}</text>`);
  }
  parts.push(`<text x="${(margin.left + width - margin.right) / 2}" y="${height - 15}" text-anchor="middle">payload per job document</text>`);
  for (let i = 0; i <= 5; i++) {
    const v = (maxY / 5) * i;
    parts.push(`<text x="${margin.left - 8}" y="${y(v) + 4}" text-anchor="end">${v.toFixed(0)}</text>`);
    parts.push(`<line x1="${margin.left}" y1="${y(v)}" x2="${width - margin.right}" y2="${y(v)}" stroke="#ddd"/>`);
  }
  let legend = 0;
  for (const sink of SINKS) {
    const points = sized.filter((r) => r.sink === sink).map((r) => [x(PAYLOADS[r.scenario as keyof typeof PAYLOADS]), y(r.mibPerSecond)] as const);
    if (points.length === 0) continue;
    parts.push(`<polyline fill="none" stroke="${colours[sink]}" stroke-width="2" points="${points.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(' ')}"/>`);
    for (const [a, b] of points) parts.push(`<circle cx="${a.toFixed(1)}" cy="${b.toFixed(1)}" r="3.5" fill="${colours[sink]}"/>`);
    const mix = results.find((r) => r.sink === sink && r.scenario === 'mix');
    const label = `${sink}${mix ? ` (mix ${mix.mibPerSecond.toFixed(0)})` : ''}`;
    parts.push(`<rect x="${width - margin.right + 12}" y="${margin.top + legend * 20}" width="12" height="12" fill="${colours[sink]}"/>`);
    parts.push(`<text x="${width - margin.right + 30}" y="${margin.top + legend * 20 + 10}">${label}</text>`);
    legend++;
  }
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

export interface PlanInput {
  jobsPerMinute: number;
  avgKb: number;
  headroom: number;
}

/**
 * Sizing from measured figures: the throughput per instance at the closest measured payload size
 * (interpolated on a log scale), derated by the headroom, gives the instance count; each instance
 * is charged the cores it kept busy in the measurement.
 */
export function plan(report: BenchReport, input: PlanInput, sink: SinkName = 'http'): string {
  // With pool on and off measured, each payload size is planned with the faster of the two.
  const best = new Map<string, ScenarioResult>();
  for (const r of report.results) {
    const key = `${r.sink}/${r.scenario}`;
    if ((best.get(key)?.mibPerSecond ?? -1) < r.mibPerSecond) best.set(key, r);
  }
  const fastest = [...best.values()];
  const measured = fastest.filter((r) => r.sink === sink && r.scenario !== 'mix').sort((a, b) => PAYLOADS[a.scenario as keyof typeof PAYLOADS] - PAYLOADS[b.scenario as keyof typeof PAYLOADS]);
  const pool = measured.length > 0 ? measured : fastest.filter((r) => r.scenario !== 'mix');
  if (pool.length === 0) throw new UsageError('bench --plan needs measured figures: run `logferry bench` first');
  const bytes = input.avgKb * 1024;
  const at = (r: ScenarioResult): number => Math.log(PAYLOADS[r.scenario as keyof typeof PAYLOADS]);
  const target = Math.log(bytes);
  let rate = pool[0]!.mibPerSecond;
  let cores = pool[0]!.coresUsed;
  for (let i = 0; i < pool.length; i++) {
    const a = pool[i]!;
    const b = pool[i + 1];
    if (target <= at(a)) {
      rate = a.mibPerSecond;
      cores = a.coresUsed;
      break;
    }
    if (!b) {
      rate = a.mibPerSecond;
      cores = a.coresUsed;
      break;
    }
    if (target <= at(b)) {
      const t = (target - at(a)) / (at(b) - at(a));
      rate = a.mibPerSecond + t * (b.mibPerSecond - a.mibPerSecond);
      cores = a.coresUsed + t * (b.coresUsed - a.coresUsed);
      break;
    }
  }
  const needed = ((input.jobsPerMinute / 60) * bytes) / MiB;
  const usable = rate / (1 + input.headroom);
  const instances = Math.max(1, Math.ceil(needed / usable));
  const coresPerInstance = Math.max(1, Math.ceil(cores));
  return [
    `load: ${input.jobsPerMinute} jobs/min of ${input.avgKb} kB = ${needed.toFixed(1)} MiB/s (${(input.jobsPerMinute / 60).toFixed(0)} records/s)`,
    `measured: ${rate.toFixed(1)} MiB/s per instance to ${sink} at ${input.avgKb} kB per document (interpolated from ${pool.map((r) => r.scenario).join(', ')}), using ${cores.toFixed(2)} cores`,
    `headroom: ${(input.headroom * 100).toFixed(0)}% (an instance is planned at ${usable.toFixed(1)} MiB/s, to absorb bursts and catch up after an outage)`,
    `answer: ${instances} instance${instances === 1 ? '' : 's'} x ${coresPerInstance} core${coresPerInstance === 1 ? '' : 's'} = ${instances * coresPerInstance} core${instances * coresPerInstance === 1 ? '' : 's'}` +
      (instances > 1 ? ' (several instances share the input only with a shared source, e.g. the NATS JetStream source of the roadmap)' : ''),
    `figures from: ${report.command} on ${report.machine.cpus} x ${report.machine.model}, Node ${report.machine.node} (flags: ${report.machine.nodeFlags ?? 'not recorded'}), ${report.startedAt}`,
  ].join('\n');
}

function progressLine(label: string): (fraction: number, rate: number) => void {
  const tty = process.stderr.isTTY === true;
  let last = -1;
  return (fraction, rate) => {
    const pct = Math.min(100, Math.floor(fraction * 100));
    if (!tty && pct < last + 25) return;
    last = pct;
    const bar = '#'.repeat(Math.floor(pct / 5)).padEnd(20, '.');
    const text = `[${bar}] ${String(pct).padStart(3)}% ${label} ${rate.toFixed(1)} MiB/s`;
    process.stderr.write(tty ? `\r${text}\u001b[K` : `${text}\n`);
  };
}

const RESULTS_FILE = 'bench/results.json';

export async function benchMain(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        scenario: { type: 'string', default: SCENARIOS.join(',') },
        sink: { type: 'string', default: 'file,http,s3' },
        pool: { type: 'string', default: 'on,off' },
        threads: { type: 'string', default: 'auto' },
        'threshold-bytes': { type: 'string', default: String(DEFAULT_THRESHOLD_BYTES) },
        mib: { type: 'string', default: '128' },
        duration: { type: 'string' },
        json: { type: 'boolean', default: false },
        svg: { type: 'string', default: 'bench/throughput.svg' },
        out: { type: 'string', default: RESULTS_FILE },
        plan: { type: 'boolean', default: false },
        'jobs-per-minute': { type: 'string' },
        'avg-kb': { type: 'string' },
        headroom: { type: 'string', default: '0.5' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const v = parsed.values;
  if (v.help) {
    process.stdout.write(`logferry bench: measures throughput, latency, CPU and memory of tail -> select -> redact -> path_format -> sink.

  logferry bench [--scenario 1k,10k,100k,1m,mix] [--sink file,http,s3] [--pool on,off] [--threads auto|N]
                 [--threshold-bytes N] [--mib N | --duration S] [--json] [--svg FILE] [--out FILE]
  logferry bench --plan --jobs-per-minute N --avg-kb N [--headroom 0.5] [--out FILE]

  --pool on,off  run each scenario with the worker pool, without it, or both (default)
  --threads N    pool.threads of the pool-on runs (default auto: pool.threads auto, at least 1)
  --threshold-bytes N  pool.threshold_bytes of the pool-on runs (default ${DEFAULT_THRESHOLD_BYTES})
  --mib N        corpus size per scenario (default 128)
  --duration S   size each corpus to run about S seconds, from a short calibration run
  --out FILE     where the figures are saved (default ${RESULTS_FILE}); --plan reads them
`);
    return 0;
  }
  if (v.plan) {
    const jobsPerMinute = Number(v['jobs-per-minute']);
    const avgKb = Number(v['avg-kb']);
    if (!(jobsPerMinute > 0) || !(avgKb > 0)) throw new UsageError('bench --plan needs --jobs-per-minute N and --avg-kb N');
    const report = JSON.parse(await readFile(v.out!, 'utf8').catch(() => {
      throw new UsageError(`no figures in ${v.out}: run \`logferry bench\` first`);
    })) as BenchReport;
    process.stdout.write(plan(report, { jobsPerMinute, avgKb, headroom: Number(v.headroom) }) + '\n');
    return 0;
  }
  const scenarios = v.scenario!.split(',').map((s) => s.trim()) as ScenarioName[];
  for (const s of scenarios) if (!SCENARIOS.includes(s)) throw new UsageError(`unknown scenario "${s}"; choose from ${SCENARIOS.join(', ')}`);
  const sinks = v.sink!.split(',').map((s) => s.trim()) as SinkName[];
  for (const s of sinks) if (!SINKS.includes(s)) throw new UsageError(`unknown sink "${s}"; choose from ${SINKS.join(', ')}`);
  const pools = v.pool!.split(',').map((s) => s.trim()) as PoolSetting[];
  for (const p of pools) if (!POOL_SETTINGS.includes(p)) throw new UsageError(`unknown pool setting "${p}"; choose from on, off`);
  if (v.threads !== 'auto' && !(Number.isInteger(Number(v.threads)) && Number(v.threads) > 0)) throw new UsageError('--threads must be auto or a positive integer');
  // A pool-on row needs a pool, also where pool.threads auto would turn it off (two cores).
  const threads = v.threads === 'auto' ? String(Math.max(1, autoThreads())) : v.threads!;
  const thresholdBytes = Number(v['threshold-bytes']);
  if (!(Number.isInteger(thresholdBytes) && thresholdBytes >= 1024)) throw new UsageError('--threshold-bytes must be an integer of at least 1024');
  const options: BenchOptions = { scenarios, sinks, pools, threads, thresholdBytes, mib: Number(v.mib), json: v.json!, svg: v.svg!, out: v.out! };
  if (!(options.mib > 0)) throw new UsageError('--mib must be a positive number');
  const duration = v.duration === undefined ? undefined : Number(v.duration);
  if (duration !== undefined && !(duration > 0)) throw new UsageError('--duration must be a positive number of seconds');

  const here = dirname(new URL(import.meta.url).pathname);
  const notes: string[] = [];
  notes.push(`node ${process.version}, flags: ${nodeFlags()}`);
  if (pools.includes('on')) notes.push(`pool on: threads ${threads}, threshold_bytes ${thresholdBytes}; CPU and RSS include the worker threads`);
  const helpers: ChildProcess[] = [];
  const ports: Partial<Record<SinkName, number>> = {};
  const work = await mkdtemp(join(tmpdir(), 'logferry-bench-'));
  const results: ScenarioResult[] = [];
  try {
    for (const sink of sinks) {
      if (sink === 'file') continue;
      const started = await startHelper(join(here, sink === 'http' ? 'receiver-process.js' : 's3-process.js'));
      if ('unavailable' in started) {
        notes.push(`${sink}: skipped, ${started.unavailable}`);
        continue;
      }
      helpers.push(started.child);
      ports[sink] = started.port;
    }
    for (const scenario of scenarios) {
      let targetBytes = options.mib * MiB;
      if (duration !== undefined) {
        const probe = await writeCorpus(join(work, `${scenario}-probe.ndjson`), scenario, 16 * MiB);
        const calibration = await runScenario(probe, scenario, { sink: 'file', port: undefined, pool: pools[0]!, threads, thresholdBytes }, 1, () => {});
        targetBytes = Math.min(2048 * MiB, Math.max(16 * MiB, calibration.mibPerSecond * duration * MiB));
      }
      const corpus = await writeCorpus(join(work, `${scenario}.ndjson`), scenario, targetBytes);
      const floor = measureFloor(corpus);
      corpus.sample.length = 0;
      for (const sink of sinks) {
        if (sink !== 'file' && ports[sink] === undefined) continue;
        for (const pool of pools) {
          const label = `${scenario} -> ${sink}, pool ${pool}`;
          const result = await runScenario(corpus, scenario, { sink, port: ports[sink], pool, threads, thresholdBytes }, floor, progressLine(label));
          if (process.stderr.isTTY) process.stderr.write('\r\u001b[K');
          process.stderr.write(`${label}: ${result.mibPerSecond.toFixed(1)} MiB/s, ${result.recordsPerSecond} records/s, p99 ${result.latencyP99Ms} ms, ELD p99 ${result.eventLoopDelayP99Ms} ms\n`);
          results.push(result);
        }
      }
      await rm(corpus.path, { force: true });
    }
  } finally {
    for (const child of helpers) child.stdin!.end();
    await rm(work, { recursive: true, force: true });
  }
  const report: BenchReport = {
    command: `logferry bench ${argv.join(' ')}`.trim(),
    machine: { cpus: availableParallelism(), model: cpus()[0]?.model ?? 'unknown', memoryGiB: Math.round(totalmem() / GiB), node: process.version, nodeFlags: nodeFlags(), platform: process.platform },
    startedAt: new Date().toISOString(),
    results,
    notes,
  };
  await mkdir(dirname(resolve(options.out)), { recursive: true });
  await writeFile(options.out, JSON.stringify(report, null, 2) + '\n');
  // Both default to bench/ under the working directory: made when missing, as for the figures.
  await mkdir(dirname(resolve(options.svg)), { recursive: true });
  await writeFile(options.svg, throughputSvg(results));
  if (options.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  else {
    process.stdout.write(formatTable(results));
    for (const note of notes) process.stdout.write(`note: ${note}\n`);
    process.stdout.write(`figures saved to ${options.out}, chart to ${options.svg}\n`);
  }
  return 0;
}
