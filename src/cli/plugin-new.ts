import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { UsageError } from '../errors.js';

/**
 * `logferry plugin new NAME [--dir DIR]`: writes a plugin package that builds and tests outside
 * this repository. The files are written from the templates below; the versions come from the
 * running logferry's own package.json, so the plugin is made for the engine that made it.
 */

/** npm's rules for a package name, narrowed so the name also makes a snake_case sink type. */
const PLUGIN_NAME = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;
const MAX_NAME_LENGTH = 50;

export interface LogferryManifest {
  version: string;
  devDependencies?: Record<string, string>;
}

export interface ScaffoldResult {
  dir: string;
  packageName: string;
  sinkType: string;
  files: string[];
}

/** Checks NAME: lowercase letters and digits in words joined by single hyphens, starting with a letter. */
export function pluginNameProblem(name: string): string | undefined {
  if (name.length === 0 || name.length > MAX_NAME_LENGTH) return `the name must have 1 to ${MAX_NAME_LENGTH} characters`;
  if (name.startsWith('logferry-plugin-')) return `give the name without its "logferry-plugin-" prefix (the package is named logferry-plugin-NAME): try "${name.slice(16)}"`;
  if (!PLUGIN_NAME.test(name)) return 'the name must be lowercase letters and digits, words joined by single hyphens, starting with a letter (e.g. "acme-store")';
  return undefined;
}

/** The version ranges the plugin declares: logferry's own minor line, and the tools this logferry is built and tested with. */
export function pluginVersions(manifest: LogferryManifest): { logferry: string; typescript: string; vitest: string; typesNode: string } {
  const dev = manifest.devDependencies ?? {};
  const need = (name: string): string => {
    const range = dev[name];
    if (range === undefined) throw new UsageError(`logferry's package.json has no devDependency ${name} to pin the plugin's to`);
    return range;
  };
  return { logferry: `^${manifest.version}`, typescript: need('typescript'), vitest: need('vitest'), typesNode: need('@types/node') };
}

export async function createPlugin(name: string, dirOption: string | undefined, manifest: LogferryManifest, cwd = process.cwd()): Promise<ScaffoldResult> {
  const problem = pluginNameProblem(name);
  if (problem) throw new UsageError(`plugin new: "${name}": ${problem}`);
  const packageName = `logferry-plugin-${name}`;
  const dir = resolve(cwd, dirOption ?? packageName);
  const existing = await readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw new UsageError(`plugin new: cannot use ${dir} as the plugin's folder: ${err.message}`);
  });
  if (existing.length > 0) {
    throw new UsageError(`plugin new: ${dir} exists and is not empty (${existing.length} entries); nothing was written. Choose another folder with --dir, or remove this one`);
  }
  const files = templates(name, packageName, pluginVersions(manifest));
  for (const [path, text] of Object.entries(files)) {
    const target = join(dir, path);
    await mkdir(join(target, '..'), { recursive: true });
    // 'wx': never overwrite, even if something appeared in the folder since it was checked.
    await writeFile(target, text, { flag: 'wx' });
  }
  return { dir, packageName, sinkType: sinkTypeOf(name), files: Object.keys(files) };
}

/** The next steps, printed after the files are written. */
export function nextSteps(result: ScaffoldResult, cwd = process.cwd()): string {
  const where = relative(cwd, result.dir) || '.';
  return [
    `wrote ${result.packageName} in ${where}/: ${result.files.join(', ')}`,
    'next:',
    `  cd ${where}`,
    '  npm install        # logferry (peer and dev dependency), typescript, vitest',
    '  npm run build      # tsc: src/ to dist/',
    '  npm test           # the conformance kit and the sink\'s own tests',
    `then name the folder in a pipeline file (plugins: ["${result.dir}"], or a path relative to the pipeline file) and use a sink of type ${result.sinkType}`,
  ].join('\n');
}

const sinkTypeOf = (name: string): string => `${name.replaceAll('-', '_')}_put`;
const exportNameOf = (name: string): string => `${name.replace(/-([a-z0-9])/g, (_m, c: string) => c.toUpperCase())}Sink`;

