#!/usr/bin/env node
// Start-up time of the logferry CLI (issue 11): each command runs N times, each in a fresh process,
// and the median and p90 of its wall time are printed, with the CPU time the process used (user +
// sys, read at its exit by a one-line --import hook: on a busy machine CPU varies less than wall).
//
//   npm run build && node bench/startup.mjs [--runs 20] [--cli dist/src/cli/main.js] [--json]
//
// Rows:
//   node -e 0                the floor: a Node process that loads nothing
//   --version, --help        should load nothing but package.json
//   validate (file, http)    job_log_tail -> redact -> path_format -> file (or http) sink
//   run: first record        run (follow mode, so the operators' API and its metrics start too)
//                            of the same pipeline to an http sink with batch.max_events 1: time
//                            from spawn until a local HTTP server receives the first record's
//                            request (what "reads its first byte" costs, plus one send); the
//                            process is stopped with SIGTERM then. Also with --once (no API).
//   run --once (file)        the whole run --once of 50 small jobs to the file sink, until exit
//
// Each process is started as `node CLI ...` (without --max-semi-space-size: the flag does not
// change start-up). The load average is printed, since the figures mean little without it.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:http';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout, clearTimeout } from 'node:timers';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '20' },
    cli: { type: 'string', default: resolve(import.meta.dirname, '../dist/src/cli/main.js') },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (values.help) {
  process.stdout.write('usage: node bench/startup.mjs [--runs N] [--cli PATH] [--json]\n');
  process.exit(0);
}
const runs = Number(values.runs);
if (!Number.isSafeInteger(runs) || runs < 1 || runs > 1000) {
  process.stderr.write(`--runs must be a whole number from 1 to 1000, got "${values.runs}"\n`);
  process.exit(2);
}
const cli = values.cli;

const dir = mkdtempSync(join(tmpdir(), 'logferry-startup-'));
const cpuFile = join(dir, 'cpu.json');
// Written by the measured process as it exits: its own user + sys CPU time in microseconds.
const CPU_HOOK =
  'data:text/javascript,' +
  encodeURIComponent(
    "import { writeFileSync } from 'node:fs'; process.on('exit', () => { const u = process.cpuUsage(); writeFileSync(process.env.STARTUP_CPU_FILE, String(u.user + u.system)); });",
  );

mkdirSync(join(dir, 'logs'));
let jobs = '';
for (let i = 0; i < 50; i++) {
  jobs +=
    JSON.stringify({
      id: 5000 + i,
      flow_id: 77,
      status: 'succeeded',
      started_at: '2026-12-01T10:00:00.000Z',
      completed_at: '2026-12-01T10:00:01.000Z',
      lines: [{ step: 1, input: { to: 'a@example.com' }, output: { ok: true } }],
    }) + '\n';
}
writeFileSync(join(dir, 'logs', 'jobs.ndjson'), jobs);

function pipeline(name, sink) {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(
    file,
    `data_dir: ${join(dir, `data-${name}`)}
sources:
  jobs: { type: job_log_tail, include: ["${join(dir, 'logs')}/*.ndjson"] }
transforms:
  redacted: { type: redact, inputs: [jobs], mask_data: true, patterns: [email] }
  keyed: { type: path_format, inputs: [redacted], user_id: 5234 }
sinks:
  out:
    inputs: [keyed]
${sink}
`,
  );
  return file;
}

