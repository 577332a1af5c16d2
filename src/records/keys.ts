import { LogferryError, RecordError } from '../errors.js';
import type { JsonObject, JsonValue, LogRecord, WrittenNumbers } from '../engine/types.js';
import type { PathFormatOptions } from '../transforms/path-format.js';
import { contentDigest } from './canonical.js';
import { JOB_ID_TEXT, classify, describe, numberText } from './parse.js';

/**
 * Object keys for records. The default layouts are the ones the job history replication and audit
 * log streaming documents describe, so files land where existing consumers of those buckets look.
 */
export const JOB_KEY_TEMPLATE =
  '{user_id}/jobs/{recipe_id}/{date}/{formatted_job_id}/{user_id}-{recipe_id}-{job_id}-{datetime}-{status}.json';
export const ACTIVITY_KEY_TEMPLATE = '{team_id}/activity/{date}/{team_id}-{event}-{datetime}-{digest}.json';

export const JOB_PLACEHOLDERS = [
  'user_id',
  'recipe_id',
  'job_id',
  'formatted_job_id',
  'date',
  'datetime',
  'status',
  'flow_id',
  'year',
  'month',
  'day',
] as const;
export const ACTIVITY_PLACEHOLDERS = ['team_id', 'event', 'date', 'datetime', 'digest', 'year', 'month', 'day'] as const;

export type JobPlaceholder = (typeof JOB_PLACEHOLDERS)[number];
export type ActivityPlaceholder = (typeof ACTIVITY_PLACEHOLDERS)[number];

/** The width the documented layout pads job ids to: 21 digits, seven folders of three. */
const FORMATTED_JOB_ID_DIGITS = 21;

/** What a rendered placeholder may contain: no separators, no spaces, nothing a shell or S3 treats specially. */
const SAFE_KEY_PART = /^[A-Za-z0-9._-]+$/;
/** What the literal text of a template may contain (the placeholders' braces and `/` between folders). */
const SAFE_TEMPLATE_LITERAL = /^[A-Za-z0-9._/-]*$/;
const DIGITS = /^[0-9]+$/;
/**
 * ISO 8601 with `T` or a space, optional fraction, and a zone that is `Z`, `UTC` or an offset:
 * covers `2019-09-13T12:22:18-07:00` (jobs) and `2019-09-13 17:24:16 UTC` (activity events).
 */
const TIMESTAMP =
  /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,]\d+)?\s*(?:(Z|UTC)|([+-])(\d{2}):?(\d{2}))$/;

/**
 * Placeholders whose values are built here from integers, digit strings, a fixed status word or a
 * parsed time: they cannot hold a separator, so only the others are checked per record.
 */
const SAFE_BY_CONSTRUCTION: ReadonlySet<string> = new Set([
  'status', 'recipe_id', 'flow_id', 'job_id', 'formatted_job_id', 'user_id', 'date', 'datetime', 'year', 'month', 'day',
]);

const TIME_PLACEHOLDERS: ReadonlySet<string> = new Set(['date', 'datetime', 'year', 'month', 'day']);

/** A template split once into literal text and placeholders, so rendering is plain concatenation. */
export interface KeyTemplate<P extends string> {
  readonly source: string;
  /** Always one longer than `placeholders`: literal, placeholder, literal, ..., literal. */
  readonly literals: readonly string[];
  readonly placeholders: readonly P[];
  /** The placeholders in use: a value the template does not use is neither computed nor required. */
  readonly uses: ReadonlySet<P>;
  /** Whether any placeholder needs the record's time, so records are only timed when it matters. */
  readonly usesTime: boolean;
  /** Per placeholder, whether its rendered value must be checked for characters unsafe in a key. */
  readonly checked: readonly boolean[];
}

export type ParsedKeyTemplate<P extends string> =
  | { readonly ok: true; readonly template: KeyTemplate<P> }
  | { readonly ok: false; readonly problems: string[] };

/**
 * Checks an operator's template once, at config time, and lists every problem with it. Together
 * with the per-record check of each rendered value this keeps every key inside the sink's folder.
 */
