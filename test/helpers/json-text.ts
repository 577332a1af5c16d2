import fc from 'fast-check';

/**
 * JSON documents as trees that say how every token is written, so property tests can make texts
 * with random spacing, escapes, unicode, duplicate keys and numbers written in any JSON form
 * (`1E2`, `-0`, `1.0`, `1e400`, 30 digits), and still know what JSON.parse makes of them.
 */
export type JsonNode =
  | { readonly t: 'num'; readonly text: string }
  | { readonly t: 'str'; readonly value: string; readonly escaped: boolean }
  | { readonly t: 'lit'; readonly text: 'true' | 'false' | 'null' }
  | { readonly t: 'arr'; readonly items: readonly JsonNode[] }
  | { readonly t: 'obj'; readonly members: readonly (readonly [key: string, keyEscaped: boolean, value: JsonNode])[] };

/** Keys from a small set, so duplicates are common; watched key names among them. */
export const KEYS = ['id', 'flow_id', 'team', 'report', 'workato', 'job_context', 'user_id', 'a', 'ü', 'quo"te', 'back\\slash', '__proto__', '1', 'emoji 🚀', ''];
/** Only the names on the way to the numbers key parts are made of, so those paths are common. */
export const KEY_PATH_KEYS = ['id', 'flow_id', 'team', 'report', 'workato', 'job_context', 'user_id'];
const STRINGS = ['', 'plain', 'with "quotes"', 'back\\slash\\', 'ünïcödé ✓', 'emoji 🚀', 'new\nline', 'tab\t', '}{][,:', '"', '\\', '\u2028', 'a\u0000b'];

export const numberText = fc.oneof(
  fc.integer({ min: -1_000_000, max: 1_000_000 }).map(String),
  fc.constantFrom('0', '-0', '1.0', '1E2', '1e2', '1e+2', '100', '1e400', '-1e400', '0.1', '1.5e-7', '9007199254740993', '9007199254740992', '123456789012345678901234567890'),
  fc.tuple(fc.bigInt({ min: 0n, max: 10n ** 25n }), fc.constantFrom('', '.0', '.5', 'e3', 'E-2')).map(([n, tail]) => `${n}${tail}`),
  fc.double({ noNaN: true, noDefaultInfinity: true }).map((d) => JSON.stringify(d)),
);

export function jsonNode(maxDepth = 4, keys: readonly string[] = KEYS): fc.Arbitrary<JsonNode> {
  const { node } = fc.letrec<{ node: JsonNode; leaf: JsonNode; arr: JsonNode; obj: JsonNode }>((tie) => ({
    node: fc.oneof({ depthSize: 'small', maxDepth, withCrossShrink: true }, tie('leaf'), tie('arr'), tie('obj')),
    leaf: fc.oneof(
      numberText.map((text): JsonNode => ({ t: 'num', text })),
      fc.tuple(fc.oneof(fc.constantFrom(...STRINGS), fc.string({ unit: 'binary', maxLength: 8 })), fc.boolean()).map(([value, escaped]): JsonNode => ({ t: 'str', value, escaped })),
      fc.constantFrom('true', 'false', 'null').map((text): JsonNode => ({ t: 'lit', text })),
    ),
    arr: fc.array(tie('node'), { maxLength: 4 }).map((items): JsonNode => ({ t: 'arr', items })),
    obj: fc
      .array(fc.tuple(fc.constantFrom(...keys), fc.boolean(), tie('node')), { maxLength: 5 })
      .map((members): JsonNode => ({ t: 'obj', members })),
  }));
  return node;
}

/** A document: an object at the top. */
export function jsonObjectNode(maxDepth = 4, keys: readonly string[] = KEYS): fc.Arbitrary<JsonNode> {
  return fc.array(fc.tuple(fc.constantFrom(...keys), fc.boolean(), jsonNode(maxDepth, keys)), { maxLength: 6 }).map((members): JsonNode => ({ t: 'obj', members }));
}

