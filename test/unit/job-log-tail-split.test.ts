import fc from 'fast-check';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/engine/logger.js';
import { Metrics } from '../../src/engine/metrics.js';
import type { DeadLetterInput, RecordOrigin, SourceContext } from '../../src/engine/types.js';
import { jobLogTailSchema, jobLogTailSource } from '../../src/sources/job-log-tail.js';
import { waitFor } from '../helpers/cli.js';

const dirs: string[] = [];
afterAll(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

type Seen = { line: string; offset: number } | { tooLong: number; reason: string };

/** Runs the real source with --once over `content` and collects what it hands on, in order. */
async function tail(path: string, readBufferBytes: number, maxLineBytes: number, follow?: { signal: AbortSignal; seen: Seen[] }): Promise<Seen[]> {
  const seen: Seen[] = follow?.seen ?? [];
  const options = jobLogTailSchema.parse({ include: [path], read_buffer_bytes: readBufferBytes, max_line_bytes: maxLineBytes, poll_interval_ms: 5 });
  const source = jobLogTailSource.build(options, { id: 'jobs', log: silentLogger, metrics: new Metrics(), signal: new AbortController().signal, dataDir: '' });
  const ctx: SourceContext = {
    id: 'jobs',
    log: silentLogger,
    metrics: new Metrics(),
    signal: follow?.signal ?? new AbortController().signal,
    dataDir: '',
    once: follow === undefined,
    restored: undefined,
    emit: () => Promise.resolve(),
    emitLine: (line: Uint8Array, origin: RecordOrigin, onFinal: () => void) => {
      seen.push({ line: Buffer.from(line).toString('latin1'), offset: origin.offset! });
      onFinal();
      return Promise.resolve();
    },
    deadLetter: (entry: DeadLetterInput) => {
      seen.push({ tooLong: entry.origin.offset!, reason: entry.reason.replace(/.*\(bytes /, '(bytes ') });
      return Promise.resolve();
    },
    inputUnreadable: (input: string, error: unknown) => {
      throw new Error(`${input} reported unreadable: ${String(error)}`);
    },
    inputReadable: () => {},
  };
  await (await source).run(ctx);
  return seen;
}

/** The lines a correct tailer hands on: blank lines skipped, CR before LF removed, the last line counts (--once). */
function expected(content: Buffer, maxLineBytes: number, once = true): Seen[] {
  const out: Seen[] = [];
  let start = 0;
  while (start < content.length) {
    const nl = content.indexOf(0x0a, start);
    // Following a file, a last line without its newline waits for it.
    if (nl === -1 && !once) break;
    const end = nl === -1 ? content.length : nl + 1;
    const raw = content.subarray(start, nl === -1 ? content.length : nl);
    if (raw.length > maxLineBytes) out.push({ tooLong: start, reason: `(bytes ${start}..${end} of the file)` });
    else {
      const line = raw.length > 0 && raw[raw.length - 1] === 0x0d ? raw.subarray(0, -1) : raw;
      if (!/^[ \t\r]*$/.test(line.toString('latin1'))) out.push({ line: line.toString('latin1'), offset: start });
    }
    start = end;
  }
  return out;
}

const lineArb = fc.oneof(
  fc.integer({ min: 0, max: 30_000 }).map((n) => `{"id":${n},"pad":"${'p'.repeat(n % 9000)}"}`),
  fc.constantFrom('', ' ', '\t \r', '{"a":"crlf"}\r', 'not json'),
  fc.integer({ min: 9000, max: 20_000 }).map((n) => 'L'.repeat(n)),
);

describe('job_log_tail line splitting through the source (property)', () => {
  it('hands on the same lines at the same offsets for any read_buffer_bytes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'logferry-split-'));
    dirs.push(dir);
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(lineArb, { maxLength: 40 }),
        fc.boolean(),
        fc.integer({ min: 4096, max: 70_000 }),
        async (lines, finalNewline, readBufferBytes) => {
          const text = lines.join('\n') + (finalNewline && lines.length > 0 ? '\n' : '');
          const content = Buffer.from(text, 'latin1');
          const path = join(dir, `input-${run++}.ndjson`);
          await writeFile(path, content);
          const maxLineBytes = 8192;
          expect(await tail(path, readBufferBytes, maxLineBytes)).toEqual(expected(content, maxLineBytes));
        },
      ),
      { seed: 42, numRuns: 60 },
    );
  });
});

describe('job_log_tail line splitting while a writer appends (property)', () => {
  it('hands on the same lines at the same offsets whatever the writer\'s chunks and the read size', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'logferry-split-follow-'));
    dirs.push(dir);
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(lineArb, { minLength: 1, maxLength: 25 }),
        fc.array(fc.integer({ min: 1, max: 20_000 }), { minLength: 1, maxLength: 10 }),
        fc.integer({ min: 4096, max: 40_000 }),
        async (lines, cuts, readBufferBytes) => {
          const content = Buffer.from(lines.join('\n') + '\n', 'latin1');
          const path = join(dir, `input-${run++}.ndjson`);
          await writeFile(path, '');
          const stop = new AbortController();
          const seen: Seen[] = [];
          const running = tail(path, readBufferBytes, 8192, { signal: stop.signal, seen });
          try {
            const handle = await open(path, 'a');
            for (let at = 0, i = 0; at < content.length; i++) {
              const size = Math.min(cuts[i % cuts.length]!, content.length - at);
              await handle.write(content.subarray(at, at + size));
              at += size;
              // Give the tailer a turn now and then, so reads land inside the writer's chunks.
              if (i % 2 === 0) await new Promise((r) => setImmediate(r));
            }
            await handle.close();
            const want = expected(content, 8192, false);
            await waitFor(() => seen.length >= want.length, 10_000, 'every line');
            expect(seen).toEqual(want);
          } finally {
            stop.abort();
            await running;
          }
        },
      ),
      { seed: 42, numRuns: 25 },
    );
  });
});
