import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ioErrorText } from '../errors.js';
import { writeFileAtomic } from './fs-atomic.js';
import type { Logger } from './logger.js';
import { waitOrAbort } from './retry.js';

/** Writes a checkpoint file durably; replaceable in tests to control timing and failures. */
export type CheckpointWrite = (path: string, text: string) => Promise<void>;

const durableWrite: CheckpointWrite = (path, text) => writeFileAtomic(path, text, { fsync: true, mkdir: true });

/** One JSON file per source under `{data_dir}/checkpoints/`, replaced atomically and fsynced. */
export class CheckpointStore {
  private readonly lastSaved = new Map<string, string>();

  constructor(
    private readonly dataDir: string,
    private readonly log: Logger,
    private readonly write: CheckpointWrite = durableWrite,
  ) {}

  fileFor(sourceId: string): string {
    return join(this.dataDir, 'checkpoints', `${sourceId}.json`);
  }

  async load(sourceId: string): Promise<unknown> {
    const file = this.fileFor(sourceId);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    try {
      this.lastSaved.set(sourceId, text);
      return JSON.parse(text);
    } catch {
      // Starting over re-sends records (harmless: keys are deterministic); refusing to start is worse.
      this.log.warn('checkpoint file is not valid JSON; the source starts as if it had none', { file });
      return undefined;
    }
  }

  /**
   * Saves when the state changed since the last save; returns whether it wrote. Not safe to call
   * twice at once for one source (a slower earlier write could land last): CheckpointSaver
   * serializes the calls.
   */
  async save(sourceId: string, state: unknown): Promise<boolean> {
    const text = JSON.stringify(state);
    if (this.lastSaved.get(sourceId) === text) return false;
    await this.write(this.fileFor(sourceId), text);
    this.lastSaved.set(sourceId, text);
    return true;
  }
}

/**
 * Runs an async task one at a time. A run requested while one is in progress is coalesced into a
 * single follow-up that starts when the current one ends (so it sees the state of that moment);
 * every caller's promise settles when a run that started after its request has finished.
 */
export class SerialTask {
  private busy = false;
  private waiters: { resolve: () => void; reject: (err: unknown) => void }[] | undefined;

  constructor(private readonly task: () => Promise<void>) {}

  run(): Promise<void> {
    if (!this.busy) {
      this.busy = true;
      return this.exec();
    }
    return new Promise<void>((resolve, reject) => (this.waiters ??= []).push({ resolve, reject }));
  }

  private async exec(): Promise<void> {
    try {
      await this.task();
    } finally {
      this.next();
    }
  }

  private next(): void {
    const waiters = this.waiters;
    this.waiters = undefined;
    if (!waiters) {
      this.busy = false;
      return;
    }
    this.exec().then(
      () => waiters.forEach((w) => w.resolve()),
      (err: unknown) => waiters.forEach((w) => w.reject(err)),
    );
  }
}

export interface CheckpointSource {
  id: string;
  /** The position state as of now (taken when that source's save starts). */
  state(): unknown;
}

/** How often and how long the final save is tried before the run reports it failed. */
const FINAL_ATTEMPTS = 5;
const FINAL_BACKOFF_MS = 200;

/**
 * Saves every source's checkpoint, one save at a time: the interval timer and the final save can
 * never write beside each other, so a slow save cannot land after a newer one and move a
 * checkpoint backwards. A failed save keeps the positions in memory (the next save writes them);
 * it is logged once when a source's saves start failing and once when they work again.
 */
export class CheckpointSaver {
  private readonly serial = new SerialTask(() => this.saveAll());
  /** Sources whose last save failed, with the error. */
  private readonly failing = new Map<string, string>();
  private readonly lastSaved = new Map<string, number>();

  constructor(
    private readonly store: CheckpointStore,
    private readonly sources: () => Iterable<CheckpointSource>,
    private readonly log: Logger,
  ) {}

  /** Requests a save (coalesced with one in progress); never rejects. */
  save(): Promise<void> {
    return this.serial.run();
  }

  /** When each source's checkpoint was last saved (ms since the epoch), for the checkpoint age metric. */
  get savedAt(): ReadonlyMap<string, number> {
    return this.lastSaved;
  }

  /** The sources whose latest save failed, with the error. */
  get failures(): ReadonlyMap<string, string> {
    return this.failing;
  }

  /**
   * The last save: after every other (the caller has stopped the timer), tried a few times with
   * backoff. Returns the sources whose checkpoint could not be saved.
   */
  async final(signal?: AbortSignal): Promise<ReadonlyMap<string, string>> {
    for (let attempt = 0; ; attempt++) {
      await this.save();
      if (this.failing.size === 0 || attempt + 1 >= FINAL_ATTEMPTS) return this.failing;
      const delay = FINAL_BACKOFF_MS * 2 ** attempt;
      if (signal) {
        if (!(await waitOrAbort(delay, signal))) return this.failing;
      } else {
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  private async saveAll(): Promise<void> {
    for (const source of this.sources()) {
      try {
        await this.store.save(source.id, source.state());
        this.lastSaved.set(source.id, Date.now());
        if (this.failing.delete(source.id)) {
          this.log.info('checkpoint saved again', { code: 'LF_CHECKPOINT_FAILED', source: source.id, file: this.store.fileFor(source.id) });
        }
      } catch (err) {
        const error = ioErrorText(err);
        const wasFailing = this.failing.has(source.id);
        this.failing.set(source.id, error);
        if (!wasFailing) {
          this.log.warn(
            `cannot save the checkpoint (${error}); positions are kept in memory and the save is retried. Free space or fix permissions under ${this.store.fileFor(source.id)}; if logferry stops before a save works, the records since the last saved checkpoint are sent again`,
            { code: 'LF_CHECKPOINT_FAILED', source: source.id },
          );
        }
      }
    }
  }
}