export function parseKeyTemplate<P extends string>(template: string, allowedPlaceholders: readonly P[]): ParsedKeyTemplate<P> {
  if (template.length === 0) return { ok: false, problems: ['the key template is empty'] };
  const problems: string[] = [];
  const allowed: ReadonlySet<string> = new Set(allowedPlaceholders);
  const literals: string[] = [];
  const placeholders: P[] = [];

  let rest = template;
  let literal = '';
  while (rest.length > 0) {
    const open = rest.indexOf('{');
    const close = rest.indexOf('}');
    if (close !== -1 && (open === -1 || close < open)) {
      problems.push(`"}" at position ${template.length - rest.length + close} has no matching "{"`);
      literal += rest.slice(0, close);
      rest = rest.slice(close + 1);
      continue;
    }
    if (open === -1) {
      literal += rest;
      break;
    }
    literal += rest.slice(0, open);
    const end = rest.indexOf('}', open);
    if (end === -1) {
      problems.push(`"{" at position ${template.length - rest.length + open} is never closed with "}"`);
      rest = '';
      break;
    }
    const name = rest.slice(open + 1, end);
    if (name.includes('{')) {
      problems.push(`placeholder {${name}} contains "{"`);
    } else if (!allowed.has(name)) {
      problems.push(`unknown placeholder {${name}}; the placeholders are ${allowedPlaceholders.map((p) => `{${p}}`).join(', ')}`);
    } else {
      literals.push(literal);
      placeholders.push(name as P);
      literal = '';
    }
    rest = rest.slice(end + 1);
  }
  literals.push(literal);

  const badCharacters = new Set<string>();
  for (const text of literals) {
    if (!SAFE_TEMPLATE_LITERAL.test(text)) for (const ch of text) if (!SAFE_TEMPLATE_LITERAL.test(ch)) badCharacters.add(ch);
  }
  if (badCharacters.size > 0) {
    const shown = [...badCharacters].map((ch) => JSON.stringify(ch)).join(', ');
    problems.push(`the template contains ${shown}; outside placeholders only [A-Za-z0-9._/-] is allowed`);
  }
  if (template.startsWith('/')) problems.push('the key is absolute (starts with "/"); keys are relative to the sink folder');
  if (template.endsWith('/')) problems.push('the key ends with "/", so it names a folder rather than a file');
  // Placeholders never render to "/" or to "." / "..", so folder names are decided by the literals.
  const segments = template.split('/');
  if (segments.some((s) => s === '..')) problems.push('the template has a ".." folder, which would leave the sink folder');
  if (segments.some((s) => s === '.')) problems.push('the template has a "." folder');
  if (segments.slice(1, -1).some((s) => s === '')) problems.push('the template has an empty folder name ("//")');

  if (problems.length > 0) return { ok: false, problems };
  const usesTime = placeholders.some((p) => TIME_PLACEHOLDERS.has(p));
  const checked = placeholders.map((p) => !SAFE_BY_CONSTRUCTION.has(p));
  return { ok: true, template: { source: template, literals, placeholders, uses: new Set(placeholders), usesTime, checked } };
}

/** Both templates of a path_format transform and its user_id fallback, compiled once per pipeline. */
export interface CompiledKeyTemplates {
  readonly job: KeyTemplate<JobPlaceholder>;
  readonly activity: KeyTemplate<ActivityPlaceholder>;
  readonly fallbackUserId: string | undefined;
}

/** Throws LF_CONFIG_INVALID when a template is bad; the config schema reports the same problems earlier. */
export function compileKeyTemplates(options: PathFormatOptions): CompiledKeyTemplates {
  const job = parseKeyTemplate(options.job_key, JOB_PLACEHOLDERS);
  const activity = parseKeyTemplate(options.activity_key, ACTIVITY_PLACEHOLDERS);
  if (!job.ok || !activity.ok) {
    const problems = [
      ...(job.ok ? [] : job.problems.map((p) => `job_key: ${p}`)),
      ...(activity.ok ? [] : activity.problems.map((p) => `activity_key: ${p}`)),
    ];
    throw new LogferryError('LF_CONFIG_INVALID', `path_format: ${problems.join('; ')}`);
  }
  return {
    job: job.template,
    activity: activity.template,
    fallbackUserId: options.user_id === undefined ? undefined : String(options.user_id),
  };
}

// The CLI calls keyForDocument once per file with the same options object; compile those once too.
const compiledByOptions = new WeakMap<PathFormatOptions, CompiledKeyTemplates>();

/**
 * The key of a standalone document (e.g. `logferry key job.json`). Returns null for a job that is
 * not final yet; throws RecordError when the document cannot have a safe key.
 */
export function keyForDocument(doc: JsonObject, options: PathFormatOptions, receivedDigest?: string, written?: WrittenNumbers): string | null {
  let compiled = compiledByOptions.get(options);
  if (!compiled) {
    compiled = compileKeyTemplates(options);
    compiledByOptions.set(options, compiled);
  }
  const kind = classify(doc, written);
  if (typeof kind !== 'string') throw kind;
  return kind === 'job' ? jobKey(doc, compiled, written) : activityKey(doc, receivedDigest ?? contentDigest(doc), compiled, written);
}