const server = createServer((req, res) => {
  req.once('data', () => server.emit('first-record'));
  req.resume();
  req.on('end', () => res.writeHead(200).end());
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const uri = `http://127.0.0.1:${server.address().port}/ingest`;

const filePipeline = pipeline('file', `    type: file\n    path: ${join(dir, 'out')}`);
const httpPipeline = pipeline('http', `    type: http\n    uri: ${uri}\n    batch: { max_events: 1 }`);

/** One fresh process; resolves to its wall ms (until exit, or until `until` resolves) and CPU ms. */
function once(args, { until, env } = {}) {
  rmSync(cpuFile, { force: true });
  const started = process.hrtime.bigint();
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, NODE_OPTIONS: `--import=${CPU_HOOK}`, STARTUP_CPU_FILE: cpuFile, LOGFERRY_API_ADDRESS: '127.0.0.1:0', ...env },
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  // A process that never gets there (a record refused, a sink that cannot connect) fails the bench instead of hanging it.
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const exited = new Promise((ok) => child.on('close', (code) => ok(code))).finally(() => clearTimeout(timer));
  return (async () => {
    let wallMs;
    if (until) {
      await Promise.race([until, exited.then((code) => Promise.reject(new Error(`${args.join(' ')} exited ${code} before the first record: ${stderr}`)))]);
      wallMs = Number(process.hrtime.bigint() - started) / 1e6;
      child.kill('SIGTERM');
      await exited;
    } else {
      const code = await exited;
      wallMs = Number(process.hrtime.bigint() - started) / 1e6;
      if (code !== 0) throw new Error(`${args.join(' ')} exited ${code}: ${stderr}`);
    }
    let cpuMs;
    try {
      cpuMs = Number(readFileSync(cpuFile, 'utf8')) / 1000;
    } catch {
      cpuMs = NaN;
    }
    return { wallMs, cpuMs };
  })();
}

const cases = [
  { name: 'node -e 0 (floor)', args: ['-e', '0'] },
  { name: '--version', args: [cli, '--version'] },
  { name: '--help', args: [cli, '--help'] },
  { name: 'validate (file sink)', args: [cli, 'validate', '-c', filePipeline] },
  { name: 'validate (http sink)', args: [cli, 'validate', '-c', httpPipeline] },
  {
    name: 'run: first record at http receiver',
    args: [cli, 'run', '-c', httpPipeline],
    before: () => rmSync(join(dir, 'data-http'), { recursive: true, force: true }),
    until: () => new Promise((ok) => server.once('first-record', ok)),
  },
  {
    name: 'run --once: first record at http receiver',
    args: [cli, 'run', '-c', httpPipeline, '--once'],
    before: () => rmSync(join(dir, 'data-http'), { recursive: true, force: true }),
    until: () => new Promise((ok) => server.once('first-record', ok)),
  },
  {
    name: 'run --once (file sink, 50 jobs)',
    args: [cli, 'run', '-c', filePipeline, '--once'],
    before: () => {
      rmSync(join(dir, 'data-file'), { recursive: true, force: true });
      rmSync(join(dir, 'out'), { recursive: true, force: true });
    },
  },
];

const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
const load = loadavg();
const results = [];
try {
  for (const c of cases) {
    const wall = [];
    const cpu = [];
    for (let i = 0; i < runs; i++) {
      c.before?.();
      const r = await once(c.args, { until: c.until?.() });
      wall.push(r.wallMs);
      cpu.push(r.cpuMs);
    }
    wall.sort((a, b) => a - b);
    cpu.sort((a, b) => a - b);
    results.push({
      command: c.name,
      runs,
      wall_p50_ms: quantile(wall, 0.5),
      wall_p90_ms: quantile(wall, 0.9),
      cpu_p50_ms: quantile(cpu, 0.5),
      cpu_p90_ms: quantile(cpu, 0.9),
    });
  }
} finally {
  server.close();
  rmSync(dir, { recursive: true, force: true });
}

const machine = `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}, load average ${load.map((l) => l.toFixed(2)).join(' ')} before, ${loadavg()
  .map((l) => l.toFixed(2))
  .join(' ')} after`;
if (values.json) {
  process.stdout.write(JSON.stringify({ machine, results }, null, 2) + '\n');
} else {
  process.stdout.write(`${machine}\n\n| command | runs | wall p50 ms | wall p90 ms | CPU p50 ms | CPU p90 ms |\n| --- | --- | --- | --- | --- | --- |\n`);
  const ms = (n) => (Number.isNaN(n) ? 'n/a' : n.toFixed(0));
  for (const r of results) {
    process.stdout.write(`| ${r.command} | ${r.runs} | ${ms(r.wall_p50_ms)} | ${ms(r.wall_p90_ms)} | ${ms(r.cpu_p50_ms)} | ${ms(r.cpu_p90_ms)} |\n`);
  }
}
