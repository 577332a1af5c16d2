import type { z } from 'zod';
import type { ErrorCode } from '../errors.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import type { SinkState } from './sink-state.js';

export type JsonValue = string | number | boolean | null | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

/** A job record has integer `id` and `flow_id`; an activity event has a string `event`. */
export type RecordKind = 'job' | 'activity';

/** Where a record came from, carried into dead letters so an operator can find the input again. */
export interface RecordOrigin {
  source: string;
  file?: string;
  /** Byte offset of the start of the line in `file`. */
  offset?: number;
}

/**
 * One document flowing through the pipeline. Transforms treat records and their `doc` as immutable:
 * a transform that changes something returns a new record with a new doc (copy on write), because
 * one record can fan out to several branches that must not see each other's changes.
 */
export interface LogRecord {
  readonly kind: RecordKind;
  readonly doc: JsonObject;
  readonly origin: RecordOrigin;
  /** Object key relative to the sink's root, set by path_format. */
  readonly key?: string;
  /**
   * First 16 hex chars of SHA-256 over the canonical JSON of the event as received. Computed before
   * any transform changes the doc, so redelivery always maps to the same key.
   */
  readonly receivedDigest?: string;
  /**
   * The line this record was parsed from, kept so that sinks can write the document by copying
   * the text it was read as (see records/body.ts). Transforms pass it on untouched (`...record`).
   */
  readonly sourceText?: SourceText;
  /**
   * The numbers key parts are made of (`id`, `flow_id`, `report.workato.job_context.user_id`,
   * `team.id`) as written in the line, for those whose text is not what String() gives of the
   * parsed double: beyond 2^53, `1E2`, `1.0`, `-0`, `1e400`. Undefined for almost every record.
   * A key uses a text only while the doc still holds the value it was parsed as.
   */
  readonly writtenNumbers?: WrittenNumbers;
  /**
   * Set by the parser when the line names `mask_data` somewhere other than once on each element
   * of `lines` (a step nested in another, a step in an array in `lines`, a key given twice): the
   * redact transform then masks steps at any depth under `lines`. Kept on the record, not only on
   * the document, because a transform that deep-clones the document (JSON round trip,
   * structuredClone) keeps the record's fields (`{ ...record, doc }`) but drops the document's mark.
   */
  readonly nestedMaskData?: boolean;
}

/** Paths of the numbers that key parts are made of (see LogRecord.writtenNumbers). */
export type KeyNumberPath = 'id' | 'flow_id' | 'report.workato.job_context.user_id' | 'team.id';
export type WrittenNumbers = Readonly<Partial<Record<KeyNumberPath, { readonly value: number; readonly text: string }>>>;

/** Per-line limits a source passes to `emitLine`. */
export interface LineLimits {
  /**
   * Deepest nesting of objects and arrays a line may have (`{}` is 1); a deeper line is a dead
   * letter (LF_RECORD_TOO_DEEP) before it is parsed. Default 64.
   */
  readonly maxDepth?: number;
}

/**
 * A line and the document JSON.parse made of it; only kept when no key in it appears twice. It
 * holds values before masking, so it never serializes or prints them (toJSON and inspect say
 * "withheld"): a plugin that logs or stringifies a whole record cannot leak them through it.
 */
export interface SourceText {
  readonly doc: JsonObject;
  readonly text: string;
  /**
   * The UTF-8 bytes read. Undefined for an ASCII line on the main thread: it is its text's latin1
   * encoding, so keeping both would hold every line in flight twice.
   */
  readonly bytes: Uint8Array | undefined;
  toJSON(): string;
}

/** The three delivery outcomes: delivered, retried inside the sink (errored), rejected for good. */
export type DeliveryOutcome = 'delivered' | 'rejected';

/**
 * A record handed to a sink. The sink must call exactly one of `delivered()` or `rejected()` per
 * delivery, and only after it has the destination's answer: the source position advances on it.
 */
