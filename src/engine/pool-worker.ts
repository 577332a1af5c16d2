import { gzipSync } from 'node:zlib';
import { move, transferableSymbol, valueSymbol, workerData } from 'piscina';
import { errorMessage, LogferryError, unprocessable, type ErrorCode } from '../errors.js';
import { loadPlugins } from '../plugin/load.js';
import { bodyFrom } from '../records/body.js';
import { decodeLine, lineReference, parseText, utf8Problem } from '../records/parse.js';
import { deadLetterRedactor } from '../records/redaction.js';
import { builtinTransformRegistry } from '../transforms/builtins.js';
import { TransformGraph, type WalkEvents } from './graph-walk.js';
import { createLogger } from './logger.js';
import { Metrics } from './metrics.js';
import { SecretScrubber } from './secrets.js';
import { transferable, type PoolBroken, type PoolEvent, type PoolOutcome, type PoolSetup, type PoolTask } from './pool-protocol.js';
import type { JsonObject, LogRecord, SourceText, Transform } from './types.js';

/**
 * The worker side of the record pool: parses a large line, runs the pipeline's transforms on it
 * and serializes (and gzips, where a sink asks) what each sink receives, so the main thread only
 * moves bytes. The transforms are built here from the same definitions and options as on the
 * main thread; they are pure functions of the record, which is what makes this move safe.
 */

/** A sink as the worker sees it: whether it wants a gzipped body besides the JSON one. */
interface PoolSink {
  readonly gzip: boolean;
}

/** One record's walk: the bodies made so far and what happened, in order, for the main thread. */
interface Walk {
  readonly bodies: Bodies;
  readonly events: PoolEvent[];
}

const metrics = new Metrics();
let graph: Promise<TransformGraph<PoolSink>> | undefined;
/**
 * What a dead letter holds of a record, applied here because the document crosses to the main
 * thread as JSON: the mark that asks for deep masking (mask.ts) does not survive the trip.
 */
let forDeadLetter: ((doc: JsonObject) => JsonObject) | undefined;

async function buildGraph(setup: PoolSetup): Promise<TransformGraph<PoolSink>> {
  // The same built-ins as the main thread's registry (src/builtins.ts takes them from the same list).
  const registry = builtinTransformRegistry();
  if (setup.transforms.some((t) => !registry.get('transform', t.type))) {
    const problems = await loadPlugins(setup.plugins, setup.configFile, registry);
    if (problems.length > 0) throw new LogferryError('LF_POOL_FAILED', `pool worker could not load plugins: ${problems.map((p) => p.message).join('; ')}`);
  }
  const scrubber = new SecretScrubber(setup.secrets ?? []);
  const log = createLogger({ level: 'warn', scrub: (text) => scrubber.scrub(text) }, { thread: 'pool' });
  const graph = new TransformGraph<PoolSink>();
  for (const t of setup.transforms) {
    const definition = registry.get('transform', t.type)!;
    const ctx = { id: t.id, log: log.child({ component: t.id }), metrics, signal: new AbortController().signal, dataDir: '' };
    graph.add(t.inputs, { kind: 'transform', id: t.id, transform: (await definition.build(t.options, ctx)) as Transform });
  }
  for (const s of setup.sinks) graph.add(s.inputs, { kind: 'sink', id: s.id, sink: { gzip: s.gzip } });
  return graph;
}

/** Serializes each distinct document once, however many sinks receive it. */
class Bodies {
  private readonly json = new Map<JsonObject, Uint8Array>();
  private readonly gzipped = new Map<Uint8Array, Uint8Array>();
  readonly transfer = new Set<ArrayBuffer>();

  constructor(private readonly source: SourceText | undefined) {}

  body(doc: JsonObject): Uint8Array {
    let bytes = this.json.get(doc);
    if (!bytes) {
      bytes = transferable(bodyFrom(this.source, doc));
      this.json.set(doc, bytes);
      this.transfer.add(bytes.buffer as ArrayBuffer);
    }
    return bytes;
  }

  gzip(body: Uint8Array): Uint8Array {
    let bytes = this.gzipped.get(body);
    if (!bytes) {
      bytes = transferable(gzipSync(body));
      this.gzipped.set(body, bytes);
      this.transfer.add(bytes.buffer as ArrayBuffer);
    }
    return bytes;
  }
}

