import { open } from 'node:fs/promises';
import { resolve } from 'node:path';
import { isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, visit, type Document, type Node } from 'yaml';
import { z } from 'zod';
import { poolSchema } from '../engine/record-pool.js';
import type { ComponentKind, PreflightProblem } from '../engine/types.js';
import { ConfigError, type ConfigProblem } from '../errors.js';
import type { ComponentRegistry } from '../registry.js';
import { shieldReferences, substituteEnv } from './env.js';
import { DAY_MS, GiB, HOUR_MS, KiB, MAX_TIMER_MS, MiB, MINUTE_MS, pathSchema, SECOND_MS } from './limits.js';
import { didYouMean } from './suggest.js';
import type { ComponentConfig, PipelineConfig } from './types.js';

/** `30s`, `500ms`, `2m`, or a number of seconds; at most `maxMs` (timers cannot wait longer than 2^31-1 ms). */
export function durationSchema(maxMs: number) {
  const limit = formatDuration(Math.min(maxMs, MAX_TIMER_MS));
  return z
    .union([
      z.number().nonnegative().max(Math.min(maxMs, MAX_TIMER_MS) / 1000, `must be at most ${limit}`),
      z.string().regex(/^\d+(\.\d+)?(ms|s|m)$/, 'expected a duration such as 500ms, 30s or 2m'),
    ])
    .transform((value) => durationMs(value))
    .refine((ms) => ms <= Math.min(maxMs, MAX_TIMER_MS), `must be at most ${limit}`);
}

function formatDuration(ms: number): string {
  if (ms % MINUTE_MS === 0) return `${ms / MINUTE_MS}m`;
  if (ms % SECOND_MS === 0) return `${ms / SECOND_MS}s`;
  return `${ms}ms`;
}

function durationMs(value: number | string): number {
  if (typeof value === 'number') return value * 1000;
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(value)!;
  const amount = Number(match[1]);
  return match[2] === 'ms' ? amount : match[2] === 's' ? amount * 1000 : amount * 60_000;
}

const componentTable = z.record(z.string(), z.unknown());

/** `api.address` when not set: loopback only (the API has no authentication), Vector's port plus 912. */
export const DEFAULT_API_ADDRESS = '127.0.0.1:9598';

/** `host:port` or `[v6]:port` with a port from 0 (any free port) to 65535; undefined when it is not one. */
export function parseApiAddress(address: string): { host: string; port: number } | undefined {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(address);
  if (!match) return undefined;
  const port = Number(match[3]);
  if (port > 65535) return undefined;
  return { host: match[1] ?? match[2]!, port };
}

const apiSchema = z
  .object({
    enabled: z
      .boolean()
      .optional()
      .describe('Serve /health, /ready, /metrics and /status. Unset (the default): on for `run`, off for `run --once`; true or false to choose.'),
    address: z
      .string()
      .max(300)
      .refine((address) => parseApiAddress(address) !== undefined, 'expected host:port such as 127.0.0.1:9598 or [::1]:9598, with a port from 0 (any free port) to 65535')
      .default(DEFAULT_API_ADDRESS)
      .describe('Where the API listens, host:port (default 127.0.0.1:9598: this host only; it has no authentication). Port 0 takes any free port; the log says which.'),
  })
  .strict()
  .prefault({})
  .describe('The operators\' HTTP API: health and readiness probes, Prometheus metrics, status (README: Observability).');

