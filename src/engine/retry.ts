import { setTimeout as sleep } from 'node:timers/promises';

export interface BackoffOptions {
  initial_backoff_ms: number;
  max_backoff_ms: number;
}

/** Exponential backoff with full jitter (AWS architecture blog): spreads retries of many clients. */
export function backoffDelay(attempt: number, options: BackoffOptions, random = Math.random): number {
  const ceiling = Math.min(options.max_backoff_ms, options.initial_backoff_ms * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/** Waits, ending early (with false) when the signal aborts. */
export async function waitOrAbort(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return false;
  try {
    await sleep(ms, undefined, { signal });
    return true;
  } catch {
    return false;
  }
}
