import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { PipelineConfig } from '../config/types.js';
import {
  finishInterruptedReplay,
  listDeadLetterFiles,
  readDeadLetterFile,
  readReplayProgress,
  ReplayProgress,
  type DeadLetterLine,
} from '../engine/dead-letter-files.js';
import { DeadLetterWriter, type DeadLetterEntry } from '../engine/dead-letters.js';
import type { Logger } from '../engine/logger.js';
import { Pipeline, type GraphEntry } from '../engine/pipeline.js';
import type { SecretScrubber } from '../engine/secrets.js';
import type { JsonObject, LogRecord } from '../engine/types.js';
import { errorMessage, LogferryError } from '../errors.js';
import { classify } from '../records/parse.js';
import { plural } from '../plural.js';

export interface ReplayOptions {
  /** Only entries with this code, rejected by this component, written at or after this time. */
  code?: string;
  component?: string;
  sinceMs?: number;
  dryRun: boolean;
  /** Give up on a destination failing this long; the entries not confirmed stay. */
  maxWaitMs: number;
  /** The pipeline file, for the messages. */
  file: string;
}

/** delivered: every selected entry confirmed and none dead-lettered again; held: some stay (a destination kept failing, a stop). */
export type ReplayOutcome = 'delivered' | 'dead-lettered-again' | 'held';

interface Replayable {
  line: DeadLetterLine;
  component: string;
  record: LogRecord;
  bytes: number;
}

/** Why a selected entry cannot be sent again; each is counted and said. */
type Skip = 'not-parsed' | 'not-a-record' | 'unknown-component';

/**
 * `logferry dead-letter replay`: sends dead letters again through the real pipeline (its transforms
 * and sinks; the sources are not started). An entry a sink rejected goes back to that sink only; one
 * a transform rejected goes through that transform and what follows it. An entry leaves the dead
 * letters only once its record was delivered by every sink it went to, or dead-lettered again (a new
 * entry with the new reason): see ReplayProgress for what a crash leaves. The caller holds the
 * data_dir lock unless `dryRun`.
 */
export async function replayDeadLetters(
  config: PipelineConfig,
  options: ReplayOptions,
  log: Logger,
  scrubber: SecretScrubber,
  print: (line: string) => void,
): Promise<ReplayOutcome> {
  const dir = DeadLetterWriter.dirFor(config.dataDir);
  // A replay killed before its rewrite left a progress file: finish that first (dry-run only reads).
  if (!options.dryRun) await finishInterruptedReplay(dir, log);
  const kinds = new Map<string, 'source' | 'transform' | 'sink'>();
  for (const c of [...config.sources, ...config.transforms, ...config.sinks]) kinds.set(c.id, c.kind);
  const plan = new Map<string, number>();
  const skipped = new Map<Skip, Map<string, number>>();
  const count = (map: Map<string, number>, key: string): void => void map.set(key, (map.get(key) ?? 0) + 1);
  const skip = (why: Skip, e: DeadLetterEntry): void => {
    const byWhat = skipped.get(why) ?? new Map<string, number>();
    count(byWhat, why === 'unknown-component' ? e.component : `${e.component} ${e.code}`);
    skipped.set(why, byWhat);
  };

  // What the files hold now: the entries this replay dead-letters again are appended after it, and
  // are not read (nor sent) again by this replay.
  const snapshot: { name: string; size: number }[] = [];
  for (const { name } of await listDeadLetterFiles(dir)) {
    const size = await stat(join(dir, name)).then((s) => s.size, () => undefined);
    if (size !== undefined) snapshot.push({ name, size });
  }
  const confirmedBefore = await readReplayProgress(dir);

  /** The selected, replayable entries of one file (the others are counted). */
  async function selectFrom(file: { name: string; size: number }): Promise<Replayable[]> {
    const out: Replayable[] = [];
    const gone = confirmedBefore.get(file.name);
    for (const line of await readDeadLetterFile(dir, file.name)) {
      if (line.offset >= file.size || gone?.get(line.offset) === line.id) continue;
      let entry: DeadLetterEntry;
      try {
        entry = JSON.parse(line.text) as DeadLetterEntry;
      } catch {
        continue; // A torn fragment, not an entry (list and show skip it too).
      }
      if (!selected(entry, options)) continue;
      const replayable = toReplayable(line, entry, kinds);
      if (typeof replayable === 'string') {
        skip(replayable, entry);
        continue;
      }
      count(plan, `${entry.component} (${kinds.get(entry.component)}) ${entry.code}`);
      out.push(replayable);
    }
    return out;
  }

  if (options.dryRun) {
    for (const file of snapshot) await selectFrom(file);
    report(plan, skipped, options, print, 'would send');
    print('nothing was sent and no dead letter changed (--dry-run)');
    return 'delivered';
  }

  const pipeline = new Pipeline({ ...config, sources: [] }, { once: true, log, scrubber, maxWaitMs: options.maxWaitMs, replaying: true });
  try {
    await pipeline.build();
  } catch (err) {
    if (err instanceof LogferryError && err.code.startsWith('LF_CONFIG')) throw err;
    throw new LogferryError('LF_REPLAY_FAILED', `cannot start the pipeline for the replay: ${errorMessage(err)}; no dead letter changed`, { cause: err });
  }
  const progress = await ReplayProgress.start(dir);
  let sent = 0;
  let confirmed = 0;
  let emittedAll = false;
  const onSignal = (signal: NodeJS.Signals): void => pipeline.stop(`received ${signal}`);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const feed = async (entry: GraphEntry): Promise<void> => {
      for (const file of snapshot) {
        for (const r of await selectFrom(file)) {
          if (entry.signal.aborted) return;
          sent++;
          await entry.emit(r.component, r.record, r.bytes, () => {
            confirmed++;
            progress.confirm(r.line);
          });
        }
      }
      emittedAll = !entry.signal.aborted;
    };
    const summary = await pipeline.run(feed);
    const again = pipeline.metrics.deadLetters;
    report(plan, skipped, options, print, emittedAll ? 'sent' : 'selected');
    print(`${confirmed} of ${plural(sent, 'sent entry', 'sent entries')} confirmed and removed from the dead letters; ${plural(again, 'new dead letter')} written${again > 0 ? ` (see logferry dead-letter list -c ${options.file})` : ''}`);
    // A transform that now drops the record (a select rule, a job not final) settles it as run would: skipped by config.
    if (pipeline.metrics.skipped > 0) print(`${pipeline.metrics.skipped} of them were dropped by a transform's rules (skipped, as run would) and delivered nowhere`);
    if (!emittedAll || confirmed < sent) {
      const held = summary.heldBy.map((s) => `${s.sink} (${s.state}: ${s.reason ?? 'failing'})`).join(', ');
      log.error(
        `the replay ended before every selected entry was confirmed${held ? `: ${held} kept failing for --max-wait` : ''}; the entries not confirmed stay in the dead letters. Fix the destination and run logferry dead-letter replay again`,
        { code: summary.heldBy.length > 0 ? 'LF_DESTINATION_HELD' : 'LF_REPLAY_FAILED', unconfirmed: totalOf(plan) - confirmed },
      );
      return 'held';
    }
    return again > 0 ? 'dead-lettered-again' : 'delivered';
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    // Whatever ended the run, the entries confirmed so far leave the dead letters now.
    await progress.close();
    await finishInterruptedReplay(dir);
  }
}