/** The top level of a pipeline file; components are checked against their own schemas afterwards. */
export const pipelineSchema = z
  .object({
    data_dir: pathSchema().default('./.logferry').describe('Folder for checkpoints and dead letters (relative to the working directory).'),
    buffer: z
      .object({
        max_bytes: z
          .number()
          .int()
          .min(64 * KiB)
          .max(4 * GiB)
          .default(64 * MiB)
          .describe('Memory budget for records in flight, each charged an estimate of what it costs the process (2 bytes per line byte plus 2 KiB; 64 KiB to 4 GiB); reading pauses at this bound when sinks are slow.'),
      })
      .strict()
      .default({ max_bytes: 64 * MiB }),
    pool: poolSchema
      .prefault({})
      .describe('Worker threads for large records (parse, mask, key, serialize off the main thread).'),
    shutdown_timeout: durationSchema(HOUR_MS)
      .prefault(30)
      .describe('How long SIGINT/SIGTERM waits for records in flight: seconds, or 500ms, 30s, 2m; at most 1 hour.'),
    checkpoint_interval_ms: z
      .number()
      .int()
      .min(1)
      .max(HOUR_MS)
      .default(1000)
      .describe('How often acknowledged positions are saved (at most 1 hour: a crash re-sends up to this window).'),
    status_interval_ms: z.number().int().min(1).max(DAY_MS).default(10_000).describe('How often the status line is logged (at most 1 day).'),
    dead_letter: z
      .object({
        keep_text: z
          .boolean()
          .default(false)
          .describe(
            'Keep the text of lines that are not records (bad JSON, bad UTF-8, not an object) in the dead letters. Off: a ' +
              'line is named by file, offset, length and SHA-256, and `logferry dead-letter show` reads it back from the file. ' +
              'On: the text may hold values of steps marked mask_data, and secrets.',
          ),
        max_file_bytes: z
          .number()
          .int()
          .min(4 * KiB)
          .max(256 * MiB)
          .default(64 * MiB)
          .describe(
            'Size of one dead-letter file (4 KiB to 256 MiB; list, show and replay read a whole file at once): an entry that would make the current file pass it starts the ' +
              'next numbered file (dead-letters.part-0000000001.ndjson, ...; names sort in write order).',
          ),
        max_bytes: z
          .number()
          .int()
          .min(16 * KiB)
          .max(1024 * GiB)
          .default(1 * GiB)
          .describe(
            'Size of all dead-letter files together (16 KiB to 1 TiB). When an entry would pass it, the pipeline holds: the ' +
              'record is not acknowledged and reading pauses when the buffer is full (LF_DEAD_LETTER_FULL), until ' +
              '`logferry dead-letter replay` or removing files makes room. Nothing is dropped. An entry larger than ' +
              'max_bytes is still written when the dead letters are empty, so no record can wait for good.',
          ),
      })
      .strict()
      .prefault({})
      .describe('What the dead letters keep, and how much disk they may take.'),
    api: apiSchema,
    plugins: z.array(z.string().min(1)).default([]).describe('Plugin modules: paths (relative to the pipeline file) or npm package names.'),
    sources: componentTable.describe('Components that read records.'),
    transforms: componentTable.default({}).describe('Components that change, drop or key records.'),
    sinks: componentTable.describe('Components that deliver records.'),
  })
  .strict();

const SECTIONS: readonly { section: 'sources' | 'transforms' | 'sinks'; kind: ComponentKind }[] = [
  { section: 'sources', kind: 'source' },
  { section: 'transforms', kind: 'transform' },
  { section: 'sinks', kind: 'sink' },
];

/** Ids name checkpoint files and appear in logs, so they stay plain. */
const COMPONENT_ID = /^[A-Za-z0-9_-]{1,64}$/;

export interface LoadOptions {
  env?: NodeJS.ProcessEnv;
  /** Resolves relative paths (data_dir); defaults to the working directory. */
  cwd?: string;
  /**
   * Loads the `plugins:` modules into the registry before components are checked, so plugin
   * options are validated like built-in ones. Returns a problem per plugin that could not load.
   */
  loadPlugins?: (specifiers: readonly string[], configFile: string, registry: ComponentRegistry) => Promise<ConfigProblem[]>;
  /** Run the components' preflight checks (default true); read-only commands turn them off. */
  preflight?: boolean;
}

