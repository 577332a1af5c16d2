import { createHash } from 'node:crypto';
import type { JsonValue } from '../engine/types.js';

/** JSON with object keys sorted at every depth, so equal documents give equal bytes. */
export function canonicalJson(value: JsonValue): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return '[' + value.map(canonicalJson).join(',') + ']';
  const keys = Object.keys(value).sort();
  return '{' + keys.map((k) => JSON.stringify(k) + ':' + canonicalJson(value[k] as JsonValue)).join(',') + '}';
}

/** First 16 hex characters of SHA-256 over the canonical JSON of the value. */
export function contentDigest(value: JsonValue): string {
  return createHash('sha256').update(canonicalJson(value)).digest('hex').slice(0, 16);
}
