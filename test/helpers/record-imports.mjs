// Module hooks for a spawned CLI (NODE_OPTIONS=--import <register-imports.mjs>): every module URL
// the process resolves is appended to the file named by LOGFERRY_IMPORT_LOG, so a test can see
// which packages a command really loaded.
import { appendFileSync } from 'node:fs';

export async function resolve(specifier, context, nextResolve) {
  const resolved = await nextResolve(specifier, context);
  appendFileSync(process.env.LOGFERRY_IMPORT_LOG, `${resolved.url}\n`);
  return resolved;
}
