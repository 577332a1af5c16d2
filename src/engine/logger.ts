export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFormat = 'text' | 'json';

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

/** One log entry as the bridge to OpenTelemetry sees it (engine/otel-logs.ts): fields as the lines show them. */
export interface LogEntry {
  time: Date;
  level: LogLevel;
  msg: string;
  fields: LogFields;
}

export interface LoggerOptions {
  level?: LogLevel;
  format?: LogFormat;
  /** Defaults to process.stderr: stdout belongs to the console sink. */
  write?: (line: string) => void;
  /** Called before each line so a live TTY status line can be cleared first. */
  beforeWrite?: () => void;
  /** Replaces secrets in every line (message, fields, errors): see engine/secrets.ts. */
  scrub?: (text: string) => string;
  /** Also hands every entry written to this (the OTLP export of logferry's own logs); it scrubs on its own. */
  forward?: (entry: LogEntry) => void;
}

/**
 * Structured logs on stderr: `text` for people, `json` (one object a line) for collectors. Both
 * start with the time in UTC (ISO 8601 with milliseconds, as `time` in JSON): the same instant
 * reads the same on every host and in every collector, whatever the machine's time zone, and
 * lines of several hosts sort together.
 */
export function createLogger(options: LoggerOptions = {}, bound: LogFields = {}): Logger {
  const threshold = LEVELS[options.level ?? 'info'];
  // A stack helps whoever debugs logferry and is noise to an operator: only at debug level.
  const withStacks = options.level === 'debug';
  const format = options.format ?? 'text';
  const write = options.write ?? ((line: string) => process.stderr.write(line));
  const emit = (level: LogLevel, msg: string, fields?: LogFields): void => {
    if (LEVELS[level] < threshold) return;
    options.beforeWrite?.();
    const now = new Date();
    const time = now.toISOString();
    const all = serializeFields({ ...bound, ...fields }, withStacks);
    const scrub = options.scrub;
    if (format === 'json') {
      // Strings are scrubbed before they are escaped, so a secret is found however JSON would escape it.
      const replacer = scrub ? (_key: string, v: unknown): unknown => (typeof v === 'string' ? scrub(v) : v) : undefined;
      write(JSON.stringify({ time, level, msg, ...all }, replacer) + '\n');
    } else {
      const extras = Object.entries(all)
        .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join(' ');
      const line = `${time} ${level.padEnd(5)} ${msg}${extras ? ' ' + extras : ''}\n`;
      write(scrub ? scrub(line) : line);
    }
    options.forward?.({ time: now, level, msg, fields: all });
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => createLogger(options, { ...bound, ...fields }),
  };
}

/** An error as a field: its message and code, and its stack only at debug level (`withStacks`). */
function serializeFields(fields: LogFields, withStacks: boolean): LogFields {
  const out: LogFields = {};
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue;
    out[k] = v instanceof Error ? { message: v.message, code: (v as { code?: unknown }).code, ...(withStacks && v.stack !== undefined && { stack: v.stack }) } : v;
  }
  return out;
}

export const silentLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
  child: () => silentLogger,
};