function templates(name: string, packageName: string, versions: ReturnType<typeof pluginVersions>): Record<string, string> {
  const sinkType = sinkTypeOf(name);
  const sinkExport = exportNameOf(name);
  const manifest = {
    name: packageName,
    version: '0.1.0',
    description: `logferry sink ${sinkType}: PUTs each document at its key under a base URL.`,
    type: 'module',
    main: './dist/index.js',
    types: './dist/index.d.ts',
    exports: { '.': { types: './dist/index.d.ts', default: './dist/index.js' } },
    files: ['dist'],
    engines: { node: '>=20.19' },
    scripts: { build: 'tsc -p tsconfig.json', test: 'vitest run' },
    // The engine that loads the plugin provides logferry; the devDependency is for building and testing.
    peerDependencies: { logferry: versions.logferry },
    devDependencies: { '@types/node': versions.typesNode, logferry: versions.logferry, typescript: versions.typescript, vitest: versions.vitest },
  };
  const tsconfig = {
    compilerOptions: {
      target: 'ES2022',
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      strict: true,
      noUncheckedIndexedAccess: true,
      skipLibCheck: true,
      declaration: true,
      sourceMap: true,
      rootDir: 'src',
      outDir: 'dist',
      types: ['node'],
    },
    include: ['src/**/*.ts'],
  };
  return {
    'package.json': JSON.stringify(manifest, null, 2) + '\n',
    'tsconfig.json': JSON.stringify(tsconfig, null, 2) + '\n',
    '.gitignore': 'node_modules/\ndist/\n',
    'src/index.ts': SINK_TEMPLATE.replaceAll('__SINK_TYPE__', sinkType).replaceAll('__SINK_EXPORT__', sinkExport).replaceAll('__PACKAGE__', packageName),
    'test/sink.test.ts': TEST_TEMPLATE.replaceAll('__SINK_TYPE__', sinkType).replaceAll('__SINK_EXPORT__', sinkExport).replaceAll('__PACKAGE__', packageName),
    'README.md': README_TEMPLATE.replaceAll('__SINK_TYPE__', sinkType).replaceAll('__PACKAGE__', packageName),
  };
}

const SINK_TEMPLATE = `import {
  ConcurrencyLimit,
  definePlugin,
  defineSink,
  documentBody,
  parseRetryAfter,
  retrySchema,
  retryUntilFinal,
  safeUrl,
  settleAll,
  statusFailureClass,
  urlSecrets,
  z,
  type Delivery,
  type Verdict,
} from 'logferry';

export const schema = z
  .object({
    url: z.url({ protocol: /^https?$/ }).describe('Base URL: each document is PUT at URL/KEY, KEY being the key path_format gave the record.'),
    token: z.string().min(1).optional().describe('Bearer token for the Authorization header; scrubbed from logs and dead letters.'),
    concurrency: z.number().int().min(1).max(64).default(8).describe('Requests in flight at once (1 to 64).'),
    timeout_ms: z.number().int().min(100).max(600_000).default(30_000).describe('How long one request may take before it is retried (100 ms to 10 min).'),
    retry: retrySchema.prefault({}),
  })
  .strict();

export type Options = z.output<typeof schema>;

/** What an answer means for the record: the delivery toolkit's Verdict. */
async function put(options: Options, delivery: Delivery, signal: AbortSignal): Promise<Verdict> {
  // requiresKey (below) makes logferry refuse a pipeline without path_format before this sink, so the key is set.
  const target = \`\${options.url.replace(/\\/+$/, '')}/\${delivery.record.key ?? ''}\`;
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (options.token !== undefined) headers.authorization = \`Bearer \${options.token}\`;
  let response: Response;
  try {
    response = await fetch(target, {
      method: 'PUT',
      headers,
      // The document as read (or as masked), the same bytes on every redelivery.
      body: new Uint8Array(documentBody(delivery.record)),
      signal: AbortSignal.any([signal, AbortSignal.timeout(options.timeout_ms)]),
    });
  } catch (err) {
    // No answer (refused, reset, timed out): the destination, not the record.
    return { kind: 'destination', reason: \`PUT \${safeUrl(target)}: \${(err as Error).message}\` };
  }
  const answer = (await response.text().catch(() => '')).slice(0, 200);
  if (response.ok) return { kind: 'ok' };
  const reason = \`PUT \${safeUrl(target)}: \${response.status} \${answer}\`.trim();
  switch (statusFailureClass(response.status)) {
    case 'record':
      return { kind: 'record', reason };
    case 'transient':
      return { kind: 'destination', reason, afterMs: parseRetryAfter(response.headers.get('retry-after') ?? undefined) };
    case 'blocked':
      return { kind: 'destination', reason, blocked: true, advice: 'check the URL and the token' };
  }
}

export const __SINK_EXPORT__ = defineSink({
  type: '__SINK_TYPE__',
  description: 'PUTs each document, as JSON, at URL/KEY (one request per record).',
  schema,
  requiresKey: true,
  secrets: (options) => [...(options.token === undefined ? [] : [options.token]), ...urlSecrets(options.url)],
  build: (options, ctx) => ({
    async run(input) {
      const limit = new ConcurrencyLimit(options.concurrency);
      for await (const batch of input) {
        for (const delivery of batch) {
          await limit.run([delivery], async () => {
            const verdict = await retryUntilFinal(() => put(options, delivery, ctx.signal), {
              retry: options.retry,
              signal: ctx.signal,
              state: ctx.state,
              onRetry: (reason, attempt, delayMs) => ctx.log.debug('PUT failed; retrying', { reason, attempt, retry_in_ms: delayMs }),
            });
            // On shutdown the record stays unacknowledged: it is read again after the restart.
            if (verdict !== 'aborted') settleAll([delivery], verdict);
          });
        }
      }
      await limit.drain();
    },
  }),
});

export default definePlugin({ name: '__PACKAGE__', sinks: [__SINK_EXPORT__] });
`;

