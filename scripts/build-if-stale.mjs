// `npm start` builds only when a source changed since the last build: a full `tsc` takes seconds
// to tens of seconds on a small machine, and an incremental one still seconds to find nothing.
// Stale means a file under src/, bench/ or plugins/ (tests, node_modules and dist/ aside), or a
// tsconfig.json or package.json, is newer than dist/.build-stamp, which records when the last
// successful build started (so an edit made during a build still counts as newer).
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync, writeFileSync, utimesSync } from 'node:fs';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');
const stampPath = join(root, 'dist', '.build-stamp');
const SKIPPED = new Set(['node_modules', 'dist', 'test']);

function newestUnder(path) {
  const stat = statSync(path, { throwIfNoEntry: false });
  if (!stat) return 0;
  if (!stat.isDirectory()) return stat.mtimeMs;
  let newest = 0;
  for (const entry of readdirSync(path)) if (!SKIPPED.has(entry)) newest = Math.max(newest, newestUnder(join(path, entry)));
  return newest;
}

const inputs = ['src', 'bench', 'plugins', 'tsconfig.json', 'package.json', 'scripts'].map((p) => newestUnder(join(root, p)));
const stamp = statSync(stampPath, { throwIfNoEntry: false });
if (stamp && stamp.mtimeMs >= Math.max(...inputs)) {
  process.stdout.write('dist/ is up to date with the sources: not rebuilt (npm run build forces a build)\n');
  process.exit(0);
}
const started = new Date();
const built = spawnSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit' });
if (built.status !== 0) process.exit(built.status ?? 1);
writeFileSync(stampPath, `build started ${started.toISOString()}\n`);
utimesSync(stampPath, started, started);
