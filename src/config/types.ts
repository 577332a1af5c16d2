import type { ComponentDefinition, ComponentKind } from '../engine/types.js';
import type { PoolOptions } from '../engine/record-pool.js';
import type { ConfigProblem } from '../errors.js';

/** One validated component of the pipeline: its options have their defaults applied. */
export interface ComponentConfig {
  /** The component's YAML key, unique across sources, transforms and sinks. */
  readonly id: string;
  readonly kind: ComponentKind;
  readonly type: string;
  /** Ids of the components whose records this one receives (empty for sources). */
  readonly inputs: readonly string[];
  readonly options: unknown;
  readonly definition: ComponentDefinition;
  /** Dotted path in the YAML, e.g. `sinks.archive`, for messages. */
  readonly path: string;
}

/** A pipeline file after env substitution, validation and the graph checks. */
export interface PipelineConfig {
  readonly file: string;
  /** Absolute path. */
  readonly dataDir: string;
  readonly bufferMaxBytes: number;
  readonly pool: PoolOptions;
  readonly shutdownTimeoutMs: number;
  readonly checkpointIntervalMs: number;
  readonly statusIntervalMs: number;
  readonly plugins: readonly string[];
  /** `dead_letter.keep_text`: dead letters keep the text of lines that are not records (default false). */
  readonly deadLetterKeepText?: boolean;
  /** `dead_letter.max_file_bytes`: one dead-letter file's size before the next one starts (default 64 MiB). */
  readonly deadLetterMaxFileBytes?: number;
  /** `dead_letter.max_bytes`: all dead-letter files together; past it the pipeline holds (default 1 GiB). */
  readonly deadLetterMaxBytes?: number;
  /** `api`: the operators' HTTP API; `enabled` undefined means on in follow mode, off with --once. */
  readonly api?: { readonly enabled?: boolean; readonly address: string };
  readonly sources: readonly ComponentConfig[];
  readonly transforms: readonly ComponentConfig[];
  readonly sinks: readonly ComponentConfig[];
  /** Problems that do not stop the pipeline but that an operator should see (logged at start). */
  readonly warnings: readonly ConfigProblem[];
}
