// A log writer that rotates hard: appends jobs to <dir>/jobs.ndjson and renames the live file to
// jobs.ndjson.<n> (outside the include glob) every <rotateMs>, for <durationMs>; then prints
// {"first":..,"count":..,"files":..} on stdout. Runs as its own process, like a real application.
// Usage: node rotating-writer.mjs <dir> <durationMs> <rotateMs> <firstId> <template>
// <template> is one job's JSON with its id written as 777777777.
import { appendFileSync, existsSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout } from 'node:timers';

const [dir, durationArg, rotateArg, firstArg, template] = process.argv.slice(2);
const durationMs = Number(durationArg);
const rotateMs = Number(rotateArg);
const first = Number(firstArg);
const live = join(dir, 'jobs.ndjson');
const started = Date.now();
let next = first;
let files = 0;
let lastRotation = Date.now();

function tick() {
  if (Date.now() - started >= durationMs) {
    process.stdout.write(JSON.stringify({ first, count: next - first, files }) + '\n');
    return;
  }
  let text = '';
  for (let i = 0; i < 2; i++) text += template.replaceAll('777777777', String(next++)) + '\n';
  appendFileSync(live, text);
  if (Date.now() - lastRotation >= rotateMs && existsSync(live)) {
    renameSync(live, join(dir, `jobs.ndjson.${++files}`));
    lastRotation = Date.now();
  }
  setTimeout(tick, 5);
}
tick();
