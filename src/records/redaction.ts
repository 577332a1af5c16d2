import { createHmac } from 'node:crypto';
import { isIPv6 } from 'node:net';
import { z } from 'zod';
import type { JsonObject, JsonValue } from '../engine/types.js';
import { LogferryError } from '../errors.js';
import { canonicalJson, WrittenNumber } from './canonical.js';
import { parseKeepingMaskData } from './json-text.js';
import { applyMaskData, DEFAULT_MASK, hasNestedMaskData, markNestedMaskData } from './mask.js';

export const BUILTIN_PATTERNS = ['email', 'ipv4', 'ipv6', 'credit_card', 'aws_access_key', 'bearer_token'] as const;
export type BuiltinPattern = (typeof BUILTIN_PATTERNS)[number];

/** The `replacement` value that switches from a fixed text to keyed hashes. */
export const HASH_REPLACEMENT = 'hash';
export const DEFAULT_HASH_KEY_ENV = 'LOGFERRY_HASH_KEY';
/** A shorter key would let someone who sees the hashes brute-force it and then reverse common values. */
export const MIN_HASH_KEY_LENGTH = 16;
const HASH_PREFIX = 'hmac-sha256:';
const HASH_HEX_CHARS = 32;

const fieldPathSchema = z
  .string()
  .refine((path) => path.split('.').every((segment) => segment.length > 0), {
    message: 'a field path is keys joined by dots with no empty key, e.g. user.email or lines.*.input.password',
  })
  .describe('Dotted path; `*` matches every key of an object or every element of an array.');

const customPatternSchema = z
  .object({
    regex: z
      .string()
      .min(1)
      .superRefine((source, ctx) => {
        try {
          new RegExp(source, 'gu');
        } catch (err) {
          ctx.addIssue({ code: 'custom', message: err instanceof Error ? err.message : String(err) });
        }
      })
      .describe('JavaScript regular expression (compiled with the g and u flags); every match is replaced.'),
  })
  .strict();

export const redactSchema = z
  .object({
    mask_data: z
      .boolean()
      .default(true)
      .describe('For each step (`lines[]` entry) with `mask_data: true`, `input` and `output` become the replacement.'),
    fields: z
      .array(fieldPathSchema)
      .default([])
      .describe(
        'Dotted paths whose value is replaced whole, whatever its type; `*` matches any key or array index: ' +
          '`user.email`, `details.request.ip_address`, `lines.*.input.password`. Missing paths are ignored.',
      ),
    patterns: z
      .array(
        z.union([
          z.enum(BUILTIN_PATTERNS).describe('A built-in pattern (credit_card numbers are replaced only when the Luhn check passes).'),
          customPatternSchema,
        ]),
      )
      .default([])
      .describe(
        'Replaced inside every string value of the document (keys are left alone): built-ins `email`, `ipv4`, ' +
          '`ipv6`, `credit_card`, `aws_access_key`, `bearer_token` (keeps the word Bearer), or `{regex: "..."}`.',
      ),
    replacement: z
      .union([
        z
          .literal(HASH_REPLACEMENT)
          .describe('Replace each value with `hmac-sha256:<32 hex chars>` so equal values stay joinable.'),
        z.string(),
      ])
      .default(DEFAULT_MASK)
      .describe('The text that replaces a redacted value, or `hash` for keyed hashes (see hash_key_env).'),
    hash_key_env: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name')
      .default(DEFAULT_HASH_KEY_ENV)
      .describe(`Environment variable holding the HMAC key (${MIN_HASH_KEY_LENGTH}+ characters) when replacement is \`hash\`.`),
  })
  .strict();

export type RedactOptions = z.output<typeof redactSchema>;

/** Always returns a string, so it serves whole values and matched parts of strings alike. */
type Replace = (value: JsonValue) => string;
type DocumentStep = (doc: JsonObject, nestedMaskData: boolean, replace: Replace) => JsonObject;
/**
 * `nestedMaskData`: mask steps at any depth under `lines` (LogRecord.nestedMaskData says when).
 * `text`: the line `doc` was parsed from, unchanged (SourceText), so keyed hashes can be made from
 * numbers as written (see redactHashingWrittenNumbers).
 */
