import { appendFileSync, renameSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { RotationWatch, globToRegExp, staticFolderOf } from '../../src/sources/rotation-watch.js';
import { waitFor } from '../helpers/cli.js';

const dirs: string[] = [];
const watches: RotationWatch[] = [];
afterEach(async () => {
  for (const w of watches.splice(0)) w.close();
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

describe('globToRegExp', () => {
  it('reads globs as the scan does (tinyglobby with dot: false: wildcards skip hidden names)', () => {
    const cases: [string, string, boolean][] = [
      ['/var/log/*.ndjson', '/var/log/jobs.ndjson', true],
      ['/var/log/*.ndjson', '/var/log/.hidden.ndjson', false],
      ['/var/log/.*.ndjson', '/var/log/.hidden.ndjson', true],
      ['/var/log/**/*.ndjson', '/var/log/.aws/jobs.ndjson', false],
      ['/var/log/**', '/var/log/.aws/credentials', false],
      ['/var/log/**', '/var/log/a/jobs.ndjson', true],
      ['/var/log/.archive/*.ndjson', '/var/log/.archive/jobs.ndjson', true],
      ['/var/log/?obs.ndjson', '/var/log/.obs.ndjson', false],
      ['/var/log/{*,x}.ndjson', '/var/log/.a.ndjson', false],
      ['/var/log/a{*,x}.ndjson', '/var/log/a.b.ndjson', true],
      ['/var/log/*.ndjson', '/var/log/jobs.ndjson.1', false],
      ['/var/log/*.ndjson', '/var/log/sub/jobs.ndjson', false],
      ['/var/log/**/*.ndjson', '/var/log/jobs.ndjson', true],
      ['/var/log/**/*.ndjson', '/var/log/a/b/jobs.ndjson', true],
      ['/var/log/jobs-?.ndjson', '/var/log/jobs-1.ndjson', true],
      ['/var/log/jobs-[0-9].ndjson', '/var/log/jobs-x.ndjson', false],
      ['/var/log/jobs-[!0-9].ndjson', '/var/log/jobs-x.ndjson', true],
      ['/var/log/{jobs,audit}.ndjson', '/var/log/audit.ndjson', true],
      ['/var/log/{jobs,audit}.ndjson', '/var/log/other.ndjson', false],
      ['/var/log/jobs.ndjson', '/var/log/jobs.ndjson', true],
      ['/var/log/jobs.ndjson', '/var/log/jobsXndjson', false],
    ];
    for (const [glob, path, expected] of cases) expect([glob, path, globToRegExp(glob)!.test(path)]).toEqual([glob, path, expected]);
    expect(globToRegExp('logs/*.ndjson')!.test(resolve('logs/a.ndjson'))).toBe(true);
    expect(globToRegExp('/var/log/!(x).ndjson')).toBeUndefined();
    expect(staticFolderOf('/var/log/**/*.ndjson')).toBe('/var/log');
  });
});

describe('RotationWatch (inotify)', () => {
  it.skipIf(process.platform !== 'linux')('reports matching names, and the new names of files renamed out of the globs, twice in a row too', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'logferry-watch-'));
    dirs.push(dir);
    const matching: string[] = [];
    const renamed: string[] = [];
    const done = join(dir, 'done.ndjson');
    const watch = new RotationWatch([join(dir, 'jobs.ndjson'), done], [], {
      matching: (p) => matching.push(p),
      renamedAway: (p) => renamed.push(p),
      changed: () => {},
      grew: () => {},
    });
    watches.push(watch);
    watch.start();
    const live = join(dir, 'jobs.ndjson');
    // All in one go, before the watcher's callback runs: create, rename out, rename again; an
    // archive created afterwards is not a rename.
    appendFileSync(live, '{"a":1}\n');
    renameSync(live, join(dir, 'jobs.ndjson.1'));
    appendFileSync(live, '{"a":2}\n');
    renameSync(join(dir, 'jobs.ndjson.1'), join(dir, 'jobs.ndjson.2'));
    writeFileSync(join(dir, 'other.log'), 'x');
    appendFileSync(live, '{"a":3}\n');
    writeFileSync(join(dir, 'jobs.ndjson.2.gz'), 'x');
    // Events arrive in order: once the last file is reported, every earlier event was handled.
    writeFileSync(done, '');
    await waitFor(() => matching.includes(done), 10_000, 'the last event');
    expect(renamed).toEqual([join(dir, 'jobs.ndjson.1'), join(dir, 'jobs.ndjson.2')]);
    expect(new Set(matching)).toEqual(new Set([live, done]));
  });
});
