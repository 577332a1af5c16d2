import { mkdir, open, readdir, readFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../errors.js';
import { applyMaskData, DEFAULT_MASK } from '../records/mask.js';
import type { DeadLetterInput } from './types.js';

export interface DeadLetterEntry {
  time: string;
  code: string;
  reason: string;
  component: string;
  source: string;
  file?: string;
  offset?: number;
  text?: string;
  raw_base64?: string;
}

/**
 * Appends rejected lines and records to `{data_dir}/dead_letter/dead-letters.ndjson`. A write
 * resolves only after fdatasync, because the source position moves past the record right after:
 * a dead letter lost in a crash would be a record lost.
 */
export class DeadLetterWriter {
  private handle: FileHandle | undefined;
  private pending: { line: string; resolve: () => void; reject: (e: unknown) => void }[] = [];
  private flushing: Promise<void> | undefined;
  count = 0;

  constructor(private readonly dir: string) {}

  static dirFor(dataDir: string): string {
    return join(dataDir, 'dead_letter');
  }

  write(input: DeadLetterInput): Promise<void> {
    const entry = toEntry(input);
    this.count++;
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ line: JSON.stringify(entry) + '\n', resolve, reject });
      this.flushing ??= this.flush();
    });
  }

  private async flush(): Promise<void> {
    try {
      while (this.pending.length > 0) {
        const batch = this.pending;
        this.pending = [];
        try {
          if (!this.handle) {
            await mkdir(this.dir, { recursive: true });
            this.handle = await open(join(this.dir, 'dead-letters.ndjson'), 'a');
          }
          await this.handle.write(batch.map((p) => p.line).join(''));
          await this.handle.datasync();
          for (const p of batch) p.resolve();
        } catch (err) {
          for (const p of batch) p.reject(err);
        }
      }
    } finally {
      this.flushing = undefined;
    }
  }

  async close(): Promise<void> {
    while (this.flushing) await this.flushing;
    await this.handle?.close();
    this.handle = undefined;
  }
}

/** Steps marked mask_data never reach a dead letter, whatever the pipeline's redact options. */
function toEntry(input: DeadLetterInput): DeadLetterEntry {
  const entry: DeadLetterEntry = {
    time: new Date().toISOString(),
    code: input.code,
    reason: input.reason,
    component: input.component,
    source: input.origin.source,
  };
  if (input.origin.file !== undefined) entry.file = input.origin.file;
  if (input.origin.offset !== undefined) entry.offset = input.origin.offset;
  if (input.doc) {
    // A document built by a plugin is not bounded by max_depth (nor free of cycles or BigInts): if it
    // cannot be written, the entry says so instead of failing, so the record still gets its dead letter.
    try {
      entry.text = JSON.stringify(applyMaskData(input.doc, () => DEFAULT_MASK));
    } catch (err) {
      entry.reason += ` (the document could not be written into the dead letter: ${errorMessage(err)})`;
    }
  } else if (input.text !== undefined) entry.text = input.text;
  if (input.rawBase64 !== undefined) entry.raw_base64 = input.rawBase64;
  return entry;
}

/** Reads every dead letter under a data dir (for `logferry dead-letter list`). */
export async function readDeadLetters(dataDir: string): Promise<DeadLetterEntry[]> {
  const dir = DeadLetterWriter.dirFor(dataDir);
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith('.ndjson')).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const entries: DeadLetterEntry[] = [];
  for (const name of names) {
    const text = await readFile(join(dir, name), 'utf8');
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      try {
        entries.push(JSON.parse(line) as DeadLetterEntry);
      } catch {
        // A torn last line after a crash during append: the record was not acknowledged, so it
        // will be dead-lettered again from the source; skip the fragment.
      }
    }
  }
  return entries;
}

