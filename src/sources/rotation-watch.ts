import { watch, type FSWatcher } from 'node:fs';
import { basename, isAbsolute, join, resolve, sep } from 'node:path';

/** What the tailer is asked to do about events in the watched folders. */
export interface WatchRequests {
  /** A name that matches the include globs appeared (created, or renamed to): open it now. */
  matching(path: string): void;
  /**
   * A name outside the include globs appeared right after a name we follow disappeared: on Linux
   * that pair is one rename (IN_MOVED_FROM, then IN_MOVED_TO). The file may never have been opened.
   */
  renamedAway(path: string, from: string): void;
  /** A name appeared or disappeared in a watched folder: expand the globs again soon. */
  changed(): void;
  /** A file in a watched folder was written to: read now rather than at the next poll. */
  grew(): void;
}

/** How many names renamed out of the globs are remembered, so a second rename of one is followed too. */
const REMEMBERED_NAMES = 256;

/**
 * Watches the folders of the include globs (inotify through fs.watch) and tells the tailer about
 * files that match, and about files renamed to names that do not match, while they still exist.
 * Polling the globs alone misses a file created and renamed away between two expansions, and the
 * glob never sees a name outside `include`.
 */
export class RotationWatch {
  private readonly watchers: FSWatcher[] = [];
  private readonly include: RegExp[] | undefined;
  private readonly exclude: RegExp[] | undefined;
  /** Names outside the globs that hold a file we follow (or may): their own renames are followed. */
  private readonly renamedNames = new Set<string>();

  constructor(
    private readonly includePatterns: readonly string[],
    excludePatterns: readonly string[],
    private readonly requests: WatchRequests,
  ) {
    this.include = allOrNothing(includePatterns.map(globToRegExp));
    this.exclude = allOrNothing(excludePatterns.map(globToRegExp));
  }

  /**
   * Whether an absolute path matches the include globs and none of the exclude globs. False when a
   * pattern uses syntax this matcher does not handle (extglobs): the next glob expansion decides.
   */
  matches(path: string): boolean {
    if (!this.include || !this.exclude) return false;
    return this.include.some((re) => re.test(path)) && !this.exclude.some((re) => re.test(path));
  }

  start(): void {
    const folders = new Set(this.includePatterns.map(staticFolderOf));
    for (const folder of folders) {
      try {
        // A rename is two consecutive events of one folder's watcher: the state is per folder.
        let renamedFrom: string | undefined;
        const watcher = watch(folder, { persistent: false }, (event, name) => {
          renamedFrom = this.onEvent(folder, event, name, renamedFrom);
        });
        watcher.on('error', () => watcher.close());
        this.watchers.push(watcher);
      } catch {
        // The folder does not exist (yet) or cannot be watched: glob_interval_ms polling still finds files.
      }
    }
  }

  close(): void {
    for (const watcher of this.watchers) watcher.close();
    this.watchers.length = 0;
  }

  /**
   * Whether a name outside the include globs may be a file renamed out of them: never a hidden name
   * or an excluded one (the scan would not read those either), and only with globs this matcher reads.
   */
  mayBeRenamedAway(path: string): boolean {
    if (!this.include || !this.exclude) return false;
    return !basename(path).startsWith('.') && !this.exclude.some((re) => re.test(path));
  }

  /** Returns the path whose disappearance the next event may complete (a rename's first half). */
  private onEvent(folder: string, event: string, name: string | Buffer | null, renamedFrom: string | undefined): string | undefined {
    // A write is no reason to expand the globs again (that lists the folder and re-reads every
    // file's first KiB): it only wakes the reader.
    if (event !== 'rename') {
      this.requests.grew();
      // The two halves of a rename are consecutive events: anything between them ends the pair.
      return undefined;
    }
    this.requests.changed();
    if (name === null) return undefined;
    const path = join(folder, name.toString());
    if (this.matches(path)) {
      this.requests.matching(path);
      return path;
    }
    if (renamedFrom !== undefined && this.mayBeRenamedAway(path)) {
      this.remember(path);
      this.requests.renamedAway(path, renamedFrom);
      return undefined;
    }
    return this.renamedNames.has(path) ? path : undefined;
  }

