import { setMaxListeners } from 'node:events';
import { mkdir } from 'node:fs/promises';
import type { ComponentConfig, PipelineConfig } from '../config/types.js';
import { LogferryError, componentBuildFailure, errorMessage, ioErrorText, knownCode, unprocessable, type ErrorCode } from '../errors.js';
import { ByteBudget, isRecordBytes, recordCharge } from './budget.js';
import { Channel } from './channel.js';
import { CheckpointSaver, CheckpointStore } from './checkpoints.js';
import { DeadLetterWriter, DeadLetterWriterStopped } from './dead-letters.js';
import type { Logger } from './logger.js';
import { Metrics } from './metrics.js';
import { OrderedSteps } from './ordered.js';
import type { PoolOutcome, PoolSetup } from './pool-protocol.js';
import { PoolBrokenError, RecordPool, poolThreads } from './record-pool.js';
import { parseLine } from '../records/parse.js';
import { documentBody, preparedRecord } from '../records/body.js';
import { deadLetterRedactor } from '../records/redaction.js';
import { isRecordLike } from './record-shape.js';
import { TransformGraph, type WalkEvents, type WalkFailure } from './graph-walk.js';
import { collectSecrets, SecretScrubber } from './secrets.js';
import { SinkState, type RetryReasonClass, type SinkStatus } from './sink-state.js';
import { plural } from '../plural.js';
import type {
  ComponentContext,
  DeadLetterInput,
  Delivery,
  JsonObject,
  LineLimits,
  LogRecord,
  RecordOrigin,
  Sink,
  SinkContext,
  Source,
  SourceContext,
  Transform,
} from './types.js';

export interface PipelineOptions {
  once: boolean;
  log: Logger;
  metrics?: Metrics;
  /** Scrubs secrets from dead letters; built from the components' `secrets` hooks when not given. */
  scrubber?: SecretScrubber;
  /** How often a failing sink logs a reminder (default REMINDER_INTERVAL_MS; tests shorten it). */
  sinkReminderMs?: number;
  /**
   * `run --once --max-wait`: once a sink has been failing (retrying or blocked) this long without a
   * break, the run gives up: reading stops, the records held are left unacknowledged (the next run
   * sends them) and the summary names the sinks (`heldBy`). Unset: wait for as long as it takes.
   */
  maxWaitMs?: number;
  /**
   * The pipeline runs a `logferry dead-letter replay` (see GraphEntry): its dead-letter writer does
   * not finish an interrupted replay (this replay owns the progress file) and does not hold at
   * dead_letter.max_bytes (the entries it writes replace the ones the replay removes).
   */
  replaying?: boolean;
}

/**
 * Where `logferry dead-letter replay` puts records back into the graph instead of sources: at a
 * transform (it runs on the record, then what follows it) or at a sink (that sink only). The
 * budget, acknowledgement (`onFinal`), sink states, retries and dead letters are those of `run`.
 */
export interface GraphEntry {
  /** Aborted when the run ends early (a stop, --max-wait gave up, a fatal error): emit no more. */
  readonly signal: AbortSignal;
  /** Resolves once the record has its place in the budget; `onFinal` as in SourceContext.emit. */
  emit(componentId: string, record: LogRecord, bytes: number, onFinal: () => void): Promise<void>;
}

/** A source as /ready sees it (Pipeline.sourceStates). */
export interface SourceStatus {
  readonly source: string;
  readonly state: 'starting' | 'reading' | 'failing' | 'stopped';
  readonly reason?: string;
}

export interface RunSummary {
  /** Records still unacknowledged when shutdown_timeout ran out (0 on a clean drain). */
  abandoned: number;
  durationMs: number;
  /**
   * What could not be done (`run --once` exits 74 when this is not empty): inputs that could not
   * be opened or read when the run ended (LF_INPUT_UNREADABLE), checkpoints whose final save
   * failed (LF_CHECKPOINT_FAILED). One sentence each, for the last log line.
   */
  problems: { code: 'LF_INPUT_UNREADABLE' | 'LF_CHECKPOINT_FAILED'; message: string }[];
  /** The failing sinks `maxWaitMs` gave up on (empty when it did not); their records were not acknowledged. */
  heldBy: SinkStatus[];
}

const SETTLED = Promise.resolve();
const NO_LIMITS: LineLimits = {};


/**
 * Reference count of one source record across the graph: one for the dispatch itself, one per
 * sink delivery and per pending dead letter. At zero every branch has an answer, the budget share
 * is returned and the source may move its position past the record.
 */
export class Finalizer {
  private refs = 1;
  /** Set when the record can never be acknowledged in this run (hold): at zero it is let go, not final. */
  private held = false;
  readonly startedAt = performance.now();
  constructor(
    private readonly bytes: number,
    private readonly done: (bytes: number, startedAt: number) => void,
    private readonly onFinal: () => void,
  ) {}

  retain(): void {
    this.refs++;
  }

  /** The record stays unacknowledged: its position does not move, and it is read again after a restart. */
  hold(): void {
    this.held = true;
  }

  release(): void {
    if (--this.refs === 0) {
      this.done(this.bytes, this.startedAt);
      if (!this.held) this.onFinal();
    }
  }
}

class SinkDelivery implements Delivery {
  private settled = false;
  constructor(
    readonly record: LogRecord,
    private readonly sinkId: string,
    private readonly finalizer: Finalizer,
    private readonly pipeline: Pipeline,
    private readonly state: SinkState,
  ) {
    state.recordsQueued();
  }

