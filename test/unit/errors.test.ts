import { readdir, readFile } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, ERROR_CODES, LogferryError, componentBuildFailure, formatProblem, isErrorCode, knownCode } from '../../src/errors.js';

const SRC = resolve(import.meta.dirname, '../../src');

/** Error classes of the language: thrown from src/ they would reach users and scripts without a code. */
const BUILTIN_ERRORS = 'Error|TypeError|RangeError|SyntaxError|ReferenceError|EvalError|URIError|AggregateError';
/** `new Error(`, `throw TypeError(`, and a thrown string or template. */
const MAKES_CODELESS_ERROR = new RegExp(`\\b(?:new\\s+(?:${BUILTIN_ERRORS})\\s*\\(|throw\\s+(?:${BUILTIN_ERRORS})\\s*\\(|throw\\s+['"\`])`);
const EXTENDS_BUILTIN_ERROR = new RegExp(`class\\s+(\\w+)[^{]*\\bextends\\s+(?:${BUILTIN_ERRORS})\\b`);

/**
 * Classes that extend a built-in error on purpose, and why. Everything else in src/ throws a
 * LogferryError (or a subclass), so every failure a user sees has a documented code.
 */
const ALLOWED_ERROR_CLASSES = new Map([
  ['errors.ts', 'LogferryError'],
  // Carries errno ENOSPC like the operating system's error; each caller reports it under its own code.
  ['engine/fs-atomic.ts', 'WriteMadeNoProgress'],
]);

describe('error codes', () => {
  it('has one row in docs/errors.md per code, and no row without a code', async () => {
    const doc = await readFile(resolve(import.meta.dirname, '../../docs/errors.md'), 'utf8');
    const documented = [...doc.matchAll(/^\| `(LF_[A-Z0-9_]+)` \|/gm)].map((m) => m[1]);
    expect(documented.sort()).toEqual(Object.keys(ERROR_CODES).sort());
  });

  it('has only codes named LF_ in capitals, each with a description', () => {
    for (const [code, description] of Object.entries(ERROR_CODES)) {
      expect(code).toMatch(/^LF_[A-Z0-9_]+$/);
      expect(description.length).toBeGreaterThan(20);
    }
  });

  it('tells documented codes from anything else (isErrorCode)', () => {
    expect(isErrorCode('LF_SINK_REJECTED')).toBe(true);
    for (const other of ['LF_NO_SUCH_CODE', 'lf_sink_rejected', 'toString', '__proto__', '', 42, undefined, null, {}]) {
      expect(isErrorCode(other), String(other)).toBe(false);
    }
  });

  it('turns a code from untyped code into a documented one and keeps the original in the reason (knownCode)', () => {
    expect(knownCode('LF_RECORD_NO_KEY', 'LF_SINK_REJECTED', 'no key')).toEqual({ code: 'LF_RECORD_NO_KEY', reason: 'no key' });
    expect(knownCode(undefined, 'LF_SINK_REJECTED', 'refused')).toEqual({ code: 'LF_SINK_REJECTED', reason: 'refused' });
    const unknown = knownCode('E_MY_PLUGIN', 'LF_SINK_REJECTED', 'refused');
    expect(unknown.code).toBe('LF_SINK_REJECTED');
    expect(unknown.reason).toBe('refused (reported with code "E_MY_PLUGIN", which is not a logferry error code; see docs/errors.md)');
    expect(knownCode(404, 'LF_INTERNAL', 'x').reason).toContain('code (number) 404');
    expect(knownCode(Object.create(null), 'LF_INTERNAL', 'x').code).toBe('LF_INTERNAL');
  });

  it('keeps the code of a build failure that has one, and names the component of one that has not', () => {
    const component = { kind: 'sink', id: 'out', type: 'http', path: 'sinks.out' };
    const own = new LogferryError('LF_POOL_FAILED', 'no workers');
    expect(componentBuildFailure(own, component)).toBe(own);
    const unexpected = componentBuildFailure(new RangeError('port out of range'), component);
    expect(unexpected.code).toBe('LF_COMPONENT_BUILD_FAILED');
    expect(unexpected.message).toMatch(/^cannot build sink out \(type http, at sinks\.out\): RangeError: port out of range; /);
    expect(unexpected.cause).toBeInstanceOf(RangeError);
    // A plugin in JavaScript can construct a LogferryError with any string: it is wrapped, its code named.
    const undocumented = componentBuildFailure(new LogferryError('E_PLUGIN' as never, 'bad token'), component);
    expect(undocumented.code).toBe('LF_COMPONENT_BUILD_FAILED');
    expect(undocumented.message).toContain('bad token (with code "E_PLUGIN", which is not a logferry error code)');
  });

  it('leaves no error without a code in src/: no built-in error is thrown or extended there', async () => {
    const files = (await readdir(SRC, { recursive: true })).filter((f) => f.endsWith('.ts')).sort();
    expect(files.length).toBeGreaterThan(20);
    const found: string[] = [];
    for (const file of files) {
      const name = file.split(sep).join('/');
      const lines = (await readFile(join(SRC, file), 'utf8')).split('\n');
      lines.forEach((line, i) => {
        const where = `src/${name}:${i + 1}: ${line.trim()}`;
        if (MAKES_CODELESS_ERROR.test(line)) found.push(where);
        const cls = EXTENDS_BUILTIN_ERROR.exec(line);
        if (cls && ALLOWED_ERROR_CLASSES.get(name) !== cls[1]) found.push(where);
      });
    }
    // Throw a LogferryError with a code from src/errors.ts (LF_INTERNAL for a broken invariant) instead.
    expect(found).toEqual([]);
  });

  it('finds what it looks for (the check above is not vacuous)', () => {
    for (const line of ["throw new Error('x')", 'reject(new TypeError(`y`))', "throw RangeError('z')", "throw 'text'"]) expect(MAKES_CODELESS_ERROR.test(line), line).toBe(true);
    for (const line of ["throw new LogferryError('LF_INTERNAL', 'x')", 'err instanceof Error', 'new ErrorCounter()']) expect(MAKES_CODELESS_ERROR.test(line), line).toBe(false);
  });

  it('formats config problems as FILE:LINE:COL: path: message', () => {
    expect(formatProblem('p.yaml', { path: 'sinks.a.path', message: 'expected a string', line: 3, col: 7 })).toBe(
      'p.yaml:3:7: sinks.a.path: expected a string',
    );
    expect(formatProblem('p.yaml', { path: '', message: 'cannot read' })).toBe('p.yaml: cannot read');
    const err = new ConfigError('p.yaml', [
      { path: 'a', message: 'one', line: 1, col: 1 },
      { path: 'b', message: 'two', line: 2, col: 3 },
    ]);
    expect(err.code).toBe('LF_CONFIG_INVALID');
    expect(err.message.split('\n')).toHaveLength(2);
  });
});
