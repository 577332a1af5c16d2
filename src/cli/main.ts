#!/usr/bin/env -S node --max-semi-space-size=64
import { createHash } from 'node:crypto';
import { readFileSync, realpathSync } from 'node:fs';
import * as nodeModule from 'node:module';
import { open, readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { PipelineConfig } from '../config/types.js';
import { acquireDataDirLock, dataDirProblem } from '../engine/data-dir-lock.js';
import type { DeadLetterEntry } from '../engine/dead-letters.js';
import { createLogger, type LogFormat, type Logger, type LogLevel } from '../engine/logger.js';
import type { OtelLogExport } from '../engine/otel-logs.js';
import type { Pipeline } from '../engine/pipeline.js';
import { collectSecrets, otelSecrets, SecretScrubber } from '../engine/secrets.js';
import { ConfigError, formatProblem, LogferryError, UsageError } from '../errors.js';
import { plural } from '../plural.js';
import { hasSemiSpaceFlag, rerunWithSemiSpaceFlag } from './node-flags.js';
import type { LogferryManifest } from './plugin-new.js';
import type { ReplayOutcome } from './replay.js';
import { StatusReporter } from './status.js';

/*
 * Start-up (issue 11): the modules below the CLI are imported by the commands that use them, not
 * here. `--version` and `--help` load none of them; `validate` loads the configuration and the
 * components' schemas (zod, yaml) but no engine; each sink loads its client library (undici, the
 * AWS SDK, OpenTelemetry) only when a pipeline builds it. test/integration/startup-imports.test.ts
 * guards this; bench/startup.mjs measures it.
 */
const configModules = async () => {
  const [builtins, config, plugins] = await Promise.all([import('../builtins.js'), import('../config/load.js'), import('../plugin/load.js')]);
  return { builtinRegistry: builtins.builtinRegistry, loadConfig: config.loadConfig, loadPlugins: plugins.loadPlugins };
};

/**
 * 65 (EX_DATAERR): `run --once` finished, but records of this run went to the dead letters.
 * 69 (EX_UNAVAILABLE): a destination failed its health check (`run --require-healthy`,
 * `validate --check-destinations`).
 * 74 (EX_IOERR): `run --once` read everything it could, but an input could not be read or a
 * checkpoint could not be saved. 75 (EX_TEMPFAIL): `run --once` ended with records held for the
 * next run (a destination still failing at --max-wait, or a stop whose shutdown_timeout ran out),
 * or another logferry holds the data_dir lock: trying again later is the fix in both cases.
 */
export const EXIT = { ok: 0, runtime: 1, usage: 2, deadLetters: 65, unavailable: 69, io: 74, held: 75, locked: 75, config: 78 } as const;

/** `--max-wait` when not given: a minute of a failing destination ends a `--once` run with 75. */
export const DEFAULT_MAX_WAIT_S = 60;
/** Longest `--max-wait`: a week, as for `retry.max_duration_s`. */
export const MAX_MAX_WAIT_S = 7 * 24 * 3600;

/** What the end of a run says about its exit code (runExitCode). */
export interface RunOutcome {
  once: boolean;
  /** Sinks `--max-wait` gave up on, with their last reason. */
  heldBy: readonly { sink: string; reason?: string }[];
  /** Records left unacknowledged when the run ended (the next run reads them again). */
  abandoned: number;
  problems: readonly { code: 'LF_INPUT_UNREADABLE' | 'LF_CHECKPOINT_FAILED'; message: string }[];
  /** Dead letters written by this run (older ones do not count). */
  deadLetters: number;
}

/** The exit code, and the last log line that explains it (none for 0). */
export interface RunExit {
  code: number;
  errorCode?: 'LF_DESTINATION_HELD' | 'LF_INPUT_UNREADABLE' | 'LF_CHECKPOINT_FAILED' | 'LF_RUN_HAD_DEAD_LETTERS';
  message?: string;
}

/**
 * The exit code of a run that ended without an internal failure (those throw: exit 1). When
 * several apply, the one that needs acting on first wins: 75 (records are still to be sent: run
 * again once the destination answers) over 74 (an input or a checkpoint could not be read or
 * saved) over 65 (records were refused for good and are in the dead letters). The log says every
 * one of them anyway. A follow-mode run (without --once) exits 0, or 74 when its final
 * checkpoint could not be saved: it ends on a stop request, and its dead letters and held records
 * are the normal course of a long run.
 */
export function runExitCode(outcome: RunOutcome): RunExit {
  const problems = outcome.problems.filter((p) => outcome.once || p.code === 'LF_CHECKPOINT_FAILED');
  if (outcome.once && (outcome.heldBy.length > 0 || outcome.abandoned > 0)) {
    const why =
      outcome.heldBy.length > 0
        ? `${outcome.heldBy.map((s) => `sink ${s.sink} was still failing${s.reason ? ` (${s.reason})` : ''}`).join('; ')} when --max-wait ran out`
        : 'the run was stopped before its records were delivered';
    return {
      code: EXIT.held,
      errorCode: 'LF_DESTINATION_HELD',
      message: `${why}: ${plural(outcome.abandoned, 'record was', 'records were')} not acknowledged and the next run sends them`,
    };
  }
  if (problems.length > 0) {
    return { code: EXIT.io, errorCode: problems[0]!.code, message: problems.map((p) => p.message).join('; ') };
  }
  if (outcome.once && outcome.deadLetters > 0) {
    return {
      code: EXIT.deadLetters,
      errorCode: 'LF_RUN_HAD_DEAD_LETTERS',
      message: `${plural(outcome.deadLetters, 'record')} of this run went to the dead letters`,
    };
  }
  return { code: EXIT.ok };
}

/** `--max-wait SECONDS`: a positive number of seconds, at most MAX_MAX_WAIT_S. */
export function parseMaxWait(text: string): number {
  const seconds = Number(text);
  if (text.trim() === '' || !Number.isFinite(seconds) || seconds <= 0 || seconds > MAX_MAX_WAIT_S) {
    throw new UsageError(`--max-wait must be a number of seconds above 0 and at most ${MAX_MAX_WAIT_S} (7 days), got "${text}"`);
  }
  return seconds;
}

/**
 * The secrets of the loaded pipeline (filled once its file is read): every log line and the
 * error report go through it, so a destination that echoes a token cannot put it on stderr.
 */
const scrubber = new SecretScrubber(otelSecrets(process.env));

/**
 * A bound on all start-up checks together, in case a plugin's check ignores its own timeout: each
 * built-in check gives up on its own far sooner (at most 1 minute).
 */
const HEALTHCHECK_BOUND_MS = 2 * 60_000;
const scrub = (text: string): string => scrubber.scrub(text);

const HELP = `logferry: ships job history and audit events, one JSON document per job, with end-to-end acknowledgement.

Usage:
  logferry run -c FILE [--once [--max-wait S]] [--require-healthy]
                                       run the pipeline (--once: read every input to its end, drain, exit;
                                       --require-healthy: exit 69 at start when a destination fails its health check)
  logferry validate -c FILE            check the pipeline file and exit (78 on errors)
      [--check-destinations]           also build the sinks and run their health checks (69 when one fails)
  logferry schema [-c FILE]            print the JSON Schema of pipeline files (for editors; -c adds its plugins' types)
  logferry key [-c FILE] DOC.json...   print the key each document would get
  logferry dead-letter list -c FILE    show the dead letters grouped by reason (--json for raw entries)
  logferry dead-letter show -c FILE [N|--all]
                                       print dead letter N (default: the last; --all: every one), with
                                       a line kept by reference read back from its file
  logferry dead-letter replay -c FILE [--code C] [--component NAME] [--since TIME] [--dry-run] [--max-wait S]
                                       send dead letters again: to the sink that rejected them, or through
                                       the transform that did and what follows it; an entry leaves the dead
                                       letters once delivered or dead-lettered again. Exit 0 all delivered,
                                       65 some dead-lettered again, 75 a destination still failing after
                                       --max-wait seconds (default 60; the rest stay) or data_dir locked
  logferry plugin new NAME [--dir DIR] write a sink plugin package (logferry-plugin-NAME, in ./logferry-plugin-NAME
                                       or DIR) that builds and passes the conformance kit outside this repository
  logferry bench [--help]              measure throughput, latency, CPU and memory; --plan sizes a deployment

Options:
  -c, --config FILE      pipeline YAML
      --once             batch mode for run
      --max-wait S       with --once or dead-letter replay: give up on a destination failing for S
                         seconds (default 60); this run exits 75 and leaves its records for the next
      --log-format F     text (default) or json
      --log-level L      debug, info (default), warn, error
  -h, --help             this help
  -v, --version          the version

Exit codes: 0 ok, 1 runtime failure, 2 usage error, 65 run --once finished but records of this run
went to the dead letters, 69 a destination failed its health check (run --require-healthy,
validate --check-destinations), 74 I/O failure (run --once could not read an input; run could not
save its final checkpoint, or its output pipe closed), 75 run --once left records for the next run
(a destination still failing at --max-wait, or stopped before they were delivered) or data_dir
locked by another logferry, 78 config error. When several apply: 75, then 74, then 65.
`;

interface CliOptions {
  config?: string;
  once: boolean;
  requireHealthy: boolean;
  checkDestinations: boolean;
  /** `--max-wait`, in seconds; undefined when not given. */
  maxWaitS?: number;
  json: boolean;
  all: boolean;
  /** dead-letter replay's filters and limits. */
  replay: { code?: string; component?: string; since?: string; dryRun: boolean };
  /** plugin new's --dir. */
  dir?: string;
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
      tokens: true,
      options: {
        config: { type: 'string', short: 'c' },
        once: { type: 'boolean', default: false },
        'require-healthy': { type: 'boolean', default: false },
        'check-destinations': { type: 'boolean', default: false },
        'max-wait': { type: 'string' },
        json: { type: 'boolean', default: false },
        all: { type: 'boolean', default: false },
        code: { type: 'string' },
        component: { type: 'string' },
        since: { type: 'string' },
        'dry-run': { type: 'boolean', default: false },
        dir: { type: 'string' },
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
  refuseMisplacedOptions(parsed.positionals, parsed.tokens ?? []);
  const logFormat = v['log-format'];
  if (logFormat !== 'text' && logFormat !== 'json') throw new UsageError(`--log-format must be text or json, got "${logFormat}"`);
  const logLevel = v['log-level'];
  if (!['debug', 'info', 'warn', 'error'].includes(logLevel ?? '')) {
    throw new UsageError(`--log-level must be debug, info, warn or error, got "${logLevel}"`);
  }
  const maxWait = v['max-wait'];
  const once = v.once ?? false;
  if (maxWait !== undefined && !once && parsed.positionals[0] === 'run') {
    throw new UsageError('--max-wait applies to run --once and dead-letter replay only: a run without --once holds the records of a failing destination for as long as it fails');
  }
  return {
    config: v.config,
    once,
    maxWaitS: maxWait === undefined ? undefined : parseMaxWait(maxWait),
    requireHealthy: v['require-healthy'] ?? false,
    checkDestinations: v['check-destinations'] ?? false,
    json: v.json ?? false,
    all: v.all ?? false,
    replay: { code: v.code, component: v.component, since: v.since, dryRun: v['dry-run'] ?? false },
    dir: v.dir,
    logFormat,
    logLevel: logLevel as LogLevel,
    help: v.help ?? false,
    version: v.version ?? false,
    positionals: parsed.positionals,
  };
}

/** The options of each command (beyond -c, --log-format, --log-level, --help, --version, which all take). */
const COMMAND_OPTIONS: Readonly<Record<string, readonly string[]>> = {
  run: ['once', 'max-wait', 'require-healthy'],
  validate: ['check-destinations'],
  schema: [],
  key: [],
  'dead-letter list': ['json'],
  'dead-letter show': ['json', 'all'],
  'dead-letter replay': ['code', 'component', 'since', 'dry-run', 'max-wait'],
  'plugin new': ['dir'],
};
/** Commands of two words: the second says what to do. */
const COMMAND_GROUPS = new Set(['dead-letter', 'plugin']);
const COMMON_OPTIONS = new Set(['config', 'log-format', 'log-level', 'help', 'version']);

/**
 * An option given to a command that does not take it is a usage error, not silently ignored:
 * `run --dry-run` would ship for real, `dead-letter list --code X` would list everything.
 */
function refuseMisplacedOptions(positionals: readonly string[], tokens: readonly { kind: string; name?: string }[]): void {
  const command = COMMAND_GROUPS.has(positionals[0] ?? '') ? `${positionals[0]} ${positionals[1] ?? ''}` : positionals[0];
  const allowed = command === undefined ? undefined : COMMAND_OPTIONS[command];
  if (allowed === undefined) return; // no or an unknown command: reported with its own message
  for (const token of tokens) {
    if (token.kind !== 'option' || token.name === undefined || COMMON_OPTIONS.has(token.name) || allowed.includes(token.name)) continue;
    const takers = Object.entries(COMMAND_OPTIONS)
      .filter(([, names]) => names.includes(token.name!))
      .map(([name]) => name);
    throw new UsageError(`--${token.name} does not apply to ${command}${takers.length > 0 ? ` (it applies to: ${takers.join(', ')})` : ''}`);
  }
}

function manifest(): LogferryManifest {
  return JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as LogferryManifest;
}

function version(): string {
  return manifest().version;
}

const PLUGIN_USAGE = 'usage: logferry plugin new NAME [--dir DIR]';

async function commandPlugin(options: CliOptions): Promise<number> {
  const [, action, name, ...rest] = options.positionals;
  if (action !== 'new' || name === undefined || rest.length > 0) throw new UsageError(PLUGIN_USAGE);
  const { createPlugin, nextSteps } = await import('./plugin-new.js');
  const result = await createPlugin(name, options.dir, manifest());
  process.stdout.write(nextSteps(result) + '\n');
  return EXIT.ok;
}

function requireConfig(options: CliOptions, command: string): string {
  if (!options.config) throw new UsageError(`${command} needs a pipeline file: logferry ${command} -c pipeline.yaml`);
  return options.config;
}

/**
 * `readOnly`: the command only reads the file's settings (dead letters, keys), so it skips the
 * checks of what `run` needs (TLS files, the HMAC key variable, include folders): an operator can
 * look at dead letters without the service's secrets in the environment.
 */
async function load(file: string, log: Logger, readOnly = false): Promise<PipelineConfig> {
  const { builtinRegistry, loadConfig, loadPlugins } = await configModules();
  const config = await loadConfig(file, builtinRegistry(), { loadPlugins, preflight: !readOnly });
  scrubber.add(collectSecrets([...config.sources, ...config.transforms, ...config.sinks]));
  for (const warning of config.warnings) log.warn(formatProblem(file, warning));
  return config;
}

/**
 * Whether logferry's own logs go out over OTLP too: an OTLP endpoint is set (the standard
 * variables), and neither OTEL_SDK_DISABLED=true nor OTEL_LOGS_EXPORTER=none turns it off.
 */
export function otelLogsWanted(env: NodeJS.ProcessEnv): boolean {
  const endpoint = env.OTEL_EXPORTER_OTLP_LOGS_ENDPOINT?.trim() || env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim();
  if (!endpoint) return false;
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return false;
  return env.OTEL_LOGS_EXPORTER?.trim().toLowerCase() !== 'none';
}

/**
 * The logger of a command that ships records (run, dead-letter replay), and what ends it. With
 * an OTLP endpoint set, each line is also an OpenTelemetry log record (engine/otel-logs.ts, only
 * imported then: without the variables no OpenTelemetry code loads); `close` sends the last ones.
 */
async function serviceLogger(options: CliOptions, beforeWrite?: () => void): Promise<{ log: Logger; close(): Promise<void> }> {
  let otel: OtelLogExport | undefined;
  const log = createLogger({ format: options.logFormat, level: options.logLevel, beforeWrite, scrub, forward: (entry) => otel?.emit(entry) });
  if (!otelLogsWanted(process.env)) return { log, close: () => Promise.resolve() };
  const { OtelLogExport } = await import('../engine/otel-logs.js');
  otel = new OtelLogExport({ version: version(), scrub, report: (level, msg, fields) => log[level](msg, fields) });
  const protocol = (process.env.OTEL_EXPORTER_OTLP_LOGS_PROTOCOL ?? process.env.OTEL_EXPORTER_OTLP_PROTOCOL)?.trim();
  if (protocol && protocol !== 'http/protobuf') {
    log.warn(`OTEL_EXPORTER_OTLP_PROTOCOL is "${protocol}", but logferry exports its own logs as http/protobuf only; point the endpoint at an OTLP/HTTP receiver (port 4318 on the OpenTelemetry Collector)`);
  }
  const started = otel;
  return { log, close: () => started.shutdown() };
}

async function commandRun(options: CliOptions): Promise<number> {
  const file = requireConfig(options, 'run');
  let reporter: StatusReporter | undefined;
  const { log, close } = await serviceLogger(options, () => reporter?.clearLive());
  try {
    const config = await load(file, log);
    // One process per data_dir (exit 75 otherwise); taking the lock also proves data_dir is writable.
    const lock = await acquireDataDirLock(config.dataDir, log);
    try {
      return await runLocked(options, file, config, log, (r) => (reporter = r));
    } finally {
      await lock.release();
    }
  } finally {
    await close();
  }
}

async function runLocked(
  options: CliOptions,
  file: string,
  config: PipelineConfig,
  log: Logger,
  setReporter: (reporter: StatusReporter) => void,
): Promise<number> {
  const maxWaitMs = options.once ? (options.maxWaitS ?? DEFAULT_MAX_WAIT_S) * 1000 : undefined;
  const [{ Pipeline }, { anyFailed, checkDestinations }, { DeadLetterWriter }] = await Promise.all([
    import('../engine/pipeline.js'),
    import('../engine/healthchecks.js'),
    import('../engine/dead-letters.js'),
  ]);
  const pipeline = new Pipeline(config, { once: options.once, log, scrubber, maxWaitMs });
  // What building throws keeps its own code (LF_CONFIG_ENV, LF_POOL_FAILED, LF_COMPONENT_BUILD_FAILED
  // naming the component...), and report() turns that code into the exit code.
  await pipeline.build();
  // Before anything is read: with --require-healthy a failed check ends the run with no checkpoint moved.
  const checks = await checkDestinations(pipeline.sinkInstances(), log, AbortSignal.timeout(HEALTHCHECK_BOUND_MS));
  if (options.requireHealthy && anyFailed(checks)) {
    await pipeline.discard();
    const failed = checks.filter((c) => c.result?.status === 'failed').map((c) => c.sink);
    log.error(`exit ${EXIT.unavailable}: the health check of ${failed.join(', ')} failed (--require-healthy); nothing was read`, { code: 'LF_HEALTHCHECK_FAILED' });
    return EXIT.unavailable;
  }
  const reporter = new StatusReporter(pipeline, log, config.statusIntervalMs, {
    tty: process.stderr.isTTY === true && options.logFormat === 'text',
    format: options.logFormat,
  });
  setReporter(reporter);
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
  // After the signal handlers: a stop while OpenTelemetry loads is a clean stop, not a kill.
  let observability: Observability | undefined;
  try {
    observability = await startObservability(options, config, pipeline, log);
  } catch (err) {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await pipeline.discard();
    throw err;
  }
  const checkpointsBefore = options.once ? await savedCheckpoints(config.dataDir) : [];
  log.info(options.once ? 'running until every input is read (--once)' : 'running; stop with Ctrl-C or SIGTERM', {
    config: file,
    data_dir: relative(process.cwd(), config.dataDir) || '.',
  });
  reporter.start();
  try {
    const summary = await pipeline.run();
    reporter.stop();
    const done = reporter.summary();
    log.info(`done: ${done.text}`, { abandoned: summary.abandoned || undefined, ...done.fields });
    if (pipeline.metrics.deadLetters > 0) {
      const dir = relative(process.cwd(), DeadLetterWriter.dirFor(config.dataDir));
      log.warn(`${plural(pipeline.metrics.deadLetters, 'dead letter')} in ${dir}/: see them with logferry dead-letter list -c ${file}`);
    }
    // A final checkpoint that could not be saved is reported in any mode; an unreadable input, held
    // records and dead letters only by --once (a follow run says so in its log as they happen).
    const exit = runExitCode({
      once: options.once,
      heldBy: summary.heldBy,
      abandoned: summary.abandoned,
      problems: summary.problems,
      deadLetters: pipeline.metrics.deadLetters,
    });
    if (exit.code === EXIT.ok && options.once && pipeline.metrics.recordsIn === 0 && checkpointsBefore.length > 0) {
      const dir = relative(process.cwd(), join(config.dataDir, 'checkpoints')) || '.';
      log.info(
        `nothing new since the last run: every input was already read up to its checkpoint in ${dir}/. ` +
          'To read the inputs again from the start, point data_dir at a fresh folder (or remove that one; records are then sent again)',
        { checkpoints: checkpointsBefore.length },
      );
    }
    if (exit.message !== undefined) {
      const line = `exit ${exit.code}: ${exit.message}`;
      if (exit.code === EXIT.deadLetters) log.warn(line, { code: exit.errorCode });
      else log.error(line, { code: exit.errorCode });
    }
    return exit.code;
  } finally {
    reporter.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await observability?.close();
  }
}

/** The operators' API and the metrics behind it, and OTLP export of metrics: what is on of them. */
interface Observability {
  close(): Promise<void>;
}

/**
 * Starts the operators' API (`api.enabled`, by default on in follow mode and off with --once) and
 * the metrics (for the API's /metrics, and pushed over OTLP when OTEL_EXPORTER_OTLP_*ENDPOINT is
 * set). OpenTelemetry is imported here, only when one of them is on: without them a run loads none of it.
 */
async function startObservability(options: CliOptions, config: PipelineConfig, pipeline: Pipeline, log: Logger): Promise<Observability | undefined> {
  const apiOn = config.api?.enabled ?? !options.once;
  const { otlpMetricsWanted } = await import('../engine/telemetry-names.js');
  if (!apiOn && !otlpMetricsWanted(process.env)) return undefined;
  const { startTelemetry } = await import('../engine/telemetry.js');
  const telemetry = await startTelemetry({ pipeline, config, version: version(), log, prometheus: apiOn });
  if (telemetry.otlpEndpoint !== undefined) log.info('exporting metrics over OTLP', { endpoint: telemetry.otlpEndpoint });
  if (!apiOn) return { close: () => telemetry.shutdown() };
  const [{ startApiServer }, { DEFAULT_API_ADDRESS, parseApiAddress }] = await Promise.all([import('./api-server.js'), import('../config/load.js')]);
  // LOGFERRY_API_ADDRESS replaces api.address: one pipeline file for many containers or instances on a host.
  const fromEnv = process.env.LOGFERRY_API_ADDRESS || undefined;
  let server;
  try {
    if (fromEnv !== undefined && parseApiAddress(fromEnv) === undefined) {
      throw new UsageError(`LOGFERRY_API_ADDRESS must be host:port such as 127.0.0.1:9598 or [::1]:9598 (port 0 takes any free port), got "${fromEnv}"`);
    }
    const address = fromEnv ?? config.api?.address ?? DEFAULT_API_ADDRESS;
    server = await startApiServer({ address, setting: fromEnv ? 'LOGFERRY_API_ADDRESS' : 'api.address', pipeline, config, telemetry, log, scrub });
  } catch (err) {
    await telemetry.shutdown();
    throw err;
  }
  log.info("operators' API listening", { address: server.url, endpoints: '/health /ready /metrics /status' });
  return {
    async close() {
      await server.close();
      await telemetry.shutdown();
    },
  };
}

/** The sources' checkpoint files in data_dir, so a --once run that reads nothing can say why. */
async function savedCheckpoints(dataDir: string): Promise<string[]> {
  const names = await readdir(join(dataDir, 'checkpoints')).catch(() => [] as string[]);
  return names.filter((name) => name.endsWith('.json'));
}

async function commandValidate(options: CliOptions): Promise<number> {
  const file = requireConfig(options, 'validate');
  const log = createLogger({ format: options.logFormat, level: options.logLevel, scrub });
  const config = await load(file, log);
  // What run would refuse about data_dir, found without writing anything.
  const dataDir = dataDirProblem(config.dataDir);
  if (dataDir) throw new ConfigError(file, [{ path: 'data_dir', message: `${dataDir} (LF_DATA_DIR_INVALID)` }], 'LF_DATA_DIR_INVALID');
  const count = config.sources.length + config.transforms.length + config.sinks.length;
  const counts = [plural(config.sources.length, 'source'), plural(config.transforms.length, 'transform'), plural(config.sinks.length, 'sink')];
  process.stdout.write(`${file}: ok (${plural(count, 'component')}: ${counts.join(', ')})\n`);
  return options.checkDestinations ? checkDestinationsOnly(config, log) : EXIT.ok;
}

/** `validate --check-destinations`: the sinks alone are built and checked; no source, no lock, no data read. */
async function checkDestinationsOnly(config: PipelineConfig, log: Logger): Promise<number> {
  const signal = AbortSignal.timeout(HEALTHCHECK_BOUND_MS);
  const { anyFailed, buildSinksOnly, checkDestinations } = await import('../engine/healthchecks.js');
  // A sink that cannot be built fails with its own code, or LF_COMPONENT_BUILD_FAILED naming it.
  const built = await buildSinksOnly(config, log, signal);
  try {
    const checks = await checkDestinations(built.sinks, log, signal);
    for (const { sink, result } of checks) {
      process.stdout.write(scrub(`${sink}: ${result ? `${result.status}: ${result.message}` : 'not checked (no health check, or healthcheck.enabled: false)'}`) + '\n');
    }
    return anyFailed(checks) ? EXIT.unavailable : EXIT.ok;
  } finally {
    await built.close();
  }
}

/** With -c, the schema also knows the components of the file's plugins. */
async function commandSchema(options: CliOptions): Promise<number> {
  const [{ builtinRegistry, loadPlugins }, { pipelineJsonSchema }, { parse: parseYaml }] = await Promise.all([
    configModules(),
    import('../config/json-schema.js'),
    import('yaml'),
  ]);
  const registry = builtinRegistry();
  if (options.config) {
    // Only the plugins matter here: the schema is what lets an editor fix the rest of the file.
    const text = await readFile(options.config, 'utf8').catch((err: unknown) => {
      throw new LogferryError('LF_CONFIG_READ', `cannot read ${options.config}: ${(err as Error).message}`);
    });
    let parsed: unknown;
    try {
      parsed = parseYaml(text, { maxAliasCount: 100 });
    } catch {
      parsed = undefined; // The file's own problems are for validate; the schema still helps fix them.
    }
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
  const [{ pathFormatSchema }, { parseText }, { keyForDocument }, { MAX_MAX_DEPTH }] = await Promise.all([
    import('../transforms/path-format.js'),
    import('../records/parse.js'),
    import('../records/keys.js'),
    import('../records/structure.js'),
  ]);
  let pathFormat = pathFormatSchema.parse({});
  if (options.config) {
    const config = await load(options.config, createLogger({ level: 'error' }), true);
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

const DEAD_LETTER_USAGE =
  'usage: logferry dead-letter list -c pipeline.yaml [--json] | logferry dead-letter show -c pipeline.yaml [N|--all] [--json] | ' +
  'logferry dead-letter replay -c pipeline.yaml [--code C] [--component NAME] [--since TIME] [--dry-run] [--max-wait S]';

/** How replay ends: 65 (EX_DATAERR) when entries were dead-lettered again, 75 (EX_TEMPFAIL) when some stay to be sent. */
const REPLAY_EXIT: Record<ReplayOutcome, number> = { delivered: EXIT.ok, 'dead-lettered-again': EXIT.deadLetters, held: EXIT.held };

async function commandReplay(options: CliOptions): Promise<number> {
  const file = requireConfig(options, 'dead-letter replay');
  if (options.positionals.length > 2) throw new UsageError(DEAD_LETTER_USAGE);
  const { code, component, since, dryRun } = options.replay;
  let sinceMs: number | undefined;
  if (since !== undefined) {
    sinceMs = Date.parse(since);
    if (Number.isNaN(sinceMs)) throw new UsageError(`--since must be a date and time such as 2024-05-01T12:00:00Z, got "${since}"`);
  }
  const maxWaitS = options.maxWaitS ?? DEFAULT_MAX_WAIT_S;
  const { replayDeadLetters } = await import('./replay.js');
  const { log, close } = await serviceLogger(options);
  try {
    // Dry-run only reads (like list); a replay builds the sinks, so it needs what run needs.
    const config = await load(file, log, dryRun);
    const print = (line: string): void => void process.stdout.write(scrub(line) + '\n');
    const replay = { code, component, sinceMs, dryRun, maxWaitMs: maxWaitS * 1000, file };
    if (dryRun) return REPLAY_EXIT[await replayDeadLetters(config, replay, log, scrubber, print)];
    // One process per data_dir: run and replay never append to or rewrite the dead letters at once (exit 75).
    const lock = await acquireDataDirLock(config.dataDir, log);
    try {
      return REPLAY_EXIT[await replayDeadLetters(config, replay, log, scrubber, print)];
    } finally {
      await lock.release();
    }
  } finally {
    await close();
  }
}

async function commandDeadLetter(options: CliOptions): Promise<number> {
  const [, action, ...rest] = options.positionals;
  if (action === 'replay') return commandReplay(options);
  if (action !== 'list' && action !== 'show') throw new UsageError(DEAD_LETTER_USAGE);
  const file = requireConfig(options, `dead-letter ${action}`);
  // Read-only: no lock on data_dir, nothing written, no preflight.
  const config = await load(file, createLogger({ level: 'error' }), true);
  const { readDeadLetters, DeadLetterWriter } = await import('../engine/dead-letters.js');
  const entries = await readDeadLetters(config.dataDir);
  return action === 'list' ? listDeadLetters(entries, DeadLetterWriter.dirFor(config.dataDir), options) : showDeadLetters(entries, rest, options);
}

function listDeadLetters(entries: DeadLetterEntry[], deadLetterDir: string, options: CliOptions): number {
  if (options.json) {
    for (const e of entries) process.stdout.write(scrub(JSON.stringify(e)) + '\n');
    return EXIT.ok;
  }
  if (entries.length === 0) {
    process.stdout.write('no dead letters\n');
    return EXIT.ok;
  }
  const groups = new Map<string, { entry: DeadLetterEntry; number: number }[]>();
  entries.forEach((entry, index) => {
    const list = groups.get(entry.code) ?? [];
    list.push({ entry, number: index + 1 });
    groups.set(entry.code, list);
  });
  process.stdout.write(`${plural(entries.length, 'dead letter')} in ${deadLetterDir} (logferry dead-letter show N prints one)\n`);
  for (const [code, list] of [...groups].sort((a, b) => b[1].length - a[1].length)) {
    process.stdout.write(`\n${code} (${list.length})\n`);
    for (const { entry: e, number } of list.slice(0, 5)) {
      process.stdout.write(scrub(`  #${number} ${where(e)} [${e.component}] ${e.reason}`) + '\n');
    }
    if (list.length > 5) process.stdout.write(`  … and ${list.length - 5} more (--json shows all)\n`);
  }
  return EXIT.ok;
}

/** `file@offset`, with `+length` for a line kept by reference. */
function where(e: DeadLetterEntry): string {
  if (e.file === undefined) return e.source;
  const offset = e.offset !== undefined ? `@${e.offset}${e.length !== undefined ? `+${e.length}` : ''}` : '';
  return `${relative(process.cwd(), e.file)}${offset}`;
}

type LineReadBack =
  | { status: 'ok'; bytes: Buffer }
  | { status: 'changed' | 'gone' | 'unreadable' | 'not-kept'; detail: string };

/** Reads a line kept by reference back from its file, if the bytes there still have its hash. */
async function readBack(e: DeadLetterEntry): Promise<LineReadBack> {
  if (e.file === undefined || e.offset === undefined || e.length === undefined || e.sha256 === undefined) {
    return { status: 'not-kept', detail: 'this dead letter names no line in a file' };
  }
  let handle;
  try {
    handle = await open(e.file, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { status: 'gone', detail: `${e.file} is gone (deleted, or rotated away under another name)` };
    return { status: 'unreadable', detail: `cannot read ${e.file}: ${(err as Error).message}` };
  }
  try {
    const bytes = Buffer.alloc(e.length);
    const { bytesRead } = await handle.read(bytes, 0, e.length, e.offset);
    const sha256 = createHash('sha256').update(bytes.subarray(0, bytesRead)).digest('hex');
    if (bytesRead !== e.length || sha256 !== e.sha256) {
      return {
        status: 'changed',
        detail: `the bytes at ${e.offset}..${e.offset + e.length} of ${e.file} no longer have the recorded SHA-256: the file was rewritten, truncated or rotated (copytruncate) since`,
      };
    }
    return { status: 'ok', bytes };
  } catch (err) {
    return { status: 'unreadable', detail: `cannot read ${e.file}: ${(err as Error).message}` };
  } finally {
    await handle.close();
  }
}

const LINE_WARNING = 'it may hold values of steps marked mask_data, and secrets: handle it with care';

async function showDeadLetters(entries: DeadLetterEntry[], args: string[], options: CliOptions): Promise<number> {
  if (entries.length === 0) {
    process.stdout.write('no dead letters\n');
    return EXIT.ok;
  }
  if (args.length > 1 || (args.length === 1 && options.all)) throw new UsageError(DEAD_LETTER_USAGE);
  let numbers: number[];
  if (options.all) numbers = entries.map((_e, i) => i + 1);
  else if (args.length === 0) numbers = [entries.length];
  else {
    const n = Number(args[0]);
    if (!Number.isSafeInteger(n) || n < 1 || n > entries.length) {
      throw new UsageError(`no dead letter ${args[0]}: there are ${entries.length}, numbered 1 to ${entries.length} (logferry dead-letter list shows them)`);
    }
    numbers = [n];
  }
  for (const n of numbers) {
    const e = entries[n - 1]!;
    const line = await readBack(e);
    if (options.json) {
      const out: Record<string, unknown> = { number: n, ...e, line_status: line.status };
      if (line.status === 'ok') {
        const text = decodeUtf8(line.bytes);
        if (text !== undefined) out.line_text = text;
        else out.line_base64 = line.bytes.toString('base64');
      } else {
        out.line_detail = line.detail;
      }
      process.stdout.write(scrub(JSON.stringify(out)) + '\n');
      continue;
    }
    const fields: [string, unknown][] = [
      ['time', e.time],
      ['code', e.code],
      ['reason', e.reason],
      ['component', e.component],
      ['source', e.source],
      ['file', e.file],
      ['offset', e.offset],
      ['length', e.length],
      ['sha256', e.sha256],
      ['kind', e.kind],
      ['key', e.key],
      ['received_digest', e.received_digest],
      ['text', e.text],
      ['raw_base64', e.raw_base64],
    ];
    let out = `dead letter ${n} of ${entries.length}\n`;
    for (const [name, value] of fields) if (value !== undefined) out += `  ${`${name}:`.padEnd(16)} ${String(value)}\n`;
    if (line.status === 'ok') {
      const text = decodeUtf8(line.bytes);
      out += text !== undefined
        ? `line, read back from the file (${LINE_WARNING}):\n${text}\n`
        : `line, read back from the file, as base64: it is not valid UTF-8 (${LINE_WARNING}):\n${line.bytes.toString('base64')}\n`;
    } else if (line.status !== 'not-kept') {
      out += `line: not available: ${line.detail}\n`;
    }
    process.stdout.write(scrub(out) + (numbers.length > 1 ? '\n' : ''));
  }
  return EXIT.ok;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

function decodeUtf8(bytes: Buffer): string | undefined {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return undefined;
  }
}

export async function main(argv: string[]): Promise<number> {
  let options;
  try {
    // The benchmark has options of its own; loaded only when asked for.
    if (argv[0] === 'bench') {
      // Measured without the flag the logferry command runs with, the figures would mislead.
      // (Only as the program: main() called by a test must not start another process.)
      if (!hasSemiSpaceFlag() && isEntryPoint()) return await rerunWithSemiSpaceFlag();
      return await (await import('../../bench/run.js')).benchMain(argv.slice(1));
    }
    options = parseCli(argv);
    if (options.version) {
      process.stdout.write(`logferry ${version()}\n`);
      return EXIT.ok;
    }
    const [command] = options.positionals;
    runningCommand = command;
    if (options.help || !command) {
      (options.help ? process.stdout : process.stderr).write(HELP);
      return options.help ? EXIT.ok : EXIT.usage;
    }
    options.positionals = options.positionals.slice(COMMAND_GROUPS.has(command) ? 0 : 1);
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
      case 'plugin':
        return await commandPlugin(options);
      default:
        throw new UsageError(`unknown command "${command}"; try logferry --help`);
    }
  } catch (err) {
    return report(err);
  }
}

function report(err: unknown): number {
  if (err instanceof ConfigError) {
    process.stderr.write(scrub(err.message) + '\n');
    return EXIT.config;
  }
  if (err instanceof UsageError) {
    process.stderr.write(scrub(`logferry: ${err.message}`) + '\n');
    return EXIT.usage;
  }
  if (err instanceof LogferryError) {
    process.stderr.write(scrub(`logferry: ${err.code}: ${err.message}`) + '\n');
    if (err.code === 'LF_DATA_DIR_LOCKED') return EXIT.locked;
    return err.code.startsWith('LF_CONFIG') || err.code === 'LF_DATA_DIR_INVALID' || err.code === 'LF_API_ADDRESS_IN_USE' ? EXIT.config : EXIT.runtime;
  }
  process.stderr.write(scrub(`logferry: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`) + '\n');
  return EXIT.runtime;
}

/** The command being run, so a closed pipe ends `run` with a failure and the others quietly. */
let runningCommand: string | undefined;

/**
 * `logferry dead-letter list | head -1`: once the reader is gone, a write fails with EPIPE. Like
 * `ls | head`, stop quietly (exit 0) instead of printing a stack trace for the unhandled 'error'.
 * `run` whose log or console pipe closed ends at once without its final checkpoint (the records it
 * held are read again) and exits 74, so a supervisor sees that it did not finish.
 */
function exitQuietlyOnClosedPipe(stream: NodeJS.WriteStream): void {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(runningCommand === 'run' ? EXIT.io : EXIT.ok);
    process.stderr.write(`logferry: cannot write to ${stream === process.stdout ? 'stdout' : 'stderr'}: ${err.message}\n`);
    process.exit(EXIT.runtime);
  });
}

/** True when this module is the program (node dist/src/cli/main.js, or the logferry bin link), not an import. */
function isEntryPoint(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  const self = fileURLToPath(import.meta.url);
  for (const candidate of [entry, `${entry}.js`]) {
    try {
      if (realpathSync(candidate) === realpathSync(self)) return true;
    } catch {
      // Not a file: try the next spelling.
    }
  }
  return false;
}

/**
 * Node 22.1 and later can keep V8's compiled code of the modules between runs (in
 * os.tmpdir()/node-compile-cache, or NODE_COMPILE_CACHE; NODE_DISABLE_COMPILE_CACHE=1 turns it
 * off), which shortens every start after the first. Node 20 has no such API: nothing happens there.
 * Called before main() imports the command's modules, so they are compiled from the cache.
 */
function enableCompileCache(): void {
  const { enableCompileCache: enable } = nodeModule as { enableCompileCache?: () => unknown };
  try {
    enable?.();
  } catch {
    // A cache that cannot be written (read-only tmp) only costs the time it would have saved.
  }
}

if (isEntryPoint()) {
  enableCompileCache();
  exitQuietlyOnClosedPipe(process.stdout);
  exitQuietlyOnClosedPipe(process.stderr);
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.exitCode = report(err);
    },
  );
}
