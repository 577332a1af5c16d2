import { ComponentRegistry } from './registry.js';
import { consoleSink } from './sinks/console.js';
import { fileSink } from './sinks/file.js';
import { httpSink } from './sinks/http.js';
import { s3Sink } from './sinks/s3.js';
import { jobLogTailSource } from './sources/job-log-tail.js';
import { pathFormatTransform } from './transforms/path-format.js';
import { redactTransform } from './transforms/redact.js';
import { selectTransform } from './transforms/select.js';
import type { ComponentDefinition } from './engine/types.js';

/** Every component that ships with logferry; plugins register theirs on the same registry. */
export function builtinRegistry(): ComponentRegistry {
  const registry = new ComponentRegistry();
  const all: ComponentDefinition[] = [
    jobLogTailSource as unknown as ComponentDefinition,
    selectTransform as unknown as ComponentDefinition,
    redactTransform as unknown as ComponentDefinition,
    pathFormatTransform as unknown as ComponentDefinition,
    fileSink as unknown as ComponentDefinition,
    consoleSink as unknown as ComponentDefinition,
    httpSink as unknown as ComponentDefinition,
    s3Sink as unknown as ComponentDefinition,
  ];
  for (const definition of all) registry.register(definition);
  return registry;
}
