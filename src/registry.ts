import type { ComponentDefinition, ComponentKind } from './engine/types.js';
import { LogferryError } from './errors.js';

/** Component types by kind; built-ins are registered at start-up, plugins add theirs. */
export class ComponentRegistry {
  private readonly byKind: Record<ComponentKind, Map<string, ComponentDefinition>> = {
    source: new Map(),
    transform: new Map(),
    sink: new Map(),
  };

  register(definition: ComponentDefinition): this {
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