  delivered(): void {
    if (this.settle()) {
      this.state.recordsAnswered();
      // The body was made (and cached) before the record reached the sink: a lookup, not a serialization.
      this.pipeline.metrics.countSent(this.sinkId, documentBody(this.record).length);
      this.finalizer.release();
    }
  }

  rejected(reason: string, code?: ErrorCode): void {
    if (!this.settle()) return;
    // A sink written in JavaScript may pass any code: an unknown one is dead-lettered as LF_SINK_REJECTED.
    const known = knownCode(code, 'LF_SINK_REJECTED', reason);
    this.state.recordsAnswered();
    this.pipeline.metrics.count(this.sinkId, 'rejected');
    // The dead letter holds its own reference until it is on disk; this delivery's is done.
    this.pipeline.deadLetterRecord(this.record, this.sinkId, known.code, known.reason, this.finalizer);
    this.finalizer.release();
  }

  private settle(): boolean {
    if (this.settled) return false;
    this.settled = true;
    return true;
  }
}

/**
 * The running graph. It owns what no component should reinvent: routing and fan-out, the memory
 * budget (backpressure), end-to-end acknowledgement, dead letters, checkpoints and shutdown.
 */
export class Pipeline {
  readonly metrics: Metrics;
  private readonly log: Logger;
  private readonly budget: ByteBudget;
  private readonly checkpoints: CheckpointStore;
  private readonly checkpointSaver: CheckpointSaver;
  private readonly deadLetters: DeadLetterWriter;
  private readonly scrubber: SecretScrubber;
  /** Inputs a source reported it cannot open or read, by source and path, with the error. */
  private readonly unreadable = new Map<string, { source: string; path: string; error: string }>();
  /** Stops the sources (first step of shutdown). */
  private readonly sourceAbort = new AbortController();
  /** Stops retries inside sinks and transforms (last step, or when the drain times out). */
  private readonly componentAbort = new AbortController();
  /** Transforms and sinks by their inputs; a sink's node holds the channel its deliveries go into. */
  private readonly graph = new TransformGraph<Channel<Delivery>>();
  /** How the walk's outcomes become deliveries, drops and dead letters of a record (its Finalizer). */
  private readonly walkEvents: WalkEvents<Channel<Delivery>, Finalizer> = {
    deliver: (channel, sinkId, record, finalizer) => this.deliverTo(sinkId, channel, record, finalizer),
    dropped: (transformId) => this.countDropped(transformId),
    deadLetter: (transformId, record, failure, finalizer) => this.transformFailed(transformId, record, failure, finalizer),
  };
  private readonly sources = new Map<string, Source>();
  private readonly sourceRunState = new Map<string, 'reading' | 'stopped'>();
  private readonly sinks = new Map<string, { sink: Sink; channel: Channel<Delivery>; state: SinkState; running?: Promise<void> }>();
  private pool: RecordPool | undefined;
  private poolClosing = false;
  /** Per source: records go into the graph in the order they were read, pool or not. */
  private readonly order = new Map<string, OrderedSteps>();
  private inFlight = 0;
  private drainWaiters: (() => void)[] = [];
  /** Set while run() waits for the drain: starts the shutdown_timeout, or ends the wait at once. */
  private drainControl: { startTimeout(): void; endNow(): void } | undefined;
  private fatal: Error | undefined;
  private stopRequested = false;
  /** The sinks `maxWaitMs` gave up on. */
  private heldBy: SinkStatus[] = [];
  private readonly giveUpTimers = new Map<string, NodeJS.Timeout>();
  /** Sources whose checkpoint was loaded (and that were started with it): only these are saved. */
  private readonly restored = new Set<string>();
  /** A dead letter the writer failed on for good was logged (once). */
  private deadLetterFailureLogged = false;

  constructor(
    private readonly config: PipelineConfig,
    private readonly options: PipelineOptions,
  ) {
    // Every record waiting out a retry backoff listens on these signals (sink concurrency, blocked dead letters).
    setMaxListeners(0, this.sourceAbort.signal, this.componentAbort.signal);
    this.metrics = options.metrics ?? new Metrics();
    this.log = options.log;
    this.budget = new ByteBudget(config.bufferMaxBytes);
    this.checkpoints = new CheckpointStore(config.dataDir, this.log);
    this.checkpointSaver = new CheckpointSaver(
      this.checkpoints,
      // Only sources that restored their checkpoint: one whose file could not be read must not overwrite it.
      () => [...this.sources].filter(([id]) => this.restored.has(id)).map(([id, source]) => ({ id, state: () => source.checkpoint() })),
      this.log,
    );
    this.scrubber = options.scrubber ?? new SecretScrubber(collectSecrets([...config.sources, ...config.transforms, ...config.sinks]));
    this.deadLetters = new DeadLetterWriter(DeadLetterWriter.dirFor(config.dataDir), {
      keepText: config.deadLetterKeepText ?? false,
      redact: deadLetterRedactor(config.transforms),
      scrub: (text) => this.scrubber.scrub(text),
      log: this.log,
      // Stops retrying a blocked dead letter when the pipeline stops: its record stays unacknowledged.
      signal: this.componentAbort.signal,
      maxFileBytes: config.deadLetterMaxFileBytes,
      maxBytes: options.replaying ? undefined : config.deadLetterMaxBytes,
      finishInterruptedReplay: !options.replaying,
    });
  }

