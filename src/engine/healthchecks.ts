import type { PipelineConfig } from '../config/types.js';
import { componentBuildFailure } from '../errors.js';
import type { Logger } from './logger.js';
import { Metrics } from './metrics.js';
import { SinkState } from './sink-state.js';
import type { HealthcheckResult, Sink, SinkContext } from './types.js';

/** One sink's health check: `result` is undefined when the sink has no check or `healthcheck.enabled` is false. */
export interface DestinationCheck {
  readonly sink: string;
  readonly result: HealthcheckResult | undefined;
}

/**
 * Runs every sink's health check at the same time and logs each result once: ok as info, a
 * warning as warn, a failure as error with LF_HEALTHCHECK_FAILED. Never throws: a check that
 * throws (a plugin's bug) counts as failed, since nothing then says the destination works.
 */
export async function checkDestinations(sinks: readonly { id: string; sink: Sink }[], log: Logger, signal: AbortSignal): Promise<DestinationCheck[]> {
  return Promise.all(
    sinks.map(async ({ id, sink }): Promise<DestinationCheck> => {
      if (!sink.healthcheck) return { sink: id, result: undefined };
      let result: HealthcheckResult | undefined;
      try {
        result = await untilAborted(sink.healthcheck(signal), signal);
      } catch (err) {
        result = { status: 'failed', message: `the health check itself failed: ${(err as Error).message}` };
      }
      if (result) logCheck(log.child({ component: id }), result);
      return { sink: id, result };
    }),
  );
}

/** A check that ignores `signal` (a plugin's) still ends the wait when it aborts. */
function untilAborted(check: Promise<HealthcheckResult | undefined>, signal: AbortSignal): Promise<HealthcheckResult | undefined> {
  const stopped: HealthcheckResult = { status: 'failed', message: 'the check did not end before the checks were stopped' };
  if (signal.aborted) return Promise.resolve(stopped);
  return new Promise((resolve, reject) => {
    const onAbort = (): void => resolve(stopped);
    signal.addEventListener('abort', onAbort, { once: true });
    check.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

function logCheck(log: Logger, result: HealthcheckResult): void {
  if (result.status === 'ok') log.info(`destination check ok: ${result.message}`);
  else if (result.status === 'warning') log.warn(`destination check warning: ${result.message}`);
  else log.error(`destination check failed: ${result.message}`, { code: 'LF_HEALTHCHECK_FAILED' });
}

/** True when a check failed (a warning is not a failure). */
export function anyFailed(checks: readonly DestinationCheck[]): boolean {
  return checks.some((check) => check.result?.status === 'failed');
}

/** The sinks of a pipeline file, built on their own (for `validate --check-destinations`). */
export interface StandaloneSinks {
  readonly sinks: readonly { id: string; sink: Sink }[];
  /** Closes every sink that was built (a failed close is logged, never thrown). */
  close(): Promise<void>;
}

/**
 * Builds only the sinks of a pipeline: no source, no transform, no data_dir lock, nothing read or
 * written under data_dir. Each sink gets the context the pipeline would give it, with its own
 * state and metrics that nothing reads. `signal` stops what the sinks do (their checks).
 */
export async function buildSinksOnly(config: PipelineConfig, log: Logger, signal: AbortSignal): Promise<StandaloneSinks> {
  const metrics = new Metrics();
  const built: { id: string; sink: Sink }[] = [];
  const close = async (): Promise<void> => {
    for (const { id, sink } of built) {
      await sink.close?.().catch((err: unknown) => log.error('sink close failed', { sink: id, error: err }));
    }
  };
  try {
    for (const c of config.sinks) {
      const componentLog = log.child({ component: c.id });
      const ctx: SinkContext = { id: c.id, log: componentLog, metrics, signal, dataDir: config.dataDir, state: new SinkState(c.id, componentLog) };
      let sink: Sink;
      try {
        sink = (await c.definition.build(c.options, ctx)) as Sink;
      } catch (err) {
        throw componentBuildFailure(err, c);
      }
      built.push({ id: c.id, sink });
    }
  } catch (err) {
    await close();
    throw err;
  }
  return { sinks: built, close };
}