export interface Delivery {
  readonly record: LogRecord;
  delivered(): void;
  /**
   * Record-level failure: the destination can never accept this record (and only this one); it goes
   * to the dead letters with this reason. A destination-level failure (every record would fail the
   * same way) is never a rejection: the sink holds the delivery and retries (see SinkState and
   * retryUntilFinal), or leaves it unsettled on shutdown. `code` defaults to LF_SINK_REJECTED; one
   * that is not an ErrorCode (a sink written in JavaScript) is dead-lettered as LF_SINK_REJECTED
   * with the original named in the reason.
   */
  rejected(reason: string, code?: ErrorCode): void;
}

export interface ComponentContext {
  /** The component's id in the pipeline (its YAML key). */
  readonly id: string;
  readonly log: Logger;
  readonly metrics: Metrics;
  /** Aborted when the pipeline stops; long waits (retries, polls) must end on it. */
  readonly signal: AbortSignal;
  readonly dataDir: string;
}

export interface SinkContext extends ComponentContext {
  /**
   * The engine's record of this sink's destination (healthy, retrying, blocked) and the gate its
   * deliveries wait at while it fails. The delivery toolkit (retryUntilFinal) reports into it; a
   * plugin sink that retries on its own should call `failed`/`answered` the same way.
   */
  readonly state: SinkState;
}

/** What a sink's health check found; `warning` is logged but does not count as a failure. */
export interface HealthcheckResult {
  readonly status: 'ok' | 'warning' | 'failed';
  /** One sentence: what was checked and, when it failed, what to check. */
  readonly message: string;
}

export interface SourceContext extends ComponentContext {
  /** `--once`: read every input to its end, then return. */
  readonly once: boolean;
  /** State saved by the previous run's `checkpoint()`, or undefined on a first run. */
  readonly restored: unknown;
  /**
   * Hands a record to the pipeline. Resolves once the record has a place in the buffer budget, so a
   * source that awaits it is paused by slow sinks. `onFinal` runs when every sink has delivered the
   * record or it went to the dead letters; only then may the source's position move past it.
   */
  emit(record: LogRecord, bytes: number, onFinal: () => void): Promise<void>;
  /**
   * Hands one NDJSON line (without its newline) to the pipeline, which parses it: inline, or on the
   * worker pool when it is large. Lines that are not records go to the dead letters. Same promise
   * and `onFinal` contract as `emit`. The pipeline may take over the line's memory (it is moved to
   * a worker), so the caller must not reuse the bytes; a view of a reusable read buffer is copied.
   * `limits` (pass the same object every time) bounds what a line may be; see LineLimits.
   */
  emitLine(line: Uint8Array, origin: RecordOrigin, onFinal: () => void, limits?: LineLimits): Promise<void>;
  /** Writes a line that could not become a record to the dead letters; resolves when durable. */
  deadLetter(entry: DeadLetterInput): Promise<void>;
  /**
   * Reports that an input (a file the source should read) cannot be opened or read (code
   * LF_INPUT_UNREADABLE). The engine logs it once until `inputReadable` is called for the same
   * input, and `run --once` exits 74 when an input is still unreadable at its end. Call it for
   * each failed attempt (it is cheap); the source keeps retrying in follow mode.
   */
  inputUnreadable(input: string, error: unknown): void;
  /** The input can be read again (after `inputUnreadable`); a no-op otherwise. */
  inputReadable(input: string): void;
}

export interface Source {
  run(ctx: SourceContext): Promise<void>;
  /** JSON-serialisable position state; persisted atomically by the engine. */
  checkpoint(): unknown;
  /** Bytes known to exist but not yet acknowledged (for status lines). */
  bytesBehind?(): number;
  /** The same, per input file (for the metrics endpoint; the engine caps how many it shows). */
  bytesBehindByFile?(): { file: string; bytes: number }[];
}

export type TransformResult = LogRecord | LogRecord[] | null;

export interface Transform {
  /** Returns the records to pass on (null or [] drops the record). Throw RecordError to dead-letter it. */
  process(record: LogRecord): TransformResult | Promise<TransformResult>;
}