/** The key of a record in the pipeline, or null when the record is a job that is not final. */
export function keyForRecord(record: LogRecord, compiled: CompiledKeyTemplates): string | null {
  if (record.kind === 'job') return jobKey(record.doc, compiled, record.writtenNumbers);
  return activityKey(record.doc, record.receivedDigest ?? contentDigest(record.doc), compiled, record.writtenNumbers);
}

function jobKey(doc: JsonObject, compiled: CompiledKeyTemplates, written: WrittenNumbers | undefined): string | null {
  const status = finalStatus(doc.status);
  if (status === null) return null;
  const template = compiled.job;
  const recipeId = String(jobInteger(doc, 'flow_id', written));
  const jobId = jobInteger(doc, 'id', written);
  // One object literal with every field, so each record's values share one hidden class.
  const values: Record<JobPlaceholder, string | undefined> = {
    status,
    recipe_id: recipeId,
    flow_id: recipeId,
    job_id: String(jobId),
    formatted_job_id: template.uses.has('formatted_job_id') ? formatJobId(jobId) : undefined,
    user_id: template.uses.has('user_id') ? jobUserId(doc, compiled.fallbackUserId, written) : undefined,
    date: undefined,
    datetime: undefined,
    year: undefined,
    month: undefined,
    day: undefined,
  };
  if (template.usesTime) setTimeParts(values, doc.started_at, 'job field `started_at`');
  return render(template, values);
}

function activityKey(doc: JsonObject, digest: string, compiled: CompiledKeyTemplates, written: WrittenNumbers | undefined): string {
  const template = compiled.activity;
  const event = doc.event;
  if (typeof event !== 'string') {
    throw new RecordError('LF_RECORD_INVALID', 'activity event has no string `event`');
  }
  const values: Record<ActivityPlaceholder, string | undefined> = {
    team_id: teamId(doc, written),
    event,
    digest,
    date: undefined,
    datetime: undefined,
    year: undefined,
    month: undefined,
    day: undefined,
  };
  if (template.usesTime) setTimeParts(values, doc.timestamp, 'activity field `timestamp`');
  return render(template, values);
}

/** `succeeded` and `completed` both mean success; anything else but `failed` is a job still running. */
function finalStatus(status: JsonValue | undefined): 'succeeded' | 'failed' | null {
  if (status === 'succeeded' || status === 'completed') return 'succeeded';
  if (status === 'failed') return 'failed';
  if (typeof status !== 'string') {
    throw new RecordError('LF_RECORD_INVALID', `job field \`status\` must be a string, got ${describeValue(status)}`);
  }
  return null;
}

/** The id's digits as written in the line (never a rounded double); see parse.ts classify. */
function jobInteger(doc: JsonObject, field: 'id' | 'flow_id', written: WrittenNumbers | undefined): number | string {
  const value = doc[field];
  // The common case, kept a number so formatJobId cuts it into folders with arithmetic.
  if (written === undefined && typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 && !Object.is(value, -0)) return value;
  // parse.ts checked this already, but a plugin transform upstream may have built the record itself.
  const text = typeof value === 'number' ? numberText(value, written?.[field]) : undefined;
  if (text === undefined || !JOB_ID_TEXT.test(text)) {
    throw new RecordError(
      'LF_RECORD_INVALID',
      `job field \`${field}\` must be a non-negative integer written in at most 21 digits, got ${describe(value, written?.[field])}`,
    );
  }
  return text;
}

/**
 * `100` → `000/000/000/000/000/000/100`: the id left-padded with zeros to 21 digits, in folders of
 * three so no folder holds more than a thousand entries. Accepts a digit string for ids past 2^53.
 */