/** Pipeline files are a few KiB; a bigger one is a mistake (or an attack) that YAML would chew on for long. */
export const MAX_CONFIG_BYTES = 1 * MiB;
/** Nesting a pipeline file needs is about 6; the YAML library and zod recurse, so deep nesting must stop here. */
const MAX_CONFIG_DEPTH = 32;
/** Alias expansions allowed when building the value (yaml's own guard against "billion laughs"). */
const MAX_ALIAS_COUNT = 100;

export async function loadConfig(file: string, registry: ComponentRegistry, options: LoadOptions = {}): Promise<PipelineConfig> {
  let bytes: Buffer;
  try {
    bytes = await readAtMost(file, MAX_CONFIG_BYTES);
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message;
    throw new ConfigError(file, [{ path: '', message: `cannot read the pipeline file: ${reason}` }], 'LF_CONFIG_READ');
  }
  if (bytes.length > MAX_CONFIG_BYTES) {
    throw new ConfigError(file, [{ path: '', message: `the pipeline file is larger than ${MAX_CONFIG_BYTES} bytes (1 MiB); pipeline files are a few KiB` }]);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    const lenient = new TextDecoder('utf-8').decode(bytes);
    const at = lenient.indexOf('\uFFFD');
    const lines = lenient.slice(0, Math.max(0, at)).split('\n');
    throw new ConfigError(file, [{ path: '', message: 'the pipeline file is not valid UTF-8', line: lines.length, col: lines.at(-1)!.length + 1 }]);
  }
  return parseConfigText(text, file, registry, options);
}

/** Reads up to `limit + 1` bytes (so a caller can tell "too large"), from a file, a pipe or a device alike. */
async function readAtMost(file: string, limit: number): Promise<Buffer> {
  const handle = await open(file, 'r');
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    while (total <= limit) {
      const chunk = Buffer.allocUnsafe(Math.min(64 * KiB, limit + 1 - total));
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, null);
      if (bytesRead === 0) break;
      chunks.push(chunk.subarray(0, bytesRead));
      total += bytesRead;
    }
    return Buffer.concat(chunks, total);
  } finally {
    await handle.close();
  }
}