  get bytesInFlight(): number {
    return this.budget.inUse;
  }

  get recordsInFlight(): number {
    return this.inFlight;
  }

  bytesBehind(): number {
    let total = 0;
    for (const source of this.sources.values()) total += source.bytesBehind?.() ?? 0;
    return total;
  }

  /** Builds every component (sinks first, so nothing is emitted before its consumers exist). */
  async build(): Promise<void> {
    try {
      await mkdir(this.config.dataDir, { recursive: true });
    } catch (err) {
      throw new LogferryError('LF_DATA_DIR_INVALID', `cannot create data_dir ${this.config.dataDir}: ${ioErrorText(err)}; point data_dir at a writable folder`, { cause: err });
    }
    for (const c of this.config.sinks) {
      const ctx = this.sinkContext(c);
      const sink = await this.buildComponent<Sink>(c, ctx);
      this.sinks.set(c.id, { sink, channel: new Channel<Delivery>(), state: ctx.state });
      this.watchForGiveUp(c.id, ctx.state);
    }
    for (const c of this.config.transforms) {
      const transform = await this.buildComponent<Transform>(c, this.context(c));
      this.graph.add(c.inputs, { kind: 'transform', id: c.id, transform });
    }
    for (const c of this.config.sinks) {
      this.graph.add(c.inputs, { kind: 'sink', id: c.id, sink: this.sinks.get(c.id)!.channel });
    }
    for (const c of this.config.sources) {
      this.sources.set(c.id, await this.buildComponent<Source>(c, this.context(c)));
      this.order.set(c.id, new OrderedSteps());
    }
    if (poolThreads(this.config.pool) > 0) {
      this.pool = await RecordPool.start(this.config.pool, this.poolSetup(), (err) => this.fail(err, 'the record pool failed', 'LF_POOL_FAILED'));
      try {
        await this.pool.warmUp();
      } catch (err) {
        await this.pool.close();
        throw new LogferryError('LF_POOL_FAILED', `the record pool could not start: ${(err as Error).message}; set pool.threads: 0 to run without it`, { cause: err });
      }
      this.log.debug('record pool started', { threads: this.pool.threads, threshold_bytes: this.pool.threshold, max_queue: this.pool.maxQueue });
    }
  }

  /** Builds one component; what it throws says which component (see componentBuildFailure). */
  private async buildComponent<T>(c: ComponentConfig, ctx: ComponentContext): Promise<T> {
    try {
      return (await c.definition.build(c.options, ctx)) as T;
    } catch (err) {
      throw componentBuildFailure(err, c);
    }
  }

  /** The pool's workers rebuild the transforms from the same options (they are pure functions of a record). */
  private poolSetup(): PoolSetup {
    return {
      configFile: this.config.file,
      plugins: this.config.plugins,
      transforms: this.config.transforms.map((c) => ({ id: c.id, type: c.type, options: c.options, inputs: c.inputs })),
      sinks: this.config.sinks.map((c) => ({ id: c.id, inputs: c.inputs, gzip: this.sinks.get(c.id)!.sink.bodyCompression === 'gzip' })),
      secrets: collectSecrets([...this.config.sources, ...this.config.transforms, ...this.config.sinks]),
    };
  }

  private sinkContext(c: ComponentConfig): SinkContext {
    const base = this.context(c);
    return { ...base, state: new SinkState(c.id, base.log, this.options.sinkReminderMs) };
  }

  /** Every sink's state (healthy, retrying, blocked), in the order of the pipeline file. */
  sinkStates(): SinkStatus[] {
    return [...this.sinks.values()].map(({ state }) => state.status());
  }

  /**
   * Whether each source reads, for /ready: `starting` until its run begins (its checkpoint is
   * loaded), `reading` while it runs, `failing` while an input of it cannot be read (the reason
   * names the file), `stopped` once it ended (a stop request, or --once read everything).
   */
  sourceStates(): SourceStatus[] {
    return this.config.sources.map(({ id }) => {
      const unreadable = [...this.unreadable.values()].find((u) => u.source === id);
      const state = this.sourceRunState.get(id) ?? 'starting';
      if (state === 'reading' && unreadable) return { source: id, state: 'failing', reason: `cannot read ${unreadable.path}: ${unreadable.error}` };
      return { source: id, state };
    });
  }

  /** Bytes not yet acknowledged per tailed file, of every source that tells (job_log_tail does). */
  bytesBehindByFile(): { source: string; file: string; bytes: number }[] {
    return [...this.sources].flatMap(([source, s]) => (s.bytesBehindByFile?.() ?? []).map((f) => ({ source, ...f })));
  }

  /** The buffer's bound (`buffer.max_bytes`); bytesInFlight is what it holds now. */
  get bufferMaxBytes(): number {
    return this.budget.maxBytes;
  }

  /** When each source's checkpoint was last saved (ms since the epoch); absent until its first save. */
  checkpointSavedAt(): ReadonlyMap<string, number> {
    return this.checkpointSaver.savedAt;
  }

  /** Failed attempts each sink tries again, by reason class (see SinkState.failed: the one place a sink's failures pass). */
  sinkRetryCounts(): { sink: string; counts: Readonly<Record<RetryReasonClass, number>> }[] {
    return [...this.sinks].map(([sink, { state }]) => ({ sink, counts: state.retryCounts() }));
  }

