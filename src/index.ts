/**
 * The public API for plugin authors: `import { definePlugin, defineSink, z } from 'logferry'`.
 * Everything exported here is covered by semver; anything reached by a deeper path is not.
 */
export { z } from 'zod';
export { definePlugin, defineSink, defineSource, defineTransform, isPlugin, type LogferryPlugin, type PluginSpec } from './plugin/api.js';
export type {
  ComponentContext,
  ComponentDefinition,
  ComponentKind,
  DeadLetterInput,
  Delivery,
  JsonObject,
  JsonValue,
  LogRecord,
  RecordKind,
  RecordOrigin,
  HealthcheckResult,
  Sink,
  SinkContext,
  Source,
  SourceContext,
  SourceText,
  Transform,
  TransformResult,
} from './engine/types.js';
export type { Logger, LogFields } from './engine/logger.js';
export { Metrics } from './engine/metrics.js';
export { SinkState, type DestinationFailure, type SinkStateName, type SinkStatus } from './engine/sink-state.js';
export { ERROR_CODES, isErrorCode, LogferryError, RecordError, type ErrorCode } from './errors.js';
export { serializeRecord } from './sinks/serialize.js';
export { documentBody, preparedGzip } from './records/body.js';
export {
  ConcurrencyLimit,
  healthcheckEnabledSchema,
  isRetryableStatus,
  parseRetryAfter,
  retrySchema,
  retryUntilFinal,
  safeUrl,
  settleAll,
  statusFailureClass,
  type FinalVerdict,
  type RetryLoopOptions,
  type RetryOptions,
  type Verdict,
} from './sinks/delivery.js';
export { buildHttpSink, HttpSink, httpSecrets, httpSink, httpSinkSchema, type HttpSinkOptions } from './sinks/http.js';
export { MIN_SECRET_LENGTH, SecretScrubber, urlSecrets } from './engine/secrets.js';
