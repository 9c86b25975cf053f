import { FromStageSchema, STAGE_IPC_VERSION, ToStageSchema, type FromStage, type StageName } from './contracts/stage-ipc.ts';
import { toVerbatimError } from './errors.ts';
import type { Logger } from './logger.ts';

/** What a stage's start function hands back: where it serves, and how to stop it. */
export interface StartedStage {
  url?: string;
  /** For the operator, printed by the launcher at start. */
  notes?: string[];
  close(): Promise<void>;
}

const LAUNCHER_GONE_CLOSE_MS = 5000;

export interface StageOptions {
  stage: StageName;
  logger: Logger;
  start(): Promise<StartedStage>;
  /** A graceful close that takes longer than this ends with exit 1 anyway (default 30 s). */
  closeTimeoutMs?: number;
}

/**
 * The life of one stage process (services/<stage>/src/process.ts), under the launcher or on
 * its own: start, say `ready` (with the URL it serves), and stop gracefully on the launcher's
 * `stop` message, on SIGTERM/SIGINT, or when the launcher is gone (the IPC channel closed,
 * even by kill -9). A stop asked for during start-up waits for start to finish, then closes.
 * An exception that escapes anywhere is reported as `fatal` and the process exits 1 at once:
 * its state can no longer be trusted, and the launcher restarts it.
 */
export function runStage(opts: StageOptions): void {
  const { stage, logger } = opts;
  let started: StartedStage | undefined;
  let stopReason: string | undefined;
  let stopping = false;

  const send = (m: FromStage, then?: () => void): void => {
    if (!process.send || !process.connected) return then?.();
    // Checked on the way out too: a stage must never put an invalid message on the channel.
    process.send(FromStageSchema.parse(m), undefined, {}, () => then?.());
  };

  const fatal = (err: unknown, what: string): void => {
    const e = toVerbatimError(err);
    logger.fatal({ err, code: e.code }, `${stage} ${what}: exiting`);
    const exit = () => process.exit(1);
    // The message first (bounded wait), so the launcher can say why.
    setTimeout(exit, 1000).unref();
    send({ t: 'fatal', v: STAGE_IPC_VERSION, stage, code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) }, exit);
  };

  const stop = async (): Promise<void> => {
    if (stopping || !started) return;
    stopping = true;
    logger.info({ reason: stopReason }, `${stage} stopping`);
    send({ t: 'stopping', v: STAGE_IPC_VERSION, stage, reason: stopReason ?? 'stop' });
    // With the launcher gone (even kill -9) its database and Redis go too: a graceful close
    // cannot finish against them, so it gets a few seconds, not the full grace, before exiting.
    const timeout = stopReason === 'launcher gone' ? Math.min(LAUNCHER_GONE_CLOSE_MS, opts.closeTimeoutMs ?? 30_000) : (opts.closeTimeoutMs ?? 30_000);
    const timer = setTimeout(() => {
      logger.error({ timeoutMs: timeout }, `${stage} did not stop in time: exiting`);
      process.exit(1);
    }, timeout);
    try {
      await started.close();
    } catch (err) {
      logger.error({ err }, `${stage} failed while stopping`);
      process.exit(1);
    }
    clearTimeout(timer);
    process.exit(0);
  };

  const requestStop = (reason: string): void => {
    if (stopReason !== undefined) return;
    stopReason = reason;
    void stop();
  };

  process.on('message', (raw) => {
    const parsed = ToStageSchema.safeParse(raw);
    if (!parsed.success) return logger.error({ issues: parsed.error.issues }, 'bad IPC message from the launcher');
    if (parsed.data.t === 'stop') requestStop(parsed.data.reason);
  });
  // `on`, not `once`: a second signal must not kill the stage halfway through its close.
  process.on('SIGTERM', () => requestStop('SIGTERM'));
  process.on('SIGINT', () => requestStop('SIGINT'));
  process.on('disconnect', () => requestStop('launcher gone'));
  process.on('uncaughtException', (err) => fatal(err, 'uncaught exception'));
  process.on('unhandledRejection', (err) => fatal(err, 'unhandled rejection'));

  opts.start().then(
    (s) => {
      started = s;
      logger.info({ url: s.url }, `${stage} ready`);
      send({ t: 'ready', v: STAGE_IPC_VERSION, stage, pid: process.pid, ...(s.url ? { url: s.url } : {}), ...(s.notes?.length ? { notes: s.notes } : {}) });
      if (stopReason !== undefined) void stop();
    },
    (err: unknown) => fatal(err, 'failed to start'),
  );
}