function selected(entry: DeadLetterEntry, options: ReplayOptions): boolean {
  if (options.code !== undefined && entry.code !== options.code) return false;
  if (options.component !== undefined && entry.component !== options.component) return false;
  if (options.sinceMs !== undefined && !(Date.parse(entry.time) >= options.sinceMs)) return false;
  return true;
}

/** The record of an entry, or why it cannot be replayed. */
function toReplayable(line: DeadLetterLine, entry: DeadLetterEntry, kinds: Map<string, string>): Replayable | Skip {
  // A line that never became a record has no record text: a reference (length, sha256), or its
  // text kept by keep_text, which is what the source could not parse.
  if (entry.text === undefined || entry.sha256 !== undefined || entry.length !== undefined) return 'not-parsed';
  const kind = kinds.get(entry.component);
  if (kind === undefined) return 'unknown-component';
  // A source rejects a line that parsed but is not a job or an event: sent again it fails the same way.
  if (kind === 'source') return 'not-a-record';
  let doc: unknown;
  try {
    doc = JSON.parse(entry.text);
  } catch {
    return 'not-parsed';
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return 'not-parsed';
  const recordKind = entry.kind ?? classify(doc as JsonObject);
  if (typeof recordKind !== 'string') return 'not-a-record';
  const origin = { source: entry.source, ...(entry.file !== undefined && { file: entry.file }), ...(entry.offset !== undefined && { offset: entry.offset }) };
  const record: LogRecord = { kind: recordKind, doc: doc as JsonObject, origin, key: entry.key, receivedDigest: entry.received_digest };
  return { line, component: entry.component, record, bytes: Buffer.byteLength(entry.text) };
}

function totalOf(map: Map<string, number>): number {
  let total = 0;
  for (const n of map.values()) total += n;
  return total;
}

function report(plan: Map<string, number>, skipped: Map<Skip, Map<string, number>>, options: ReplayOptions, print: (line: string) => void, verb: string): void {
  const total = totalOf(plan);
  print(`${verb} ${plural(total, 'dead letter')}${total > 0 ? ' (component, code: count):' : ''}`);
  for (const [what, n] of [...plan].sort()) print(`  ${what}: ${n}`);
  const notParsed = skipped.get('not-parsed');
  if (notParsed) {
    print(`${plural(totalOf(notParsed), 'dead letter')} of lines that never parsed cannot be replayed (there is no record to send); they stay. logferry dead-letter show -c ${options.file} N prints them`);
  }
  const notRecord = skipped.get('not-a-record');
  if (notRecord) {
    print(`${plural(totalOf(notRecord), 'dead letter')} of lines a source rejected as not a job or activity event cannot be replayed; they stay:`);
    for (const [what, n] of [...notRecord].sort()) print(`  ${what}: ${n}`);
  }
  const unknown = skipped.get('unknown-component');
  if (unknown) {
    print(`${plural(totalOf(unknown), 'dead letter names', 'dead letters name')} a component that is not in ${options.file} any more; they stay (restore the component to replay them):`);
    for (const [what, n] of [...unknown].sort()) print(`  ${what}: ${n}`);
  }
}
