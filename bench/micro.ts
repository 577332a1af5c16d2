import { writeFile } from 'node:fs/promises';
import { availableParallelism, cpus } from 'node:os';
import Benchmark from 'benchmark';
import type { JsonObject, LogRecord } from '../src/engine/types.js';
import { RecordPool, autoThreads, poolSchema } from '../src/engine/record-pool.js';
import { bodyFrom, countDocKeys, countTextKeys } from '../src/records/body.js';
import { compileKeyTemplates, keyForRecord } from '../src/records/keys.js';
import { decodeLine, parseText } from '../src/records/parse.js';
import { createRedactor, redactSchema } from '../src/records/redaction.js';
import { DEFAULT_MAX_DEPTH, scanStructure } from '../src/records/structure.js';
import { mulberry32 } from '../src/testkit/random.js';
import { pathFormatSchema } from '../src/transforms/path-format.js';
import { jobDocument } from './corpus.js';

/**
 * Micro-benchmarks (benchmark.js) of the per-record steps: key formatting, redaction, the check
 * that lets an unchanged document skip JSON.stringify, and the inline-versus-pool cut-over that
 * pool.threshold_bytes is chosen from.
 * `node dist/bench/micro.js [--quick] [--only keys,redaction,body,cut-over] [--json FILE]`.
 */

export interface MicroResult {
  suite: string;
  name: string;
  opsPerSecond: number;
  /** Relative margin of error, percent. */
  rme: number;
  samples: number;
  /** For the cut-over suite: document bytes and records per operation. */
  bytes?: number;
  recordsPerOp?: number;
}

const quick = process.argv.includes('--quick');
const jsonOut = process.argv.includes('--json') ? process.argv[process.argv.indexOf('--json') + 1] : undefined;
const results: MicroResult[] = [];
const random = mulberry32(7);

function job(size: number): { text: string; doc: JsonObject; record: LogRecord } {
  const text = jobDocument(1_000_001, size, random);
  const parsed = parseText(text, { source: 'bench' });
  if (!parsed.ok) throw new Error(parsed.error.message);
  return { text, doc: parsed.record.doc, record: parsed.record };
}

function runSuite(name: string, add: (suite: Benchmark.Suite) => void, extra: (bench: Benchmark) => Partial<MicroResult> = () => ({})): Promise<void> {
  return new Promise((resolve, reject) => {
    const suite = new Benchmark.Suite(name);
    add(suite);
    suite
      .on('cycle', (event: Benchmark.Event) => {
        const bench = event.target as unknown as Benchmark;
        process.stderr.write(`${name}: ${String(bench)}\n`);
        results.push({ suite: name, name: bench.name!, opsPerSecond: Math.round(bench.hz!), rme: Number(bench.stats!.rme.toFixed(1)), samples: bench.stats!.sample.length, ...extra(bench) });
      })
      .on('error', (event: Benchmark.Event) => reject((event.target as unknown as Benchmark).error))
      .on('complete', () => resolve())
      .run({ async: true });
  });
}

const options = quick ? { maxTime: 0.5, minSamples: 5 } : { maxTime: 2 };

async function keyFormatting(): Promise<void> {
  const compiled = compileKeyTemplates(pathFormatSchema.parse({}));
  const jobRecord = job(1024).record;
  const activity = parseText(
    JSON.stringify({ event: 'user_login', timestamp: '2019-09-13 17:24:16 UTC', team: { id: 4848 }, details: { ip_address: '10.0.0.1' } }),
    { source: 'bench' },
  );
  if (!activity.ok) throw new Error('activity sample');
  await runSuite('key formatting', (suite) => {
    suite.add('job key (default layout)', () => keyForRecord(jobRecord, compiled), options);
    suite.add('activity key (default layout, digest precomputed)', () => keyForRecord(activity.record, compiled), options);
  });
}

async function redaction(): Promise<void> {
  const maskOnly = createRedactor(redactSchema.parse({ mask_data: true }));
  const everything = createRedactor(
    redactSchema.parse({ mask_data: true, fields: ['report.workato.job_context.user_email', 'lines.*.input.password'], patterns: ['email', 'ipv4', 'credit_card', 'bearer_token'] }),
  );
  const small = job(1024).doc;
  const medium = job(10 * 1024).doc;
  const large = job(100 * 1024).doc;
  await runSuite('redaction', (suite) => {
    suite.add('mask_data, 1 kB job, nothing masked', () => maskOnly(small), options);
    suite.add('mask_data, 10 kB job, 1 of 5 steps masked', () => maskOnly(medium), options);
    suite.add('mask_data + 2 fields + 4 patterns, 1 kB job', () => everything(small), options);
    suite.add('mask_data + 2 fields + 4 patterns, 100 kB job', () => everything(large), options);
  });
}

async function unchangedBody(): Promise<void> {
  const { text, doc } = job(1024);
  const big = job(100 * 1024);
  await runSuite('body of an unchanged document', (suite) => {
    suite.add('1 kB: JSON.stringify', () => JSON.stringify(doc), options);
    suite.add('1 kB: duplicate-key check (reuse the bytes read)', () => countTextKeys(text) === countDocKeys(doc), options);
    suite.add('100 kB: JSON.stringify', () => JSON.stringify(big.doc), options);
    suite.add('100 kB: duplicate-key check (reuse the bytes read)', () => countTextKeys(big.text) === countDocKeys(big.doc), options);
    // What parse.ts runs on every line before JSON.parse: max_depth, the key count the check above
    // then reuses, and where the key numbers are written.
    suite.add('1 kB: structure scan (max_depth, keys, key numbers)', () => scanStructure(text, DEFAULT_MAX_DEPTH), options);
    suite.add('100 kB: structure scan (max_depth, keys, key numbers)', () => scanStructure(big.text, DEFAULT_MAX_DEPTH), options);
  });
}

