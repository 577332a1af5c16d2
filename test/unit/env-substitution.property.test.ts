/**
 * Property tests for `${VAR}` substitution (src/config/env.ts), issue 9: whatever a variable holds,
 * a quoted reference yields exactly that text, a plain one never becomes structure, `$${` stays
 * literal, and a variable that is not set is reported at the scalar that names it.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml, parseDocument } from 'yaml';
import { builtinRegistry } from '../../src/builtins.js';
import { shieldReferences, substituteEnv } from '../../src/config/env.js';
import { parseConfigText } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';

const SEED = 42;
const RUNS = 300;

/** Text that means something to YAML or to the substitution itself, mixed with anything at all. */
const tricky = fc.constantFrom(
  '$', '{', '}', '${', '$${', ':-', '}}', '${X}', '${UNSET_NEVER}', '\n', '\r\n', '\t', ' ', '"', "'", '\\', '#', ' #c',
  '[a]', '{b: 1}', '&x', '*y', '!!str', '|', '>', '- ', ': ', '---', '...', '%YAML', '@', '`', '\u0000', '\u00ff',
  '\uE000', '\uE001', '\u2028', 'true', 'null', '~', '.inf', '.nan', '0x1F', '1e400', '-0', '12', 'é', '😀',
);
const value = fc.array(fc.oneof(tricky, fc.string({ maxLength: 8 }), fc.string({ unit: 'binary', maxLength: 4 })), { maxLength: 12 }).map((parts) => parts.join(''));
const variableName = fc.stringMatching(/^[A-Z_][A-Z0-9_]{0,11}$/);

/** Substitutes `env` into `yaml` the way the loader does, and returns the value of key `v`. */
function substituted(yaml: string, env: NodeJS.ProcessEnv): { value: unknown; problems: number } {
  const doc = parseDocument(shieldReferences(yaml), { uniqueKeys: true });
  expect(doc.errors, yaml).toEqual([]);
  const problems = substituteEnv(doc, env);
  return { value: (doc.toJS() as { v: unknown }).v, problems: problems.length };
}

describe('env substitution (properties)', () => {
  it('gives a quoted ${VAR} exactly the value, whatever it holds', () => {
    fc.assert(
      fc.property(variableName, value, fc.string({ maxLength: 6 }).filter((s) => !s.includes('$') && !/["\\\n\r]/.test(s)), (name, content, around) => {
        const double = substituted(`v: "${around}\${${name}}${around}"\n`, { [name]: content });
        expect(double).toEqual({ value: `${around}${content}${around}`, problems: 0 });
        const single = substituted(`v: '\${${name}}'\n`, { [name]: content });
        expect(single).toEqual({ value: content, problems: 0 });
        // In a flow mapping and a list too, where braces and commas are YAML's own.
        const flow = parseDocument(shieldReferences(`{ v: "\${${name}}", w: ["\${${name}}"] }\n`));
        expect(substituteEnv(flow, { [name]: content })).toEqual([]);
        expect(flow.toJS()).toEqual({ v: content, w: [content] });
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });

  it('never turns a plain ${VAR} into a mapping or a list, and keeps text exactly', () => {
    const templates = [
      { yaml: 'v: ${R}\n', list: false, exact: true },
      { yaml: '{ v: ${R} }\n', list: false, exact: true },
      { yaml: 'v: a${R}b\n', list: false, exact: false },
      { yaml: 'v: [${R}]\n', list: true, exact: true },
      { yaml: 'v:\n  - ${R}\n', list: true, exact: true },
    ];
    fc.assert(
      fc.property(variableName, value, fc.constantFrom(...templates), (name, content, template) => {
        const yaml = template.yaml.replaceAll('${R}', `\${${name}}`);
        const doc = parseDocument(shieldReferences(yaml));
        expect(doc.errors, yaml).toEqual([]);
        expect(substituteEnv(doc, { [name]: content })).toEqual([]);
        const v = (doc.toJS() as { v: unknown }).v;
        let scalar = v;
        if (template.list) {
          expect(Array.isArray(v) && v.length === 1, `${yaml} with ${JSON.stringify(content)} gave ${JSON.stringify(v)}`).toBe(true);
          scalar = (v as unknown[])[0];
        }
        expect(scalar === null || typeof scalar !== 'object', `${yaml} with ${JSON.stringify(content)} gave ${JSON.stringify(v)}`).toBe(true);
        const text = template.exact ? content : `a${content}b`;
        // Text stays exactly as set; only a YAML number or boolean is typed.
        if (typeof scalar === 'string') expect(scalar).toBe(text);
        else expect(scalar).toEqual(parseYaml(text, { logLevel: 'error' }));
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });

  it('keeps $${ literal and never looks the name up', () => {
    fc.assert(
      fc.property(variableName, value, fc.string({ maxLength: 6 }).filter((s) => !s.includes('$') && !/["\\\n\r]/.test(s)), (name, content, around) => {
        const result = substituted(`v: "${around}$\${${name}}${around}"\n`, { [name]: content });
        expect(result).toEqual({ value: `${around}\${${name}}${around}`, problems: 0 });
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });

  it('reports a variable that is not set and has no default at the scalar that names it', async () => {
    await fc.assert(
      fc.asyncProperty(variableName, fc.nat({ max: 8 }), fc.constantFrom('data_dir', 'path'), fc.boolean(), async (name, blankLines, where, quoted) => {
        const reference = quoted ? `"\${${name}}"` : `\${${name}}`;
        const padding = '# padding\n'.repeat(blankLines);
        const text = `${padding}data_dir: ${where === 'data_dir' ? reference : './d'}
sources:
  jobs: { type: job_log_tail, include: ["./logs/*.ndjson"] }
transforms:
  masked: { type: redact, inputs: [jobs] }
  keyed: { type: path_format, inputs: [masked], user_id: 5234 }
sinks:
  archive: { type: file, inputs: [keyed], path: ${where === 'path' ? reference : './out'} }
`;
        let error: unknown;
        try {
          await parseConfigText(text, 'p.yaml', builtinRegistry(), { env: {}, cwd: '/srv' });
        } catch (err) {
          error = err;
        }
        expect(error).toBeInstanceOf(ConfigError);
        const { code, problems } = error as ConfigError;
        expect(code).toBe('LF_CONFIG_ENV');
        expect(problems).toHaveLength(1);
        const line = where === 'data_dir' ? blankLines + 1 : blankLines + 8;
        const col = where === 'data_dir' ? 11 : text.split('\n')[line - 1]!.indexOf(reference) + 1;
        expect(problems[0]).toMatchObject({ path: where === 'data_dir' ? 'data_dir' : 'sinks.archive.path', line, col });
        expect(problems[0]!.message).toContain(`environment variable ${name} is not set`);
      }),
      { seed: SEED, numRuns: 100 },
    );
  });
});
