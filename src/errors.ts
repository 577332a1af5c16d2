/**
 * Every error logferry reports carries a stable `code` that users and scripts can match on.
 * Codes are defined once here; a retired code is never reused. docs/errors.md has one row per code.
 */
export const ERROR_CODES = {
  LF_CONFIG_INVALID: 'The pipeline YAML does not validate; each problem is listed with its position.',
  LF_CONFIG_READ: 'The pipeline file could not be read.',
  LF_CONFIG_ENV: 'A ${VAR} reference has no value in the environment and no default.',
  LF_USAGE: 'The command line could not be understood.',
  LF_RECORD_BAD_JSON: 'A line is not valid JSON.',
  LF_RECORD_NOT_OBJECT: 'A line is JSON but not an object.',
  LF_RECORD_BAD_UTF8: 'A line is not valid UTF-8.',
  LF_RECORD_TOO_LONG: 'A line is longer than max_line_bytes.',
  LF_RECORD_INVALID: 'A record is neither a job (integer id and flow_id) nor an activity event (string event).',
  LF_RECORD_TOO_DEEP: 'A line nests objects and arrays deeper than max_depth.',
  LF_RECORD_UNPROCESSABLE: 'Handling a record threw an unexpected error (a bug or a limit); the record is dead-lettered, nothing else stops.',
  LF_RECORD_NO_USER_ID: 'A job has no report.workato.job_context.user_id and path_format has no user_id fallback.',
  LF_RECORD_BAD_TIME: 'A timestamp needed for the key is missing or not a date.',
  LF_RECORD_UNSAFE_KEY: 'A key part would contain characters outside [A-Za-z0-9._-], which could escape the sink folder.',
  LF_RECORD_NO_KEY: 'A record reached a keyed sink without a key.',
  LF_TRANSFORM_FAILED: 'A transform threw an unexpected error on a record.',
  LF_SINK_REJECTED: 'The destination refused this record, and only this record, for good (record-level failure).',
  LF_SINK_RETRY_EXPIRED: 'A destination kept failing for longer than the retry.max_duration_s the operator set; the record was dead-lettered.',
  LF_DESTINATION_FAILING: 'A destination fails for every record (destination-level); the sink holds its records, probes it, and resumes by itself.',
  LF_DESTINATION_HELD: 'run --once left records for the next run: a destination still failed at --max-wait, or a stop ran out of shutdown_timeout; they were not acknowledged (exit 75).',
  LF_HEALTHCHECK_FAILED: 'A destination failed its health check at start (run --require-healthy exits 69; validate --check-destinations exits 69).',
  LF_RUN_HAD_DEAD_LETTERS: 'run --once finished, but records of this run went to the dead letters (exit 65).',
  LF_DEAD_LETTER_FULL: 'The dead letters reached dead_letter.max_bytes; records that would be dead-lettered are held and reading pauses.',
  LF_REPLAY_FAILED: 'logferry dead-letter replay could not go on (its progress is kept; run it again).',
  LF_SINK_FAILED: 'A sink failed in a way the pipeline cannot recover from.',
  LF_SOURCE_FAILED: 'A source failed as a whole (not one input: that is LF_INPUT_UNREADABLE); the run ends.',
  LF_COMPONENT_BUILD_FAILED: 'A source, transform or sink threw an unexpected error while it was built; nothing was read.',
  LF_POOL_FAILED: 'The worker pool could not start, or cannot go on (a worker that dies later takes only its line, dead-lettered as LF_RECORD_UNPROCESSABLE).',
  LF_PLUGIN_INVALID: 'A plugin module does not export what logferry expects.',
  LF_SHUTDOWN_TIMEOUT: 'Records were still in flight when shutdown_timeout ran out.',
  LF_DEAD_LETTER_BLOCKED: 'A dead letter could not be written in full (disk full, read-only); the source position is held and the write is retried.',
  LF_DEAD_LETTER_WRITE_FAILED: 'A dead letter could not be written for a reason waiting does not fix; its record is not acknowledged and is read again after a restart.',
  LF_CHECKPOINT_FAILED: 'A checkpoint could not be saved; positions are kept in memory and the save is retried.',
  LF_INPUT_UNREADABLE: 'An input file could not be opened or read.',
  LF_DATA_DIR_LOCKED: 'Another running logferry holds the data_dir lock.',
  LF_DATA_DIR_INVALID: 'The data_dir cannot be used: not a folder, not writable, or on a pseudo file system.',
  LF_API_ADDRESS_IN_USE: 'The operators\' API cannot listen on api.address: the port is taken (or not allowed, or the host is not this machine\'s).',
  LF_PLUGIN_NOT_FOUND: 'A plugins: entry names a file or package that cannot be found.',
  LF_TESTKIT_MISUSE: 'A testkit helper (driveSink, the conformance kit, the fault proxy) was given something it cannot use.',
  LF_TESTKIT_BAD_BODY: 'The testkit receiver got a request body it cannot read: the sink under test sent it.',
  LF_OTLP_LOGS_EXPORT_FAILED: "logferry's own logs could not be exported over OTLP (OTEL_EXPORTER_OTLP_*): the collector did not answer or refused them; the lines on stderr are complete.",
  LF_INTERNAL: 'A check inside logferry failed (a bug), or a component reported a code that is not one of these.',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/** Whether `value` is one of the documented codes (for codes that arrive untyped: a plugin in JS, a worker message). */
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERROR_CODES, value);
}

