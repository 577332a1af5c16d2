/**
 * The metric families logferry exposes (engine/telemetry.ts makes them), in one place: the
 * README's table and the integration test that scrapes /metrics are checked against this list.
 * Kept apart from telemetry.ts so that reading it loads no OpenTelemetry.
 *
 * Keys are the instrument names; `exposed` is the Prometheus name (monotonic counters get `_total`).
 */
export const METRIC_FAMILIES = {
  logferry_component_received_events: { exposed: 'logferry_component_received_events_total', type: 'counter', labels: 'component_id, component_kind, component_type', help: 'Records a source read and handed to the pipeline (lines that are not records are dead letters, not counted here).' },
  logferry_component_received_bytes: { exposed: 'logferry_component_received_bytes_total', type: 'counter', labels: 'component_id, component_kind, component_type', help: 'Bytes of those records as read (the lines, without their newline).' },
  logferry_component_sent_events: { exposed: 'logferry_component_sent_events_total', type: 'counter', labels: 'component_id, component_kind, component_type', help: 'Records a sink delivered and its destination acknowledged.' },
  logferry_component_sent_bytes: { exposed: 'logferry_component_sent_bytes_total', type: 'counter', labels: 'component_id, component_kind, component_type', help: 'Bytes of the bodies of those records as the sink was given them (before gzip and batching).' },
  logferry_component_discarded_events: { exposed: 'logferry_component_discarded_events_total', type: 'counter', labels: 'component_id, component_kind, component_type', help: 'Records a transform dropped on purpose (select filtered them, jobs that are not final).' },
  logferry_component_dead_letters: { exposed: 'logferry_component_dead_letters_total', type: 'counter', labels: 'component_id, component_kind, component_type', help: 'Dead letters written (on disk) for records this component refused or could not handle.' },
  logferry_dead_letters: { exposed: 'logferry_dead_letters_total', type: 'counter', labels: 'code', help: 'Dead letters written, by error code (docs/errors.md).' },
  logferry_sink_retries: { exposed: 'logferry_sink_retries_total', type: 'counter', labels: 'component_id, component_kind, component_type, reason', help: 'Failed attempts a sink tries again, by reason class: transient (5xx, 429, timeouts, resets) or blocked (credentials, TLS, DNS, permissions).' },
  logferry_delivery_latency_seconds: { exposed: 'logferry_delivery_latency_seconds', type: 'histogram', labels: '', help: 'From reading a record to its final acknowledgement (every sink answered, or its dead letter is on disk).' },
  logferry_sink_state: { exposed: 'logferry_sink_state', type: 'gauge', labels: 'component_id, component_kind, component_type, state', help: '1 for the state a sink is in (healthy, retrying, blocked), 0 for the others.' },
  logferry_sink_pending_records: { exposed: 'logferry_sink_pending_records', type: 'gauge', labels: 'component_id, component_kind, component_type', help: 'Records handed to a sink that have no answer yet (those it holds through an outage included).' },
  logferry_buffer_bytes: { exposed: 'logferry_buffer_bytes', type: 'gauge', labels: '', help: 'Bytes of the buffer (buffer.max_bytes) the records in flight are charged.' },
  logferry_buffer_max_bytes: { exposed: 'logferry_buffer_max_bytes', type: 'gauge', labels: '', help: 'The buffer bound, buffer.max_bytes: reading pauses when logferry_buffer_bytes reaches it.' },
  logferry_buffer_records: { exposed: 'logferry_buffer_records', type: 'gauge', labels: '', help: 'Records in flight (read, not yet acknowledged).' },
  logferry_source_bytes_behind: { exposed: 'logferry_source_bytes_behind', type: 'gauge', labels: 'component_id, component_kind, component_type', help: 'Bytes of a source\'s open files not yet acknowledged: how far it is behind its inputs.' },
  logferry_source_file_bytes_behind: { exposed: 'logferry_source_file_bytes_behind', type: 'gauge', labels: 'component_id, component_kind, component_type, file', help: 'The same per file, for the 50 files furthest behind (bounded cardinality; the per-source figure covers all).' },
  logferry_checkpoint_age_seconds: { exposed: 'logferry_checkpoint_age_seconds', type: 'gauge', labels: 'component_id, component_kind, component_type', help: 'Seconds since a source\'s checkpoint was last saved (about checkpoint_interval_ms while saves work; it grows when they fail).' },
  logferry_process_resident_memory_bytes: { exposed: 'logferry_process_resident_memory_bytes', type: 'gauge', labels: '', help: 'Resident set size of the process.' },
  logferry_process_heap_used_bytes: { exposed: 'logferry_process_heap_used_bytes', type: 'gauge', labels: '', help: 'V8 heap in use.' },
  logferry_process_event_loop_delay_p99_seconds: { exposed: 'logferry_process_event_loop_delay_p99_seconds', type: 'gauge', labels: '', help: '99th percentile of the event loop\'s delay over the current minute (perf_hooks.monitorEventLoopDelay).' },
  logferry_process_cpu_seconds: { exposed: 'logferry_process_cpu_seconds_total', type: 'counter', labels: '', help: 'CPU time used by the process, user and system.' },
  logferry_process_gc_seconds: { exposed: 'logferry_process_gc_seconds_total', type: 'counter', labels: '', help: 'Time spent in garbage collection since telemetry started (PerformanceObserver gc entries).' },
} as const satisfies Record<string, { exposed: string; type: 'counter' | 'gauge' | 'histogram'; labels: string; help: string }>;

export type MetricFamilyName = keyof typeof METRIC_FAMILIES;

/** The cap on logferry_source_file_bytes_behind series: a folder of thousands of files must not make thousands of series. */
export const MAX_FILES_BEHIND = 50;

/**
 * Whether the standard variables ask for OTLP export of metrics: an endpoint is set
 * (OTEL_EXPORTER_OTLP_METRICS_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT), and neither
 * OTEL_SDK_DISABLED=true nor OTEL_METRICS_EXPORTER=none turns it off. Checked before
 * OpenTelemetry is loaded, so that without them it costs nothing.
 */
export function otlpMetricsWanted(env: NodeJS.ProcessEnv): boolean {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return false;
  if (env.OTEL_METRICS_EXPORTER?.trim().toLowerCase() === 'none') return false;
  return Boolean(env.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT?.trim() || env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim());
}
