import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * The S3-protocol server of the tests (s3rver, a dev dependency) in its own process, for the s3
 * scenarios. Prints `PORT <n>` once listening, or `UNAVAILABLE <why>` when s3rver is not installed.
 */
interface S3rverInstance {
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
}
type S3rverConstructor = new (options: Record<string, unknown>) => S3rverInstance;

const directory = mkdtempSync(join(tmpdir(), 'logferry-bench-s3-'));
let S3rver: S3rverConstructor;
try {
  S3rver = createRequire(import.meta.url)('s3rver') as S3rverConstructor;
} catch (err) {
  process.stdout.write(`UNAVAILABLE s3rver is not installed (npm install --include=dev): ${(err as Error).message.split('\n')[0]}\n`);
  process.exit(0);
}
const server = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory, configureBuckets: [{ name: 'bench' }] });
const address = await server.run();
process.stdout.write(`PORT ${address.port}\n`);
process.stdin.resume();
process.stdin.on('end', () => {
  // Detached: an event handler cannot wait. A failing close is reported; the folder goes either way.
  void server
    .close()
    .catch((err: unknown) => process.stderr.write(`s3rver did not close cleanly: ${err instanceof Error ? err.message : String(err)}\n`))
    .finally(() => {
      rmSync(directory, { recursive: true, force: true });
      process.exit(0);
    });
});
