import { spawn } from 'node:child_process';
import { constants } from 'node:os';

/**
 * The young-generation size logferry is measured and tuned with (see README, "Node options"). The
 * `logferry` command sets it on its first line; `node dist/src/cli/main.js` does not.
 */
export const SEMI_SPACE_FLAG = '--max-semi-space-size=64';

/** True when this process was started with a --max-semi-space-size (any value: the operator's choice wins). */
export function hasSemiSpaceFlag(execArgv: readonly string[] = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? ''): boolean {
  return [...execArgv, ...nodeOptions.split(/\s+/)].some((arg) => arg.startsWith('--max-semi-space-size'));
}

/**
 * Runs this same command again in a Node started with SEMI_SPACE_FLAG, and resolves to its exit
 * code. V8 sizes its heap when the process starts, so a flag set later (v8.setFlagsFromString)
 * would not apply. Used by `bench`, whose figures mean nothing without the flag the real command
 * runs with; SIGINT and SIGTERM are passed on, so stopping the parent stops the measurement.
 */
export function rerunWithSemiSpaceFlag(): Promise<number> {
  const child = spawn(process.execPath, [...process.execArgv, SEMI_SPACE_FLAG, ...process.argv.slice(1)], { stdio: 'inherit' });
  const forward = (signal: NodeJS.Signals): void => void child.kill(signal);
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  return new Promise((resolveExit, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      process.off('SIGINT', forward);
      process.off('SIGTERM', forward);
      resolveExit(code ?? 128 + (signal ? constants.signals[signal] : 0));
    });
  });
}
