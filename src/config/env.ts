import { isScalar, parse as parseYaml, Scalar, visit, type Document } from 'yaml';

export interface EnvProblem {
  message: string;
  /** Character offset of the scalar in the YAML text. */
  offset: number;
}

const REFERENCE = /\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{[^}]*\}?/g;

/**
 * Replaces `${VAR}` and `${VAR:-default}` in every string scalar of the document, in place, before
 * validation. `$${` is a literal `${`. A plain scalar that was substituted is read again as YAML, so
 * `port: ${PORT}` gives a number, while a quoted one stays a string. Working on nodes (not on the
 * text) keeps every position and means a value can never inject YAML structure.
 */
export function substituteEnv(doc: Document, env: NodeJS.ProcessEnv): EnvProblem[] {
  const problems: EnvProblem[] = [];
  visit(doc, {
    Scalar(_key, node) {
      if (typeof node.value === 'string' && node.value.includes(OPEN)) node.value = unshieldReferences(node.value);
      if (typeof node.value !== 'string' || !node.value.includes('$')) return;
      const offset = node.range?.[0] ?? 0;
      let substituted = false;
      const text = node.value.replace(REFERENCE, (match, name: string | undefined, fallback: string | undefined) => {
        if (match === '$${') return '${';
        if (name === undefined) {
          problems.push({ offset, message: `"${match}" is not a valid variable reference; use \${NAME} or \${NAME:-default} (write $\${ for a literal \${)` });
          return match;
        }
        substituted = true;
        const value = env[name];
        // As in the shell: `${NAME:-default}` also replaces an empty value, `${NAME}` keeps it.
        if (fallback !== undefined) return value === undefined || value === '' ? fallback : value;
        if (value !== undefined) return value;
        problems.push({
          offset,
          message: `environment variable ${name} is not set and has no default; export ${name}=... or write \${${name}:-default}`,
        });
        return match;
      });
      if (text === node.value) return;
      if (substituted && node.type === Scalar.PLAIN) {
        const reread: unknown = safeScalar(text);
        node.value = reread;
      } else {
        node.value = text;
      }
    },
  });
  return problems;
}

// `{` and `}` are flow indicators, so `{ path: ${OUT} }` is not valid YAML as written. Before parsing,
// the braces of each reference become private-use characters (one for one, so every offset stays
// right), and each scalar gets its braces back before substitution.
const OPEN = '\uE000';
const CLOSE = '\uE001';
const REFERENCE_IN_TEXT = /\$\{([^{}\n]*)\}/g;

export function shieldReferences(text: string): string {
  return text.replace(REFERENCE_IN_TEXT, (_match, inner: string) => `$${OPEN}${inner}${CLOSE}`);
}

function unshieldReferences(value: string): string {
  return value.replaceAll(OPEN, '{').replaceAll(CLOSE, '}');
}

/**
 * Only numbers and booleans are taken from the YAML reading: a variable must never turn into a
 * mapping or a list, and a text value stays exactly as set (YAML would drop a ` # comment` tail,
 * strip quotes, or read `~` as null).
 */
function safeScalar(text: string): unknown {
  try {
    // logLevel error: a value that looks like a YAML tag must not print a warning on every start.
    const value: unknown = parseYaml(text, { logLevel: 'error' });
    return typeof value === 'number' || typeof value === 'boolean' ? value : text;
  } catch {
    return text;
  }
}

export function isStringScalar(node: unknown): node is Scalar<string> {
  return isScalar(node) && typeof node.value === 'string';
}
