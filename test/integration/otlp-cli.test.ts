import { appendFile, mkdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { readDeadLetters } from '../../src/engine/dead-letters.js';
import { jobKey, makeJob, removeAll, runCli, scratch, standardPipeline, writePipeline } from '../helpers/cli.js';
import { startOtlpReceiver, type OtlpReceiver } from '../helpers/otlp-receiver.js';

const cleanup: string[] = [];
const receivers: OtlpReceiver[] = [];
afterEach(async () => {
  await Promise.all(receivers.splice(0).map((r) => r.close()));
  await removeAll(cleanup);
});

const FIRST = 4_000_000;
const REGISTER_IMPORTS = pathToFileURL(resolve(import.meta.dirname, '../helpers/register-imports.mjs')).href;

async function jobsFile(dir: string, count: number): Promise<string> {
  const logs = join(dir, 'logs');
  await mkdir(logs, { recursive: true });
  let text = '';
  for (let i = 0; i < count; i++) text += JSON.stringify(makeJob(FIRST + i, i % 10 === 0 ? { status: 'failed' } : {})) + '\n';
  await appendFile(join(logs, 'jobs.ndjson'), text);
  return join(logs, '*.ndjson');
}

function otlpSinkYaml(endpoint: string, protocol: string): string {
  return `  collector:
    type: otlp
    inputs: [keyed]
    endpoint: ${JSON.stringify(endpoint)}
    protocol: ${protocol}
    resource: { deployment.environment: ci }
    batch: { max_events: 40, timeout_ms: 50 }
    request: { timeout_ms: 1000 }
    retry: { initial_backoff_ms: 10, max_backoff_ms: 200, max_duration_s: 60 }
`;
}

describe('otlp sink, end to end through the CLI', () => {
  for (const protocol of ['http/protobuf', 'http/json']) {
    it(`${protocol}: run --once delivers every job as a log record`, async () => {
      const dir = await scratch(cleanup);
      const count = 300;
      const include = await jobsFile(dir, count);
      const otlp = await startOtlpReceiver();
      receivers.push(otlp);
      const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include, out: '', sinks: otlpSinkYaml(otlp.url, protocol) }));
      const result = await runCli(['run', '-c', config, '--once'], { cwd: dir });
      expect(result.code, result.stderr).toBe(0);
      const expected = Array.from({ length: count }, (_, i) => FIRST + i);
      expect([...new Set(otlp.ids())].sort((a, b) => a - b)).toEqual(expected);
      expect(otlp.requests.every((r) => r.url === '/v1/logs' && r.logs.length <= 40)).toBe(true);
      const logOf = (id: number) => otlp.logs().find((log) => log.attributes['job.id'] === id)!;
      expect(logOf(FIRST).severityText).toBe('ERROR');
      expect(logOf(FIRST).attributes['job.status']).toBe('failed');
      expect(logOf(FIRST + 1).severityText).toBe('INFO');
      expect(logOf(FIRST + 1).attributes['logferry.key']).toBe(jobKey(FIRST + 1));
      expect(logOf(FIRST + 1).body).toEqual(expect.objectContaining({ id: FIRST + 1, title: `job ${FIRST + 1}` }));
      expect(logOf(FIRST + 1).resource).toEqual({ 'service.name': 'logferry', 'deployment.environment': 'ci' });
      expect(await readDeadLetters(join(dir, 'data'))).toEqual([]);
    });
  }

  it('body json_text carries the document as written: an integer beyond 2^53 keeps its digits', async () => {
    const dir = await scratch(cleanup);
    const logs = join(dir, 'logs');
    await mkdir(logs, { recursive: true });
    await appendFile(join(logs, 'jobs.ndjson'), JSON.stringify(makeJob(FIRST)).replace('"title"', '"big":12345678901234567890,"title"') + '\n');
    const otlp = await startOtlpReceiver();
    receivers.push(otlp);
    const sinks = otlpSinkYaml(otlp.url, 'http/protobuf') + '    body: json_text\n';
    const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include: join(logs, '*.ndjson'), out: '', sinks }));
    const result = await runCli(['run', '-c', config, '--once'], { cwd: dir });
    expect(result.code, result.stderr).toBe(0);
    const [log] = otlp.logs();
    expect(typeof log!.body).toBe('string');
    expect(log!.body as string).toContain('"big":12345678901234567890,');
    expect(JSON.parse(log!.body as string)).toMatchObject({ id: FIRST, title: `job ${FIRST}` });
  });

  it('validate does not load OpenTelemetry; a run with an otlp sink does', async () => {
    const dir = await scratch(cleanup);
    const include = await jobsFile(dir, 5);
    const otlp = await startOtlpReceiver();
    receivers.push(otlp);
    const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include, out: '', sinks: otlpSinkYaml(otlp.url, 'http/protobuf') }));
    const loaded = async (args: string[], log: string): Promise<string[]> => {
      const result = await runCli(args, { cwd: dir, env: { NODE_OPTIONS: `--import=${REGISTER_IMPORTS}`, LOGFERRY_IMPORT_LOG: join(dir, log) } });
      expect(result.code, result.stderr).toBe(0);
      return (await readFile(join(dir, log), 'utf8')).split('\n').filter((url) => url.includes('@opentelemetry'));
    };
    expect(await loaded(['validate', '-c', config], 'validate.log')).toEqual([]);
    expect((await loaded(['run', '-c', config, '--once'], 'run.log')).some((url) => url.includes('otlp-transformer'))).toBe(true);
    expect(otlp.ids()).toHaveLength(5);
  });
});
