import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { mulberry32 } from '../src/testkit/random.js';

/** Payload sizes of the scenarios, in bytes per job document. */
export const PAYLOADS = { '1k': 1024, '10k': 10 * 1024, '100k': 100 * 1024, '1m': 1024 * 1024 } as const;
export type PayloadName = keyof typeof PAYLOADS;
export type ScenarioName = PayloadName | 'mix';

/** The mix of the issue: 70% 1 kB, 20% 10 kB, 8% 100 kB, 2% 1 MB (by record count). */
const MIX: [PayloadName, number][] = [
  ['1k', 0.7],
  ['10k', 0.2],
  ['100k', 0.08],
  ['1m', 0.02],
];

const WORDS = 'order invoice customer shipment account status pending approved amount currency region email update record sync batch'.split(' ');

function text(random: () => number, length: number): string {
  let out = '';
  while (out.length < length) out += WORDS[Math.floor(random() * WORDS.length)]! + ' ';
  return out.slice(0, length);
}

/**
 * One job document in the shape of seed 000 (job summary, report, step lines), `size` bytes of
 * compact JSON give or take 1%. One step in four is marked mask_data, as workflows that handle
 * credentials do, so redact has real work on every record.
 */
export function jobDocument(id: number, size: number, random: () => number): string {
  const started = new Date(Date.UTC(2026, 10, 1) + id * 1000).toISOString();
  const base = {
    id,
    flow_id: 1000 + (id % 50),
    parent_id: null,
    calling_job_id: null,
    status: random() < 0.9 ? 'succeeded' : 'failed',
    error_type: null,
    error: null,
    title: `Sync order ${id}`,
    is_poll_error: false,
    started_at: started,
    completed_at: started,
    report: { workato: { job_context: { user_id: 5234, recipe_id: 1000 + (id % 50), job_id: id } } },
    lines: [] as unknown[],
  };
  const skeleton = JSON.stringify(base).length;
  const steps = Math.max(1, Math.min(40, Math.round(size / 2048)));
  const perStep = Math.max(16, Math.floor((size - skeleton) / steps) - 190);
  for (let i = 0; i < steps; i++) {
    base.lines.push({
      recipe_line_number: i,
      adapter_name: i === 0 ? 'clock' : 'rest',
      adapter_operation: 'make_request',
      input: { url: `https://api.example.com/orders/${id}`, body: text(random, Math.floor(perStep / 2)) },
      output: { status: 200, body: text(random, Math.ceil(perStep / 2)) },
      error: null,
      mask_data: i % 4 === 3,
    });
  }
  let json = JSON.stringify(base);
  if (json.length < size) {
    const first = base.lines[0] as { output: { body: string } };
    first.output.body += text(random, size - json.length);
    json = JSON.stringify(base);
  }
  return json;
}

export interface Corpus {
  path: string;
  bytes: number;
  records: number;
  /** The documents, for the floor measurement (parse + stringify of the same bytes). */
  sample: string[];
}

/** Writes about `targetBytes` of NDJSON job documents for a scenario. */
export async function writeCorpus(path: string, scenario: ScenarioName, targetBytes: number, seed = 42): Promise<Corpus> {
  const random = mulberry32(seed);
  const out = createWriteStream(path);
  let bytes = 0;
  let records = 0;
  const sample: string[] = [];
  let sampleBytes = 0;
  while (bytes < targetBytes) {
    const payload = scenario === 'mix' ? pick(random) : scenario;
    const line = jobDocument(1_000_000 + records, PAYLOADS[payload], random) + '\n';
    bytes += Buffer.byteLength(line);
    records++;
    // Keep up to 64 MiB of documents in memory for the floor: enough for a stable rate.
    if (sampleBytes < 64 * 1024 * 1024) {
      sample.push(line.slice(0, -1));
      sampleBytes += line.length;
    }
    if (!out.write(line)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
  return { path, bytes, records, sample };
}

function pick(random: () => number): PayloadName {
  let r = random();
  for (const [name, share] of MIX) {
    if (r < share) return name;
    r -= share;
  }
  return '1k';
}
