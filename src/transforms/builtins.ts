import type { ComponentDefinition } from '../engine/types.js';
import { ComponentRegistry, registrable } from '../registry.js';
import { pathFormatTransform } from './path-format.js';
import { redactTransform } from './redact.js';
import { selectTransform } from './select.js';

/**
 * Every transform that ships with logferry: the one list the main thread's registry
 * (src/builtins.ts) and each pool worker's are made from, so a new built-in runs in both. It is
 * kept apart from the sinks and sources so a worker does not load the S3 and HTTP clients.
 */
export const builtinTransforms: readonly ComponentDefinition<'transform'>[] = [
  registrable(selectTransform),
  registrable(redactTransform),
  registrable(pathFormatTransform),
];

/** A registry of the built-in transforms only: what a pool worker starts from before plugins. */
export function builtinTransformRegistry(): ComponentRegistry {
  const registry = new ComponentRegistry();
  for (const definition of builtinTransforms) registry.register(definition);
  return registry;
}