export function formatJobId(id: number | string): string {
  // Ids below 10^15 (all real ones) are cut into folders with arithmetic and a table of the
  // thousand three-digit groups: no padding or slicing of strings per record.
  if (typeof id === 'number' && Number.isSafeInteger(id) && id >= 0 && id < 1e15) {
    const low = id % 1e6;
    const high = (id - low) / 1e6;
    return (
      LEADING_ZERO_FOLDERS +
      THREE_DIGITS[Math.floor(high / 1e6)] +
      '/' +
      THREE_DIGITS[Math.floor(high / 1e3) % 1e3] +
      '/' +
      THREE_DIGITS[high % 1e3] +
      '/' +
      THREE_DIGITS[Math.floor(low / 1e3)] +
      '/' +
      THREE_DIGITS[low % 1e3]
    );
  }
  const digits = typeof id === 'number' ? (Number.isSafeInteger(id) && id >= 0 ? String(id) : '') : id;
  if (!DIGITS.test(digits)) {
    throw new RecordError('LF_RECORD_INVALID', `job id must be a non-negative integer, got ${describeValue(id)}`);
  }
  if (digits.length > FORMATTED_JOB_ID_DIGITS) {
    throw new RecordError(
      'LF_RECORD_INVALID',
      `job id ${digits} has ${digits.length} digits; the key layout has room for ${FORMATTED_JOB_ID_DIGITS}`,
    );
  }
  const padded = digits.padStart(FORMATTED_JOB_ID_DIGITS, '0');
  let formatted = padded.slice(0, 3);
  for (let i = 3; i < FORMATTED_JOB_ID_DIGITS; i += 3) formatted += '/' + padded.slice(i, i + 3);
  return formatted;
}

const THREE_DIGITS: readonly string[] = Array.from({ length: 1000 }, (_, n) => String(n).padStart(3, '0'));
/** The first two of the seven folders, zero for every id below 10^15. */
const LEADING_ZERO_FOLDERS = '000/000/';

function jobUserId(doc: JsonObject, fallback: string | undefined, written: WrittenNumbers | undefined): string {
  const fromReport = jobContextUserId(doc, written);
  if (fromReport !== undefined) return fromReport;
  if (fallback !== undefined) return fallback;
  throw new RecordError(
    'LF_RECORD_NO_USER_ID',
    'job has no report.workato.job_context.user_id and path_format has no user_id option to fall back on; ' +
      'set `user_id` in the path_format transform',
  );
}

/** The user id Workato writes into the job report, or undefined when the report does not carry one. */
function jobContextUserId(doc: JsonObject, written: WrittenNumbers | undefined): string | undefined {
  const context = objectAt(objectAt(objectAt(doc, 'report'), 'workato'), 'job_context');
  const userId = context?.user_id;
  if (userId === undefined || userId === null) return undefined;
  const asWritten = written?.['report.workato.job_context.user_id'];
  if (typeof userId === 'number') {
    // The digits as written: a user id beyond 2^53 is not rounded, and `1E2` or `1.0` is not taken for 100 or 1.
    const text = numberText(userId, asWritten);
    if (text !== undefined && JOB_ID_TEXT.test(text)) return text;
  } else if (typeof userId === 'string' && DIGITS.test(userId) && userId.length <= FORMATTED_JOB_ID_DIGITS) return userId;
  throw new RecordError(
    'LF_RECORD_INVALID',
    `job field \`report.workato.job_context.user_id\` must be a non-negative integer or a string of at most 21 digits, got ${describe(userId, asWritten)}`,
  );
}

/**
 * A number is used as written (`1E2` stays `1E2`, 1e400 stays `1e400`); a record without its text
 * (built by a plugin) gives String() of the double, `-0` for -0. The key part check refuses
 * characters like `+` that a number's text may hold.
 */
function teamId(doc: JsonObject, written: WrittenNumbers | undefined): string {
  const id = objectAt(doc, 'team')?.id;
  if (typeof id === 'string') return id;
  if (typeof id === 'number') {
    const text = numberText(id, written?.['team.id']) ?? (Number.isFinite(id) ? String(id) : undefined);
    if (text !== undefined) return text;
  }
  throw new RecordError(
    'LF_RECORD_INVALID',
    `activity event needs \`team.id\` (a number or string) for its key, got ${describe(id, written?.['team.id'])}`,
  );
}

function objectAt(parent: JsonObject | undefined, field: string): JsonObject | undefined {
  const value = parent?.[field];
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? value : undefined;
}

type TimeParts = Record<'date' | 'datetime' | 'year' | 'month' | 'day', string | undefined>;

/**
 * Parses the timestamp once and derives every time placeholder, in UTC, from that one instant.
 * The last answer is kept for the next record: jobs started in the same second (a burst of one
 * recipe's jobs, events of one login) share the string, and checking costs one comparison.
 */
function setTimeParts(values: TimeParts, value: JsonValue | undefined, field: string): void {
  if (value !== lastTimestamp || typeof value !== 'string') {
    lastParts = parseTimeParts(value, field);
    lastTimestamp = value as string;
  }
  const parts = lastParts!;
  values.date = parts.date;
  values.datetime = parts.datetime;
  values.year = parts.year;
  values.month = parts.month;
  values.day = parts.day;
}