  private remember(path: string): void {
    this.renamedNames.delete(path);
    this.renamedNames.add(path);
    if (this.renamedNames.size > REMEMBERED_NAMES) this.renamedNames.delete(this.renamedNames.values().next().value!);
  }
}

function allOrNothing(list: (RegExp | undefined)[]): RegExp[] | undefined {
  return list.every((re) => re !== undefined) ? (list as RegExp[]) : undefined;
}

/** The folder part of a glob before its first wildcard: `/var/log/jobs/*.ndjson` -> `/var/log/jobs`. */
export function staticFolderOf(pattern: string): string {
  const absolute = isAbsolute(pattern) ? pattern : resolve(pattern);
  const parts = absolute.split(sep);
  const firstWild = parts.findIndex((part) => /[*?[\]{}()!]/.test(part));
  const fixed = firstWild === -1 ? parts.slice(0, -1) : parts.slice(0, firstWild);
  return fixed.join(sep) || sep;
}

/**
 * A glob as the tail's scan reads it (tinyglobby with `dot: false`: `*`, `?`, `**`, `[...]`,
 * `{a,b}`, and no wildcard matches a name that starts with a dot), as a regular expression over
 * absolute paths; undefined for syntax it does not handle (extglobs). The watch and the scan must
 * agree, or a watch event would open a hidden file (`.aws/credentials`) the scan never reads.
 */
export function globToRegExp(pattern: string): RegExp | undefined {
  const source = convert(isAbsolute(pattern) ? pattern : resolve(pattern), true);
  return source === undefined ? undefined : new RegExp(`^${source}$`);
}

/** Before a wildcard that starts a path segment: the segment may not start with a dot. */
const NOT_HIDDEN = '(?!\\.)';

function convert(glob: string, segmentStart: boolean): string | undefined {
  let out = '';
  let atStart = segmentStart;
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    const wildStart = atStart ? NOT_HIDDEN : '';
    atStart = false;
    if (c === '*') {
      if (glob[i + 1] === '*') {
        i++;
        if (glob[i + 1] === '/') {
          i++;
          out += `(?:${NOT_HIDDEN}[^/]*/)*`;
          atStart = true;
        } else {
          out += `${wildStart}[^/]*(?:/${NOT_HIDDEN}[^/]*)*`;
        }
      } else {
        out += `${wildStart}[^/]*`;
      }
    } else if (c === '?') {
      out += `${wildStart}[^/]`;
    } else if (c === '[') {
      const close = glob.indexOf(']', i + 2);
      if (close === -1) return undefined;
      let body = glob.slice(i + 1, close);
      if (body.startsWith('!')) body = '^' + body.slice(1);
      out += `${wildStart}[${body.replace(/\\/g, '\\\\')}]`;
      i = close;
    } else if (c === '{') {
      const close = glob.indexOf('}', i);
      const inner = close === -1 ? undefined : glob.slice(i + 1, close);
      if (inner === undefined || inner.includes('{')) return undefined;
      const alternatives = inner.split(',').map((alternative) => convert(alternative, wildStart !== ''));
      if (alternatives.some((a) => a === undefined)) return undefined;
      out += `(?:${alternatives.join('|')})`;
      i = close;
    } else if ((c === '(' || c === ')' || c === '!' || c === '+' || c === '@') && (glob[i + 1] === '(' || c === '(' || c === ')')) {
      return undefined;
    } else if (c === '\\') {
      const next = glob[++i];
      if (next === undefined) return undefined;
      out += escapeRegExp(next);
    } else {
      out += escapeRegExp(c);
      atStart = c === '/';
    }
  }
  return out;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}