/**
 * Per record on the main thread: inline does the whole job (parse, mask, key, stringify); the
 * pool only hands the line over and takes the body back. Pool records/s are with a full pool
 * (several records in flight), as in a running pipeline.
 */
async function cutOver(): Promise<void> {
  const sizes = quick ? [4096, 65536, 1048576] : [1024, 4096, 16384, 65536, 262144, 1048576];
  const redactOptions = redactSchema.parse({ mask_data: true });
  const keyOptions = pathFormatSchema.parse({});
  const redact = createRedactor(redactOptions);
  const compiled = compileKeyTemplates(keyOptions);
  // At least one worker, also where `auto` turns the pool off (two cores): the cut-over is what is measured.
  const pool = await RecordPool.start(poolSchema.parse({ threads: Math.max(1, autoThreads()) }), {
    configFile: 'micro.yaml',
    plugins: [],
    transforms: [
      { id: 'redacted', type: 'redact', options: redactOptions, inputs: ['jobs'] },
      { id: 'keyed', type: 'path_format', options: keyOptions, inputs: ['redacted'] },
    ],
    sinks: [{ id: 'out', inputs: ['keyed'], gzip: false }],
  }, (err) => {
    throw err;
  });
  await pool.warmUp();
  const inFlight = pool.threads * 2;
  try {
    for (const size of sizes) {
      const line = Buffer.from(jobDocument(2_000_000, size, random));
      const origin = { source: 'bench' };
      await runSuite(
        `cut-over ${size >= 1048576 ? size / 1048576 + ' MiB' : size / 1024 + ' KiB'}`,
        (suite) => {
          suite.add(
            'inline (main thread)',
            () => {
              // What the engine does with a line on the main thread (parse.ts, redact, path_format, body.ts).
              // parseText with the bytes keeps the text as the engine does, counting keys in its structure scan.
              const text = decodeLine(line)!;
              const parsed = parseText(text, origin, Buffer.from(line));
              if (!parsed.ok) throw new Error('parse');
              const doc = redact(parsed.record.doc);
              keyForRecord({ ...parsed.record, doc }, compiled);
              bodyFrom(parsed.record.sourceText, doc);
            },
            options,
          );
          suite.add(
            `pool (${pool.threads} threads, ${inFlight} in flight)`,
            {
              defer: true,
              fn: (deferred: Benchmark.Deferred) => {
                // Each handed-over line is moved to a worker, so each run sends fresh copies.
                const runs = Array.from({ length: inFlight }, () => pool.prepare('jobs', Buffer.from(line), origin));
                // Detached: Benchmark.js times the run until deferred.resolve(). A failing line would
                // leave it waiting for good, so it ends the benchmark with the error instead.
                void Promise.all(runs).then(
                  () => deferred.resolve(),
                  (err: unknown) => {
                    process.stderr.write(`the pool failed a line: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
                    process.exit(1);
                  },
                );
              },
              ...options,
            },
          );
        },
        (bench) => ({ bytes: size, recordsPerOp: bench.name!.startsWith('pool') ? inFlight : 1 }),
      );
    }
  } finally {
    await pool.close();
  }
}

const SUITES: Record<string, () => Promise<void>> = { keys: keyFormatting, redaction, body: unchangedBody, 'cut-over': cutOver };

async function main(): Promise<void> {
  process.stderr.write(`micro-benchmarks on ${availableParallelism()} x ${cpus()[0]?.model ?? 'unknown'}, Node ${process.version}${quick ? ' (--quick)' : ''}\n`);
  // --only keys,redaction,body,cut-over picks suites.
  const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1]!.split(',') : Object.keys(SUITES);
  for (const name of only) {
    const suite = SUITES[name];
    if (!suite) throw new Error(`unknown suite "${name}"; choose from ${Object.keys(SUITES).join(', ')}`);
    await suite();
  }
  process.stdout.write(formatMicroTable(results));
  if (jsonOut) await writeFile(jsonOut, JSON.stringify({ node: process.version, cpus: availableParallelism(), model: cpus()[0]?.model, results }, null, 2) + '\n');
}

export function formatMicroTable(rows: readonly MicroResult[]): string {
  const lines = ['| suite | case | ops/s | ±% | records/s | MiB/s |', '| --- | --- | --- | --- | --- | --- |'];
  for (const r of rows) {
    const records = r.recordsPerOp ? r.opsPerSecond * r.recordsPerOp : undefined;
    const mib = records && r.bytes ? ((records * r.bytes) / 1048576).toFixed(1) : '';
    lines.push(`| ${r.suite} | ${r.name} | ${r.opsPerSecond.toLocaleString('en-US')} | ${r.rme} | ${records ? records.toLocaleString('en-US') : ''} | ${mib} |`);
  }
  return lines.join('\n') + '\n';
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