/** Parses, substitutes, validates and checks the graph; throws one ConfigError listing every problem. */
export async function parseConfigText(
  text: string,
  file: string,
  registry: ComponentRegistry,
  options: LoadOptions = {},
): Promise<PipelineConfig> {
  const positions = new LineCounter();
  const fail = (problems: ConfigProblem[], code?: 'LF_CONFIG_ENV'): never => {
    throw new ConfigError(file, sortByPosition(problems), code);
  };
  if (text.length > MAX_CONFIG_BYTES) fail([{ path: '', message: `the pipeline file is larger than ${MAX_CONFIG_BYTES} bytes (1 MiB)` }]);
  let doc: Document;
  try {
    doc = parseDocument(shieldReferences(text), { lineCounter: positions, prettyErrors: false, uniqueKeys: true });
  } catch (err) {
    // The yaml library reports its problems in doc.errors; anything it throws is a file it cannot take.
    return fail([{ path: '', message: `cannot read the file as YAML: ${(err as Error).message}`, line: 1, col: 1 }]);
  }
  const locate = new Locator(doc, positions);

  if (doc.errors.length > 0) {
    fail(doc.errors.map((e) => ({ path: '', message: e.message.split('\n')[0]!, ...positions.linePos(e.pos[0]) })));
  }
  const tooDeep = deepestNode(doc, MAX_CONFIG_DEPTH);
  if (tooDeep) {
    fail([{ path: '', message: `nested more than ${MAX_CONFIG_DEPTH} levels deep; a pipeline file needs a handful`, ...positions.linePos(tooDeep) }]);
  }
  const envProblems = substituteEnv(doc, options.env ?? process.env);
  if (envProblems.length > 0) {
    fail(envProblems.map((p) => ({ path: locate.pathOfOffset(p.offset), message: p.message, ...positions.linePos(p.offset) })), 'LF_CONFIG_ENV');
  }
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    // yaml throws a ReferenceError for an alias bomb ("billion laughs") and for an alias to no anchor.
    const message =
      err instanceof ReferenceError && /alias count/i.test(err.message)
        ? `aliases expand to too many nodes (more than ${MAX_ALIAS_COUNT} expansions): a YAML alias bomb?`
        : `cannot build the configuration from the YAML: ${(err as Error).message}`;
    return fail([{ path: '', message, ...positions.linePos(firstAliasOffset(doc)) }]);
  }
  if (nestedDeeperThan(raw, MAX_CONFIG_DEPTH)) {
    fail([{ path: '', message: `aliases nest the configuration more than ${MAX_CONFIG_DEPTH} levels deep, or into itself`, ...positions.linePos(firstAliasOffset(doc)) }]);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    fail([{ path: '', message: 'a pipeline file is a mapping with `sources` and `sinks` (and usually `transforms`)', line: 1, col: 1 }]);
  }

  const problems: ConfigProblem[] = [];
  let top = pipelineSchema.safeParse(raw);
  if (!top.success) {
    problems.push(...locate.zodIssues(top.error.issues, [], pipelineSchema));
    // Go on without the offending top-level keys, so component problems are reported in the same pass.
    const lenient: Record<string, unknown> = { ...(raw as Record<string, unknown>) };
    for (const issue of top.error.issues) {
      if (issue.code === 'unrecognized_keys' && issue.path.length === 0) for (const key of issue.keys) delete lenient[key];
      else if (issue.path[0] !== 'sources' && issue.path[0] !== 'sinks' && issue.path[0] !== 'transforms') delete lenient[String(issue.path[0])];
    }
    top = pipelineSchema.safeParse(lenient);
    if (!top.success) fail(problems);
  }
  const settings = top.data!;

  if (settings.plugins.length > 0) {
    if (!options.loadPlugins) {
      problems.push(locate.problem(['plugins'], 'plugins are not supported by this command', 'value'));
    } else {
      problems.push(...(await options.loadPlugins(settings.plugins, file, registry)).map((p) => ({ ...locate.at(['plugins'], 'value'), ...p })));
    }
  }

  const components: ComponentConfig[] = [];
  const seen = new Map<string, string>();
  const kindOf = new Map<string, ComponentKind>();
  let allComponentsValid = true;
  for (const { section, kind } of SECTIONS) {
    for (const [id, body] of Object.entries(settings[section])) {
      const base = [section, id];
      if (!COMPONENT_ID.test(id)) {
        problems.push(locate.problem(base, 'component ids may only use letters, digits, `_` and `-` (64 at most)', 'key'));
        continue;
      }
      const other = seen.get(id);
      if (other !== undefined) {
        problems.push(locate.problem(base, `id "${id}" is already used by ${other}; ids are unique across sources, transforms and sinks`, 'key'));
        continue;
      }
      seen.set(id, `${section}.${id}`);
      kindOf.set(id, kind);
      const component = checkComponent(body, base, kind, registry, locate, problems);
      if (component) components.push(component);
      else allComponentsValid = false;
    }
  }
  if (Object.keys(settings.sources).length === 0) problems.push(locate.problem(['sources'], 'a pipeline needs at least one source', 'key'));
  if (Object.keys(settings.sinks).length === 0) problems.push(locate.problem(['sinks'], 'a pipeline needs at least one sink', 'key'));

  const warnings = checkGraph(components, kindOf, allComponentsValid, locate, problems);
  if (options.preflight !== false) {
    for (const component of components) preflight(component, options.env ?? process.env, locate, problems, warnings);
  }
  if (problems.length > 0) fail(problems);

  return {
    file,
    dataDir: resolve(options.cwd ?? process.cwd(), settings.data_dir),
    bufferMaxBytes: settings.buffer.max_bytes,
    pool: settings.pool,
    shutdownTimeoutMs: settings.shutdown_timeout,
    checkpointIntervalMs: settings.checkpoint_interval_ms,
    statusIntervalMs: settings.status_interval_ms,
    plugins: settings.plugins,
    deadLetterKeepText: settings.dead_letter.keep_text,
    deadLetterMaxFileBytes: settings.dead_letter.max_file_bytes,
    deadLetterMaxBytes: settings.dead_letter.max_bytes,
    api: { enabled: settings.api.enabled, address: settings.api.address },
    sources: components.filter((c) => c.kind === 'source'),
    transforms: components.filter((c) => c.kind === 'transform'),
    sinks: components.filter((c) => c.kind === 'sink'),
    warnings,
  };
}

