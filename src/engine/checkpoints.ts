import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from './fs-atomic.js';
import type { Logger } from './logger.js';

/** One JSON file per source under `{data_dir}/checkpoints/`, replaced atomically and fsynced. */
export class CheckpointStore {
  private readonly lastSaved = new Map<string, string>();

  constructor(
    private readonly dataDir: string,
    private readonly log: Logger,
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

  /** Saves when the state changed since the last save; returns whether it wrote. */
  async save(sourceId: string, state: unknown): Promise<boolean> {
    const text = JSON.stringify(state);
    if (this.lastSaved.get(sourceId) === text) return false;
    await writeFileAtomic(this.fileFor(sourceId), text, { fsync: true, mkdir: true });
    this.lastSaved.set(sourceId, text);
    return true;
  }
}
