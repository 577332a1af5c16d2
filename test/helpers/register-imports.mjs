// Registers record-imports.mjs; given to a spawned CLI with NODE_OPTIONS=--import.
import { register } from 'node:module';

register('./record-imports.mjs', import.meta.url);
