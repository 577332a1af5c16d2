import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    // Tests of plugins run against the TypeScript sources, not a stale build.
    alias: [
      { find: /^logferry\/testkit$/, replacement: fileURLToPath(new URL('./src/testkit/index.ts', import.meta.url)) },
      { find: /^logferry$/, replacement: fileURLToPath(new URL('./src/index.ts', import.meta.url)) },
    ],
  },
  test: {
    include: ['test/**/*.test.ts', 'plugins/**/test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 30_000,
    // Integration tests spawn the CLI and kill it; two cores, so keep the files few at a time.
    maxWorkers: 2,
    minWorkers: 1,
  },
});