  /** The sink instances, for start-up health checks. */
  sinkInstances(): { id: string; sink: Sink }[] {
    return [...this.sinks].map(([id, { sink }]) => ({ id, sink }));
  }

  /**
   * Releases what build() started (the sinks' connections, the record pool's threads) when the
   * pipeline is not run after all (`run --require-healthy` and a failed health check). Nothing was
   * read, so there is no checkpoint to save.
   */
  async discard(): Promise<void> {
    for (const [id, { sink }] of this.sinks) {
      await sink.close?.().catch((err: unknown) => this.log.error('sink close failed', { sink: id, error: err }));
    }
    this.poolClosing = true;
    await this.pool?.close();
    this.componentAbort.abort(new LogferryError('LF_SHUTDOWN_TIMEOUT', 'pipeline not started'));
    await this.deadLetters.close();
  }

  private context(c: ComponentConfig): ComponentContext {
    return {
      id: c.id,
      log: this.log.child({ component: c.id }),
      metrics: this.metrics,
      signal: c.kind === 'source' ? this.sourceAbort.signal : this.componentAbort.signal,
      dataDir: this.config.dataDir,
    };
  }

  /** Asks the pipeline to stop: sources stop reading, in-flight records drain, checkpoints are saved. */
  stop(reason = 'stop requested'): void {
    if (this.stopRequested) return;
    this.stopRequested = true;
    this.log.info('stopping: no new input is read; draining records in flight', { reason, in_flight: this.inFlight });
    this.sourceAbort.abort(new LogferryError('LF_SHUTDOWN_TIMEOUT', reason));
    // `--once` that already read everything waits for its drain without a limit; a stop request
    // (SIGTERM) bounds that wait by shutdown_timeout, as in follow mode.
    this.drainControl?.startTimeout();
  }

  /**
   * Ends the run without waiting for records in flight: they are left unacknowledged (read again
   * by the next run). Retries stop at once, and the sinks log nothing more about their state.
   */
  private endNow(reason: string): void {
    if (!this.stopRequested) {
      this.stopRequested = true;
      this.log.info('stopping now: records in flight are left unacknowledged and read again by the next run', { reason, in_flight: this.inFlight });
      this.sourceAbort.abort(new LogferryError('LF_SHUTDOWN_TIMEOUT', reason));
    }
    for (const { state } of this.sinks.values()) state.silence();
    this.componentAbort.abort(new LogferryError('LF_SHUTDOWN_TIMEOUT', reason));
    this.drainControl?.endNow();
  }

  /**
   * `--max-wait` also covers dead letters that cannot be written (disk full, dead_letter.max_bytes):
   * their records are held like a failing sink's, and a `--once` run must not wait on them for good.
   */
  private watchDeadLettersForGiveUp(): NodeJS.Timeout | undefined {
    const maxWaitMs = this.options.maxWaitMs;
    if (maxWaitMs === undefined) return undefined;
    const timer = setInterval(() => {
      const blocked = this.deadLetters.blockedState;
      if (!blocked || Date.now() - blocked.since < maxWaitMs || this.stopRequested) return;
      this.log.error(
        `dead letters could not be written for ${maxWaitMs / 1000} s (--max-wait): ${blocked.error}; giving up: the records they belong to are not acknowledged and the next run handles them`,
        { code: blocked.code },
      );
      this.endNow('dead letters still blocked after --max-wait');
    }, Math.min(1000, maxWaitMs));
    timer.unref();
    return timer;
  }

  /** `--max-wait`: gives up on a sink that has been failing this long without a break. */
  private watchForGiveUp(id: string, state: SinkState): void {
    const maxWaitMs = this.options.maxWaitMs;
    if (maxWaitMs === undefined) return;
    state.onChange((status) => {
      clearTimeout(this.giveUpTimers.get(id));
      this.giveUpTimers.delete(id);
      if (status.state === 'healthy') return;
      const timer = setTimeout(() => {
        const now = state.status();
        // A failing state with no record behind it (its last one expired) holds nothing to give up on.
        if (now.state === 'healthy' || now.pendingRecords === 0) return;
        this.heldBy.push(now);
        this.log.error(
          `sink ${id} has been failing for ${maxWaitMs / 1000} s (--max-wait); giving up: its ${plural(now.pendingRecords, 'record is', 'records are')} not acknowledged and the next run sends them`,
          { code: 'LF_DESTINATION_HELD', sink: id, state: now.state, reason: now.reason },
        );
        this.endNow(`sink ${id} still failing after --max-wait`);
      }, Math.max(0, maxWaitMs - (Date.now() - status.sinceMs)));
      timer.unref();
      this.giveUpTimers.set(id, timer);
    });
  }

