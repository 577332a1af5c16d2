import { describe, expect, it } from 'vitest';
import { otelLogsWanted } from '../../src/cli/main.js';
import { exportTimeoutMs, logsEndpoint, OTEL_LOGS_EXPORT_TIMEOUT_MS, OTEL_LOGS_SHUTDOWN_WAIT_MS, toAttributes } from '../../src/engine/otel-logs.js';

describe('when logferry exports its own logs', () => {
  it('only with an OTLP endpoint set, and not when the SDK or the logs exporter is turned off', () => {
    expect(otelLogsWanted({})).toBe(false);
    expect(otelLogsWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: ' ' })).toBe(false);
    expect(otelLogsWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' })).toBe(true);
    expect(otelLogsWanted({ OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: 'http://c:4318/v1/logs' })).toBe(true);
    expect(otelLogsWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_SDK_DISABLED: 'TRUE' })).toBe(false);
    expect(otelLogsWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_SDK_DISABLED: 'false' })).toBe(true);
    expect(otelLogsWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_LOGS_EXPORTER: 'none' })).toBe(false);
    expect(otelLogsWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_LOGS_EXPORTER: 'otlp' })).toBe(true);
  });

  it('names the endpoint as the exporter builds it: the logs variable as is, the base one with /v1/logs', () => {
    expect(logsEndpoint({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318/' })).toBe('http://c:4318/v1/logs');
    expect(logsEndpoint({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: 'http://l:1/logs' })).toBe('http://l:1/logs');
    expect(logsEndpoint({})).toBeUndefined();
  });

  it('bounds an export below the shutdown wait, or lower when the standard timeout says so', () => {
    expect(OTEL_LOGS_EXPORT_TIMEOUT_MS).toBeLessThan(OTEL_LOGS_SHUTDOWN_WAIT_MS);
    expect(exportTimeoutMs({})).toBe(OTEL_LOGS_EXPORT_TIMEOUT_MS);
    expect(exportTimeoutMs({ OTEL_EXPORTER_OTLP_TIMEOUT: '60000' })).toBe(OTEL_LOGS_EXPORT_TIMEOUT_MS);
    expect(exportTimeoutMs({ OTEL_EXPORTER_OTLP_TIMEOUT: '800' })).toBe(800);
    expect(exportTimeoutMs({ OTEL_EXPORTER_OTLP_TIMEOUT: '800', OTEL_EXPORTER_OTLP_LOGS_TIMEOUT: '300' })).toBe(300);
    expect(exportTimeoutMs({ OTEL_EXPORTER_OTLP_TIMEOUT: 'soon' })).toBe(OTEL_LOGS_EXPORT_TIMEOUT_MS);
  });
});

describe('log fields as OpenTelemetry attributes', () => {
  it('keeps scalars and lists of one kind, flattens objects to dotted keys, writes the rest as JSON text, scrubs every string', () => {
    const scrub = (t: string): string => t.replaceAll('hunter22', '***');
    const attributes = toAttributes(
      {
        sink: 'out hunter22',
        n: 3,
        ok: false,
        big: 10n,
        tags: ['a', 'hunter22'],
        empty: [],
        mixed: [1, 'a'],
        error: { message: 'no hunter22', code: 'LF_SINK_FAILED', cause: { deeper: { deepest: { x: 1 } } } },
        gone: null,
      },
      scrub,
    );
    expect(attributes).toEqual({
      sink: 'out ***',
      n: 3,
      ok: false,
      big: '10',
      tags: ['a', '***'],
      empty: '[]',
      mixed: '[1,"a"]',
      'error.message': 'no ***',
      'error.code': 'LF_SINK_FAILED',
      'error.cause.deeper.deepest': '{"x":1}',
    });
  });
});
