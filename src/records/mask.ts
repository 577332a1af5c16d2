import type { JsonObject, JsonValue } from '../engine/types.js';

/**
 * Applies each step's own `mask_data` flag: a masked step's `input` and `output` become the
 * replacement. Returns the same object when nothing is masked (no copy on the common path).
 */
export function applyMaskData(doc: JsonObject, replace: (value: JsonValue) => JsonValue): JsonObject {
  const lines = doc.lines;
  if (!Array.isArray(lines)) return doc;
  let changed: JsonValue[] | undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (!isMaskedStep(line)) continue;
    changed ??= lines.slice();
    const masked: JsonObject = { ...line };
    for (const field of MASKED_FIELDS) {
      if (field in masked) masked[field] = replace(masked[field] as JsonValue);
    }
    changed[i] = masked;
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