let lastTimestamp: string | undefined;
let lastParts: Required<TimeParts> | undefined;

function parseTimeParts(value: JsonValue | undefined, field: string): Record<keyof TimeParts, string> {
  if (value === undefined || value === null) {
    throw new RecordError('LF_RECORD_BAD_TIME', `${field} is missing; the key needs it`);
  }
  const match = typeof value === 'string' ? TIMESTAMP.exec(value) : null;
  const epochMs = match ? utcMillis(match) : undefined;
  if (epochMs === undefined) {
    throw new RecordError(
      'LF_RECORD_BAD_TIME',
      `${field} is not a date: ${describeValue(value)}; expected ISO 8601 with a zone ` +
        '(2019-09-13T12:22:18-07:00) or "2019-09-13 17:24:16 UTC"',
    );
  }
  const instant = new Date(epochMs);
  const utcYear = instant.getUTCFullYear();
  // The offset can carry 0000-01-01 into year -1 and 9999-12-31 into 10000: no four-digit folder exists for those.
  if (!(utcYear >= 0 && utcYear <= 9999)) {
    throw new RecordError('LF_RECORD_BAD_TIME', `${field} ${describeValue(value)} is outside the years 0000-9999 in UTC`);
  }
  const year = String(utcYear).padStart(4, '0');
  const month = twoDigits(instant.getUTCMonth() + 1);
  const day = twoDigits(instant.getUTCDate());
  const date = year + month + day;
  const time = twoDigits(instant.getUTCHours()) + twoDigits(instant.getUTCMinutes()) + twoDigits(instant.getUTCSeconds());
  return { date, datetime: date + time, year, month, day };
}

/** Milliseconds since the epoch, or undefined when a field is out of range (month 13, 31 April, 25 o'clock). */
function utcMillis(match: RegExpExecArray): number | undefined {
  const [, y, mo, d, h, mi, s, utc, sign, offsetHours, offsetMinutes] = match;
  const year = Number(y);
  const month = Number(mo);
  const day = Number(d);
  const hour = Number(h);
  const minute = Number(mi);
  const second = Number(s);
  if (month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59) return undefined;
  // Date.UTC maps years 0-99 to 1900-1999; setUTCFullYear does not.
  const wallClock = new Date(Date.UTC(2000, month - 1, day, hour, minute, second));
  wallClock.setUTCFullYear(year, month - 1, day);
  if (wallClock.getUTCDate() !== day) return undefined;
  if (utc) return wallClock.getTime();
  const offsetH = Number(offsetHours);
  const offsetM = Number(offsetMinutes);
  if (offsetH > 23 || offsetM > 59) return undefined;
  const offsetMs = (offsetH * 60 + offsetM) * 60_000 * (sign === '-' ? -1 : 1);
  return wallClock.getTime() - offsetMs;
}

function twoDigits(n: number): string {
  return n < 10 ? '0' + n : String(n);
}

function render<P extends string>(template: KeyTemplate<P>, values: Partial<Record<P, string>>): string {
  let key = template.literals[0] ?? '';
  for (let i = 0; i < template.placeholders.length; i++) {
    const name = template.placeholders[i] as P;
    const value = values[name];
    // The template's placeholders were checked against what each record kind provides when it was parsed.
    if (value === undefined) throw new LogferryError('LF_INTERNAL', `path_format: no value for placeholder {${name}} although the template was checked (a bug in logferry; please report it)`);
    if (template.checked[i]) assertSafeKeyPart(name, value);
    key += value + (template.literals[i + 1] ?? '');
  }
  return key;
}

function assertSafeKeyPart(name: string, value: string): void {
  if (SAFE_KEY_PART.test(value) && value !== '.' && value !== '..') return;
  const shown = JSON.stringify(value.length > 80 ? value.slice(0, 80) + '…' : value);
  const rule = value === '.' || value === '..' ? 'a key part cannot be "." or ".."' : 'only [A-Za-z0-9._-] is allowed';
  throw new RecordError('LF_RECORD_UNSAFE_KEY', `key part {${name}} would be ${shown}; ${rule}`);
}

function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing (missing)';
  if (typeof value === 'number') return describe(value);
  let json: string;
  try {
    json = JSON.stringify(value) ?? String(value);
  } catch {
    json = '(cannot be shown)';
  }
  const type = Array.isArray(value) ? 'array' : value === null ? 'null' : typeof value;
  return `${type} ${json.length > 60 ? json.slice(0, 60) + '…' : json}`;
}
