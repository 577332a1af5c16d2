import { ComponentRegistry, registrable } from './registry.js';
import { consoleSink } from './sinks/console.js';
import { fileSink } from './sinks/file.js';
import { httpSink } from './sinks/http.js';
import { otlpSink } from './sinks/otlp.js';
import { s3Sink } from './sinks/s3.js';
import { jobLogTailSource } from './sources/job-log-tail.js';
import { builtinTransforms } from './transforms/builtins.js';
import type { ComponentDefinition } from './engine/types.js';

/** Every component that ships with logferry; plugins register theirs on the same registry. */
export function builtinRegistry(): ComponentRegistry {
  const registry = new ComponentRegistry();
  const all: readonly ComponentDefinition[] = [
    registrable(jobLogTailSource),
    // The transforms come from their own list: the pool workers build their registry from it too.
    ...builtinTransforms,
    registrable(fileSink),
    registrable(consoleSink),
    registrable(httpSink),
    registrable(s3Sink),
    registrable(otlpSink),
  ];
  for (const definition of all) registry.register(definition);
  return registry;
}
