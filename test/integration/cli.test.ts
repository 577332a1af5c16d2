import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { removeAll, runCli, scratch, writePipeline } from '../helpers/cli.js';

const cleanup: string[] = [];
afterEach(() => removeAll(cleanup));

describe('CLI basics', () => {
  it('prints help, version, and exits 2 on usage errors', async () => {
    const dir = await scratch(cleanup);
    const help = await runCli(['--help'], { cwd: dir });
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('logferry run -c FILE');
    const version = await runCli(['--version'], { cwd: dir });
    expect(version.code).toBe(0);
    expect(version.stdout).toMatch(/^logferry \d+\.\d+\.\d+/);
    const unknown = await runCli(['frobnicate'], { cwd: dir });
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown command "frobnicate"');
    const noConfig = await runCli(['run'], { cwd: dir });
    expect(noConfig.code).toBe(2);
    const badFlag = await runCli(['run', '--nope'], { cwd: dir });
    expect(badFlag.code).toBe(2);
  });

  it('prints a JSON Schema that knows every component type', async () => {
    const dir = await scratch(cleanup);
    const result = await runCli(['schema'], { cwd: dir });
    expect(result.code).toBe(0);
    const text = result.stdout;
    const schema = JSON.parse(text) as Record<string, unknown>;
    expect(schema).toHaveProperty('properties');
    for (const type of ['job_log_tail', 'select', 'redact', 'path_format', 'file', 'console', 'http', 's3']) expect(text).toContain(`"${type}"`);
    expect(text).not.toContain('"sumo_logic"');
    // With -c, the plugins the file names add their types, even while the rest of the file is broken.
    const plugin = resolve(import.meta.dirname, '../../plugins/sumologic');
    const config = await writePipeline(dir, `plugins: [${JSON.stringify(plugin)}]\nsources: {}\nsinks: { broken: 1 }\n`);
    const withPlugins = await runCli(['schema', '-c', config], { cwd: dir });
    expect(withPlugins.code, withPlugins.stderr).toBe(0);
    expect(withPlugins.stdout).toContain('"sumo_logic"');
  });

  it('reports config errors as FILE:LINE:COL: path: message and exits 78', async () => {
    const dir = await scratch(cleanup);
    const config = await writePipeline(
      dir,
      `data_dir: ./data
sources:
  jobs:
    type: job_log_tail
    include: ["./logs/*.ndjson"]
    max_line_bytez: 10
transforms:
  keyed:
    type: path_format
    inputs: [jbos]
sinks:
  archive:
    type: fiel
    inputs: [keyed]
    path: ./out
`,
    );
    const result = await runCli(['validate', '-c', config], { cwd: dir });
    expect(result.code).toBe(78);
    expect(result.stderr).toContain(`${config}:6:5: sources.jobs.max_line_bytez:`);
    expect(result.stderr).toMatch(/did you mean .?max_line_bytes/);
    expect(result.stderr).toMatch(/:10:\d+: transforms\.keyed\.inputs/);
    expect(result.stderr).toMatch(/did you mean .?jobs/);
    expect(result.stderr).toMatch(/:13:11: sinks\.archive\.type: .*did you mean .?file/);
    const run = await runCli(['run', '-c', config], { cwd: dir });
    expect(run.code).toBe(78);
  });

  it('reports a missing environment variable with its position and a missing file clearly', async () => {
    const dir = await scratch(cleanup);
    const config = await writePipeline(
      dir,
      `sources:
  jobs:
    type: job_log_tail
    include: ["\${LOGS_GLOB}"]
transforms:
  keyed: { type: path_format, inputs: [jobs] }
sinks:
  archive: { type: file, inputs: [keyed], path: ./out }
`,
    );
    const env = { ...process.env };
    delete env.LOGS_GLOB;
    const result = await runCli(['validate', '-c', config], { cwd: dir, env });
    expect(result.code).toBe(78);
    expect(result.stderr).toMatch(/:4:\d+: .*LOGS_GLOB/);
    const ok = await runCli(['validate', '-c', config], { cwd: dir, env: { LOGS_GLOB: './x/*.ndjson' } });
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain('ok');
    const missing = await runCli(['validate', '-c', join(dir, 'nope.yaml')], { cwd: dir });
    expect(missing.code).toBe(78);
    expect(missing.stderr).toContain('nope.yaml');
  });

  it('prints the key a document would get', async () => {
    const dir = await scratch(cleanup);
    await mkdir(join(dir, 'docs'));
    const doc = join(dir, 'docs', 'job.json');
    await writeFile(
      doc,
      JSON.stringify({ id: 100, flow_id: 234, status: 'completed', started_at: '2018-05-21T00:00:00Z' }),
    );
    const config = await writePipeline(
      dir,
      `sources:
  jobs: { type: job_log_tail, include: ["./logs/*.ndjson"] }
transforms:
  keyed: { type: path_format, inputs: [jobs], user_id: 5234 }
sinks:
  archive: { type: file, inputs: [keyed], path: ./out }
`,
    );
    const result = await runCli(['key', '-c', config, doc], { cwd: dir });
    expect(result.code).toBe(0);
    expect(result.stdout.trim()).toBe(`${doc}\t5234/jobs/234/20180521/000/000/000/000/000/000/100/5234-234-100-20180521000000-succeeded.json`);
    const noUser = await runCli(['key', doc], { cwd: dir });
    expect(noUser.code).toBe(1);
    expect(noUser.stderr).toContain('LF_RECORD_NO_USER_ID');
  });
});
