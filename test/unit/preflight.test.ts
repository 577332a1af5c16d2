import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { builtinRegistry } from '../../src/builtins.js';
import { parseConfigText } from '../../src/config/load.js';
import type { ComponentDefinition } from '../../src/engine/types.js';
import { ConfigError } from '../../src/errors.js';
import { preflightCredentials } from '../../src/sinks/s3.js';
import { z } from 'zod';

const folders: string[] = [];
afterEach(async () => {
  await Promise.all(folders.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function folder(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'logferry-preflight-'));
  folders.push(dir);
  return dir;
}

/** A sink whose preflight reports what the test asks, to check how load.ts places the findings. */
const probe: ComponentDefinition<'sink', z.ZodObject<{ nested: z.ZodDefault<z.ZodObject<{ list: z.ZodDefault<z.ZodArray<z.ZodString>> }>> }>> = {
  kind: 'sink',
  type: 'probe',
  description: 'test',
  schema: z.object({ nested: z.object({ list: z.array(z.string()).default([]) }).default({ list: [] }) }),
  preflight: (options, env) => [
    { path: 'nested.list[1]', message: `second item is ${options.nested.list[1]}` },
    { path: 'nested', message: 'just a warning', warning: true },
    ...(env.PROBE_THROW ? [] : [{ path: '', message: `env says ${env.PROBE ?? 'nothing'}` }]),
  ],
  build: () => {
    throw new Error('not built in this test');
  },
};

const text = `sources:
  jobs: { type: job_log_tail, include: ["./logs/*.ndjson"] }
sinks:
  p:
    type: probe
    inputs: [jobs]
    nested:
      list: [a, b]
`;

describe('preflight in the config loader', () => {
  it('reports each finding at its option, warnings apart, with the env of LoadOptions', async () => {
    const registry = builtinRegistry().register(probe as ComponentDefinition);
    const error = await parseConfigText(text, 'p.yaml', registry, { env: { PROBE: 'hello' } }).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems).toEqual([
      { path: 'sinks.p', message: 'env says hello', line: 5, col: 5 },
      { path: 'sinks.p.nested.list[1]', message: 'second item is b', line: 8, col: 17 },
    ]);
  });

  it('turns a preflight that throws into a problem of its component', async () => {
    const registry = builtinRegistry().register({
      ...probe,
      preflight: () => {
        throw new Error('boom');
      },
    } as ComponentDefinition);
    const error = (await parseConfigText(text, 'p.yaml', registry, { env: {} }).catch((err: unknown) => err)) as ConfigError;
    expect(error.problems).toEqual([expect.objectContaining({ path: 'sinks.p', message: 'cannot check this sink: boom' })]);
  });
});

describe('s3 credential settings', () => {
  it('warns about half a key pair, a missing credentials file and an unknown profile; not about a sound setup', async () => {
    const dir = await folder();
    await mkdir(join(dir, '.aws'));
    await writeFile(join(dir, '.aws', 'credentials'), '[default]\naws_access_key_id = x\n[ci]\naws_access_key_id = y\n');
    await writeFile(join(dir, '.aws', 'config'), '[profile dev]\nregion = eu-west-1\n');
    const messages = (env: NodeJS.ProcessEnv): string[] => preflightCredentials({ HOME: dir, ...env }).map((w) => (expect(w.warning).toBe(true), w.message));

    expect(messages({})).toEqual([]);
    expect(messages({ AWS_PROFILE: 'ci' })).toEqual([]);
    expect(messages({ AWS_PROFILE: 'dev' })).toEqual([]);
    expect(messages({ AWS_ACCESS_KEY_ID: 'AKIA', AWS_SECRET_ACCESS_KEY: 's' })).toEqual([]);
    expect(messages({ AWS_ACCESS_KEY_ID: 'AKIA' })).toEqual([expect.stringContaining('only AWS_ACCESS_KEY_ID is set')]);
    expect(messages({ AWS_PROFILE: 'prod' })).toEqual([expect.stringContaining('AWS_PROFILE is "prod", but neither')]);
    expect(messages({ AWS_SHARED_CREDENTIALS_FILE: join(dir, 'nope') })).toEqual([expect.stringContaining('AWS_SHARED_CREDENTIALS_FILE names')]);
  });
});