/** Whitespace between tokens: a string of JSON's four space characters per gap, taken in turn. */
export type Spacing = readonly string[];
export const spacing: fc.Arbitrary<Spacing> = fc.array(fc.constantFrom('', '', '', ' ', '  ', '\t', '\n', '\r\n', ' \r '), { minLength: 1, maxLength: 16 });

/** A JSON string token; `escaped` writes every character as \uXXXX. */
export function writeString(value: string, escaped: boolean): string {
  if (!escaped) return JSON.stringify(value);
  let out = '"';
  for (let i = 0; i < value.length; i++) out += '\\u' + value.charCodeAt(i).toString(16).padStart(4, '0');
  return out + '"';
}

export function writeNode(node: JsonNode, gaps: Spacing = ['']): string {
  let gap = 0;
  const ws = (): string => gaps[gap++ % gaps.length]!;
  const write = (n: JsonNode): string => {
    switch (n.t) {
      case 'num':
      case 'lit':
        return n.text;
      case 'str':
        return writeString(n.value, n.escaped);
      case 'arr':
        return `[${ws()}${n.items.map((item) => write(item) + ws()).join(`,${ws()}`)}]`;
      case 'obj':
        return `{${ws()}${n.members.map(([k, e, v]) => `${writeString(k, e)}${ws()}:${ws()}${write(v)}${ws()}`).join(`,${ws()}`)}}`;
    }
  };
  return ws() + write(node) + ws();
}

/** Depth as parse.ts counts it: `{}` and `[]` are 1, a scalar 0. */
export function depthOf(node: JsonNode): number {
  if (node.t === 'arr') return 1 + Math.max(0, ...node.items.map(depthOf));
  if (node.t === 'obj') return 1 + Math.max(0, ...node.members.map(([, , v]) => depthOf(v)));
  return 0;
}

export function keyCount(node: JsonNode): number {
  if (node.t === 'arr') return node.items.reduce((n, item) => n + keyCount(item), 0);
  if (node.t === 'obj') return node.members.reduce((n, [, , v]) => n + 1 + keyCount(v), 0);
  return 0;
}

export function hasDuplicateKeys(node: JsonNode): boolean {
  if (node.t === 'arr') return node.items.some(hasDuplicateKeys);
  if (node.t === 'obj') return new Set(node.members.map(([k]) => k)).size !== node.members.length || node.members.some(([, , v]) => hasDuplicateKeys(v));
  return false;
}

/** The node JSON.parse keeps at a dotted path (last duplicate wins), or undefined. */
export function nodeAt(node: JsonNode, path: string): JsonNode | undefined {
  let current: JsonNode | undefined = node;
  for (const segment of path.split('.')) {
    if (current?.t !== 'obj') return undefined;
    let found: JsonNode | undefined;
    // The last member of that name wins; the project's lib (ES2022) has no findLast.
    for (const [key, , value] of current.members) if (key === segment) found = value;
    current = found;
  }
  return current;
}

/** The same tree with the members of every object in another order (only for trees without duplicate keys). */
export function reorder(node: JsonNode, order: (length: number) => number[]): JsonNode {
  if (node.t === 'arr') return { t: 'arr', items: node.items.map((item) => reorder(item, order)) };
  if (node.t === 'obj') {
    const members = node.members.map(([k, e, v]) => [k, e, reorder(v, order)] as const);
    return { t: 'obj', members: order(members.length).map((i) => members[i]!) };
  }
  return node;
}

/** Every number node of a tree, in text order. */
export function numberNodes(node: JsonNode): JsonNode[] {
  if (node.t === 'num') return [node];
  if (node.t === 'arr') return node.items.flatMap(numberNodes);
  if (node.t === 'obj') return node.members.flatMap(([, , v]) => numberNodes(v));
  return [];
}

/** The tree with one node replaced (by identity). */
export function replaceNode(node: JsonNode, target: JsonNode, replacement: JsonNode): JsonNode {
  if (node === target) return replacement;
  if (node.t === 'arr') return { t: 'arr', items: node.items.map((item) => replaceNode(item, target, replacement)) };
  if (node.t === 'obj') return { t: 'obj', members: node.members.map(([k, e, v]) => [k, e, replaceNode(v, target, replacement)] as const) };
  return node;
}
