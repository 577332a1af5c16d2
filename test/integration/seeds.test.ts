import { cp, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { EXAMPLES, FIXTURES, readTree, removeAll, runCli, scratch, writePipeline } from '../helpers/cli.js';

const cleanup: string[] = [];
afterEach(() => removeAll(cleanup));

/** The example pipeline's shape, with the sample logs and output in a scratch folder. */
function pipeline(dir: string): string {
  return `data_dir: ${JSON.stringify(join(dir, 'data'))}
sources:
  jobs:
    type: job_log_tail
    include: [${JSON.stringify(join(dir, 'logs', '*.ndjson'))}]
transforms:
  selected:
    type: select
    inputs: [jobs]
  redacted:
    type: redact
    inputs: [selected]
  keyed:
    type: path_format
    inputs: [redacted]
    user_id: 5234
sinks:
  archive:
    type: file
    inputs: [keyed]
    path: ${JSON.stringify(join(dir, 'out'))}
`;
}

async function shipExamples(dir: string): Promise<Map<string, Buffer>> {
  await cp(EXAMPLES, join(dir, 'logs'), { recursive: true });
  const config = await writePipeline(dir, pipeline(dir));
  const result = await runCli(['run', '-c', config, '--once'], { cwd: dir });
  expect(result.stderr).not.toContain('unexpected error');
  expect(result.code).toBe(0);
  return readTree(join(dir, 'out'));
}

describe('seed samples', () => {
  it('come out at the documented keys, byte-identical across two runs', async () => {
    const expected = JSON.parse(await readFile(join(FIXTURES, 'seeds', 'expected-keys.json'), 'utf8')) as Record<string, string>;
    const first = await shipExamples(await scratch(cleanup));
    const second = await shipExamples(await scratch(cleanup));

    const wanted = new Set(Object.values(expected));
    for (const key of wanted) expect([...first.keys()], key).toContain(key);
    expect(first.size).toBe(wanted.size + 1); // + the masked job of the examples
    expect([...second.keys()].sort()).toEqual([...first.keys()].sort());
    for (const [key, bytes] of first) expect(second.get(key)!.equals(bytes), key).toBe(true);

    // Each document is the sample itself (compact JSON), unchanged where nothing needed masking.
    const fixtureFiles = (await readdir(join(FIXTURES, 'seeds'))).filter((f) => f !== 'expected-keys.json');
    for (const name of fixtureFiles) {
      const sample = JSON.parse(await readFile(join(FIXTURES, 'seeds', name), 'utf8')) as Record<string, unknown>;
      const shipped = JSON.parse(first.get(expected[name]!)!.toString('utf8')) as Record<string, unknown>;
      expect(shipped, name).toEqual(sample);
    }
  });

  it('never lets a masked step value reach the output, the logs or the data dir', async () => {
    const dir = await scratch(cleanup);
    const out = await shipExamples(dir);
    const masked = JSON.parse(await readFile(join(FIXTURES, 'masked-job.json'), 'utf8')) as {
      lines: { mask_data: boolean; input: unknown; output: unknown }[];
    };
    const secrets = masked.lines
      .filter((l) => l.mask_data)
      .flatMap((l) => [l.input, l.output])
      .flatMap((v) => collectStrings(v))
      .filter((s) => s.length >= 6);
    expect(secrets.length).toBeGreaterThan(0);
    const everything = [...out.values(), ...(await readTree(join(dir, 'data'))).values()].map((b) => b.toString('utf8')).join('\n');
    for (const secret of secrets) expect(everything).not.toContain(secret);
    expect(everything).toContain('<redacted>');
  });
});

function collectStrings(value: unknown): string[] {
  if (typeof value === 'string') return [value];
  if (Array.isArray(value)) return value.flatMap(collectStrings);
  if (value && typeof value === 'object') return Object.values(value).flatMap(collectStrings);
  return [];
}