function checkComponent(
  body: unknown,
  base: string[],
  kind: ComponentKind,
  registry: ComponentRegistry,
  locate: Locator,
  problems: ConfigProblem[],
): ComponentConfig | undefined {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    problems.push(locate.problem(base, `a ${kind} is a mapping with a \`type\`${kind === 'source' ? '' : ' and `inputs`'}`, 'value'));
    return undefined;
  }
  const { type, inputs, ...options } = body as Record<string, unknown>;
  const known = registry.types(kind);
  if (typeof type !== 'string') {
    const where = type === undefined ? locate.problem(base, '', 'key') : locate.problem([...base, 'type'], '', 'value');
    problems.push({ ...where, path: [...base, 'type'].join('.'), message: `needs a \`type\`: one of ${known.join(', ')}` });
    return undefined;
  }
  const definition = registry.get(kind, type);
  if (!definition) {
    problems.push(
      locate.problem([...base, 'type'], `unknown ${kind} type "${type}"${didYouMean(type, known)} (known: ${known.join(', ')})`, 'value'),
    );
  }

  let inputList: string[] = [];
  if (kind === 'source') {
    if (inputs !== undefined) problems.push(locate.problem([...base, 'inputs'], 'sources read from outside and take no `inputs`', 'key'));
  } else if (inputs === undefined) {
    problems.push(locate.problem(base, `a ${kind} needs \`inputs\`: the ids of the sources or transforms it receives from`, 'key'));
  } else if (!Array.isArray(inputs) || inputs.length === 0 || inputs.some((i) => typeof i !== 'string')) {
    problems.push(locate.problem([...base, 'inputs'], 'expected a non-empty list of component ids, e.g. [jobs]', 'value'));
  } else {
    inputList = inputs as string[];
  }

  if (!definition) return undefined;
  const parsed = definition.schema.safeParse(options);
  if (!parsed.success) {
    problems.push(...locate.zodIssues(parsed.error.issues, base, definition.schema, ['type', 'inputs']));
    return undefined;
  }
  return { id: base[1]!, kind, type, inputs: inputList, options: parsed.data, definition, path: base.join('.') };
}

/**
 * What `build` would refuse that the schema cannot see (files that do not parse, unset environment
 * variables), reported at the option's position so `validate` and `run` catch it before anything runs.
 */
function preflight(component: ComponentConfig, env: NodeJS.ProcessEnv, locate: Locator, problems: ConfigProblem[], warnings: ConfigProblem[]): void {
  const check = component.definition.preflight;
  if (!check) return;
  const base = component.path.split('.');
  let found: readonly PreflightProblem[];
  try {
    found = check(component.options as never, env);
  } catch (err) {
    problems.push(locate.problem(base, `cannot check this ${component.kind}: ${(err as Error).message}`, 'key'));
    return;
  }
  for (const p of found) {
    const relative = p.path === '' ? [] : p.path.split(/\.|\[(\d+)\]/).filter((segment) => segment !== undefined && segment !== '');
    const problem = locate.problem([...base, ...relative.map((s) => (/^\d+$/.test(s) ? Number(s) : s))], p.message, 'value');
    (p.warning ? warnings : problems).push(problem);
  }
}

/** The offset of the first node nested deeper than `limit`, or undefined (iterative: no recursion to overflow). */
function deepestNode(doc: Document, limit: number): number | undefined {
  const stack: { node: unknown; depth: number }[] = [{ node: doc.contents, depth: 0 }];
  while (stack.length > 0) {
    const { node, depth } = stack.pop()!;
    if (isMap(node) || isSeq(node)) {
      if (depth > limit) return (node as Node).range?.[0] ?? 0;
      for (const item of node.items) {
        if (isPair(item)) {
          stack.push({ node: item.key, depth: depth + 1 }, { node: item.value, depth: depth + 1 });
        } else {
          stack.push({ node: item, depth: depth + 1 });
        }
      }
    }
  }
  return undefined;
}

