import { z } from 'zod';
import type { ComponentDefinition, Delivery, Sink } from '../engine/types.js';
import { serializeRecord } from './serialize.js';

export const consoleSchema = z
  .object({
    pretty: z.boolean().default(false).describe('Indent the JSON (one document spans several lines).'),
  })
  .strict();

const NEWLINE = Buffer.from('\n');

export type ConsoleOptions = z.output<typeof consoleSchema>;

/** Writes each record as one JSON line on stdout, waiting for stdout to drain (backpressure). */
class ConsoleSink implements Sink {
  constructor(
    private readonly options: ConsoleOptions,
    private readonly out: NodeJS.WritableStream = process.stdout,
  ) {}

  async run(input: AsyncIterable<Delivery[]>): Promise<void> {
    for await (const batch of input) {
      const parts: Buffer[] = [];
      for (const d of batch) parts.push(serializeRecord(d.record, this.options.pretty), NEWLINE);
      const text = Buffer.concat(parts);
      if (!this.out.write(text)) await new Promise<void>((resolve) => this.out.once('drain', resolve));
      for (const d of batch) d.delivered();
    }
  }
}

export const consoleSink: ComponentDefinition<'sink', typeof consoleSchema> = {
  kind: 'sink',
  type: 'console',
  description: 'Writes records as NDJSON to stdout.',
  schema: consoleSchema,
  build: (options) => new ConsoleSink(options),
};
