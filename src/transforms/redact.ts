import type { ComponentDefinition, LogRecord, Transform } from '../engine/types.js';
import { createRedactor, hashKeyProblem, redactSchema } from '../records/redaction.js';

export { redactSchema, type RedactOptions } from '../records/redaction.js';

export const redactTransform: ComponentDefinition<'transform', typeof redactSchema> = {
  kind: 'transform',
  type: 'redact',
  description: 'Masks steps marked mask_data and replaces named fields and patterns (fixed text or keyed hashes).',
  schema: redactSchema,
  appliesMaskData: (options) => options.mask_data,
  preflight: (options, env) => {
    const problem = hashKeyProblem(options, env);
    return problem === undefined ? [] : [{ path: 'hash_key_env', message: problem }];
  },
  build: (options, ctx): Transform => {
    // Built here so a missing hash key fails the start-up, not the first record.
    const redact = createRedactor(options);
    return {
      process(record: LogRecord): LogRecord {
        // The record's flag, not only the document's mark: a transform before may have deep-cloned the doc.
        // The line as read, while no transform before changed the document: hashes of numbers as written.
        const text = record.sourceText !== undefined && record.sourceText.doc === record.doc ? record.sourceText.text : undefined;
        const doc = redact(record.doc, record.nestedMaskData === true, text);
        if (doc === record.doc) return record;
        ctx.metrics.count(ctx.id, 'redacted');
        return { ...record, doc };
      },
    };
  },
};
