import { z } from 'zod';
import type { ComponentKind } from '../engine/types.js';
import type { ComponentRegistry } from '../registry.js';
import { pipelineSchema } from './load.js';

type JsonSchema = Record<string, unknown>;

const SECTION_OF: Record<ComponentKind, 'sources' | 'transforms' | 'sinks'> = { source: 'sources', transform: 'transforms', sink: 'sinks' };

/**
 * The JSON Schema of a pipeline file, built from the same zod definitions that validate it, so an
 * editor's completion and `logferry validate` can never disagree. Each component section is a map
 * of ids to one of the registered types, chosen by `type`.
 */
export function pipelineJsonSchema(registry: ComponentRegistry): JsonSchema {
  const top = z.toJSONSchema(pipelineSchema, { io: 'input', unrepresentable: 'any' }) as JsonSchema & { properties: Record<string, JsonSchema> };
  for (const kind of ['source', 'transform', 'sink'] as const) {
    const variants = registry.definitions(kind).map((definition) => {
      const options = z.toJSONSchema(definition.schema, { io: 'input', unrepresentable: 'any' }) as JsonSchema & {
        properties?: Record<string, JsonSchema>;
        required?: string[];
      };
      const properties: Record<string, JsonSchema> = {
        type: { const: definition.type, description: definition.description },
        ...(kind === 'source' ? {} : { inputs: { type: 'array', items: { type: 'string' }, minItems: 1, description: 'Ids of the sources or transforms this component receives from.' } }),
        ...(options.properties ?? {}),
      };
      return {
        type: 'object',
        title: definition.type,
        description: definition.description,
        properties,
        required: ['type', ...(kind === 'source' ? [] : ['inputs']), ...(options.required ?? [])],
        additionalProperties: false,
      };
    });
    top.properties[SECTION_OF[kind]] = {
      type: 'object',
      description: (top.properties[SECTION_OF[kind]] as JsonSchema | undefined)?.description,
      propertyNames: { pattern: '^[A-Za-z0-9_-]{1,64}$' },
      additionalProperties: { oneOf: variants },
    };
  }
  return { $schema: 'https://json-schema.org/draft/2020-12/schema', title: 'logferry pipeline', ...top };
}
