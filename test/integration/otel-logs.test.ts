import { readFileSync } from 'node:fs';
import { appendFile, mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/engine/logger.js';
import { OTEL_LOGS_SHUTDOWN_WAIT_MS, OtelLogExport } from '../../src/engine/otel-logs.js';
import { SecretScrubber } from '../../src/engine/secrets.js';
import { LogferryError } from '../../src/errors.js';
import { makeJob, removeAll, runCli, scratch, standardPipeline, waitFor, writePipeline } from '../helpers/cli.js';
import { startOtlpReceiver, type OtlpReceiver } from '../helpers/otlp-receiver.js';

/** Issue 12, item 3 (logs): logferry's own log lines as OpenTelemetry log records over OTLP/HTTP. */

const VERSION = (JSON.parse(readFileSync(resolve(import.meta.dirname, '../../package.json'), 'utf8')) as { version: string }).version;
const OTEL_VARIABLES = ['OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_EXPORTER_OTLP_LOGS_ENDPOINT', 'OTEL_SDK_DISABLED', 'OTEL_LOGS_EXPORTER', 'OTEL_SERVICE_NAME', 'OTEL_RESOURCE_ATTRIBUTES'];

const cleanup: string[] = [];
const receivers: OtlpReceiver[] = [];
const savedEnv = new Map(OTEL_VARIABLES.map((name) => [name, process.env[name]]));
afterEach(async () => {
  for (const [name, value] of savedEnv) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
  await Promise.all(receivers.splice(0).map((r) => r.close()));
  await removeAll(cleanup);
});

/** A receiver whose answers the test can turn into refusals (`failWith`). */
type Collector = OtlpReceiver & { failWith: number | undefined };

async function receiver(): Promise<Collector> {
  const answer = { failWith: undefined as number | undefined };
  const started = await startOtlpReceiver(() => (answer.failWith === undefined ? undefined : { status: answer.failWith, body: 'refused (test)' }));
  receivers.push(started);
  return Object.defineProperty(started as Collector, 'failWith', {
    get: () => answer.failWith,
    set: (status: number | undefined) => (answer.failWith = status),
  });
}

/** The environment of a spawned CLI without the OTEL_* variables of whoever runs the tests. */
function envWithout(): NodeJS.ProcessEnv {
  return Object.fromEntries(OTEL_VARIABLES.map((name) => [name, undefined]));
}

describe('OTLP export of logferry logs (in process, real SDK and exporter)', () => {
  it('sends each line as a record: severity from the level, fields as attributes, secrets scrubbed, the logferry resource', async () => {
    const collector = await receiver();
    for (const name of OTEL_VARIABLES) delete process.env[name];
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = collector.url;
    const scrubber = new SecretScrubber(['tok-3f9a1c7e5b2d']);
    const reports: string[] = [];
    const otel = new OtelLogExport({ version: '9.8.7', scrub: (t) => scrubber.scrub(t), report: (_level, msg) => reports.push(msg) });
    const lines: string[] = [];
    const log = createLogger({ level: 'debug', format: 'text', write: (l) => lines.push(l), forward: (e) => otel.emit(e) });
    log.debug('probing');
    log.info('sent 3 records to https://h/…', { sink: 'out', records: 3, ok: true, share: 0.5, ids: [1, 2] });
    log.warn('refused with tok-3f9a1c7e5b2d', { reason: 'echo tok-3f9a1c7e5b2d', error: new LogferryError('LF_SINK_FAILED', 'bad tok-3f9a1c7e5b2d') });
    log.error('down', { sinks: [{ sink: 'a', state: 'blocked' }] });
    await otel.shutdown();

    const records = collector.accepted();
    expect(records.map((r) => [r.severityNumber, r.severityText, r.body])).toEqual([
      [5, 'debug', 'probing'],
      [9, 'info', 'sent 3 records to https://h/…'],
      [13, 'warn', 'refused with ***'],
      [17, 'error', 'down'],
    ]);
    expect(records[1]!.attributes).toEqual({ sink: 'out', records: 3, ok: true, share: 0.5, ids: [1, 2] });
    // Nested fields become dotted keys; the stack is there because the level is debug, scrubbed like the rest.
    expect(records[2]!.attributes).toMatchObject({ reason: 'echo ***', 'error.message': 'bad ***', 'error.code': 'LF_SINK_FAILED' });
    expect(records[2]!.attributes['error.stack']).toContain('otel-logs.test.ts');
    expect(JSON.stringify(collector.requests)).not.toContain('tok-3f9a1c7e5b2d');
    expect(records[3]!.attributes).toEqual({ sinks: '[{"sink":"a","state":"blocked"}]' });
    // The record's time is the line's (text lines start with it).
    const lineTime = Date.parse(lines[1]!.slice(0, 24));
    expect(Number(BigInt(records[1]!.timeUnixNano!) / 1_000_000n)).toBe(lineTime);
    expect(records[0]!.resource).toMatchObject({ 'service.name': 'logferry', 'service.version': '9.8.7' });
    expect(reports).toEqual([]);
  });

  it('says on the local log only, once per failing spell, that the collector refuses, and when it takes them again', async () => {
    const collector = await receiver();
    collector.failWith = 400;
    for (const name of OTEL_VARIABLES) delete process.env[name];
    process.env.OTEL_EXPORTER_OTLP_LOGS_ENDPOINT = `${collector.url}/v1/logs`;
    const lines: string[] = [];
    let otel: OtelLogExport | undefined;
    const log = createLogger({ format: 'json', write: (l) => lines.push(l), forward: (e) => otel?.emit(e) });
    otel = new OtelLogExport({ version: '1.0.0', scrub: (t) => t, report: (level, msg, fields) => log[level](msg, fields) });
    log.info('first batch');
    await waitFor(() => collector.requests.length >= 1, 20_000, 'the first refused export');
    log.info('second batch');
    await waitFor(() => collector.requests.length >= 2, 20_000, 'the second refused export');
    collector.failWith = undefined;
    log.info('third batch');
    await waitFor(() => collector.accepted().length >= 1, 20_000, 'an accepted export');
    await otel.shutdown();
    const parsed = lines.map((l) => JSON.parse(l) as { level: string; msg: string; code?: string });
    const problems = parsed.filter((l) => l.code === 'LF_OTLP_LOGS_EXPORT_FAILED');
    expect(problems, lines.join('')).toHaveLength(1);
    expect(problems[0]!.msg).toContain(`cannot export logferry's own logs to ${collector.url}/v1/logs`);
    expect(parsed.filter((l) => l.msg === `logs reach ${collector.url}/v1/logs again`)).toHaveLength(1);
    // What the export says about itself stays local: the collector gets the log lines only.
    expect(collector.accepted().map((r) => r.body)).toEqual(['third batch']);
  });

  it('ends in bounded time when the collector cannot be reached, saying why', async () => {
    const collector = await receiver();
    const url = collector.url;
    await collector.close();
    for (const name of OTEL_VARIABLES) delete process.env[name];
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = url;
    const lines: string[] = [];
    let otel: OtelLogExport | undefined;
    const log = createLogger({ format: 'json', write: (l) => lines.push(l), forward: (e) => otel?.emit(e) });
    otel = new OtelLogExport({ version: '1.0.0', scrub: (t) => t, report: (level, msg, fields) => log[level](msg, fields) });
    for (let i = 0; i < 5; i++) log.info(`line ${i}`);
    const started = Date.now();
    await otel.shutdown();
    expect(Date.now() - started).toBeLessThanOrEqual(OTEL_LOGS_SHUTDOWN_WAIT_MS + 1_000);
    const problems = lines.map((l) => JSON.parse(l) as { msg: string; code?: string }).filter((l) => l.code === 'LF_OTLP_LOGS_EXPORT_FAILED');
    expect(problems, lines.join('')).toHaveLength(1);
    expect(problems[0]!.msg).toMatch(new RegExp(`${url}/v1/logs.*(ECONNREFUSED|within 5 s)`));
  });
});

describe('OTLP export of logferry logs (the CLI)', () => {
  async function onceRun(dir: string, env: NodeJS.ProcessEnv, count: number, format: 'text' | 'json' = 'json'): Promise<Awaited<ReturnType<typeof runCli>>> {
    const logs = join(dir, 'logs');
    await mkdir(logs, { recursive: true });
    await appendFile(join(logs, 'jobs.ndjson'), Array.from({ length: count }, (_v, i) => JSON.stringify(makeJob(8_000_000 + i)) + '\n').join(''));
    const config = await writePipeline(dir, standardPipeline({ dataDir: join(dir, 'data'), include: join(logs, '*.ndjson'), out: join(dir, 'out') }));
    return runCli(['run', '-c', config, '--once', '--log-format', format], { cwd: dir, env: { ...envWithout(), ...env } });
  }

  it('with OTEL_EXPORTER_OTLP_ENDPOINT set, every line of a run reaches the collector before the process exits', async () => {
    const collector = await receiver();
    const dir = await scratch(cleanup);
    const result = await onceRun(dir, { OTEL_EXPORTER_OTLP_ENDPOINT: collector.url, OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment.name=test' }, 12);
    expect(result.code, result.stderr).toBe(0);
    const lines = result.stderr
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { msg: string; level: string });
    const records = collector.accepted();
    expect(records.map((r) => r.body)).toEqual(lines.map((l) => l.msg));
    const done = records.find((r) => String(r.body).startsWith('done: '));
    expect(done?.severityNumber).toBe(9);
    expect(done?.attributes).toMatchObject({ records_in: 12, delivered: 12, dead_letters: 0, skipped: 0, 'sink_states.archive': 'healthy' });
    expect(done?.resource).toMatchObject({ 'service.name': 'logferry', 'service.version': VERSION, 'deployment.environment.name': 'test' });
  });

  it('without the variables, loads no OpenTelemetry module; with OTEL_SDK_DISABLED=true, sends nothing', async () => {
    const collector = await receiver();
    // A module resolve hook that names every OpenTelemetry module the CLI asks for.
    const hooks = await scratch(cleanup);
    await writeFile(
      join(hooks, 'hook.mjs'),
      `export async function resolve(specifier, context, next) {
  if (/opentelemetry|otel-logs/.test(specifier)) process.stderr.write('LOADED ' + specifier + '\\n');
  return next(specifier, context);
}
`,
    );
    await writeFile(join(hooks, 'register.mjs'), `import { register } from 'node:module';\nregister('./hook.mjs', import.meta.url);\n`);
    const traced = { NODE_OPTIONS: `--import=${pathToFileURL(join(hooks, 'register.mjs')).href}` };
    const plain = await onceRun(await scratch(cleanup), traced, 3, 'text');
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stderr).toContain('done: 3 records in');
    expect(plain.stderr).not.toContain('LOADED');
    // The hook does see them when the export is on (so the check above can fail).
    const exported = await onceRun(await scratch(cleanup), { ...traced, OTEL_EXPORTER_OTLP_ENDPOINT: collector.url }, 3, 'text');
    expect(exported.code, exported.stderr).toBe(0);
    expect(exported.stderr).toContain('LOADED @opentelemetry/sdk-logs');
    const sent = collector.requests.length;
    expect(sent).toBeGreaterThan(0);

    const disabled = await onceRun(await scratch(cleanup), { OTEL_EXPORTER_OTLP_ENDPOINT: collector.url, OTEL_SDK_DISABLED: 'true' }, 3);
    expect(disabled.code, disabled.stderr).toBe(0);
    expect(disabled.stderr).toContain('done: 3 records in');
    expect(collector.requests).toHaveLength(sent);
  });
});