export type Redactor = (doc: JsonObject, nestedMaskData?: boolean, text?: string) => JsonObject;

/**
 * A line that may hold a number its double cannot: 16 or more digits in a row (dots allowed
 * between them), or a three-digit exponent. Other lines hash their parsed values, which is exact.
 */
const MAY_HOLD_INEXACT_NUMBER = /(?:\d\.?){16}|[eE][+-]?\d{3}/;

/**
 * Compiles the options once into a function that returns the document with everything redacted.
 * A document with nothing to redact comes back as the same object; otherwise only the objects and
 * arrays on the way to a change are copied, because the input may be shared with other branches.
 */
export function createRedactor(
  options: RedactOptions,
  env: NodeJS.ProcessEnv = process.env,
  /** Mask steps at any depth under `lines` whatever the document (the dead letters). */
  deepMaskData = false,
): Redactor {
  const replace = createReplace(options, env);
  const steps: DocumentStep[] = [];
  // mask_data first: a masked step's values then are plain replacements the later steps leave alone.
  if (options.mask_data) steps.push((doc, nestedMaskData, using) => applyMaskData(doc, using, deepMaskData || nestedMaskData));
  for (const path of options.fields) {
    const segments = path.split('.');
    steps.push((doc, _nested, using) => replaceAtPath(doc, segments, 0, using) as JsonObject);
  }
  if (options.patterns.length > 0) {
    const redactText = createTextRedactor(options.patterns.map(compilePattern));
    steps.push((doc, _nested, using) => redactStrings(doc, (text) => redactText(text, using)) as JsonObject);
  }
  const run = (doc: JsonObject, nestedMaskData: boolean, using: Replace): JsonObject =>
    steps.reduce((current, step) => step(current, nestedMaskData, using), doc);
  const hashing = options.replacement === HASH_REPLACEMENT;
  return (doc, nestedMaskData = false, text) => {
    if (!hashing || text === undefined || !MAY_HOLD_INEXACT_NUMBER.test(text)) return run(doc, nestedMaskData, replace);
    return redactHashingWrittenNumbers(doc, text, nestedMaskData, replace, run);
  };
}

/**
 * Keyed hashes of values that hold numbers are made from the numbers as written in the line, never
 * from doubles: 9007199254740993 and 9007199254740992 (one double) hash differently, and 1e400
 * (Infinity, which JSON writes as null) does not hash like null. The steps run once on the line
 * read with numbers as written, collecting each hash in the order they are made, then on the
 * document, which has the same shape, taking those hashes in the same order. Should the two runs
 * not line up (they always do for a document parsed from `text`), the hashes of the parsed values
 * are used, as for records without text.
 */
function redactHashingWrittenNumbers(
  doc: JsonObject,
  text: string,
  nestedMaskData: boolean,
  replace: Replace,
  run: (doc: JsonObject, nestedMaskData: boolean, using: Replace) => JsonObject,
): JsonObject {
  const written = parseKeepingMaskData(text, true).value;
  if (written === null || typeof written !== 'object' || Array.isArray(written) || written instanceof WrittenNumber) return run(doc, nestedMaskData, replace);
  if (hasNestedMaskData(doc)) markNestedMaskData(written);
  const hashes: string[] = [];
  run(written, nestedMaskData, (value) => {
    const hash = replace(value);
    hashes.push(hash);
    return hash;
  });
  let next = 0;
  const redacted = run(doc, nestedMaskData, () => hashes[next++] ?? '');
  return next === hashes.length ? redacted : run(doc, nestedMaskData, replace);
}

/**
 * What the dead letters apply to every record they keep: mask_data at any depth, and the fields
 * and patterns of every redact transform of the pipeline (all of them: a record dead-lettered
 * anywhere may not have passed its own branch's redact yet), with the fixed `<redacted>`
 * replacement (a dead letter needs no join key, and needs no HMAC key to be written).
 */
