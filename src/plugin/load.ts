import { readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { ComponentDefinition } from '../engine/types.js';
import { LogferryError, type ConfigProblem } from '../errors.js';
import type { ComponentRegistry } from '../registry.js';
import { isPlugin } from './api.js';

/**
 * Imports each `plugins:` entry and registers its components. A path (starting with `.` or `/`)
 * is relative to the pipeline file; anything else is an npm package resolved from the pipeline
 * file's folder, as `node` would from a script there.
 */
export async function loadPlugins(specifiers: readonly string[], configFile: string, registry: ComponentRegistry): Promise<ConfigProblem[]> {
  const problems: ConfigProblem[] = [];
  const base = dirname(resolve(configFile));
  for (const [index, specifier] of specifiers.entries()) {
    const path = `plugins[${index}]`;
    let url: string;
    try {
      url = resolvePlugin(specifier, base);
    } catch (err) {
      const code = err instanceof LogferryError ? ` (${err.code})` : '';
      problems.push({ path, message: `cannot find plugin "${specifier}": ${(err as Error).message.split('\n')[0]}${code}` });
      continue;
    }
    let exported: unknown;
    try {
      exported = ((await import(url)) as { default?: unknown }).default;
    } catch (err) {
      problems.push({ path, message: `plugin "${specifier}" failed to load: ${(err as Error).message.split('\n')[0]}` });
      continue;
    }
    if (!isPlugin(exported)) {
      problems.push({ path, message: `plugin "${specifier}" must have \`export default definePlugin({ name, sinks })\` (LF_PLUGIN_INVALID)` });
      continue;
    }
    const all: ComponentDefinition[] = [...(exported.sources ?? []), ...(exported.transforms ?? []), ...(exported.sinks ?? [])];
    for (const definition of all) {
      if (registry.get(definition.kind, definition.type)) {
        problems.push({ path, message: `plugin "${exported.name}" registers ${definition.kind} type "${definition.type}", which already exists` });
        continue;
      }
      registry.register(definition);
    }
  }
  return problems;
}

function resolvePlugin(specifier: string, base: string): string {
  if (specifier.startsWith('.') || isAbsolute(specifier)) {
    const path = isAbsolute(specifier) ? specifier : resolve(base, specifier);
    const stat = statSync(path, { throwIfNoEntry: false });
    if (!stat) throw new LogferryError('LF_PLUGIN_NOT_FOUND', `${path} does not exist`);
    return pathToFileURL(stat.isDirectory() ? packageEntry(path) : path).href;
  }
  // Walk up node_modules folders as Node does; ESM-only packages are why require.resolve is not enough.
  for (let dir = base; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', specifier);
    if (statSync(join(candidate, 'package.json'), { throwIfNoEntry: false })) return pathToFileURL(packageEntry(candidate)).href;
    if (dirname(dir) === dir) break;
  }
  throw new LogferryError('LF_PLUGIN_NOT_FOUND', `no node_modules/${specifier} above ${base}; install it with npm install ${specifier}`);
}

interface PackageJson {
  main?: string;
  exports?: string | { '.'?: ExportTarget } | ExportTarget;
}
type ExportTarget = string | { import?: ExportTarget; default?: ExportTarget; node?: ExportTarget };

/** The ESM entry point of a package folder: exports["."] (import, node, default), then main, then index.js. */
function packageEntry(dir: string): string {
  const manifestPath = join(dir, 'package.json');
  if (!statSync(manifestPath, { throwIfNoEntry: false })) return join(dir, 'index.js');
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as PackageJson;
  const exportsField = manifest.exports;
  const root = typeof exportsField === 'object' && exportsField !== null && '.' in exportsField ? exportsField['.'] : exportsField;
  const target = pickTarget(root as ExportTarget | undefined) ?? manifest.main ?? 'index.js';
  return resolve(dir, target);
}

function pickTarget(target: ExportTarget | undefined): string | undefined {
  if (target === undefined || typeof target === 'string') return target;
  return pickTarget(target.import) ?? pickTarget(target.node) ?? pickTarget(target.default);
}
