import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * Structured JSON logs. Child loggers carry room/peer/session/job ids so one grep
 * follows a meeting through every stage.
 */
export function createLogger(opts: { level?: string; name?: string } = {}): Logger {
  return pino({
    name: opts.name ?? 'verbatim',
    level: opts.level ?? process.env.LOG_LEVEL ?? 'info',
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
}
