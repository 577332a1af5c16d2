import type { z } from 'zod';
import type { ComponentDefinition, ComponentKind } from './engine/types.js';
import { LogferryError } from './errors.js';

/**
 * A definition as the registry stores it: the same object, its options' type erased. The one
 * typed way from a definition with typed options to the registry's form (the built-ins, a
 * plugin's `defineSink`); it compiles only for a complete definition of kind `K`.
 */
export function registrable<K extends ComponentKind, S extends z.ZodType>(definition: ComponentDefinition<K, S>): ComponentDefinition<K> {
  return definition;
}

/** Component types by kind; built-ins are registered at start-up, plugins add theirs. */
export class ComponentRegistry {
  private readonly byKind: Record<ComponentKind, Map<string, ComponentDefinition>> = {
    source: new Map(),
    transform: new Map(),
    sink: new Map(),
  };

  register<K extends ComponentKind, S extends z.ZodType>(typed: ComponentDefinition<K, S>): this {
    const definition: ComponentDefinition = registrable(typed);
    const table = this.byKind[definition.kind];
    if (table.has(definition.type)) {
      throw new LogferryError('LF_PLUGIN_INVALID', `${definition.kind} type "${definition.type}" is registered twice: each type name may be defined once, built-in or plugin`);
    }
    table.set(definition.type, definition);
    return this;
  }

  get(kind: ComponentKind, type: string): ComponentDefinition | undefined {
    return this.byKind[kind].get(type);
  }

  types(kind: ComponentKind): string[] {
    return [...this.byKind[kind].keys()].sort();
  }

  definitions(kind: ComponentKind): ComponentDefinition[] {
    return [...this.byKind[kind].values()];
  }
}
