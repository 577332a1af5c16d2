import { mkdir, open, readdir, readFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { applyMaskData, DEFAULT_MASK } from '../records/mask.js';
import { lineReference } from '../records/parse.js';
import type { DeadLetterInput, JsonObject } from './types.js';

export interface DeadLetterEntry {
  time: string;
  code: string;
  reason: string;
  component: string;
  source: string;
  file?: string;
  offset?: number;
  /** Bytes of the line at `offset` (without its line end), for a line that is not a record. */
  length?: number;
  /** SHA-256 (hex) of those bytes: `logferry dead-letter show` checks it before printing the line. */
  sha256?: string;
  /** A record's JSON with its masks applied, or the line itself with `dead_letter.keep_text`. */
  text?: string;
  raw_base64?: string;
}

export interface DeadLetterOptions {
  /** Keep the text (or bytes) of lines that are not records (`dead_letter.keep_text`). */
  keepText?: boolean;
  /**
   * Applied to every record's document: mask_data (always, at any depth) and the redact fields and
   * patterns of the pipeline (see deadLetterRedactor). Without it, mask_data alone.
   */
  redact?: (doc: JsonObject) => JsonObject;
  /** Replaces configured secrets in the reason and the text (see secrets.ts). */
  scrub?: (text: string) => string;
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

  constructor(
    private readonly dir: string,
    private readonly options: DeadLetterOptions = {},
  ) {}

  static dirFor(dataDir: string): string {
    return join(dataDir, 'dead_letter');
  }

  write(input: DeadLetterInput): Promise<void> {
    const entry = toEntry(input, this.options);
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

const maskOnly = (doc: JsonObject): JsonObject => applyMaskData(doc, () => DEFAULT_MASK, true);
const asIs = (text: string): string => text;

/**
 * Steps marked mask_data never reach a dead letter, whatever the pipeline's redact options; nor
 * does the text of a line that is not a record (it may hold them), unless keep_text asks for it:
 * such a line is named by its file, offset, length and hash.
 */
export function toEntry(input: DeadLetterInput, options: DeadLetterOptions = {}): DeadLetterEntry {
  const scrub = options.scrub ?? asIs;
  const entry: DeadLetterEntry = {
    time: new Date().toISOString(),
    code: input.code,
    reason: scrub(input.reason),
    component: input.component,
    source: input.origin.source,
  };
  if (input.origin.file !== undefined) entry.file = input.origin.file;
  if (input.origin.offset !== undefined) entry.offset = input.origin.offset;
  if (input.doc) {
    entry.text = scrub(JSON.stringify((options.redact ?? maskOnly)(input.doc)));
    return entry;
  }
  const raw = input.rawBase64 !== undefined ? Buffer.from(input.rawBase64, 'base64') : input.text;
  const line = input.line ?? (raw !== undefined ? lineReference(raw) : undefined);
  if (line) {
    entry.length = line.length;
    entry.sha256 = line.sha256;
  }
  if (options.keepText) {
    if (input.text !== undefined) entry.text = scrub(input.text);
    if (input.rawBase64 !== undefined) entry.raw_base64 = input.rawBase64;
  }
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

