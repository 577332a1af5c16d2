import type { z } from 'zod';
import type { ComponentDefinition } from '../engine/types.js';
import { LogferryError } from '../errors.js';
import { registrable } from '../registry.js';

/** Marks objects made by definePlugin, so a module that exports something else is caught early. */
const PLUGIN_BRAND = Symbol.for('logferry.plugin');

export interface PluginSpec {
  /** Shown in logs and errors; by convention the npm package name. */
  readonly name: string;
  readonly sources?: readonly ComponentDefinition<'source'>[];
  readonly transforms?: readonly ComponentDefinition<'transform'>[];
  readonly sinks?: readonly ComponentDefinition<'sink'>[];
}

export interface LogferryPlugin extends PluginSpec {
  readonly [PLUGIN_BRAND]: true;
}

/**
 * The default export of a plugin module. Each component brings its own zod schema, so
 * `logferry validate` checks plugin options with the same positions and messages as built-ins.
 */
export function definePlugin(spec: PluginSpec): LogferryPlugin {
  if (!spec || typeof spec.name !== 'string' || spec.name.length === 0) throw new LogferryError('LF_PLUGIN_INVALID', 'definePlugin: `name` is required');
  for (const [list, kind] of [
    [spec.sources, 'source'],
    [spec.transforms, 'transform'],
    [spec.sinks, 'sink'],
  ] as const) {
    for (const definition of list ?? []) {
      if (definition.kind !== kind) throw new LogferryError('LF_PLUGIN_INVALID', `definePlugin(${spec.name}): "${definition.type}" is listed as a ${kind} but has kind "${definition.kind}"`);
      if (!/^[a-z][a-z0-9_]*$/.test(definition.type)) throw new LogferryError('LF_PLUGIN_INVALID', `definePlugin(${spec.name}): type "${definition.type}" must be snake_case`);
    }
  }
  return Object.freeze({ ...spec, [PLUGIN_BRAND]: true as const });
}

export function isPlugin(value: unknown): value is LogferryPlugin {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[PLUGIN_BRAND] === true;
}

/** Typed helpers: the options' type is inferred from the schema, so `build` needs no annotations. */
export function defineSink<S extends z.ZodType>(definition: Omit<ComponentDefinition<'sink', S>, 'kind'>): ComponentDefinition<'sink'> {
  return registrable<'sink', S>({ ...definition, kind: 'sink' });
}

export function defineTransform<S extends z.ZodType>(definition: Omit<ComponentDefinition<'transform', S>, 'kind'>): ComponentDefinition<'transform'> {
  return registrable<'transform', S>({ ...definition, kind: 'transform' });
}

export function defineSource<S extends z.ZodType>(definition: Omit<ComponentDefinition<'source', S>, 'kind'>): ComponentDefinition<'source'> {
  return registrable<'source', S>({ ...definition, kind: 'source' });
}