/** True when the value nests deeper than `limit` or contains itself (an alias inside its own anchor). */
function nestedDeeperThan(root: unknown, limit: number): boolean {
  const heights = new Map<object, number>();
  const onPath = new Set<object>();
  const height = (value: unknown, depth: number): number => {
    if (value === null || typeof value !== 'object') return 0;
    const known = heights.get(value);
    if (known !== undefined) return known;
    if (onPath.has(value) || depth > limit) return limit + 1;
    onPath.add(value);
    let max = 0;
    for (const child of Object.values(value)) {
      max = Math.max(max, 1 + height(child, depth + 1));
      if (max > limit) break;
    }
    onPath.delete(value);
    heights.set(value, Math.min(max, limit + 1));
    return max;
  };
  return height(root, 0) > limit;
}

function firstAliasOffset(doc: Document): number {
  let offset = 0;
  visit(doc, {
    Alias(_key, node) {
      offset = node.range?.[0] ?? 0;
      return visit.BREAK;
    },
  });
  return offset;
}

/** Wrappers that change how a value is parsed but not the options inside it; `unwrap()` gives what they wrap. */
const WRAPPERS = [z.ZodOptional, z.ZodExactOptional, z.ZodNullable, z.ZodDefault, z.ZodPrefault, z.ZodNonOptional, z.ZodCatch, z.ZodReadonly, z.ZodSuccess, z.ZodPromise] as const;

/** What `schema` wraps, or undefined when it wraps nothing (a pipe counts as its input schema). */
function unwrapped(schema: z.core.$ZodType): z.core.$ZodType | undefined {
  for (const wrapper of WRAPPERS) if (schema instanceof wrapper) return schema.unwrap();
  if (schema instanceof z.ZodPipe) return schema.in;
  return undefined;
}

/** The sub-schema at `path`, through defaults, optionals, pipes, arrays and records. */
function schemaAt(schema: z.core.$ZodType | undefined, path: readonly PathSegment[]): z.core.$ZodType | undefined {
  let current = schema;
  let index = 0;
  while (current) {
    const wrapped = unwrapped(current);
    if (wrapped) {
      current = wrapped;
      continue;
    }
    if (index === path.length) return current;
    const segment = path[index++]!;
    if (current instanceof z.ZodObject) current = current.shape[String(segment)];
    else if (current instanceof z.ZodArray) current = current.element;
    else if (current instanceof z.ZodRecord) current = current.valueType;
    else return undefined;
  }
  return undefined;
}

function objectKeys(schema: z.core.$ZodType | undefined): string[] {
  return schema instanceof z.ZodObject ? Object.keys(schema.shape) : [];
}