export interface Sink {
  /**
   * Consumes deliveries until the input ends, settling each one. Resolves when every delivery it
   * took has been settled. Retries live inside the sink; they must stop when ctx.signal aborts.
   */
  run(input: AsyncIterable<Delivery[]>): Promise<void>;
  close?(): Promise<void>;
  /**
   * Set by sinks that send or store each document gzip-compressed on its own (an S3 object, an
   * HTTP request per record): the worker pool then compresses large documents off the main thread
   * and the sink finds the result with `preparedGzip(record)`.
   */
  readonly bodyCompression?: 'gzip';
  /**
   * Checks the destination before records flow (S3 HeadBucket, an HTTP request, a writable folder).
   * Resolves to undefined when the sink's `healthcheck.enabled` is false. Must not throw, must not
   * send records, and must end when `signal` aborts.
   */
  healthcheck?(signal: AbortSignal): Promise<HealthcheckResult | undefined>;
}

export type ComponentKind = 'source' | 'transform' | 'sink';

export interface InstanceOf {
  source: Source;
  transform: Transform;
  sink: Sink;
}

export interface ContextOf {
  source: ComponentContext;
  transform: ComponentContext;
  sink: SinkContext;
}

/**
 * One definition per component type: its schema gives validation, the TypeScript type of its
 * options, their defaults and the JSON Schema. `build` is the only place that does I/O.
 *
 * `ComponentDefinition<K>` (the schema left at z.ZodType) is the form the registry stores, with
 * the options' type erased to `unknown`: any `ComponentDefinition<K, S>` is one, without a cast
 * (see `registrable` in src/registry.ts), because the functions that take options are methods.
 * What keeps that sound is the one way options reach them: config/load.ts (and the pool worker,
 * with what it parsed) pass each definition only the output of its own `schema`.
 */
export interface ComponentDefinition<K extends ComponentKind = ComponentKind, S extends z.ZodType = z.ZodType> {
  readonly kind: K;
  readonly type: string;
  readonly description: string;
  readonly schema: S;
  /** Sinks that write records at their key; a pipeline without path_format upstream is a config error. */
  readonly requiresKey?: boolean;
  /** Transforms that set `record.key`. */
  readonly providesKey?: boolean;
  /** Transforms that apply each step's mask_data flag (used to warn about unmasked branches). */
  appliesMaskData?(options: z.output<S>): boolean;
  /**
   * The option values that are secrets (tokens, passwords, URLs that carry a token). The engine
   * scrubs them, and their usual encodings, from every log line and dead letter whatever their
   * source (a destination that echoes request headers included).
   */
  secrets?(options: z.output<S>): readonly string[];
  /**
   * Checks what the schema cannot see and `build` would refuse (files exist and parse, environment
   * variables are set), so `logferry validate` catches it. Returns one message per problem, each
   * with the option's dotted path relative to the component; does no network I/O.
   */
  preflight?(options: z.output<S>, env: NodeJS.ProcessEnv): readonly PreflightProblem[];
  build(options: z.output<S>, ctx: ContextOf[K]): InstanceOf[K] | Promise<InstanceOf[K]>;
}

/** A line named by its length in bytes and SHA-256 (hex), so a dead letter need not hold its text. */
export interface LineReference {
  length: number;
  sha256: string;
}

/**
 * One finding of a component's `preflight`: `path` is dotted (`tls.ca_file`, `include[0]`) relative
 * to the component. A `warning` is logged by `validate` and at the start of `run` but stops nothing.
 */
export interface PreflightProblem {
  path: string;
  message: string;
  warning?: boolean;
}

export interface DeadLetterInput {
  /** A documented code (see docs/errors.md); one that is not (from untyped code) is written as LF_INTERNAL, the original kept in the reason. */
  code: ErrorCode;
  reason: string;
  component: string;
  origin: RecordOrigin;
  /**
   * The line that could not become a record. Written only with `dead_letter.keep_text: true`
   * (it may hold masked values); otherwise the dead letter names it by `line` (or the hash of this text).
   */
  text?: string;
  /** The record, when it parsed: written with mask_data and every redact field and pattern applied. */
  doc?: JsonObject;
  /**
   * With `doc`, what `logferry dead-letter replay` needs to send the record again as it was: its
   * kind, its key (set by path_format; a sink writes the replayed record at the same key) and its
   * receivedDigest (so a key computed again from the digest is the same too).
   */
  kind?: RecordKind;
  key?: string;
  receivedDigest?: string;
  /** A line that was not valid UTF-8, as base64; kept only like `text`. */
  rawBase64?: string;
  /** Length and hash of the line at `origin` (its bytes as read). */
  line?: LineReference;
}