export function deadLetterRedactor(transforms: readonly { type: string; options: unknown }[]): (doc: JsonObject) => JsonObject {
  const fields = new Set<string>();
  const patterns = new Map<string, RedactOptions['patterns'][number]>();
  for (const t of transforms) {
    if (t.type !== 'redact') continue;
    const options = t.options as RedactOptions;
    for (const field of options.fields) fields.add(field);
    for (const pattern of options.patterns) patterns.set(JSON.stringify(pattern), pattern);
  }
  const options = redactSchema.parse({ mask_data: true, fields: [...fields], patterns: [...patterns.values()], replacement: DEFAULT_MASK });
  return createRedactor(options, {}, true);
}

/** Why `replacement: hash` cannot work with this environment, or undefined when it can (or is not used). */
export function hashKeyProblem(options: RedactOptions, env: NodeJS.ProcessEnv): string | undefined {
  if (options.replacement !== HASH_REPLACEMENT) return undefined;
  const variable = options.hash_key_env;
  const key = env[variable];
  if (key !== undefined && key.length >= MIN_HASH_KEY_LENGTH) return undefined;
  const problem = key === undefined || key === '' ? 'is not set' : `is only ${key.length} characters long`;
  return (
    `redact replacement "hash" needs an HMAC key: ${variable} ${problem}; ` +
    `set ${variable} to a secret of at least ${MIN_HASH_KEY_LENGTH} characters`
  );
}

function createReplace(options: RedactOptions, env: NodeJS.ProcessEnv): Replace {
  if (options.replacement !== HASH_REPLACEMENT) {
    const text = options.replacement;
    return () => text;
  }
  const problem = hashKeyProblem(options, env);
  if (problem !== undefined) throw new LogferryError('LF_CONFIG_ENV', problem);
  const key = env[options.hash_key_env]!;
  // Canonical JSON so that equal values hash equally however their keys were ordered.
  return (value) => HASH_PREFIX + createHmac('sha256', key).update(canonicalJson(value)).digest('hex').slice(0, HASH_HEX_CHARS);
}

// ---------------------------------------------------------------------------------------------
// Fields

function replaceAtPath(value: JsonValue, path: readonly string[], depth: number, replace: Replace): JsonValue {
  if (depth === path.length) {
    const replaced = replace(value);
    // Keeps an already-redacted document identical instead of copying it for the same text.
    return replaced === value ? value : replaced;
  }
  if (value === null || typeof value !== 'object' || value instanceof WrittenNumber) return value;
  const segment = path[depth] as string;
  const descend = (child: JsonValue): JsonValue => replaceAtPath(child, path, depth + 1, replace);

  if (Array.isArray(value)) {
    if (segment === '*') return mapArray(value, descend);
    const index = arrayIndex(segment);
    if (index === undefined || index >= value.length) return value;
    const before = value[index] as JsonValue;
    const after = descend(before);
    if (after === before) return value;
    const copy = value.slice();
    copy[index] = after;
    return copy;
  }
  if (segment === '*') return mapObject(value, descend);
  if (!Object.hasOwn(value, segment)) return value;
  const before = value[segment] as JsonValue;
  const after = descend(before);
  return after === before ? value : withProperty({ ...value }, segment, after);
}

function arrayIndex(segment: string): number | undefined {
  return /^(?:0|[1-9]\d*)$/.test(segment) ? Number(segment) : undefined;
}

// ---------------------------------------------------------------------------------------------
// Copy-on-write helpers

function mapArray(array: JsonValue[], map: (item: JsonValue) => JsonValue): JsonValue[] {
  let copy: JsonValue[] | undefined;
  for (let i = 0; i < array.length; i++) {
    const before = array[i] as JsonValue;
    const after = map(before);
    if (after === before) continue;
    copy ??= array.slice();
    copy[i] = after;
  }
  return copy ?? array;
}

function mapObject(object: JsonObject, map: (item: JsonValue) => JsonValue): JsonObject {
  let copy: JsonObject | undefined;
  for (const key of Object.keys(object)) {
    const before = object[key] as JsonValue;
    const after = map(before);
    if (after === before) continue;
    copy ??= { ...object };
    withProperty(copy, key, after);
  }
  return copy ?? object;
}

/**
 * JSON.parse makes `__proto__` an ordinary own key; a plain assignment would call the prototype
 * setter instead and silently keep the secret, so the property is defined.
 */
