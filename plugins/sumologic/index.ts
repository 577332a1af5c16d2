import { defineSink, definePlugin, healthcheckEnabledSchema, httpSinkSchema, buildHttpSink, retrySchema, urlSecrets, z } from 'logferry';

const MINUTE_MS = 60_000;

/** Sumo Logic rejects requests above 1 MiB; it recommends 100 KB to 1 MB of uncompressed data. */
const SUMO_MAX_BATCH_BYTES = 1024 * 1024;

/** Sumo metadata values are comma-separated `key=value` pairs: neither character may appear inside one. */
const fieldText = z
  .string()
  .regex(/^[^,=]+$/, 'must not contain "," or "="')
  .regex(/^[\t\x20-\x7e\x80-\xff]+$/, 'must be one line of Latin-1 text without control characters (it is sent as a header)');
/** A header value is one line of text: CR, LF or NUL would be refused by the HTTP client on every attempt. */
const headerText = z
  .string()
  .min(1)
  .regex(/^[\t\x20-\x7e\x80-\xff]+$/, 'must be one line of Latin-1 text without control characters (it is sent as a header)');

export const sumoLogicSchema = z
  .object({
    url: z
      .url({ protocol: /^https?$/, error: 'expected the HTTP source URL Sumo Logic gave you (https://...)' })
      .describe('The HTTP Logs and Metrics source URL. It holds the source token: keep it in an env var, e.g. ${SUMO_URL}.'),
    category: headerText.optional().describe('X-Sumo-Category: overrides the source category, e.g. prod/workato/jobs.'),
    name: headerText.optional().describe('X-Sumo-Name: overrides the source name.'),
    host: headerText.optional().describe('X-Sumo-Host: overrides the source host.'),
    fields: z
      .record(z.string().regex(/^[A-Za-z0-9_.-]+$/, 'field names are letters, digits, _ . -'), fieldText)
      .default({})
      .describe('X-Sumo-Fields: key=value pairs Sumo Logic attaches to every record.'),
    compression: z.enum(['gzip', 'none']).default('gzip').describe('Sumo accepts gzip; it cuts the bytes sent about tenfold on job documents.'),
    batch: z
      .object({
        max_events: z.number().int().min(1).max(100_000).default(500).describe('Records per request at most.'),
        max_bytes: z
          .number()
          .int()
          .min(1024)
          .max(SUMO_MAX_BATCH_BYTES)
          .default(SUMO_MAX_BATCH_BYTES)
          .describe('Uncompressed bytes per request at most (1 KiB to 1 MiB).'),
        timeout_ms: z
          .number()
          .int()
          .min(1)
          .max(10 * MINUTE_MS)
          .default(1000)
          .describe('A batch that is not full is sent this long after its first record (at most 10 minutes).'),
      })
      .strict()
      .prefault({})
      .describe('Batches stay under 1 MiB uncompressed, the most one Sumo request may carry.'),
    request: z
      .object({
        concurrency: z.number().int().min(1).max(64).default(4).describe('Requests in flight at most.'),
        timeout_ms: z
          .number()
          .int()
          .min(1)
          .max(10 * MINUTE_MS)
          .default(30_000)
          .describe('An answer slower than this is a failed attempt, retried (at most 10 minutes).'),
      })
      .strict()
      .prefault({}),
    retry: retrySchema.prefault({}),
    healthcheck: healthcheckEnabledSchema(
      "At start, connect to the collector's host (DNS, TCP, TLS) without sending a request: Sumo Logic has no health endpoint, and any request to the source URL would be ingested as a message.",
    )
      .describe('The check at start (run logs it; run --require-healthy and validate --check-destinations exit 69 when it fails).'),
  })
  .strict();

export type SumoLogicOptions = z.output<typeof sumoLogicSchema>;

/** The headers Sumo Logic reads metadata from; only the ones the operator set. */
export function sumoHeaders(options: SumoLogicOptions): Record<string, string> {
  const headers: Record<string, string> = {};
  if (options.category) headers['X-Sumo-Category'] = options.category;
  if (options.name) headers['X-Sumo-Name'] = options.name;
  if (options.host) headers['X-Sumo-Host'] = options.host;
  const fields = Object.entries(options.fields).map(([key, value]) => `${key}=${value}`);
  if (fields.length > 0) headers['X-Sumo-Fields'] = fields.join(',');
  return headers;
}

/**
 * `type: sumo_logic` is the built-in http sink with Sumo's conventions: NDJSON batches (one log
 * message a line), gzip, metadata headers. Delivery, batching, retries and acknowledgement all
 * come from HttpSink, so this plugin is only the mapping of options.
 */
export const sumoLogicSink = defineSink({
  type: 'sumo_logic',
  description: 'Sends records to a Sumo Logic HTTP source as gzipped NDJSON batches with X-Sumo-* metadata.',
  schema: sumoLogicSchema,
  requiresKey: false,
  // The whole URL is the credential (its last segment is the source token).
  secrets: (options) => [options.url, ...urlSecrets(options.url)],
  build: (options, ctx) =>
    buildHttpSink(
      httpSinkSchema.parse({
        uri: options.url,
        method: 'POST',
        encoding: 'ndjson',
        compression: options.compression,
        batch: options.batch,
        headers: sumoHeaders(options),
        request: options.request,
        retry: options.retry,
        // No healthcheck.uri: the connection check is all that can be done without ingesting anything.
        healthcheck: { enabled: options.healthcheck.enabled },
      }),
      ctx,
    ),
});

export default definePlugin({
  name: 'logferry-plugin-sumologic',
  sinks: [sumoLogicSink],
});
