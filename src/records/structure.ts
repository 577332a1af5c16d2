import { stringEnd } from './splice.js';

/**
 * One pass over a line's text before JSON.parse sees it: how deep it nests, how many object keys
 * it has, and where the numbers that key parts are made of are written.
 *
 * The pass jumps from quote to quote with indexOf (the strings, where almost every byte of a job
 * document is, are never looked at byte by byte) and only inspects the structural text between
 * them: brackets, colons, commas, numbers and literals. It is iterative, so any nesting costs a
 * counter, not a stack frame, and it stops at the first bracket deeper than the limit.
 */

/** Default for a source's `max_depth`: real job documents nest about 10 levels. */
export const DEFAULT_MAX_DEPTH = 64;
export const MAX_MAX_DEPTH = 1000;

/**
 * The numbers whose text becomes part of a key, by path. A key part must be the number as written
 * (JSON.parse turns 9007199254740993 into ...992, and `1E2` into 100), so the scan notes where the
 * last occurrence of each is written, as JSON.parse keeps the last of duplicated keys.
 */
export const WATCHED_NUMBERS = ['id', 'flow_id', 'report.workato.job_context.user_id', 'team.id'] as const;
export type WatchedNumber = (typeof WATCHED_NUMBERS)[number];

interface TrieNode {
  /** Child keys, and for each an inner node for an object on the way, or the index of a watched number. */
  readonly keys: readonly string[];
  readonly next: readonly (TrieNode | number)[];
  /** The shortest and the longest escaped form a child key can have (every character as \uXXXX). */
  readonly minLength: number;
  readonly maxRawLength: number;
}

function buildTrie(): TrieNode {
  type Mutable = { children: [string, Mutable | number][] };
  const root: Mutable = { children: [] };
  WATCHED_NUMBERS.forEach((path, index) => {
    const segments = path.split('.');
    let node = root;
    segments.forEach((segment, i) => {
      const last = i === segments.length - 1;
      let entry = node.children.find(([key]) => key === segment);
      if (!entry) {
        entry = [segment, last ? index : { children: [] }];
        node.children.push(entry);
      }
      if (!last) node = entry[1] as Mutable;
    });
  });
  const freeze = (node: Mutable): TrieNode => ({
    keys: node.children.map(([key]) => key),
    next: node.children.map(([, next]) => (typeof next === 'number' ? next : freeze(next))),
    minLength: Math.min(...node.children.map(([key]) => key.length)),
    maxRawLength: Math.max(...node.children.map(([key]) => key.length * 6)),
  });
  return freeze(root);
}

const ROOT = buildTrie();

export interface LineStructure {
  /** Deepest nesting seen (objects and arrays); when `tooDeep`, the first depth beyond the limit. */
  depth: number;
  tooDeep: boolean;
  /** Character index of the bracket that went beyond the limit. */
  tooDeepAt: number;
  /** Object keys (colons outside strings): equal to countTextKeys for text JSON.parse accepted. */
  keys: number;
  /**
   * Per WATCHED_NUMBERS index i, [2i] the start and [2i + 1] the end (exclusive) of the last number
   * written at that path when it is not a plain safe integer (see isPlainSafeInteger), or -1.
   * Undefined when there is none, as for almost every line. Only meaningful for text JSON.parse accepted.
   */
  numbers: number[] | undefined;
}

const NO_SPAN = -1;
/** The objects on the way to a watched number, by depth; reused (one scan at a time per thread). */
const trie: TrieNode[] = [];

/**
 * Scans `text` (see above). Returns a fresh result; `maxDepth` is the deepest nesting allowed
 * (`{}` is depth 1, `{"a":[]}` depth 2).
 */