/**
 * A code that arrived from outside the type system, made a documented one: an unknown code (or
 * none) becomes `fallback`, and `reason` keeps the original so nothing is lost. Dead letters and
 * exit codes only ever see documented codes this way.
 */
export function knownCode(code: unknown, fallback: ErrorCode, reason: string): { code: ErrorCode; reason: string } {
  if (code === undefined || isErrorCode(code)) return { code: code ?? fallback, reason };
  // errorMessage never throws, whatever a plugin passed.
  const given = typeof code === 'string' ? JSON.stringify(code) : errorMessage(code);
  return { code: fallback, reason: `${reason} (reported with code ${given}, which is not a logferry error code; see docs/errors.md)` };
}

export class LogferryError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'LogferryError';
    this.code = code;
  }
}

export interface ConfigProblem {
  /** Dotted path of the offending key, e.g. `sources.jobs.max_line_bytes`. */
  path: string;
  message: string;
  line?: number;
  col?: number;
}

/** Collects every problem of a config so an operator can fix them all in one pass. */
export class ConfigError extends LogferryError {
  readonly file: string;
  readonly problems: ConfigProblem[];
  constructor(file: string, problems: ConfigProblem[], code: ErrorCode = 'LF_CONFIG_INVALID') {
    super(code, problems.map((p) => formatProblem(file, p)).join('\n'));
    this.name = 'ConfigError';
    this.file = file;
    this.problems = problems;
  }
}

/** `FILE:LINE:COL: path.to.key: what is wrong` (the position is omitted when unknown). */
export function formatProblem(file: string, p: ConfigProblem): string {
  const where = p.line !== undefined ? `${file}:${p.line}:${p.col ?? 1}` : file;
  return p.path ? `${where}: ${p.path}: ${p.message}` : `${where}: ${p.message}`;
}

/** A record-level failure: the record goes to the dead letters with this code and reason. */
export class RecordError extends LogferryError {
  constructor(code: ErrorCode, message: string) {
    super(code, message);
    this.name = 'RecordError';
  }
}

/**
 * The dead-letter code and reason for an error a transform threw on a record: its own code for a
 * RecordError, LF_TRANSFORM_FAILED for anything unexpected. The same inline and on the pool.
 */
export function transformFailure(err: unknown): { code: ErrorCode; reason: string; expected: boolean } {
  if (err instanceof RecordError) return { code: err.code, reason: err.message, expected: true };
  return { code: 'LF_TRANSFORM_FAILED', reason: `transform failed: ${errorMessage(err)}`, expected: false };
}

/**
 * The dead-letter code and reason for anything else that threw while the engine handled one
 * record (parsing, routing, building a body, a worker that died on it): the record is
 * dead-lettered and nothing else stops. A RecordError keeps its own code.
 */
export function unprocessable(err: unknown, what = 'record could not be processed'): { code: ErrorCode; reason: string } {
  if (err instanceof RecordError) return { code: err.code, reason: err.message };
  return { code: 'LF_RECORD_UNPROCESSABLE', reason: `${what}: ${errorMessage(err)}` };
}

/**
 * What building a component threw, as the run reports it. A LogferryError with a documented code
 * keeps it (LF_CONFIG_ENV for a key found unset only now, a plugin's own LF_PLUGIN_INVALID), so the
 * exit code follows what went wrong; anything else is LF_COMPONENT_BUILD_FAILED naming the
 * component (`sink out (type http, at sinks.out)`).
 */
export function componentBuildFailure(err: unknown, component: { kind: string; id: string; type: string; path: string }): LogferryError {
  if (err instanceof LogferryError && isErrorCode(err.code)) return err;
  const what = `${component.kind} ${component.id} (type ${component.type}, at ${component.path})`;
  const ownCode = err instanceof LogferryError ? ` (with code ${JSON.stringify(err.code)}, which is not a logferry error code)` : '';
  return new LogferryError(
    'LF_COMPONENT_BUILD_FAILED',
    `cannot build ${what}: ${err instanceof LogferryError ? err.message : errorMessage(err)}${ownCode}; its options passed validation, so fix what the error names (a file, the environment, the plugin's code)`,
    { cause: err },
  );
}

/** The message of anything thrown (`throw 42`, `throw Object.create(null)` included), never throwing itself. */
export function errorMessage(err: unknown): string {
  try {
    if (err instanceof Error) return `${err.name === 'Error' ? '' : err.name + ': '}${err.message}`;
    const text = typeof err === 'string' ? err : String(err);
    return `${typeof err === 'string' ? '' : `(${err === null ? 'null' : typeof err}) `}${text}`;
  } catch {
    return `a thrown ${typeof err} that cannot be shown`;
  }
}

/** An I/O error as `ENOSPC: no space left on device, write`: its errno code first, said once. */
export function ioErrorText(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const message = err instanceof Error ? err.message : String(err);
  return code && !message.startsWith(code) ? `${code}: ${message}` : message;
}

export class UsageError extends LogferryError {
  constructor(message: string) {
    super('LF_USAGE', message);
    this.name = 'UsageError';
  }
}