  /** `feed`: a dead-letter replay puts the records in through a GraphEntry, and the sources are not started. */
  async run(feed?: (entry: GraphEntry) => Promise<void>): Promise<RunSummary> {
    const started = Date.now();
    for (const [id, entry] of this.sinks) {
      entry.running = entry.sink.run(entry.channel).catch((err: unknown) => this.fail(err, `sink ${id} failed`));
    }
    // Saves are serialized (CheckpointSaver): a tick while a save runs is coalesced into the next one.
    // Detached: the timer cannot wait. save() records a failing save in checkpointSaver.failures and
    // does not reject; the catch keeps a future rejection from becoming an unhandled one.
    const checkpointTimer = setInterval(() => {
      void this.checkpointSaver.save().catch((err: unknown) => this.log.error('checkpoint save failed', { code: 'LF_CHECKPOINT_FAILED', error: err }));
    }, this.config.checkpointIntervalMs);
    const deadLetterWatch = this.watchDeadLettersForGiveUp();
    checkpointTimer.unref();

    const sourceRuns = feed ? [this.runFeed(feed)] : [...this.sources].map(async ([id, source]) => {
      const c = this.config.sources.find((s) => s.id === id)!;
      try {
        // Inside the try: a checkpoint that cannot be read (EACCES, EISDIR) fails the source like
        // any error of its own, so the pipeline still drains and shuts down in order.
        const restored = await this.checkpoints.load(id);
        this.restored.add(id);
        this.sourceRunState.set(id, 'reading');
        await source.run(this.sourceContext(c, restored));
      } catch (err) {
        if (!this.sourceAbort.signal.aborted) this.fail(err, `source ${id} failed`, 'LF_SOURCE_FAILED');
      } finally {
        this.sourceRunState.set(id, 'stopped');
      }
    });
    await Promise.all(sourceRuns);

    // Sources are done (--once reached the end, or stop() was called): drain what is in flight.
    const drained = await this.waitForDrain();
    const abandoned = drained ? 0 : this.inFlight;
    for (const timer of this.giveUpTimers.values()) clearTimeout(timer);
    if (!drained && !this.componentAbort.signal.aborted) {
      this.log.warn('shutdown_timeout ran out with records in flight; they were not acknowledged and will be read again on the next start', {
        code: 'LF_SHUTDOWN_TIMEOUT',
        in_flight: abandoned,
      });
      for (const { state } of this.sinks.values()) state.silence();
      this.componentAbort.abort(new LogferryError('LF_SHUTDOWN_TIMEOUT', 'shutdown_timeout ran out'));
    }
    for (const { channel } of this.sinks.values()) channel.close();
    await Promise.all([...this.sinks.values()].flatMap((s) => (s.running ? [s.running] : [])));
    for (const [id, { sink }] of this.sinks) {
      await sink.close?.().catch((err: unknown) => this.log.error('sink close failed', { sink: id, error: err }));
    }
    clearInterval(checkpointTimer);
    clearInterval(deadLetterWatch);
    this.poolClosing = true;
    await this.pool?.close();
    this.componentAbort.abort(new LogferryError('LF_SHUTDOWN_TIMEOUT', 'pipeline stopped'));
    // Appends in progress finish first (the writer stopped taking new ones): the records they
    // acknowledge are in the final save, which runs after any save in progress; nothing starts after it.
    await this.deadLetters.close();
    const checkpointFailures = await this.checkpointSaver.final();
    if (this.fatal) throw this.fatal;
    const problems: RunSummary['problems'] = [];
    for (const { path, error } of this.unreadable.values()) {
      problems.push({ code: 'LF_INPUT_UNREADABLE', message: `cannot read ${path}: ${error}` });
    }
    for (const [source, error] of checkpointFailures) {
      problems.push({ code: 'LF_CHECKPOINT_FAILED', message: `the checkpoint of source ${source} could not be saved (${this.checkpoints.fileFor(source)}: ${error})` });
    }
    return { abandoned, durationMs: Date.now() - started, problems, heldBy: this.heldBy };
  }

  private async runFeed(feed: (entry: GraphEntry) => Promise<void>): Promise<void> {
    const signal = this.sourceAbort.signal;
    const entry: GraphEntry = {
      signal,
      emit: (componentId, record, bytes, onFinal) => {
        const node = this.graph.node(componentId);
        if (!node) return Promise.reject(new LogferryError('LF_REPLAY_FAILED', `the pipeline has no transform or sink ${componentId}`));
        const charge = recordCharge(bytes);
        const admit = (): void => {
          const finalizer = this.startRecord(charge, onFinal);
          this.countIn(componentId, bytes);
          this.guarded(componentId, record.origin, finalizer, () => this.held(this.graph.visit(node, record, this.walkEvents, finalizer), componentId, finalizer), record.doc);
          finalizer.release();
        };
        if (this.budget.tryAcquire(charge)) {
          admit();
          return SETTLED;
        }
        return this.budget.acquire(charge, signal).then(admit);
      },
    };
    try {
      await feed(entry);
    } catch (err) {
      if (!signal.aborted) this.fail(err, 'the replay failed', 'LF_REPLAY_FAILED');
    }
  }

  private fail(err: unknown, what: string, code: ErrorCode = 'LF_SINK_FAILED'): void {
    // errorMessage: String() of what a plugin threw may throw itself (Object.create(null)).
    const message = err instanceof Error ? err.message : errorMessage(err);
    this.log.error(`${what}: ${message}`, { error: err instanceof Error ? err : message });
    this.fatal ??= new LogferryError(code, `${what}: ${message}`, { cause: err });
    // The run ends with this error now, not after shutdown_timeout: what is in flight stays unacknowledged.
    this.endNow(what);
  }

  /** A source cannot open or read an input: logged once per state change, reported by --once. */
  private inputUnreadable(source: string, path: string, err: unknown): void {
    const key = `${source}\0${path}`;
    const error = ioErrorText(err);
    const known = this.unreadable.has(key);
    this.unreadable.set(key, { source, path, error });
    if (known) return;
    this.log.warn(`cannot read an input (${error}); it is tried again${this.options.once ? ' until the end of this run, which then exits 74' : ' at each scan'}. Check the file's permissions and the disk`, {
      code: 'LF_INPUT_UNREADABLE',
      source,
      path,
    });
  }

