import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LineSplitter } from '../../src/sources/line-splitter.js';

interface Split {
  kind: 'line' | 'too_long';
  text: string;
  start: number;
  end: number;
}

/** The obvious definition: cut at every newline, all at once. */
function reference(content: Buffer, maxLineBytes: number, atEnd: boolean): Split[] {
  const out: Split[] = [];
  let start = 0;
  for (;;) {
    const nl = content.indexOf(0x0a, start);
    const stop = nl === -1 ? content.length : nl;
    if (nl === -1 && (!atEnd || start === content.length)) break;
    const raw = content.subarray(start, stop);
    const end = nl === -1 ? content.length : nl + 1;
    if (raw.length > maxLineBytes) out.push({ kind: 'too_long', text: '', start, end });
    else {
      const text = raw.length > 0 && raw[raw.length - 1] === 0x0d ? raw.subarray(0, raw.length - 1) : raw;
      out.push({ kind: 'line', text: text.toString('latin1'), start, end });
    }
    if (nl === -1) break;
    start = nl + 1;
  }
  return out;
}

/** Feeds `content` in the given chunk sizes through one reusable buffer, as the tailer does. */
function splitInChunks(content: Buffer, maxLineBytes: number, cuts: number[], atEnd: boolean): Split[] {
  const splitter = new LineSplitter(maxLineBytes, 0);
  const out: Split[] = [];
  const take = (): void => {
    out.push({ kind: splitter.kind, text: splitter.line.toString('latin1'), start: splitter.start, end: splitter.end });
  };
  const reused = Buffer.alloc(content.length + 1);
  let offset = 0;
  let i = 0;
  while (offset < content.length) {
    const size = Math.max(1, Math.min(cuts[i++ % cuts.length] ?? content.length, content.length - offset));
    content.copy(reused, 0, offset, offset + size);
    splitter.push(reused.subarray(0, size), offset);
    while (splitter.next()) take();
    // The tailer reuses its buffer: scribble over it so a kept view would show.
    reused.fill(0x21);
    offset += size;
  }
  if (atEnd && splitter.finish(content.length)) take();
  return out;
}

/** Lines made of the characters that matter: newlines, CRs, blanks, text; some long. */
const piece = fc.oneof(
  fc.constantFrom('\n', '\r\n', '\r', ' ', '', '\n\n', '{"a":1}'),
  fc.string({ unit: fc.constantFrom('a', 'b', ' ', '\t', '\r', 'é'), maxLength: 40 }),
  fc.integer({ min: 0, max: 200 }).map((n) => 'x'.repeat(n)),
);
const content = fc.array(piece, { maxLength: 60 }).map((parts) => Buffer.from(parts.join(''), 'utf8'));

describe('LineSplitter', () => {
  it('gives the same lines and offsets whatever the read boundaries (property)', () => {
    fc.assert(
      fc.property(
        content,
        fc.integer({ min: 1, max: 120 }),
        fc.array(fc.integer({ min: 1, max: 300 }), { minLength: 1, maxLength: 20 }),
        fc.boolean(),
        (bytes, maxLineBytes, cuts, atEnd) => {
          expect(splitInChunks(bytes, maxLineBytes, cuts, atEnd)).toEqual(reference(bytes, maxLineBytes, atEnd));
        },
      ),
      { seed: 42, numRuns: 2000 },
    );
  });

  it('reports a long line by position only and keeps no more than max_line_bytes of it', () => {
    const splitter = new LineSplitter(10, 100);
    splitter.push(Buffer.from('0123456789abc'), 100);
    expect(splitter.next()).toBe(false);
    expect(splitter.heldBytes).toBe(0);
    expect(splitter.holdsPartial).toBe(true);
    splitter.push(Buffer.from('def\nok\r\n'), 113);
    expect(splitter.next()).toBe(true);
    expect([splitter.kind, splitter.start, splitter.end]).toEqual(['too_long', 100, 117]);
    expect(splitter.next()).toBe(true);
    expect([splitter.kind, splitter.line.toString(), splitter.start, splitter.end]).toEqual(['line', 'ok', 117, 121]);
    expect(splitter.next()).toBe(false);
    expect(splitter.holdsPartial).toBe(false);
  });

  it('finishes a last line without newline only when asked (--once)', () => {
    const splitter = new LineSplitter(100, 0);
    splitter.push(Buffer.from('a\nlast'), 0);
    expect(splitter.next()).toBe(true);
    expect(splitter.next()).toBe(false);
    expect(splitter.holdsPartial).toBe(true);
    expect(splitter.finish(6)).toBe(true);
    expect([splitter.line.toString(), splitter.start, splitter.end]).toEqual(['last', 2, 6]);
    expect(splitter.finish(6)).toBe(false);
  });
});