/** Inputs exist and are not sinks, no cycles, nothing unused, keyed sinks get keyed records. */
function checkGraph(
  components: ComponentConfig[],
  kindOf: ReadonlyMap<string, ComponentKind>,
  allComponentsValid: boolean,
  locate: Locator,
  problems: ConfigProblem[],
): ConfigProblem[] {
  const warnings: ConfigProblem[] = [];
  const byId = new Map(components.map((c) => [c.id, c]));
  const producers = [...kindOf].filter(([, kind]) => kind !== 'sink').map(([id]) => id);
  const consumed = new Set<string>();
  let inputsValid = allComponentsValid;

  for (const c of components) {
    c.inputs.forEach((input, index) => {
      const targetKind = kindOf.get(input);
      const where = c.path.split('.').concat('inputs', String(index));
      if (!targetKind) {
        inputsValid = false;
        problems.push(locate.problem(where, `no source or transform is called "${input}"${didYouMean(input, producers)}`, 'value'));
      } else if (targetKind === 'sink') {
        inputsValid = false;
        problems.push(locate.problem(where, `"${input}" is a sink; sinks deliver records and cannot be an input`, 'value'));
      } else if (input === c.id) {
        inputsValid = false;
        problems.push(locate.problem(where, `a component cannot be its own input`, 'value'));
      } else {
        consumed.add(input);
      }
    });
  }
  // The rest needs every component and input: a broken one would only add misleading problems.
  if (!inputsValid) return warnings;

  const cycle = findCycle(components, byId);
  if (cycle) {
    const first = byId.get(cycle[0]!)!;
    problems.push(locate.problem(first.path.split('.').concat('inputs'), `inputs form a cycle: ${cycle.join(' -> ')}`, 'value'));
    return warnings;
  }

  for (const c of components) {
    if (c.kind !== 'sink' && !consumed.has(c.id)) {
      problems.push(
        locate.problem(c.path.split('.'), `${c.kind} "${c.id}" is not an input of any transform or sink; add it to an \`inputs\` list or remove it`, 'key'),
      );
    }
  }

  // A record is keyed (or masked) on a path when some component on it sets the key (applies
  // mask_data); a sink is safe only when every path into it has one.
  const keyed = memoOverInputs(byId, (c) => c.definition.providesKey === true);
  const masked = memoOverInputs(byId, (c) => c.definition.appliesMaskData?.(c.options as never) === true);
  for (const sink of components.filter((c) => c.kind === 'sink')) {
    if (sink.definition.requiresKey && !sink.inputs.every((i) => keyed(i))) {
      problems.push(
        locate.problem(
          sink.path.split('.').concat('inputs'),
          `a ${sink.type} sink writes each record at its key, but some records reach it without one; put a path_format transform between the source and this sink`,
          'value',
        ),
      );
    }
    if (!sink.inputs.every((i) => masked(i))) {
      warnings.push(
        locate.problem(
          sink.path.split('.').concat('inputs'),
          `records reach this sink without a redact transform (mask_data: true), so steps marked mask_data would be shipped unmasked`,
          'value',
        ),
      );
    }
  }
  return warnings;
}

function memoOverInputs(byId: Map<string, ComponentConfig>, own: (c: ComponentConfig) => boolean): (id: string) => boolean {
  const memo = new Map<string, boolean>();
  const visit = (id: string): boolean => {
    const cached = memo.get(id);
    if (cached !== undefined) return cached;
    const c = byId.get(id)!;
    const result = own(c) || (c.inputs.length > 0 && c.inputs.every(visit));
    memo.set(id, result);
    return result;
  };
  return visit;
}

function findCycle(components: ComponentConfig[], byId: Map<string, ComponentConfig>): string[] | undefined {
  const state = new Map<string, 'visiting' | 'done'>();
  const stack: string[] = [];
  const visit = (id: string): string[] | undefined => {
    if (state.get(id) === 'done') return undefined;
    if (state.get(id) === 'visiting') return [...stack.slice(stack.indexOf(id)), id];
    state.set(id, 'visiting');
    stack.push(id);
    for (const input of byId.get(id)!.inputs) {
      const found = visit(input);
      if (found) return found;
    }
    stack.pop();
    state.set(id, 'done');
    return undefined;
  };
  for (const c of components) {
    const found = visit(c.id);
    if (found) return found.reverse();
  }
  return undefined;
}

function sortByPosition(problems: ConfigProblem[]): ConfigProblem[] {
  return [...problems].sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.col ?? 0) - (b.col ?? 0));
}

type PathSegment = string | number;

/** Maps a path in the parsed value back to the YAML node, for `FILE:LINE:COL` messages. */
class Locator {
  constructor(
    private readonly doc: Document,
    private readonly positions: LineCounter,
  ) {}

