import { z } from 'zod';
import type { ComponentDefinition, JsonObject, LogRecord, Transform } from '../engine/types.js';

export const selectSchema = z
  .object({
    job_history: z.boolean().default(true).describe('Ship job records (documents with integer id and flow_id).'),
    user_activity: z.boolean().default(true).describe('Ship activity events (documents with a string event).'),
    step_details: z
      .boolean()
      .default(true)
      .describe("false drops each job's `lines` (the input, output and error of every executed step)."),
    activity_events: z
      .array(z.string().min(1))
      .default([])
      .describe('Allow-list of activity event names (user_login, recipe_created, ...); empty ships every event.'),
  })
  .strict();

export type SelectOptions = z.output<typeof selectSchema>;

/** Chooses which kinds of records (and how much of each job) leave the pipeline. */
class SelectTransform implements Transform {
  // An empty allow-list means "every event", so it is kept as undefined rather than an empty Set.
  private readonly allowedEvents: ReadonlySet<string> | undefined;

  constructor(private readonly options: SelectOptions) {
    this.allowedEvents = options.activity_events.length > 0 ? new Set(options.activity_events) : undefined;
  }

  process(record: LogRecord): LogRecord | null {
    return record.kind === 'job' ? this.selectJob(record) : this.selectActivity(record);
  }

  private selectJob(record: LogRecord): LogRecord | null {
    if (!this.options.job_history) return null;
    if (this.options.step_details || !('lines' in record.doc)) return record;
    return { ...record, doc: withoutLines(record.doc) };
  }

  private selectActivity(record: LogRecord): LogRecord | null {
    if (!this.options.user_activity) return null;
    if (!this.allowedEvents) return record;
    const event = record.doc.event;
    return typeof event === 'string' && this.allowedEvents.has(event) ? record : null;
  }
}

/** A shallow copy without `lines`: the record's own doc may be shared with other branches. */
function withoutLines(doc: JsonObject): JsonObject {
  const { lines: _lines, ...rest } = doc;
  return rest;
}

export const selectTransform: ComponentDefinition<'transform', typeof selectSchema> = {
  kind: 'transform',
  type: 'select',
  description: 'Keeps job records and/or activity events, optionally without step details or only some event names.',
  schema: selectSchema,
  build: (options) => new SelectTransform(options),
};
