#!/usr/bin/env -S node --max-semi-space-size=64
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { relative } from 'node:path';
import { parseArgs } from 'node:util';
import { builtinRegistry } from '../builtins.js';
import { pipelineJsonSchema } from '../config/json-schema.js';
import { loadConfig } from '../config/load.js';
import type { PipelineConfig } from '../config/types.js';
import { readDeadLetters, DeadLetterWriter } from '../engine/dead-letters.js';
import { createLogger, type LogFormat, type Logger, type LogLevel } from '../engine/logger.js';
import { Pipeline } from '../engine/pipeline.js';
import { ConfigError, formatProblem, LogferryError, UsageError } from '../errors.js';
import { keyForDocument } from '../records/keys.js';
import { parseText } from '../records/parse.js';
import { MAX_MAX_DEPTH } from '../records/structure.js';
import { loadPlugins } from '../plugin/load.js';
import { pathFormatSchema } from '../transforms/path-format.js';
import { StatusReporter } from './status.js';
import { parse as parseYaml } from 'yaml';

/**
 * 74 (EX_IOERR): `run --once` read everything it could, but an input could not be read or a
 * checkpoint could not be saved. 75 (EX_TEMPFAIL): another logferry holds the data_dir lock.
 */
export const EXIT = { ok: 0, runtime: 1, usage: 2, io: 74, locked: 75, config: 78 } as const;

const HELP = `logferry: ships job history and audit events, one JSON document per job, with end-to-end acknowledgement.

Usage:
  logferry run -c FILE [--once]        run the pipeline (--once: read every input to its end, drain, exit)
  logferry validate -c FILE            check the pipeline file and exit (78 on errors)
  logferry schema [-c FILE]            print the JSON Schema of pipeline files (for editors; -c adds its plugins' types)
  logferry key [-c FILE] DOC.json...   print the key each document would get
  logferry dead-letter list -c FILE    show the dead letters grouped by reason (--json for raw entries)
  logferry bench [--help]              measure throughput, latency, CPU and memory; --plan sizes a deployment

Options:
  -c, --config FILE      pipeline YAML
      --once             batch mode for run
      --log-format F     text (default) or json
      --log-level L      debug, info (default), warn, error
  -h, --help             this help
  -v, --version          the version

Exit codes: 0 ok, 1 runtime failure, 2 usage error, 74 input or checkpoint I/O failed (--once),
75 data_dir locked by another logferry, 78 config error.
`;

interface CliOptions {
  config?: string;
  once: boolean;
  json: boolean;
  logFormat: LogFormat;
  logLevel: LogLevel;
  positionals: string[];
}

function parseCli(argv: string[]): CliOptions & { help: boolean; version: boolean } {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        once: { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
        'log-format': { type: 'string', default: 'text' },
        'log-level': { type: 'string', default: 'info' },
        help: { type: 'boolean', short: 'h', default: false },
        version: { type: 'boolean', short: 'v', default: false },
      },
    });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
  const v = parsed.values;
  const logFormat = v['log-format'];
  if (logFormat !== 'text' && logFormat !== 'json') throw new UsageError(`--log-format must be text or json, got "${logFormat}"`);
  const logLevel = v['log-level'];
  if (!['debug', 'info', 'warn', 'error'].includes(logLevel ?? '')) {
    throw new UsageError(`--log-level must be debug, info, warn or error, got "${logLevel}"`);
  }
  return {
    config: v.config,
    once: v.once ?? false,
    json: v.json ?? false,
    logFormat,
    logLevel: logLevel as LogLevel,
    help: v.help ?? false,
    version: v.version ?? false,
    positionals: parsed.positionals,
  };
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function requireConfig(options: CliOptions, command: string): string {
  if (!options.config) throw new UsageError(`${command} needs a pipeline file: logferry ${command} -c pipeline.yaml`);
  return options.config;
}

async function load(file: string, log: Logger): Promise<PipelineConfig> {
  const config = await loadConfig(file, builtinRegistry(), { loadPlugins });
  for (const warning of config.warnings) log.warn(formatProblem(file, warning));
  return config;
}