export function scanStructure(text: string, maxDepth: number): LineStructure {
  const result: LineStructure = { depth: 0, tooDeep: false, tooDeepAt: -1, keys: 0, numbers: undefined };
  const length = text.length;
  let depth = 0;
  let deepest = 0;
  let keys = 0;
  // trie[d] is the node of the object open at depth d, for d = 1..onTrie. Anything deeper than
  // onTrie (an array, an object under another key: almost all of a job document) is off the way
  // to a watched number, and only its brackets and colons are looked at.
  let onTrie = 0;
  /** After a key of an on-trie object matched: the node its value is, or the watched number's index. */
  let pendingNode: TrieNode | undefined;
  let pendingNumber = -1;
  /** In the object at depth onTrie, a colon was seen since the last comma or brace (a value, not a key, comes next). */
  let afterColon = false;
  /** The next backslash at or after the key last looked at (positions only grow, so one search serves many keys). */
  let backslash = -2;
  let i = 0;
  while (i < length) {
    // The structural text up to the next quote; strings are never looked at character by character.
    const quote = text.indexOf('"', i);
    const stop = quote === -1 ? length : quote;
    while (i < stop) {
      if (depth !== onTrie || onTrie === 0) {
        for (; i < stop; i++) {
          const c = text.charCodeAt(i);
          if (c === 0x3a /* : */) keys++;
          else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
            if (++depth > maxDepth) return tooDeep(result, depth, i, keys);
            if (depth > deepest) deepest = depth;
            if (depth === 1 && c === 0x7b) {
              // The document's own object: the way to the watched numbers starts here.
              trie[1] = ROOT;
              onTrie = 1;
              afterColon = false;
              pendingNode = undefined;
              pendingNumber = -1;
              i++;
              break;
            }
          } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
            if (--depth === onTrie && onTrie > 0) {
              i++;
              break;
            }
          }
        }
        continue;
      }
      const c = text.charCodeAt(i);
      if (c === 0x3a /* : */) {
        keys++;
        afterColon = true;
      } else if (c === 0x2c /* , */) {
        afterColon = false;
        pendingNode = undefined;
        pendingNumber = -1;
      } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
        if (++depth > maxDepth) return tooDeep(result, depth, i, keys);
        if (depth > deepest) deepest = depth;
        if (c === 0x7b && pendingNode !== undefined && afterColon) {
          trie[depth] = pendingNode;
          onTrie = depth;
          afterColon = false;
        }
        pendingNode = undefined;
        pendingNumber = -1;
      } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
        onTrie--;
        depth--;
      } else if (c === 0x2d /* - */ || (c >= 0x30 && c <= 0x39)) {
        let end = i + 1;
        for (let d = text.charCodeAt(end); (d >= 0x30 && d <= 0x39) || d === 0x2e || d === 0x65 || d === 0x45 || d === 0x2b || d === 0x2d; d = text.charCodeAt(++end));
        if (pendingNumber >= 0 && afterColon) {
          // Only a number String() would not give back as written is noted; a later plain one at
          // the same path (a duplicated key) clears it.
          if (!isPlainSafeInteger(text, i, end)) {
            result.numbers ??= [NO_SPAN, NO_SPAN, NO_SPAN, NO_SPAN, NO_SPAN, NO_SPAN, NO_SPAN, NO_SPAN];
            result.numbers[pendingNumber * 2] = i;
            result.numbers[pendingNumber * 2 + 1] = end;
          } else if (result.numbers !== undefined) {
            result.numbers[pendingNumber * 2] = NO_SPAN;
          }
        }
        pendingNumber = -1;
        i = end;
        continue;
      } else if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) {
        // true, false, null (or anything JSON.parse will refuse).
        pendingNode = undefined;
        pendingNumber = -1;
      }
      i++;
    }
    if (quote === -1) break;
    const end = stringEnd(text, quote);
    if (end === -1) break;
    if (depth === onTrie && onTrie > 0) {
      pendingNode = undefined;
      pendingNumber = -1;
      if (!afterColon) {
        if (backslash !== -1 && backslash < quote) backslash = text.indexOf('\\', quote);
        const next = matchKey(text, quote, end, trie[onTrie]!, backslash !== -1 && backslash < end);
        if (typeof next === 'number') pendingNumber = next;
        else pendingNode = next;
      }
    }
    i = end + 1;
  }
  result.depth = deepest;
  result.keys = keys;
  return result;
}

function tooDeep(result: LineStructure, depth: number, at: number, keys: number): LineStructure {
  result.depth = depth;
  result.tooDeep = true;
  result.tooDeepAt = at;
  result.keys = keys;
  return result;
}

/** The child of `node` named by the key string at [start, end], or undefined. Called once per key of an object on the way. */
function matchKey(text: string, start: number, end: number, node: TrieNode, escaped: boolean): TrieNode | number | undefined {
  const rawLength = end - start - 1;
  if (rawLength < node.minLength || rawLength > node.maxRawLength) return undefined;
  const { keys } = node;
  if (!escaped) {
    for (let k = 0; k < keys.length; k++) {
      const key = keys[k]!;
      if (rawLength === key.length && text.charCodeAt(start + 1) === key.charCodeAt(0) && text.startsWith(key, start + 1)) return node.next[k];
    }
    return undefined;
  }
  // An escaped key (`"\u0069d"` is `id` to JSON.parse) is decoded, so it cannot hide a watched number.
  let decoded: string;
  try {
    decoded = JSON.parse(text.slice(start, end + 1)) as string;
  } catch {
    return undefined; // Not JSON: JSON.parse will refuse the line.
  }
  const k = keys.indexOf(decoded);
  return k === -1 ? undefined : node.next[k];
}

/**
 * Whether a number's text is exactly what String() gives for the double JSON.parse makes of it,
 * for the common case checked without allocating: plain digits, at most 15 of them, not `-0`.
 */
export function isPlainSafeInteger(text: string, start: number, end: number): boolean {
  let i = start;
  if (text.charCodeAt(i) === 0x2d) {
    i++;
    if (text.charCodeAt(i) === 0x30) return false;
  }
  if (end - i > 15 || end === i) return false;
  for (; i < end; i++) {
    const d = text.charCodeAt(i);
    if (d < 0x30 || d > 0x39) return false;
  }
  return true;
}