const TEST_TEMPLATE = `import { describe, expect, it } from 'vitest';
import { driveSink, jobRecord, sinkConformanceCases, startReceiver } from 'logferry/testkit';
import plugin, { __SINK_EXPORT__ } from '../src/index.js';

describe('__SINK_TYPE__ sink', () => {
  it('is a plugin with one sink, which needs keyed records', () => {
    expect(plugin.name).toBe('__PACKAGE__');
    expect(plugin.sinks?.map((s) => s.type)).toEqual(['__SINK_TYPE__']);
    expect(__SINK_EXPORT__.requiresKey).toBe(true);
  });

  it('PUTs each document at its key, with the token', async () => {
    const receiver = await startReceiver();
    try {
      const records = [1, 2, 3].map((id) => jobRecord(id));
      const result = await driveSink(__SINK_EXPORT__, { url: \`\${receiver.url}/logs\`, token: 'test-token-123' }, records);
      expect(result.delivered).toHaveLength(3);
      expect(receiver.requests.map((r) => \`\${r.method} \${r.url}\`).sort()).toEqual(records.map((r) => \`PUT /logs/\${r.key}\`).sort());
      expect(receiver.requests.every((r) => r.headers.authorization === 'Bearer test-token-123')).toBe(true);
      expect(receiver.ids().sort()).toEqual([1, 2, 3]);
    } finally {
      await receiver.close();
    }
  });

  // The cases every sink must pass. A quick request timeout and backoff keep them short; a sink
  // that is slow by design raises timeScale (and shutdownLimitMs) instead.
  const subject = {
    definition: __SINK_EXPORT__,
    options: (url: string) => ({ url, timeout_ms: 1000, retry: { initial_backoff_ms: 10, max_backoff_ms: 200 } }),
    requestTimeoutMs: 1000,
    timeScale: 1,
  };
  for (const c of sinkConformanceCases(subject)) it(\`conformance: \${c.name}\`, c.run, c.timeoutMs);
});
`;

const README_TEMPLATE = `# __PACKAGE__

A [logferry](https://www.npmjs.com/package/logferry) plugin with one sink, \`__SINK_TYPE__\`: it PUTs
each document, as JSON, at \`URL/KEY\`, where KEY is the key \`path_format\` gave the record.

\`\`\`sh
npm install        # logferry (peer and dev dependency), typescript, vitest
npm run build      # src/ to dist/ (package.json "main")
npm test           # logferry's conformance kit and the sink's own tests
\`\`\`

In a pipeline (the path is relative to the pipeline file; a published plugin is named by its
package name):

\`\`\`yaml
plugins: ["./__PACKAGE__"]
sources:
  jobs: { type: job_log_tail, include: ["./logs/*.log"] }
transforms:
  keyed: { type: path_format, inputs: [jobs] }
sinks:
  store:
    type: __SINK_TYPE__
    inputs: [keyed]          # requiresKey: the sink needs path_format before it
    url: https://store.example.com/jobs
    token: \${STORE_TOKEN}
\`\`\`

Check it with \`logferry validate -c pipeline.yaml\`. logferry is a peer dependency: the plugin
uses the logferry that loads it, so install logferry where the pipeline runs
(\`npm install logferry\`).
`;