function withProperty(object: JsonObject, key: string, value: JsonValue): JsonObject {
  Object.defineProperty(object, key, { value, writable: true, enumerable: true, configurable: true });
  return object;
}

// ---------------------------------------------------------------------------------------------
// Patterns

interface Span {
  start: number;
  end: number;
}

interface CompiledPattern {
  /** A cheap test that is true for every string the regex can match, so most strings skip the regex. */
  mightMatch(text: string): boolean;
  /** Adds the parts of `text` to replace. */
  collect(text: string, spans: Span[]): void;
}

const OCTET = '(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
const IPV4 = new RegExp(`(?<![\\d.])(?:${OCTET}\\.){3}${OCTET}(?!\\d|\\.\\d)`, 'g');
const EMAIL_LOCAL_CHAR = /[A-Za-z0-9._%+-]/;
const EMAIL_LOCAL_MAX = 64;
const EMAIL_DOMAIN = /(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,63}/y;
// Finds anything shaped like an IPv6 address; node's parser decides whether it is one.
const IPV6_CANDIDATE =
  /(?<![0-9A-Za-z:.])(?:[0-9A-Fa-f]{0,4}:){2,8}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?:%[0-9A-Za-z]+)?(?![0-9A-Za-z:]|\.\d)/g;
const CARD_CANDIDATE = /(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)/g;
const CARD_MIN_DIGITS = 13;
const CARD_MAX_DIGITS = 19;
const AWS_ACCESS_KEY = /(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])/g;
// The token is the last group so its span is the end of the match; token68 characters (RFC 6750).
const BEARER_TOKEN = /\b(?:Bearer|bearer|BEARER)[ \t]+([A-Za-z0-9\-._~+/]+=*)/g;

function compilePattern(pattern: RedactOptions['patterns'][number]): CompiledPattern {
  if (typeof pattern === 'object') {
    return regexPattern(new RegExp(pattern.regex, 'gu'), () => true, wholeMatch);
  }
  switch (pattern) {
    case 'email':
      return emailPattern;
    case 'ipv4':
      return regexPattern(IPV4, (text) => text.includes('.'), wholeMatch);
    case 'ipv6':
      // `::` alone (C++ or Ruby scope operator) parses as an address but is never one worth hiding.
      return regexPattern(IPV6_CANDIDATE, (text) => text.includes(':'), (match, spans) => {
        if (match[0] !== '::' && isIPv6(match[0])) wholeMatch(match, spans);
      });
    case 'credit_card':
      return regexPattern(CARD_CANDIDATE, (text) => text.length >= CARD_MIN_DIGITS, collectCardNumbers);
    case 'aws_access_key':
      return regexPattern(AWS_ACCESS_KEY, (text) => text.includes('AKIA') || text.includes('ASIA'), wholeMatch);
    case 'bearer_token':
      return regexPattern(BEARER_TOKEN, (text) => text.includes('earer') || text.includes('EARER'), (match, spans) => {
        const token = match[1] as string;
        const end = match.index + match[0].length;
        spans.push({ start: end - token.length, end });
      });
  }
}

/**
 * Starts from each '@' instead of running a regex from every position: a regex would scan up to 64
 * local-part characters at every index of a long word-character run, far too slow on MB strings.
 */
const emailPattern: CompiledPattern = {
  mightMatch: (text) => text.includes('@'),
  collect(text, spans) {
    for (let at = text.indexOf('@'); at !== -1; at = text.indexOf('@', at + 1)) {
      let start = at;
      while (start > at - EMAIL_LOCAL_MAX && start > 0 && EMAIL_LOCAL_CHAR.test(text.charAt(start - 1))) start--;
      if (start === at) continue;
      EMAIL_DOMAIN.lastIndex = at + 1;
      const domain = EMAIL_DOMAIN.exec(text);
      if (domain) spans.push({ start, end: at + 1 + domain[0].length });
    }
  },
};

function wholeMatch(match: RegExpExecArray, spans: Span[]): void {
  spans.push({ start: match.index, end: match.index + match[0].length });
}