async function commandRun(options: CliOptions): Promise<number> {
  const file = requireConfig(options, 'run');
  let reporter: StatusReporter | undefined;
  const log = createLogger({ format: options.logFormat, level: options.logLevel, beforeWrite: () => reporter?.clearLive() });
  const config = await load(file, log);
  const pipeline = new Pipeline(config, { once: options.once, log });
  try {
    await pipeline.build();
  } catch (err) {
    // Building is where environment-dependent settings (keys from env vars) are checked.
    if (err instanceof LogferryError && err.code.startsWith('LF_CONFIG')) throw err;
    throw new LogferryError('LF_SINK_FAILED', `cannot start the pipeline: ${(err as Error).message}`, { cause: err });
  }
  reporter = new StatusReporter(pipeline, log, config.statusIntervalMs, process.stderr.isTTY === true && options.logFormat === 'text');
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      log.error('second signal: exiting now; records in flight were not acknowledged and will be read again', { signal });
      process.exit(EXIT.runtime);
    }
    pipeline.stop(`received ${signal}`);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  log.info(options.once ? 'running until every input is read (--once)' : 'running; stop with Ctrl-C or SIGTERM', {
    config: file,
    data_dir: relative(process.cwd(), config.dataDir) || '.',
  });
  reporter.start();
  try {
    const summary = await pipeline.run();
    reporter.stop();
    log.info(`done: ${reporter.summary()}`, { abandoned: summary.abandoned || undefined });
    if (pipeline.metrics.deadLetters > 0) {
      const dir = relative(process.cwd(), DeadLetterWriter.dirFor(config.dataDir));
      log.warn(`${pipeline.metrics.deadLetters} dead letters in ${dir}/: see them with logferry dead-letter list -c ${file}`);
    }
    return EXIT.ok;
  } finally {
    reporter.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

async function commandValidate(options: CliOptions): Promise<number> {
  const file = requireConfig(options, 'validate');
  const log = createLogger({ format: options.logFormat, level: options.logLevel });
  const config = await load(file, log);
  const count = config.sources.length + config.transforms.length + config.sinks.length;
  process.stdout.write(`${file}: ok (${count} components: ${config.sources.length} sources, ${config.transforms.length} transforms, ${config.sinks.length} sinks)\n`);
  return EXIT.ok;
}

/** With -c, the schema also knows the components of the file's plugins. */
async function commandSchema(options: CliOptions): Promise<number> {
  const registry = builtinRegistry();
  if (options.config) {
    // Only the plugins matter here: the schema is what lets an editor fix the rest of the file.
    const text = await readFile(options.config, 'utf8').catch((err: unknown) => {
      throw new LogferryError('LF_CONFIG_READ', `cannot read ${options.config}: ${(err as Error).message}`);
    });
    const parsed: unknown = parseYaml(text);
    const plugins = (parsed as { plugins?: unknown } | null)?.plugins;
    if (Array.isArray(plugins) && plugins.every((p) => typeof p === 'string')) {
      const problems = await loadPlugins(plugins, options.config, registry);
      if (problems.length > 0) throw new ConfigError(options.config, problems);
    }
  }
  process.stdout.write(JSON.stringify(pipelineJsonSchema(registry), null, 2) + '\n');
  return EXIT.ok;
}

async function commandKey(options: CliOptions): Promise<number> {
  if (options.positionals.length === 0) throw new UsageError('key needs at least one JSON document: logferry key job.json');
  let pathFormat = pathFormatSchema.parse({});
  if (options.config) {
    const config = await load(options.config, createLogger({ level: 'error' }));
    const transform = config.transforms.find((t) => t.type === 'path_format');
    if (transform) pathFormat = pathFormatSchema.parse(transform.options);
  }
  let failures = 0;
  for (const path of options.positionals) {
    try {
      // Parsed as the pipeline parses a line, so ids beyond 2^53 and the digest use the numbers as written.
      const parsed = parseText(await readFile(path, 'utf8'), { source: 'key', file: path }, undefined, { maxDepth: MAX_MAX_DEPTH });
      if (!parsed.ok) throw parsed.error;
      const { doc, receivedDigest, writtenNumbers } = parsed.record;
      const key = keyForDocument(doc, pathFormat, receivedDigest, writtenNumbers);
      process.stdout.write(`${path}\t${key ?? '(not shipped: the job is not final)'}\n`);
    } catch (err) {
      failures++;
      const code = err instanceof LogferryError ? `${err.code}: ` : '';
      process.stderr.write(`${path}: ${code}${(err as Error).message}\n`);
    }
  }
  return failures > 0 ? EXIT.runtime : EXIT.ok;
}

async function commandDeadLetter(options: CliOptions): Promise<number> {
  const [, action] = options.positionals;
  if (action !== 'list') throw new UsageError('usage: logferry dead-letter list -c pipeline.yaml [--json]');
  const file = requireConfig(options, 'dead-letter list');
  const config = await load(file, createLogger({ level: 'error' }));
  const entries = await readDeadLetters(config.dataDir);
  if (options.json) {
    for (const e of entries) process.stdout.write(JSON.stringify(e) + '\n');
    return EXIT.ok;
  }
  if (entries.length === 0) {
    process.stdout.write('no dead letters\n');
    return EXIT.ok;
  }
  const groups = new Map<string, typeof entries>();
  for (const e of entries) {
    const list = groups.get(e.code) ?? [];
    list.push(e);
    groups.set(e.code, list);
  }
  process.stdout.write(`${entries.length} dead letters in ${DeadLetterWriter.dirFor(config.dataDir)}\n`);
  for (const [code, list] of [...groups].sort((a, b) => b[1].length - a[1].length)) {
    process.stdout.write(`\n${code} (${list.length})\n`);
    for (const e of list.slice(0, 5)) {
      const where = e.file !== undefined ? `${relative(process.cwd(), e.file)}${e.offset !== undefined ? `@${e.offset}` : ''}` : e.source;
      process.stdout.write(`  ${where} [${e.component}] ${e.reason}\n`);
    }
    if (list.length > 5) process.stdout.write(`  … and ${list.length - 5} more (--json shows all)\n`);
  }
  return EXIT.ok;
}

export async function main(argv: string[]): Promise<number> {
  let options;
  try {
    // The benchmark has options of its own; loaded only when asked for.
    if (argv[0] === 'bench') return await (await import('../../bench/run.js')).benchMain(argv.slice(1));
    options = parseCli(argv);
    if (options.version) {
      process.stdout.write(`logferry ${version()}\n`);
      return EXIT.ok;
    }
    const [command] = options.positionals;
    if (options.help || !command) {
      (options.help ? process.stdout : process.stderr).write(HELP);
      return options.help ? EXIT.ok : EXIT.usage;
    }
    options.positionals = options.positionals.slice(command === 'dead-letter' ? 0 : 1);
    switch (command) {
      case 'run':
        return await commandRun(options);
      case 'validate':
        return await commandValidate(options);
      case 'schema':
        return await commandSchema(options);
      case 'key':
        return await commandKey(options);
      case 'dead-letter':
        return await commandDeadLetter(options);
      default:
        throw new UsageError(`unknown command "${command}"; try logferry --help`);
    }
  } catch (err) {
    return report(err);
  }
}

function report(err: unknown): number {
  if (err instanceof ConfigError) {
    process.stderr.write(err.message + '\n');
    return EXIT.config;
  }
  if (err instanceof UsageError) {
    process.stderr.write(`logferry: ${err.message}\n`);
    return EXIT.usage;
  }
  if (err instanceof LogferryError) {
    process.stderr.write(`logferry: ${err.code}: ${err.message}\n`);
    return err.code.startsWith('LF_CONFIG') ? EXIT.config : EXIT.runtime;
  }
  process.stderr.write(`logferry: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  return EXIT.runtime;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.exitCode = report(err);
  },
);