  /** The position of the key (for unknown or missing keys) or of the value at `path`. */
  at(path: readonly PathSegment[], which: 'key' | 'value'): { line?: number; col?: number } {
    let node: unknown = this.doc.contents;
    let keyNode: unknown;
    for (const segment of path) {
      if (isMap(node)) {
        const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(segment));
        if (!pair) break;
        keyNode = pair.key;
        node = pair.value;
      } else if (isSeq(node) && node.items[Number(segment)] !== undefined) {
        keyNode = node.items[Number(segment)];
        node = keyNode;
      } else {
        break;
      }
    }
    const target = (which === 'key' ? keyNode : node) ?? node ?? keyNode;
    const range = (target as Node | undefined)?.range;
    return range ? this.positions.linePos(range[0]) : {};
  }

  problem(path: readonly PathSegment[], message: string, which: 'key' | 'value'): ConfigProblem {
    return { path: formatPath(path), message, ...this.at(path, which) };
  }

  zodIssues(issues: readonly z.core.$ZodIssue[], base: readonly PathSegment[], schema: z.ZodType, extraTopKeys: readonly string[] = []): ConfigProblem[] {
    const problems: ConfigProblem[] = [];
    for (const issue of issues) {
      const relative = issue.path.map((p) => (typeof p === 'symbol' ? String(p) : p));
      const path = [...base, ...relative];
      if (issue.code === 'unrecognized_keys') {
        const siblings = [...objectKeys(schemaAt(schema, relative)), ...(relative.length === 0 ? extraTopKeys : [])];
        for (const key of issue.keys) {
          problems.push(this.problem([...path, key], `unknown option${didYouMean(key, siblings)}`, 'key'));
        }
      } else if (issue.code === 'invalid_union' && issue.errors.flat().some((i) => NON_FINITE.test(i.message))) {
        // `.inf` where a number or a word is expected (pool.threads: auto, shutdown_timeout: 30s).
        const expected = issue.message === 'Invalid input' ? 'expected a number' : issue.message;
        problems.push(this.problem(path, `${expected}${NON_FINITE_HINT}`, 'value'));
      } else if (issue.code === 'invalid_key') {
        // A key of a map (a header name) failed its own check: say what that check says, at the key.
        const inner = issue.issues.map((i) => i.message).join('; ');
        problems.push(this.problem(path, inner || issue.message, 'key'));
      } else {
        const missing = issue.code === 'invalid_type' && /received undefined/.test(issue.message);
        problems.push(this.problem(path, missing ? `required: ${issue.message}` : explainNonFinite(issue.message), missing ? 'key' : 'value'));
      }
    }
    return problems;
  }

  /** The dotted path of the scalar that starts at `offset` (for env problems). */
  pathOfOffset(offset: number): string {
    const found: PathSegment[] = [];
    const search = (node: unknown, path: PathSegment[]): boolean => {
      if (isMap(node)) {
        for (const pair of node.items) {
          const key = isScalar(pair.key) ? String(pair.key.value) : '?';
          if (search(pair.value, [...path, key])) return true;
        }
      } else if (isSeq(node)) {
        for (let i = 0; i < node.items.length; i++) if (search(node.items[i], [...path, i])) return true;
      } else if (isScalar(node) && node.range?.[0] === offset) {
        found.push(...path);
        return true;
      }
      return false;
    };
    search(this.doc.contents, []);
    return formatPath(found);
  }
}

/** YAML has `.inf` and `.nan`, and `1e400` is Infinity: say so, rather than "received Infinity". */
const NON_FINITE = /received (NaN|-?Infinity)$/;
const NON_FINITE_HINT = ': .inf, .nan and numbers too large for a double are not accepted; write a finite number';

function explainNonFinite(message: string): string {
  return NON_FINITE.test(message) ? `${message}${NON_FINITE_HINT}` : message;
}

/** `sinks.archive.inputs[0]` */
export function formatPath(path: readonly PathSegment[]): string {
  let text = '';
  for (const segment of path) {
    if (typeof segment === 'number' || /^\d+$/.test(segment)) text += `[${segment}]`;
    else text += text ? `.${segment}` : segment;
  }
  return text;
}
