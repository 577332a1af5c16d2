import type { ComponentConfig } from '../config/types.js';

/** Shorter secrets are ignored: scrubbing a one-letter password would blank every log line. */
export const MIN_SECRET_LENGTH = 4;
export const SCRUBBED = '***';

/**
 * Replaces every configured secret, and its usual encodings, with `***`. One instance is built at
 * start from every component's `secrets(options)`, and everything logged or stored passes through
 * it: log lines (message, fields, errors), dead letters (reason and text) and the CLI's error
 * report, whatever the secret's way there (a destination that echoes request headers included).
 */
export class SecretScrubber {
  private readonly variants = new Set<string>();
  private pattern: RegExp | undefined;

  constructor(secrets: Iterable<string> = []) {
    this.add(secrets);
  }

  /** Number of distinct texts (secrets and their encodings) replaced. */
  get size(): number {
    return this.variants.size;
  }

  add(secrets: Iterable<string>): void {
    let added = false;
    for (const secret of secrets) {
      if (typeof secret !== 'string' || secret.length < MIN_SECRET_LENGTH) continue;
      for (const variant of secretEncodings(secret)) {
        if (variant.length < MIN_SECRET_LENGTH || this.variants.has(variant)) continue;
        this.variants.add(variant);
        added = true;
      }
    }
    if (!added) return;
    // Longest first, so a secret inside a longer one (a token inside the URL) leaves nothing behind.
    const alternatives = [...this.variants].sort((a, b) => b.length - a.length).map(escapeRegExp);
    this.pattern = new RegExp(alternatives.join('|'), 'g');
  }

  scrub(text: string): string {
    return this.pattern && text.length >= MIN_SECRET_LENGTH ? text.replace(this.pattern, SCRUBBED) : text;
  }
}

/**
 * The forms a secret takes on its way into a message: as is, URL-encoded (path and form style,
 * upper and lower case hex), base64 (standard, unpadded, URL-safe) and JSON-escaped (with `/` as
 * is and as `\/`).
 */
export function secretEncodings(secret: string): string[] {
  const out = new Set<string>([secret]);
  for (const encoded of [encodeURIComponent(secret), safeEncodeUri(secret)]) {
    out.add(encoded);
    out.add(encoded.replace(/%20/g, '+'));
    out.add(encoded.replace(/%[0-9A-F]{2}/g, (escape) => escape.toLowerCase()));
  }
  const bytes = Buffer.from(secret, 'utf8');
  const base64 = bytes.toString('base64');
  out.add(base64);
  out.add(base64.replace(/=+$/, ''));
  out.add(bytes.toString('base64url'));
  const json = JSON.stringify(secret).slice(1, -1);
  out.add(json);
  out.add(json.replace(/\//g, '\\/'));
  return [...out];
}

function safeEncodeUri(text: string): string {
  try {
    return encodeURI(text);
  } catch {
    // A lone surrogate cannot be encoded; encodeURIComponent has failed the same way then.
    return text;
  }
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Every secret the components of a pipeline declare. A hook that throws is skipped: it must not
 * stop the start-up, and the other components' secrets are still scrubbed.
 */
export function collectSecrets(components: readonly ComponentConfig[]): string[] {
  const secrets: string[] = [];
  for (const c of components) {
    try {
      for (const secret of c.definition.secrets?.(c.options) ?? []) if (typeof secret === 'string') secrets.push(secret);
    } catch {
      // A faulty plugin hook: nothing to add.
    }
  }
  return secrets;
}

/** Path segments and query values shorter than this are words (`v1`, `http`, `json`, `_bulk`), not tokens. */
export const MIN_URL_TOKEN_LENGTH = 8;

/**
 * The parts of a URL that are tokens: user and password, the path and query as a whole, and each
 * path segment and query value, whatever its position (a webhook's token is often the first
 * segment). Path and query parts shorter than MIN_URL_TOKEN_LENGTH are left out: they are words
 * that would otherwise vanish from every log line. The log lines show no path segment at all
 * (`https://host/…/…`, see safeUrl).
 */
export function urlSecrets(uri: string): string[] {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    return [];
  }
  const secrets: string[] = [];
  const add = (value: string, minLength = MIN_SECRET_LENGTH): void => {
    if (value.length < minLength) return;
    secrets.push(value);
    const decoded = safeDecode(value);
    if (decoded !== value && decoded.length >= minLength) secrets.push(decoded);
  };
  add(url.username);
  add(url.password);
  const path = url.pathname.replace(/^\//, '');
  add(path + url.search, MIN_URL_TOKEN_LENGTH);
  add(url.search.slice(1), MIN_URL_TOKEN_LENGTH);
  for (const segment of path.split('/')) add(segment, MIN_URL_TOKEN_LENGTH);
  for (const value of url.searchParams.values()) add(value, MIN_URL_TOKEN_LENGTH);
  if (secrets.length > 0) add(uri);
  return secrets;
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text.replace(/\+/g, ' '));
  } catch {
    return text;
  }
}

/** The OTLP exporters' endpoint and header variables (logferry's own telemetry, README: Observability). */
const OTEL_ENDPOINT_VARIABLES = ['OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_EXPORTER_OTLP_LOGS_ENDPOINT', 'OTEL_EXPORTER_OTLP_METRICS_ENDPOINT'];
const OTEL_HEADER_VARIABLES = ['OTEL_EXPORTER_OTLP_HEADERS', 'OTEL_EXPORTER_OTLP_LOGS_HEADERS', 'OTEL_EXPORTER_OTLP_METRICS_HEADERS'];

/**
 * The secrets of the OTEL_EXPORTER_OTLP_* variables: the credentials and tokens of the endpoint URLs
 * and the values of the headers (`key=value,key2=value2`, values URL-encoded), which are API keys.
 * They are scrubbed from every line like a component's secrets, so logging where telemetry goes
 * cannot show them.
 */
export function otelSecrets(env: NodeJS.ProcessEnv): string[] {
  const secrets: string[] = [];
  for (const name of OTEL_ENDPOINT_VARIABLES) {
    const value = env[name]?.trim();
    if (value) secrets.push(...urlSecrets(value));
  }
  for (const name of OTEL_HEADER_VARIABLES) {
    for (const pair of (env[name] ?? '').split(',')) {
      const at = pair.indexOf('=');
      if (at === -1) continue;
      const value = pair.slice(at + 1).trim();
      if (value.length < MIN_SECRET_LENGTH) continue;
      secrets.push(value);
      const decoded = safeDecode(value);
      if (decoded !== value) secrets.push(decoded);
      // An Authorization value is "Bearer TOKEN" or "Basic …": the token alone too.
      const token = decoded.split(/\s+/).pop();
      if (token && token !== decoded && token.length >= MIN_SECRET_LENGTH) secrets.push(token);
    }
  }
  return secrets;
}
