import { z } from 'zod';

/**
 * Upper bounds shared by the option schemas. Every numeric option has a minimum and a maximum
 * (test/unit/option-bounds.test.ts walks the JSON Schema and fails on an unbounded one).
 */

/**
 * setTimeout and setInterval turn a delay above 2^31-1 ms (24.8 days) into 1 ms: a status line
 * meant for once a month would be logged a thousand times a second. No millisecond option may
 * go above it; most stop far below, at what is sane for their meaning.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export const SECOND_MS = 1000;
export const MINUTE_MS = 60 * SECOND_MS;
export const HOUR_MS = 60 * MINUTE_MS;
export const DAY_MS = 24 * HOUR_MS;

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/** Linux PATH_MAX and NAME_MAX: a longer path or file name fails every open with ENAMETOOLONG. */
const MAX_PATH_BYTES = 4096;
const MAX_NAME_BYTES = 255;

/**
 * A file or folder path (or glob) option: a NUL byte or an over-long path would fail every open
 * at run time (ERR_INVALID_ARG_VALUE, ENAMETOOLONG), so they are config errors instead.
 */
export function pathSchema() {
  return z
    .string()
    .min(1)
    .refine((path) => !path.includes('\0'), 'must not contain a NUL character')
    .refine((path) => Buffer.byteLength(path) <= MAX_PATH_BYTES, `is longer than ${MAX_PATH_BYTES} bytes, the longest path the system accepts`)
    .refine(
      (path) => path.split('/').every((name) => Buffer.byteLength(name) <= MAX_NAME_BYTES),
      `has a file or folder name longer than ${MAX_NAME_BYTES} bytes, the longest the system accepts`,
    );
}
