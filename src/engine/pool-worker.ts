import { gzipSync } from 'node:zlib';
import { move, transferableSymbol, valueSymbol, workerData } from 'piscina';
import { transformFailure } from '../errors.js';
import { loadPlugins } from '../plugin/load.js';
import { bodyFrom } from '../records/body.js';
import { decodeLine, lineReference, parseText, utf8Problem } from '../records/parse.js';
import { deadLetterRedactor } from '../records/redaction.js';
import { ComponentRegistry } from '../registry.js';
import { pathFormatTransform } from '../transforms/path-format.js';
import { redactTransform } from '../transforms/redact.js';
import { selectTransform } from '../transforms/select.js';
import { createLogger } from './logger.js';
import { Metrics } from './metrics.js';
import { SecretScrubber } from './secrets.js';
import { transferable, type PoolEvent, type PoolOutcome, type PoolSetup, type PoolTask } from './pool-protocol.js';
import type { ComponentDefinition, JsonObject, LogRecord, SourceText, Transform, TransformResult } from './types.js';

/**
 * The worker side of the record pool: parses a large line, runs the pipeline's transforms on it
 * and serializes (and gzips, where a sink asks) what each sink receives, so the main thread only
 * moves bytes. The transforms are built here from the same definitions and options as on the
 * main thread; they are pure functions of the record, which is what makes this move safe.
 */

type Consumer = { kind: 'transform'; id: string; transform: Transform } | { kind: 'sink'; id: string; gzip: boolean };

const metrics = new Metrics();
let graph: Promise<Map<string, Consumer[]>> | undefined;
/**
 * What a dead letter holds of a record, applied here because the document crosses to the main
 * thread as JSON: the mark that asks for deep masking (mask.ts) does not survive the trip.
 */
let forDeadLetter: ((doc: JsonObject) => JsonObject) | undefined;

async function buildGraph(setup: PoolSetup): Promise<Map<string, Consumer[]>> {
  const registry = new ComponentRegistry();
  for (const definition of [selectTransform, redactTransform, pathFormatTransform]) registry.register(definition as unknown as ComponentDefinition);
  if (setup.transforms.some((t) => !registry.get('transform', t.type))) {
    const problems = await loadPlugins(setup.plugins, setup.configFile, registry);
    if (problems.length > 0) throw new Error(`pool worker could not load plugins: ${problems.map((p) => p.message).join('; ')}`);
  }
  const scrubber = new SecretScrubber(setup.secrets ?? []);
  const log = createLogger({ level: 'warn', scrub: (text) => scrubber.scrub(text) }, { thread: 'pool' });
  const consumers = new Map<string, Consumer[]>();
  const add = (inputs: readonly string[], consumer: Consumer): void => {
    for (const input of inputs) consumers.set(input, [...(consumers.get(input) ?? []), consumer]);
  };
  for (const t of setup.transforms) {
    const definition = registry.get('transform', t.type)!;
    const ctx = { id: t.id, log: log.child({ component: t.id }), metrics, signal: new AbortController().signal, dataDir: '' };
    add(t.inputs, { kind: 'transform', id: t.id, transform: (await definition.build(t.options, ctx)) as Transform });
  }
  for (const s of setup.sinks) add(s.inputs, { kind: 'sink', id: s.id, gzip: s.gzip });
  return consumers;
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

async function walk(consumers: Map<string, Consumer[]>, fromId: string, record: LogRecord, bodies: Bodies, events: PoolEvent[]): Promise<void> {
  for (const consumer of consumers.get(fromId) ?? []) {
    if (consumer.kind === 'sink') {
      const body = bodies.body(record.doc);
      events.push({ kind: 'deliver', sink: consumer.id, key: record.key, body, gzip: consumer.gzip ? bodies.gzip(body) : undefined });
      continue;
    }
    let result: TransformResult;
    try {
      result = await consumer.transform.process(record);
    } catch (err) {
      const { code, reason } = transformFailure(err);
      events.push({ kind: 'dead_letter', component: consumer.id, code, reason, docJson: deadLetterJson(record.doc) });
      continue;
    }
    if (result === null || (Array.isArray(result) && result.length === 0)) {
      events.push({ kind: 'dropped', transform: consumer.id });
      continue;
    }
    for (const next of Array.isArray(result) ? result : [result]) await walk(consumers, consumer.id, next, bodies, events);
  }
}

function deadLetterJson(doc: JsonObject): string {
  forDeadLetter ??= deadLetterRedactor((workerData as PoolSetup).transforms);
  return JSON.stringify(forDeadLetter(doc));
}

export default async function prepareRecord(task: PoolTask | 'warm-up'): Promise<unknown> {
  graph ??= buildGraph(workerData as PoolSetup);
  const consumers = await graph;
  if (task === 'warm-up') return undefined;
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
  const parsed = parseText(text, task.origin, line, true);
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
  try {
    await walk(consumers, task.sourceId, record, bodies, events);
  } catch (err) {
    // Only something like nesting deeper than the stack gets here (transform errors are events).
    // No text: it may hold values mask_data protects. The origin still points at the line.
    const outcome: PoolOutcome = { ok: false, code: 'LF_RECORD_INVALID', reason: `record cannot be processed: ${(err as Error).message}` };
    metrics.perComponent.clear();
    return outcome;
  }
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
