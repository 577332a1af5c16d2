const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;
const EMPTY = Buffer.alloc(0);

/**
 * Cuts the bytes of one file, read in chunks of any size, into lines with their byte positions.
 * It holds only the unfinished last line (copied, because the caller reuses its read buffer), and
 * not even that once it is longer than `maxLineBytes`: such a line is reported by position only.
 *
 * Pull interface, so the hot path allocates nothing per line but the line's view:
 *
 *     splitter.push(chunk, chunkStart);
 *     while (splitter.next()) use(splitter.kind, splitter.line, splitter.start, splitter.end);
 *
 * Every line of a chunk must be taken with next() before the next push (the views point into it).
 */
export class LineSplitter {
  /** What the last next() found: a line, or a line longer than maxLineBytes (its bytes are not kept). */
  kind: 'line' | 'too_long' = 'line';
  /** The line without its newline and without one CR before it (kind 'line' only). */
  line: Buffer = EMPTY;
  /** File offset of the line's first byte. */
  start = 0;
  /** File offset just after the line's newline (or after the last byte read, for finish()). */
  end = 0;

  private chunk: Buffer = EMPTY;
  private chunkStart = 0;
  private pos = 0;
  /** Bytes of the line being assembled across chunks. */
  private partial: Buffer[] = [];
  private partialBytes = 0;
  private partialStart: number;
  /** Inside a line longer than maxLineBytes: its bytes are dropped until its newline. */
  private skippingSince: number | undefined;

  constructor(
    readonly maxLineBytes: number,
    start = 0,
  ) {
    this.partialStart = start;
  }

  /** Bytes of an unfinished line are held (or skipped): the file is not finished at its last byte. */
  get holdsPartial(): boolean {
    return this.partialBytes > 0 || this.skippingSince !== undefined;
  }

  /** Bytes held for the unfinished line. */
  get heldBytes(): number {
    return this.partialBytes;
  }

  /** Forgets everything (the file starts over at `start`, e.g. after copytruncate). */
  reset(start: number): void {
    this.chunk = EMPTY;
    this.pos = 0;
    this.partial = [];
    this.partialBytes = 0;
    this.partialStart = start;
    this.skippingSince = undefined;
  }

  /** Gives the splitter the next bytes of the file; `chunkStart` is the file offset of chunk[0]. */
  push(chunk: Buffer, chunkStart: number): void {
    this.chunk = chunk;
    this.chunkStart = chunkStart;
    this.pos = 0;
  }

  /** Finds the next complete line of the pushed chunk; false when the rest of it is an unfinished line. */
  next(): boolean {
    const chunk = this.chunk;
    const pos = this.pos;
    if (pos >= chunk.length) {
      this.chunk = EMPTY;
      return false;
    }
    const nl = chunk.indexOf(NEWLINE, pos);
    if (nl === -1) {
      this.appendPartial(chunk.subarray(pos), this.chunkStart + pos);
      this.chunk = EMPTY;
      this.pos = 0;
      return false;
    }
    this.pos = nl + 1;
    this.end = this.chunkStart + nl + 1;
    if (this.skippingSince !== undefined) {
      this.tooLong(this.skippingSince);
    } else if (this.partialBytes > 0) {
      const pieceLength = nl - pos;
      if (this.partialBytes + pieceLength > this.maxLineBytes) {
        this.tooLong(this.partialStart);
      } else {
        // concat copies, so the view of the caller's buffer needs no copy of its own.
        this.partial.push(chunk.subarray(pos, nl));
        const line = Buffer.concat(this.partial, this.partialBytes + pieceLength);
        this.setLine(line, this.partialStart);
      }
    } else if (nl - pos > this.maxLineBytes) {
      this.tooLong(this.chunkStart + pos);
    } else {
      this.setLine(chunk.subarray(pos, nl), this.chunkStart + pos);
    }
    return true;
  }

  /**
   * The file ends at `end` (--once): an unfinished last line counts as complete. Returns whether
   * there was one; it is then in kind/line/start/end like after next().
   */
  finish(end: number): boolean {
    this.end = end;
    if (this.skippingSince !== undefined) {
      this.tooLong(this.skippingSince);
      return true;
    }
    if (this.partialBytes === 0) return false;
    this.setLine(Buffer.concat(this.partial, this.partialBytes), this.partialStart);
    return true;
  }

  private setLine(line: Buffer, start: number): void {
    this.partial = [];
    this.partialBytes = 0;
    this.kind = 'line';
    this.start = start;
    this.line = line.length > 0 && line[line.length - 1] === CARRIAGE_RETURN ? line.subarray(0, line.length - 1) : line;
  }

  private tooLong(start: number): void {
    this.skippingSince = undefined;
    this.partial = [];
    this.partialBytes = 0;
    this.kind = 'too_long';
    this.line = EMPTY;
    this.start = start;
  }

  private appendPartial(bytes: Buffer, at: number): void {
    if (this.skippingSince !== undefined || bytes.length === 0) return;
    if (this.partialBytes === 0) this.partialStart = at;
    if (this.partialBytes + bytes.length > this.maxLineBytes) {
      // Stop holding the line in memory; its bytes are skipped up to its newline.
      this.skippingSince = this.partialStart;
      this.partial = [];
      this.partialBytes = 0;
      return;
    }
    // Copied: the caller reuses its read buffer for the next chunk.
    this.partial.push(Buffer.from(bytes));
    this.partialBytes += bytes.length;
  }
}
