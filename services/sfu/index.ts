/**
 * The SFU's public surface: what the launcher and other stages may use. Everything
 * else under src/ is private to the SFU (checked by scripts/boundaries.test.ts).
 */
export { startSfu, type RunningSfu } from './src/main.ts';
