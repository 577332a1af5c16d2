import { describe, it } from 'vitest';
import { s3Sink } from '../../src/sinks/s3.js';
import { sinkConformanceCases } from '../../src/testkit/index.js';
import { S3RVER_CREDENTIALS, startS3 } from '../helpers/s3.js';

// The sink takes its credentials from the SDK's default chain, as in production.
process.env.AWS_ACCESS_KEY_ID = S3RVER_CREDENTIALS.accessKeyId;
process.env.AWS_SECRET_ACCESS_KEY = S3RVER_CREDENTIALS.secretAccessKey;

describe('s3 sink conformance (s3rver behind the fault proxy)', () => {
  const subject = {
    definition: s3Sink,
    destination: async () => {
      const s3 = await startS3(['conformance']);
      return { url: s3.endpoint, close: () => s3.stop() };
    },
    options: (url: string) => ({
      bucket: 'conformance',
      region: 'us-east-1',
      endpoint: url,
      force_path_style: true,
      concurrency: 8,
      request_timeout_ms: 1000,
      retry: { initial_backoff_ms: 10, max_backoff_ms: 200, max_duration_s: 60 },
    }),
  };
  for (const c of sinkConformanceCases(subject)) it(c.name, c.run, c.timeoutMs);
});
