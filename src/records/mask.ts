import type { JsonObject, JsonValue } from '../engine/types.js';

/**
 * Set on a document whose text names `mask_data` somewhere other than once on each element of
 * `lines` (a key given twice, a step nested inside another, a `lines` inside an array): masking
 * then walks everything under `lines` instead of its elements only. An enumerable symbol, so the
 * copies transforms make with `{ ...doc }` keep it, while JSON and `for...in` never see it. A deep
 * clone (JSON round trip, structuredClone) drops it: the redact transform reads the same decision
 * from the record (LogRecord.nestedMaskData); the mark still serves a transform that builds a new
 * record around the same document, and callers that mask a bare document.
 */
export const NESTED_MASK_DATA: unique symbol = Symbol('logferry.nestedMaskData');

type MarkedDocument = JsonObject & { [NESTED_MASK_DATA]?: true };

export function markNestedMaskData(doc: JsonObject): JsonObject {
  (doc as MarkedDocument)[NESTED_MASK_DATA] = true;
  return doc;
}

export function hasNestedMaskData(doc: JsonObject): boolean {
  return (doc as MarkedDocument)[NESTED_MASK_DATA] === true;
}

/**
 * Applies each step's own `mask_data` flag: a masked step's `input` and `output` become the
 * replacement. Returns the same object when nothing is masked (no copy on the common path).
 *
 * A step is an element of `lines`; in a document marked NESTED_MASK_DATA (or with `deep`), it is
 * any object at any depth under `lines`. The dead letters always mask deep.
 */
export function applyMaskData(doc: JsonObject, replace: (value: JsonValue) => JsonValue, deep = false): JsonObject {
  const lines = doc.lines;
  if (deep || hasNestedMaskData(doc)) {
    if (lines === null || typeof lines !== 'object') return doc;
    const masked = maskUnder(lines, replace);
    return masked === lines ? doc : withProperty({ ...doc }, 'lines', masked);
  }
  if (!Array.isArray(lines)) return doc;
  let changed: JsonValue[] | undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (!isMaskedStep(line)) continue;
    changed ??= lines.slice();
    changed[i] = maskStep(line, replace);
  }
  return changed ? { ...doc, lines: changed } : doc;
}

export const MASKED_FIELDS = ['input', 'output'] as const;

export function isMaskedStep(line: JsonValue | undefined): line is JsonObject {
  return line !== null && typeof line === 'object' && !Array.isArray(line) && line.mask_data === true;
}

export function hasMaskedSteps(doc: JsonObject): boolean {
  return Array.isArray(doc.lines) && doc.lines.some(isMaskedStep);
}

/** The dead letters use this whatever the pipeline's redact options: a masked value never lands on disk. */
export const DEFAULT_MASK = '<redacted>';

function maskStep(step: JsonObject, replace: (value: JsonValue) => JsonValue): JsonObject {
  const masked: JsonObject = { ...step };
  for (const field of MASKED_FIELDS) {
    if (Object.hasOwn(masked, field)) masked[field] = replace(masked[field] as JsonValue);
  }
  return masked;
}

interface Frame {
  readonly original: JsonObject | JsonValue[];
  /** The copy made once a child changed (or the masked step). */
  copy: JsonObject | JsonValue[] | undefined;
  readonly keys: readonly string[];
  next: number;
}

/**
 * Masks every object with `mask_data: true` at any depth of `root`, copying only the containers
 * on the way to a change. Iterative (an explicit stack), so no nesting depth overflows the call
 * stack. A masked step's `input` and `output` are replaced whole, so they are not walked.
 */
function maskUnder(root: JsonObject | JsonValue[], replace: (value: JsonValue) => JsonValue): JsonValue {
  const open = (value: JsonObject | JsonValue[]): Frame => {
    if (Array.isArray(value)) return { original: value, copy: undefined, keys: Object.keys(value), next: 0 };
    if (value.mask_data !== true) return { original: value, copy: undefined, keys: Object.keys(value), next: 0 };
    const keys = Object.keys(value).filter((key) => !(MASKED_FIELDS as readonly string[]).includes(key));
    return { original: value, copy: maskStep(value, replace), keys, next: 0 };
  };
  const stack: Frame[] = [open(root)];
  let finished: JsonValue = root;
  while (stack.length > 0) {
    const frame = stack[stack.length - 1]!;
    if (frame.next < frame.keys.length) {
      const child = (frame.original as Record<string, JsonValue>)[frame.keys[frame.next++]!];
      if (child !== null && typeof child === 'object') stack.push(open(child));
      continue;
    }
    stack.pop();
    finished = frame.copy ?? frame.original;
    const parent = stack[stack.length - 1];
    if (!parent || finished === frame.original) continue;
    const key = parent.keys[parent.next - 1]!;
    if (!parent.copy) parent.copy = Array.isArray(parent.original) ? parent.original.slice() : { ...parent.original };
    if (Array.isArray(parent.copy)) parent.copy[Number(key)] = finished;
    else withProperty(parent.copy, key, finished);
  }
  return finished;
}

/** `__proto__` is an ordinary key in parsed JSON: a plain assignment would call the prototype setter. */
function withProperty(object: JsonObject, key: string, value: JsonValue): JsonObject {
  Object.defineProperty(object, key, { value, writable: true, enumerable: true, configurable: true });
  return object;
}
