#!/usr/bin/env node
// Runs the test suite with CPU-bound processes spinning beside it (two by default, one per core
// of the CI machine), the way a busy build host runs it. A test that waits for a time instead of
// a condition fails here first. Usage: node test/run-busy.mjs [--spinners N] [vitest arguments...]
import { spawn } from 'node:child_process';

const args = process.argv.slice(2);
let spinnerCount = 2;
const at = args.indexOf('--spinners');
if (at !== -1) {
  spinnerCount = Number(args[at + 1]);
  if (!Number.isInteger(spinnerCount) || spinnerCount < 0 || spinnerCount > 64) {
    console.error(`--spinners takes a whole number from 0 to 64, got "${args[at + 1] ?? ''}"`);
    process.exit(2);
  }
  args.splice(at, 2);
}

// A spinner checks now and then that this script still runs, so a killed run leaves no spinner.
const SPIN = `const parent = ${process.pid};
for (;;) {
  for (let i = 0; i < 2e7; i++);
  try { process.kill(parent, 0); } catch { process.exit(0); }
}`;

const spinners = [];
for (let i = 0; i < spinnerCount; i++) spinners.push(spawn(process.execPath, ['-e', SPIN], { stdio: 'ignore' }));
const stopSpinners = () => {
  for (const spinner of spinners) spinner.kill('SIGKILL');
};
process.on('exit', stopSpinners);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    stopSpinners();
    process.exit(130);
  });
}

console.log(`running the suite beside ${spinnerCount} CPU-bound process(es)`);
const started = Date.now();
const vitest = spawn(process.execPath, ['node_modules/vitest/vitest.mjs', 'run', ...args], { stdio: 'inherit' });
vitest.on('exit', (code, signal) => {
  stopSpinners();
  console.log(`suite under load: ${signal ?? `exit ${code}`} after ${((Date.now() - started) / 1000).toFixed(0)} s`);
  process.exit(code ?? 1);
});
