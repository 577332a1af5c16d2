import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { hasSemiSpaceFlag } from '../../src/cli/node-flags.js';
import { createPlugin, pluginNameProblem, pluginVersions } from '../../src/cli/plugin-new.js';
import { UsageError } from '../../src/errors.js';
import { httpSink } from '../../src/sinks/http.js';
import { sinkConformanceCases } from '../../src/testkit/index.js';

const manifest = { version: '0.1.0', devDependencies: { typescript: '~5.9', vitest: '^3.2.7', '@types/node': '^20.19.43' } };
const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});
const scratch = async (): Promise<string> => {
  const dir = await mkdtemp(join(tmpdir(), 'logferry-plugin-new-'));
  dirs.push(dir);
  return dir;
};

describe('plugin new', () => {
  it('takes lowercase hyphenated names and says what is wrong with others', () => {
    for (const good of ['acme', 'acme-store', 'store2', 'a1-b2-c3']) expect(pluginNameProblem(good)).toBeUndefined();
    expect(pluginNameProblem('')).toMatch(/1 to 50 characters/);
    expect(pluginNameProblem('x'.repeat(51))).toMatch(/1 to 50 characters/);
    expect(pluginNameProblem('logferry-plugin-acme')).toMatch(/try "acme"/);
    for (const bad of ['Acme', 'acme_store', '-acme', 'acme-', 'acme--store', '1acme', 'ac me', '../acme']) expect(pluginNameProblem(bad)).toMatch(/lowercase letters and digits/);
  });

  it('pins the plugin to this logferry minor line and to the tools it is built with', () => {
    expect(pluginVersions(manifest)).toEqual({ logferry: '^0.1.0', typescript: '~5.9', vitest: '^3.2.7', typesNode: '^20.19.43' });
  });

  it('writes the package into a new or empty folder, and refuses a folder that has anything in it', async () => {
    const base = await scratch();
    const result = await createPlugin('acme-store', undefined, manifest, base);
    expect(result.dir).toBe(join(base, 'logferry-plugin-acme-store'));
    expect(result.sinkType).toBe('acme_store_put');
    expect((await readdir(result.dir)).sort()).toEqual(['.gitignore', 'README.md', 'package.json', 'src', 'test', 'tsconfig.json']);
    const source = await readFile(join(result.dir, 'src/index.ts'), 'utf8');
    expect(source).toContain("type: 'acme_store_put'");
    expect(source).toContain('requiresKey: true');
    expect(source).toContain('export const acmeStoreSink');

    const taken = join(base, 'taken');
    await createPlugin('other', 'taken', manifest, base);
    await expect(createPlugin('other', 'taken', manifest, base)).rejects.toThrow(/exists and is not empty \(6 entries\); nothing was written/);
    await writeFile(join(base, 'a-file'), 'x');
    await expect(createPlugin('other', 'a-file', manifest, base)).rejects.toBeInstanceOf(UsageError);
    expect(await readFile(join(taken, 'package.json'), 'utf8')).toContain('logferry-plugin-other');
  });
});

describe('the Node flag of bench', () => {
  it('is found in the command line or NODE_OPTIONS, with any value', () => {
    expect(hasSemiSpaceFlag(['--max-semi-space-size=64'], '')).toBe(true);
    expect(hasSemiSpaceFlag([], '--inspect --max-semi-space-size=32')).toBe(true);
    expect(hasSemiSpaceFlag(['--inspect'], '')).toBe(false);
  });
});

describe("the conformance kit's time limits", () => {
  const subject = { definition: httpSink, options: (url: string) => ({ uri: url }) };

  it("scales every case's time limit by timeScale, and adds shutdownLimitMs to the shutdown case", () => {
    const base = sinkConformanceCases(subject).map((c) => c.timeoutMs);
    const scaled = sinkConformanceCases({ ...subject, timeScale: 3 }).map((c) => c.timeoutMs);
    expect(base.slice(0, 4).map((ms) => ms * 3)).toEqual(scaled.slice(0, 4));
    expect(base[4]).toBe(20_000);
    expect(sinkConformanceCases({ ...subject, shutdownLimitMs: 30_000 })[4]!.timeoutMs).toBe(45_000);
  });

  it('refuses limits out of their bounds, naming the option', () => {
    expect(() => sinkConformanceCases({ ...subject, timeScale: 0.5 })).toThrow(/timeScale must be a number from 1 to 100, got 0.5/);
    expect(() => sinkConformanceCases({ ...subject, timeScale: Number.NaN })).toThrow(/timeScale/);
    expect(() => sinkConformanceCases({ ...subject, shutdownLimitMs: 50 })).toThrow(/shutdownLimitMs must be a whole number of ms from 100 to 600000, got 50/);
  });
});