  private inputReadable(source: string, path: string): void {
    if (this.unreadable.size === 0 || !this.unreadable.delete(`${source}\0${path}`)) return;
    this.log.info('an input that could not be read is read again', { code: 'LF_INPUT_UNREADABLE', source, path });
  }

  /**
   * Waits until no record is in flight (true), or gives up (false): after shutdown_timeout once a
   * stop was requested (at once in follow mode, where sources end only on a stop; from the stop
   * request in `--once`), or at once when the run must end now (a fatal error, --max-wait).
   */
  private waitForDrain(): Promise<boolean> {
    if (this.inFlight === 0) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const finish = (drained: boolean): void => {
        clearTimeout(timer);
        this.drainControl = undefined;
        resolve(drained);
      };
      this.drainWaiters.push(() => finish(true));
      this.drainControl = {
        startTimeout: () => {
          timer ??= setTimeout(() => finish(false), this.config.shutdownTimeoutMs);
        },
        endNow: () => finish(false),
      };
      if (this.componentAbort.signal.aborted) finish(false);
      else if (!this.options.once || this.stopRequested) this.drainControl.startTimeout();
    });
  }

  private sourceContext(c: ComponentConfig, restored: unknown): SourceContext {
    const base = this.context(c);
    const signal = this.sourceAbort.signal;
    return {
      ...base,
      once: this.options.once,
      restored,
      // The budget is charged what a record costs the process (recordCharge), not only its bytes.
      emit: (record, bytes, onFinal) => {
        // A size that cannot be charged is charged as 0 bytes; the record is dead-lettered (dispatchFromSource).
        const charge = recordCharge(isRecordBytes(bytes) ? bytes : 0);
        if (this.budget.tryAcquire(charge)) {
          this.dispatchFromSource(c.id, record, bytes, charge, onFinal);
          return Promise.resolve();
        }
        return this.budget.acquire(charge, signal).then(() => this.dispatchFromSource(c.id, record, bytes, charge, onFinal));
      },
      emitLine: (line, origin, onFinal, limits = NO_LIMITS) => {
        const charge = recordCharge(line.length);
        if (this.budget.tryAcquire(charge)) return this.admitLine(c.id, line, origin, onFinal, limits, charge);
        return this.budget.acquire(charge, signal).then(() => this.admitLine(c.id, line, origin, onFinal, limits, charge));
      },
      deadLetter: async (entry) => {
        // A blocked write must not keep a stopping source waiting: on stop the line stays
        // unacknowledged (the source does not move past it) and is read again after the restart.
        await abortable(this.deadLetters.write(entry), signal);
        this.metrics.countDeadLetter(c.id, entry.code);
      },
      inputUnreadable: (path, err) => this.inputUnreadable(c.id, path, err),
      inputReadable: (path) => this.inputReadable(c.id, path),
    };
  }

  private dispatchFromSource(sourceId: string, record: LogRecord, bytes: number, charge: number, onFinal: () => void): void {
    const finalizer = this.startRecord(charge, onFinal);
    this.order.get(sourceId)!.now(() => {
      // Everything that looks at what a plugin emitted is guarded: a getter on the record that
      // throws must become its dead letter, not escape emit with the record counted in flight.
      let origin: RecordOrigin = { source: sourceId };
      let doc: JsonObject | undefined;
      try {
        if (!isRecordLike(record)) {
          const reason = 'the source emitted something that is not a record (an object with `doc` and `origin`)';
          this.writeDeadLetter({ code: 'LF_RECORD_INVALID', reason, component: sourceId, origin }, finalizer);
          return;
        }
        origin = record.origin;
        doc = record.doc;
        if (!isRecordBytes(bytes)) {
          const reason = `the source emitted a record whose size is not a whole number of bytes from 0 to 1 TiB: ${typeof bytes === 'number' ? bytes : errorMessage(bytes)}`;
          this.writeDeadLetter({ code: 'LF_RECORD_INVALID', reason, component: sourceId, origin, doc }, finalizer);
          return;
        }
        this.countIn(sourceId, bytes);
        this.dispatch(sourceId, record, finalizer);
      } catch (err) {
        const { code, reason } = unprocessable(err);
        this.log.error('handling a record threw; the record goes to the dead letters', { component: sourceId, code, reason });
        this.writeDeadLetter({ code, reason, component: sourceId, origin, doc }, finalizer);
      } finally {
        finalizer.release();
      }
    });
  }

  /**
   * A line becomes a record inline, or in the pool when it is large. Either way it enters the graph
   * in its place in the source's order, and its position moves only when every branch answered.
   */
  private admitLine(sourceId: string, line: Uint8Array, origin: RecordOrigin, onFinal: () => void, limits: LineLimits, charge: number): Promise<void> {
    const bytes = line.length;
    const order = this.order.get(sourceId)!;
    const pool = this.pool;
    if (pool && bytes >= pool.threshold) return this.admitToPool(pool, order, sourceId, line, origin, onFinal, limits, charge);
    const finalizer = this.startRecord(charge, onFinal);
    let parsed: ReturnType<typeof parseLine>;
    try {
      parsed = parseLine(line, origin, limits);
    } catch (err) {
      // Not expected (parseLine reports what is wrong with a line); whatever it was, it is this line's dead letter.
      order.now(() => {
        this.writeDeadLetter({ component: sourceId, origin, ...unprocessable(err, 'line could not be parsed') }, finalizer);
        finalizer.release();
      });
      return SETTLED;
    }
    order.now(() => {
      if (parsed.ok) {
        this.countIn(sourceId, bytes);
        const record = parsed.record;
        this.guarded(sourceId, origin, finalizer, () => this.dispatch(sourceId, record, finalizer), record.doc);
      } else {
        const { error, text, doc, rawBase64, line: ref } = parsed;
        this.writeDeadLetter({ code: error.code, reason: error.message, component: sourceId, origin, text, doc, rawBase64, line: ref }, finalizer);
      }
      finalizer.release();
    });
    // One shared settled promise: small records are the common case and need no allocation here.
    return SETTLED;
  }

  private async admitToPool(
    pool: RecordPool,
    order: OrderedSteps,
    sourceId: string,
    line: Uint8Array,
    origin: RecordOrigin,
    onFinal: () => void,
    limits: LineLimits,
    charge: number,
  ): Promise<void> {
    const bytes = line.length;
    await pool.capacity();
    const finalizer = this.startRecord(charge, onFinal);
    const fill = order.reserve();
    pool.prepare(sourceId, line, origin, limits.maxDepth).then(
      (outcome) => fill(() => this.guarded(sourceId, origin, finalizer, () => this.applyPoolOutcome(sourceId, origin, bytes, outcome, finalizer), undefined, true)),
      (err: unknown) => {
        if (this.poolClosing || err instanceof PoolBrokenError) {
          // The pool was closed after shutdown_timeout, or a worker cannot build the transforms (it
          // would fail every line): the record is let go without acknowledging it (onFinal is not
          // called), so it is read again after the restart. A broken pool stops the pipeline.
          if (!this.poolClosing && !this.fatal) this.fail(err, 'the record pool failed', 'LF_POOL_FAILED');
          fill(() => this.finished(charge, finalizer.startedAt));
          return;
        }
        // The worker died on this line (out of memory, a plugin that crashed its thread): piscina
        // starts another one, and the line is this record's dead letter. Its bytes went to the
        // worker, so the dead letter points at it by file and offset.
        this.log.error('a pool worker died while handling a line; the line goes to the dead letters', { source: sourceId, file: origin.file, offset: origin.offset, error: errorMessage(err) });
        fill(() => {
          this.writeDeadLetter({ component: sourceId, origin, ...unprocessable(err, 'the pool worker handling this line died') }, finalizer);
          finalizer.release();
        });
      },
    );
  }

  /**
   * Runs one record's step; anything it throws becomes that record's dead letter (a record error
   * never stops a source, the pool or the pipeline). `release` says the step would have released
   * the dispatch's reference itself.
   */
  private guarded(component: string, origin: RecordOrigin, finalizer: Finalizer, step: () => void, doc?: JsonObject, release = false): void {
    try {
      step();
    } catch (err) {
      const { code, reason } = unprocessable(err);
      this.log.error('handling a record threw; the record goes to the dead letters', { component, code, reason, file: origin.file, offset: origin.offset });
      this.writeDeadLetter({ code, reason, component, origin, doc }, finalizer);
      if (release) finalizer.release();
    }
  }

  private startRecord(bytes: number, onFinal: () => void): Finalizer {
    this.inFlight++;
    return new Finalizer(bytes, (b, startedAt) => this.finished(b, startedAt), onFinal);
  }

  private countIn(component: string, bytes: number): void {
    this.metrics.countReceived(component, bytes);
  }

  /** Replays what the worker did, in the same order and with the same bookkeeping as the inline path. */
  private applyPoolOutcome(sourceId: string, origin: RecordOrigin, bytes: number, outcome: PoolOutcome, finalizer: Finalizer): void {
    if (!outcome.ok) {
      const doc = outcome.docJson === undefined ? undefined : (JSON.parse(outcome.docJson) as JsonObject);
      const { text, rawBase64, line } = outcome;
      // Codes crossed a thread boundary as plain strings: checked here like any untyped input.
      const { code, reason } = knownCode(outcome.code, 'LF_INTERNAL', outcome.reason);
      this.writeDeadLetter({ code, reason, component: sourceId, origin, text, doc, rawBase64, line }, finalizer);
      finalizer.release();
      return;
    }
    this.countIn(sourceId, bytes);
    for (const [component, name, by] of outcome.counts) this.metrics.count(component, name, by);
    const fields = { kind: outcome.recordKind, origin, receivedDigest: outcome.receivedDigest };
    for (const event of outcome.events) {
      if (event.kind === 'deliver') {
        const record = preparedRecord({ ...fields, key: event.key }, { body: event.body, gzip: event.gzip });
        this.deliverTo(event.sink, this.sinks.get(event.sink)!.channel, record, finalizer);
      } else if (event.kind === 'dead_letter') {
        const doc = event.docJson === undefined ? undefined : (JSON.parse(event.docJson) as JsonObject);
        const replay = { kind: outcome.recordKind, key: event.key, receivedDigest: outcome.receivedDigest };
        const { code, reason } = knownCode(event.code, 'LF_INTERNAL', event.reason);
        this.deadLetterDoc(origin, doc, event.component, code, reason, finalizer, replay);
      } else {
        this.countDropped(event.transform);
      }
    }
    finalizer.release();
  }

  /**
   * The dead letter holds its own reference, so the position waits until it is on disk. While the
   * file cannot be written (disk full) the writer retries; the record keeps its budget share, so
   * reading pauses. If the pipeline stops first, the reference is never released: the record is
   * not acknowledged and is read again after the restart.
   */
  private writeDeadLetter(entry: DeadLetterInput, finalizer: Finalizer): void {
    finalizer.retain();
    let written: Promise<void>;
    try {
      written = this.deadLetters.write(entry);
    } catch (err) {
      // The writer serializes defensively; should it still throw, the record is held like a failed write.
      written = Promise.reject(new LogferryError('LF_DEAD_LETTER_WRITE_FAILED', errorMessage(err), { cause: err }));
    }
    written.then(
      () => {
        this.metrics.countDeadLetter(entry.component, entry.code);
        finalizer.release();
      },
      (err: unknown) => {
        // Stopped: the reference is never released, the record is read again after the restart.
        if (err instanceof DeadLetterWriterStopped) return;
        // Anything else will not get better by waiting: the record is let go unacknowledged (its
        // position does not move; it is read again after a restart) and the pipeline goes on.
        finalizer.hold();
        finalizer.release();
        if (this.deadLetterFailureLogged) return;
        this.deadLetterFailureLogged = true;
        this.log.error('a dead letter could not be written; its record stays unacknowledged and is read again after a restart (logged once)', {
          code: 'LF_DEAD_LETTER_WRITE_FAILED',
          component: entry.component,
          error: errorMessage(err),
        });
      },
    );
  }

  private finished(bytes: number, startedAt: number): void {
    const latencyMs = performance.now() - startedAt;
    this.metrics.latency.record(latencyMs);
    this.metrics.latencyBuckets.record(latencyMs / 1000);
    this.budget.release(bytes);
    if (--this.inFlight === 0) {
      const waiters = this.drainWaiters;
      this.drainWaiters = [];
      for (const w of waiters) w();
    }
  }

  private dispatch(fromId: string, record: LogRecord, finalizer: Finalizer): void {
    this.held(this.graph.route(fromId, record, this.walkEvents, finalizer), fromId, finalizer);
  }

  /**
   * A walk that waits for a transform's promise keeps the record unfinished until it is done.
   * Called while the caller still holds its own reference, so the count cannot reach zero first.
   */
  private held(walking: Promise<void> | undefined, component: string, finalizer: Finalizer): void {
    if (!walking) return;
    finalizer.retain();
    walking
      .catch((err: unknown) => this.log.error('could not dead-letter a record', { component, error: errorMessage(err) }))
      .finally(() => finalizer.release());
  }

  /**
   * Hands a record to a sink. Its body is made here, once, before the sink sees it (documentBody
   * caches it, so the sink's own call costs a lookup): a document that cannot be serialized
   * (a plugin built it too deep for JSON.stringify, with a cycle or a BigInt) is this record's
   * dead letter at that sink, instead of an exception inside the sink that would stop it.
   */
  private deliverTo(sinkId: string, channel: Channel<Delivery>, record: LogRecord, finalizer: Finalizer): void {
    try {
      documentBody(record);
    } catch (err) {
      const { code, reason } = unprocessable(err, 'the document could not be serialized for this sink');
      this.deadLetterRecord(record, sinkId, code, reason, finalizer);
      return;
    }
    finalizer.retain();
    channel.push(new SinkDelivery(record, sinkId, finalizer, this, this.sinks.get(sinkId)!.state));
  }

  private countDropped(transformId: string): void {
    this.metrics.skipped++;
    this.metrics.count(transformId, 'dropped');
  }

  private transformFailed(transformId: string, record: LogRecord, failure: WalkFailure, finalizer: Finalizer): void {
    const { code, reason, unexpected } = failure;
    if (unexpected?.where === 'transform') {
      this.log.error('transform threw on a record; the record goes to the dead letters', { transform: transformId, error: errorMessage(unexpected.error) });
    } else if (unexpected) {
      const { origin } = record;
      this.log.error('handling a record threw; the record goes to the dead letters', { component: transformId, code, reason, file: origin.file, offset: origin.offset });
    }
    this.deadLetterRecord(record, transformId, code, reason, finalizer);
  }

  /**
   * The record counts as finished only once its dead letter is on disk. If even that write fails
   * (disk full), the record stays unacknowledged so it is read again after a restart.
   */
  deadLetterRecord(record: LogRecord, component: string, code: ErrorCode, reason: string, finalizer: Finalizer): void {
    const replay = { kind: record.kind, key: record.key, receivedDigest: record.receivedDigest };
    this.deadLetterDoc(record.origin, record.doc, component, code, reason, finalizer, replay);
  }

  private deadLetterDoc(
    origin: RecordOrigin,
    doc: JsonObject | undefined,
    component: string,
    code: ErrorCode,
    reason: string,
    finalizer: Finalizer,
    replay: Pick<DeadLetterInput, 'kind' | 'key' | 'receivedDigest'>,
  ): void {
    this.log.warn('record sent to the dead letters', { component, code, reason, file: origin.file, offset: origin.offset });
    this.writeDeadLetter({ code, reason, component, origin, doc, ...replay }, finalizer);
  }
}

/** Rejects when the signal aborts first (the operation itself goes on). */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err as Error);
      },
    );
  });
}