/** What the walk of a record produces in a worker: events the main thread replays in order. */
const walkEvents: WalkEvents<PoolSink, Walk> = {
  deliver(sink, sinkId, record, { bodies, events }) {
    // A body that cannot be made (a plugin built a document too deep for JSON.stringify) is this
    // record's dead letter at that sink, as on the main thread.
    let body: Uint8Array;
    try {
      body = bodies.body(record.doc);
    } catch (err) {
      const { code, reason } = unprocessable(err, 'the document could not be serialized for this sink');
      events.push(deadLetterEvent(sinkId, code, reason, record));
      return;
    }
    events.push({ kind: 'deliver', sink: sinkId, key: record.key, body, gzip: sink.gzip ? bodies.gzip(body) : undefined });
  },
  dropped(transformId, { events }) {
    events.push({ kind: 'dropped', transform: transformId });
  },
  deadLetter(transformId, record, { code, reason }, { events }) {
    events.push(deadLetterEvent(transformId, code, reason, record));
  },
};

/** A dead letter at `component`; a document that cannot be serialized is left out, and the reason says so. */
function deadLetterEvent(component: string, code: ErrorCode, reason: string, record: LogRecord): PoolEvent {
  try {
    return { kind: 'dead_letter', component, code, reason, docJson: deadLetterJson(record.doc), key: record.key };
  } catch (err) {
    return { kind: 'dead_letter', component, code, reason: `${reason} (the document could not be written into the dead letter: ${errorMessage(err)})` };
  }
}

function deadLetterJson(doc: JsonObject): string {
  forDeadLetter ??= deadLetterRedactor((workerData as PoolSetup).transforms);
  return JSON.stringify(forDeadLetter(doc));
}

export default async function prepareRecord(task: PoolTask | 'warm-up'): Promise<unknown> {
  graph ??= buildGraph(workerData as PoolSetup);
  let transforms: TransformGraph<PoolSink>;
  try {
    transforms = await graph;
  } catch (err) {
    // At warm-up this fails the start; later (a worker started to replace one that died) every
    // line would fail the same way, so the main thread is told the pool is broken, not the line.
    if (task === 'warm-up') throw err;
    const broken: PoolBroken = { broken: `a pool worker could not build the transforms: ${errorMessage(err)}` };
    return broken;
  }
  if (task === 'warm-up') return undefined;
  try {
    return await prepare(transforms, task);
  } catch (err) {
    // Whatever else threw on this line is its dead letter; the worker goes on with the next one.
    // No text: it may hold values mask_data protects. The origin still points at the line.
    metrics.perComponent.clear();
    const outcome: PoolOutcome = { ok: false, ...unprocessable(err) };
    return outcome;
  }
}

async function prepare(transforms: TransformGraph<PoolSink>, task: PoolTask): Promise<unknown> {
  const line = new Uint8Array(task.bytes, task.offset, task.length);
  const text = decodeLine(line);
  if (text === undefined) {
    const outcome: PoolOutcome = {
      ok: false,
      code: 'LF_RECORD_BAD_UTF8',
      reason: `line is not valid UTF-8: ${utf8Problem(line)}`,
      rawBase64: Buffer.from(line).toString('base64'),
      line: lineReference(line),
    };
    return outcome;
  }
  // The line was transferred here, so it is kept as is: an unchanged document's body is the line itself.
  const parsed = parseText(text, task.origin, line, { maxDepth: task.maxDepth, ownedBytes: true });
  if (!parsed.ok) {
    const outcome: PoolOutcome = {
      ok: false,
      code: parsed.error.code,
      reason: parsed.error.message,
      text: parsed.text,
      docJson: parsed.doc ? deadLetterJson(parsed.doc) : undefined,
      line: parsed.line,
    };
    return outcome;
  }
  const { record } = parsed;
  const bodies = new Bodies(record.sourceText);
  const events: PoolEvent[] = [];
  await transforms.route(task.sourceId, record, walkEvents, { bodies, events });
  const counts: [string, string, number][] = [];
  for (const [component, counters] of metrics.perComponent) {
    for (const [name, by] of Object.entries(counters)) counts.push([component, name, by]);
  }
  metrics.perComponent.clear();
  const outcome: PoolOutcome = { ok: true, recordKind: record.kind, receivedDigest: record.receivedDigest, events, counts };
  const transfer = [...bodies.transfer];
  return move({
    get [transferableSymbol]() {
      return transfer;
    },
    get [valueSymbol]() {
      return outcome;
    },
  });
}