function regexPattern(
  regex: RegExp,
  mightMatch: (text: string) => boolean,
  onMatch: (match: RegExpExecArray, spans: Span[]) => void,
): CompiledPattern {
  return {
    mightMatch,
    collect(text, spans) {
      // The regexes are shared and stateful (g flag); this loop is synchronous, so resetting is enough.
      regex.lastIndex = 0;
      for (let match = regex.exec(text); match !== null; match = regex.exec(text)) {
        if (match[0] === '') {
          // An empty match replaces nothing and would otherwise repeat forever at the same index.
          regex.lastIndex += (text.codePointAt(match.index) ?? 0) > 0xffff ? 2 : 1;
          continue;
        }
        onMatch(match, spans);
      }
    },
  };
}

/**
 * A candidate is a run of 13-19 digits with single spaces or dashes between them. When the whole run
 * fails the Luhn check, a card can still hide in it next to other numbers ("ref 12 4111 1111 1111
 * 1111"), so runs of its separator-delimited groups are tried as well, longest first.
 */
function collectCardNumbers(match: RegExpExecArray, spans: Span[]): void {
  const candidate = match[0];
  if (luhnValid(candidate.replace(/[ -]/g, ''))) {
    wholeMatch(match, spans);
    return;
  }
  const groups: { start: number; end: number; digits: string }[] = [];
  for (const group of candidate.matchAll(/\d+/g)) {
    groups.push({ start: match.index + group.index, end: match.index + group.index + group[0].length, digits: group[0] });
  }
  let first = 0;
  while (first < groups.length) {
    const last = longestValidRun(groups, first);
    if (last === undefined) {
      first++;
      continue;
    }
    spans.push({ start: (groups[first] as Span).start, end: (groups[last] as Span).end });
    first = last + 1;
  }
}

function longestValidRun(groups: readonly { digits: string }[], first: number): number | undefined {
  let digits = '';
  const lengths: number[] = [];
  for (let last = first; last < groups.length; last++) {
    digits += (groups[last] as { digits: string }).digits;
    if (digits.length > CARD_MAX_DIGITS) break;
    lengths.push(digits.length);
  }
  for (let offset = lengths.length - 1; offset >= 0; offset--) {
    const length = lengths[offset] as number;
    if (length >= CARD_MIN_DIGITS && luhnValid(digits.slice(0, length))) return first + offset;
  }
  return undefined;
}

export function luhnValid(digits: string): boolean {
  let sum = 0;
  let double = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let digit = digits.charCodeAt(i) - 48;
    if (double) {
      digit *= 2;
      if (digit > 9) digit -= 9;
    }
    sum += digit;
    double = !double;
  }
  return sum % 10 === 0;
}

/**
 * All patterns look at the original string and their spans are merged before anything is replaced,
 * so no pattern matches inside another's replacement (a hash's hex digits, say) and overlapping
 * matches become one replacement.
 */
function createTextRedactor(patterns: readonly CompiledPattern[]): (text: string, replace: Replace) => string {
  return (text, replace) => {
    const spans: Span[] = [];
    for (const pattern of patterns) {
      if (pattern.mightMatch(text)) pattern.collect(text, spans);
    }
    if (spans.length === 0) return text;
    let result = '';
    let copiedUpTo = 0;
    for (const span of mergeOverlapping(spans)) {
      result += text.slice(copiedUpTo, span.start) + replace(text.slice(span.start, span.end));
      copiedUpTo = span.end;
    }
    return result + text.slice(copiedUpTo);
  };
}

function mergeOverlapping(spans: Span[]): Span[] {
  spans.sort((a, b) => a.start - b.start);
  const merged: Span[] = [];
  for (const span of spans) {
    const previous = merged[merged.length - 1];
    if (previous && span.start < previous.end) previous.end = Math.max(previous.end, span.end);
    else merged.push({ ...span });
  }
  return merged;
}

function redactStrings(value: JsonValue, redactText: (text: string) => string): JsonValue {
  if (typeof value === 'string') return redactText(value);
  // A number as written is a number: patterns look at strings only.
  if (value === null || typeof value !== 'object' || value instanceof WrittenNumber) return value;
  const walk = (child: JsonValue): JsonValue => redactStrings(child, redactText);
  return Array.isArray(value) ? mapArray(value, walk) : mapObject(value, walk);
}
