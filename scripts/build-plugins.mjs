// Builds each plugin in plugins/ with its own tsconfig.json, as it builds once copied out of this
// repository. Its `import 'logferry'` then needs node_modules/logferry, which `npm install` gives
// a copied plugin; here it is a link to this repository (after `tsc` has built dist/src).
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readdirSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, relative, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
for (const name of readdirSync(join(root, 'plugins'))) {
  const dir = join(root, 'plugins', name);
  if (!existsSync(join(dir, 'tsconfig.json'))) continue;
  const link = join(dir, 'node_modules', 'logferry');
  if (!lstatSync(link, { throwIfNoEntry: false })) {
    mkdirSync(join(dir, 'node_modules'), { recursive: true });
    symlinkSync(relative(join(dir, 'node_modules'), root), link, 'dir');
  }
  const built = spawnSync(process.execPath, [tsc, '-p', join(dir, 'tsconfig.json')], { stdio: 'inherit' });
  if (built.status !== 0) process.exit(built.status ?? 1);
}
