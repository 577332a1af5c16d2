import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, ERROR_CODES, formatProblem } from '../../src/errors.js';

describe('error codes', () => {
  it('has one row in docs/errors.md per code, and no row without a code', async () => {
    const doc = await readFile(resolve(import.meta.dirname, '../../docs/errors.md'), 'utf8');
    const documented = [...doc.matchAll(/^\| `(LF_[A-Z0-9_]+)` \|/gm)].map((m) => m[1]);
    expect(documented.sort()).toEqual(Object.keys(ERROR_CODES).sort());
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
