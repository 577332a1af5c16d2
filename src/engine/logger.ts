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

export interface LoggerOptions {
  level?: LogLevel;
  format?: LogFormat;
  /** Defaults to process.stderr: stdout belongs to the console sink. */
  write?: (line: string) => void;
  /** Called before each line so a live TTY status line can be cleared first. */
  beforeWrite?: () => void;
  /** Replaces secrets in every line (message, fields, errors): see engine/secrets.ts. */
  scrub?: (text: string) => string;
}

/** Structured logs on stderr: `text` for people, `json` (one object a line) for collectors. */
export function createLogger(options: LoggerOptions = {}, bound: LogFields = {}): Logger {
  const threshold = LEVELS[options.level ?? 'info'];
  const format = options.format ?? 'text';
  const write = options.write ?? ((line: string) => process.stderr.write(line));
  const emit = (level: LogLevel, msg: string, fields?: LogFields): void => {
    if (LEVELS[level] < threshold) return;
    options.beforeWrite?.();
    const all = { ...bound, ...fields };
    const scrub = options.scrub;
    if (format === 'json') {
      // Strings are scrubbed before they are escaped, so a secret is found however JSON would escape it.
      const replacer = scrub ? (_key: string, v: unknown): unknown => (typeof v === 'string' ? scrub(v) : v) : undefined;
      write(JSON.stringify({ time: new Date().toISOString(), level, msg, ...serializeFields(all) }, replacer) + '\n');
      return;
    }
    const extras = Object.entries(serializeFields(all))
      .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join(' ');
    const line = `${level.padEnd(5)} ${msg}${extras ? ' ' + extras : ''}\n`;
    write(scrub ? scrub(line) : line);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => createLogger(options, { ...bound, ...fields }),
  };
}

function serializeFields(fields: LogFields): LogFields {
  const out: LogFields = {};
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue;
    out[k] = v instanceof Error ? { message: v.message, code: (v as { code?: unknown }).code } : v;
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
