import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'plugins/**/test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 30_000,
    // Integration tests spawn the CLI and kill it; two cores, so keep the files few at a time.
    maxWorkers: 2,
    minWorkers: 1,
  },
});
