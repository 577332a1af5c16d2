import { z } from 'zod';
import type { ComponentContext, ComponentDefinition, LogRecord, Transform } from '../engine/types.js';
import {
  ACTIVITY_KEY_TEMPLATE,
  ACTIVITY_PLACEHOLDERS,
  JOB_KEY_TEMPLATE,
  JOB_PLACEHOLDERS,
  compileKeyTemplates,
  keyForRecord,
  parseKeyTemplate,
  type CompiledKeyTemplates,
} from '../records/keys.js';

const MAX_NUMERIC_USER_ID = 999_999_999_999_999;

/** The placeholders that tell records apart: a job by its id, an activity event by the digest of its content. */
const UNIQUE_PART: Record<'job_key' | 'activity_key', readonly string[]> = {
  job_key: ['job_id', 'formatted_job_id'],
  activity_key: ['digest'],
};

const placeholderList = (names: readonly string[]): string => names.map((n) => `{${n}}`).join(', ');

export const pathFormatSchema = z
  .object({
    user_id: z
      .union([
        // YAML numbers are doubles: past 2^53 they lose digits, so long ids belong in a string.
        z.number().int().positive().max(MAX_NUMERIC_USER_ID, 'a user_id above 15 digits must be written as a string of digits ("...")'),
        z.string().regex(/^[0-9]+$/, 'user_id must be a number or a string of digits'),
      ])
      .optional()
      .describe(
        'Fallback user id for jobs whose report has no report.workato.job_context.user_id. ' +
          'Without it such jobs go to the dead letters (LF_RECORD_NO_USER_ID).',
      ),
    job_key: z
      .string()
      .default(JOB_KEY_TEMPLATE)
      .describe(
        `Key template for job records, relative to the sink folder. Placeholders: ${placeholderList(JOB_PLACEHOLDERS)}; ` +
          'times are the UTC started_at. It must contain {job_id} or {formatted_job_id}. ' +
          'Jobs whose status is not succeeded, completed or failed are not shipped.',
      ),
    activity_key: z
      .string()
      .default(ACTIVITY_KEY_TEMPLATE)
      .describe(
        `Key template for activity events, relative to the sink folder. Placeholders: ${placeholderList(ACTIVITY_PLACEHOLDERS)}; ` +
          'times are the UTC timestamp; {digest} identifies the event as received, so a redelivered event keeps its key; ' +
          'it must contain {digest}.',
      ),
  })
  .strict()
  .superRefine((options, ctx) => {
    // Templates are checked here so a bad one is a config error with its YAML position, not a dead letter per record.
    const templates = [
      ['job_key', options.job_key, JOB_PLACEHOLDERS],
      ['activity_key', options.activity_key, ACTIVITY_PLACEHOLDERS],
    ] as const;
    for (const [field, template, allowed] of templates) {
      const parsed = parseKeyTemplate<string>(template, allowed);
      if (!parsed.ok) {
        for (const message of parsed.problems) ctx.addIssue({ code: 'custom', path: [field], message });
        continue;
      }
      // A key that does not name the record would make every record overwrite the same object.
      const unique = UNIQUE_PART[field];
      if (!unique.some((name) => parsed.template.uses.has(name))) {
        const names = unique.map((n) => `{${n}}`).join(' or ');
        ctx.addIssue({
          code: 'custom',
          path: [field],
          message: `the key must contain ${names}, so that each ${field === 'job_key' ? 'job' : 'event'} gets its own key; without it every record overwrites the same object`,
        });
      }
    }
  });

export type PathFormatOptions = z.output<typeof pathFormatSchema>;

/** Sets each record's object key; jobs that are not final yet are dropped (they are shipped when they finish). */
class PathFormatTransform implements Transform {
  private readonly compiled: CompiledKeyTemplates;

  constructor(
    options: PathFormatOptions,
    private readonly ctx: ComponentContext,
  ) {
    this.compiled = compileKeyTemplates(options);
  }

  process(record: LogRecord): LogRecord | null {
    // RecordErrors propagate on purpose: the engine sends the record to the dead letters with their code.
    const key = keyForRecord(record, this.compiled);
    if (key === null) {
      // The engine counts the drop as skipped; this counter says why.
      this.ctx.metrics.count(this.ctx.id, 'not_final_jobs');
      return null;
    }
    return { ...record, key };
  }
}

export const pathFormatTransform: ComponentDefinition<'transform', typeof pathFormatSchema> = {
  kind: 'transform',
  type: 'path_format',
  description:
    'Gives each record its object key: jobs as {user_id}/jobs/{recipe_id}/{date}/{formatted_job_id}/..., ' +
    'activity events as {team_id}/activity/{date}/...; skips jobs that are not final.',
  schema: pathFormatSchema,
  providesKey: true,
  build: (options, ctx) => new PathFormatTransform(options, ctx),
};
