import type { ErrorCode } from '../errors.js';
import type { LineReference, RecordKind, RecordOrigin } from './types.js';

/**
 * Bytes that own their whole ArrayBuffer, so it can be transferred: a view of a read buffer, or a
 * small Buffer from Node's shared pool, is copied first (transferring those would take the rest
 * of the buffer with it).
 */
export function transferable(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  if (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer) {
    return bytes as Uint8Array<ArrayBuffer>;
  }
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return copy;
}

/** What a pool worker needs to rebuild the transforms of the pipeline: plain, cloneable data. */
export interface PoolSetup {
  /** The pipeline file, so plugin paths resolve as they do on the main thread. */
  readonly configFile: string;
  readonly plugins: readonly string[];
  readonly transforms: readonly { id: string; type: string; options: unknown; inputs: readonly string[] }[];
  readonly sinks: readonly { id: string; inputs: readonly string[]; gzip: boolean }[];
  /** Scrubbed from the workers' log lines, as on the main thread. */
  readonly secrets?: readonly string[];
}

/** One line for a worker; `bytes` is transferred, so the main thread no longer holds it. */
export interface PoolTask {
  readonly sourceId: string;
  readonly bytes: ArrayBuffer;
  readonly offset: number;
  readonly length: number;
  readonly origin: RecordOrigin;
  /** The source's max_depth for this line (LineLimits.maxDepth). */
  readonly maxDepth?: number | undefined;
}

/**
 * What happened to the record, in the order the engine would have done it inline: deliveries to
 * sinks, dead letters at a transform, drops. Bodies are transferred back, never copied.
 */
export type PoolEvent =
  | { readonly kind: 'deliver'; readonly sink: string; readonly key?: string; readonly body: Uint8Array; readonly gzip?: Uint8Array }
  /** `docJson` is missing when the document could not be serialized (the dead letter says why). */
  | { readonly kind: 'dead_letter'; readonly component: string; readonly code: ErrorCode; readonly reason: string; readonly docJson?: string | undefined; readonly key?: string | undefined }
  | { readonly kind: 'dropped'; readonly transform: string };

export type PoolOutcome =
  | {
      readonly ok: true;
      readonly recordKind: RecordKind;
      readonly receivedDigest?: string;
      readonly events: readonly PoolEvent[];
      /** Per-component counters the transforms bumped (redacted, not_final_jobs, ...). */
      readonly counts: readonly (readonly [component: string, name: string, by: number])[];
    }
  | {
      /** The line is not a record: it goes to the dead letters as the source's. */
      readonly ok: false;
      readonly code: ErrorCode;
      readonly reason: string;
      readonly text?: string;
      readonly docJson?: string;
      readonly rawBase64?: string;
      readonly line?: LineReference;
    };

/**
 * A worker's answer when it cannot handle any line: it could not build the transforms (a
 * replacement worker whose plugin fails to load). Not the line's fault: the pipeline stops
 * without acknowledging it, instead of dead-lettering every large line that comes after.
 */
export interface PoolBroken {
  readonly broken: string;
}
