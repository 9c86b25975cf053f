import { fork, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { FromStageSchema, STAGE_IPC_VERSION, type FromStage, type StageName, type ToStage } from '../lib/contracts/stage-ipc.ts';
import { interruptedError as interrupted, VerbatimError } from '../lib/errors.ts';
import type { Logger } from '../lib/logger.ts';

export interface StagePolicy {
  /** Restarts allowed within windowMs before the stage counts as failed. */
  restartMax: number;
  windowMs: number;
  /** First restart delay, doubled per further crash in the window (capped at 30 s). */
  backoffMs: number;
  /** A graceful stop longer than this ends with SIGKILL. */
  stopGraceMs: number;
  readyTimeoutMs: number;
}

export interface StageSpec {
  name: StageName;
  /** The stage's process entry (services/<stage>/src/process.ts). */
  entry: string;
  /** Its environment, computed at every (re)start. */
  env(): NodeJS.ProcessEnv;
  /** After the first start, restarts keep the port it got (join links, RECORDER_URL and the console URL stay valid). */
  pinPortAs?: string;
}

interface StageEvents {
  /** A restarted process is serving again. */
  restarted: [pid: number];
  /** It kept crashing: the launcher should stop. */
  failed: [error: VerbatimError];
}

type State = 'idle' | 'starting' | 'running' | 'backoff' | 'stopping' | 'stopped' | 'failed';

const MAX_BACKOFF_MS = 30_000;

/**
 * One stage process under the launcher: started with `fork` (its own process group, so a
 * terminal's Ctrl-C reaches only the launcher, which stops the stages in order), talked to
 * with the versioned stage contract (services/lib/contracts/stage-ipc.ts), restarted with
 * backoff when it exits unexpectedly, and given up on when it keeps crashing.
 */
export class SupervisedStage extends EventEmitter<StageEvents> {
  private child: ChildProcess | undefined;
  private state: State = 'idle';
  private crashes: number[] = [];
  private backoffTimer: NodeJS.Timeout | undefined;
  private pinnedPort: string | undefined;
  private lastFatal: Extract<FromStage, { t: 'fatal' }> | undefined;
  private retired = false;
  url: string | undefined;
  /** The operator notes of its last ready message. */
  notes: string[] = [];
  /** Restarts so far (for reports and tests). */
  restarts = 0;

  constructor(
    readonly spec: StageSpec,
    private readonly policy: StagePolicy,
    private readonly logger: Logger,
  ) {
    super();
  }

  get name(): StageName {
    return this.spec.name;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** First start: resolves once the stage says ready; rejects if it dies first, takes too long, or the start is interrupted. */
  start(signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(interrupted());
      const onAbort = () => {
        this.killNow('start-up interrupted');
        reject(interrupted());
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.launch((err) => {
        signal?.removeEventListener('abort', onAbort);
        if (err) {
          this.state = 'failed';
          reject(err);
        } else resolve();
      });
    });
  }

  /**
   * Spawns the process; `settled` is called once: on ready, or with the error that ended the
   * start. Once it is running, an unexpected exit leads to a restart.
   */
  private launch(settled: (err?: VerbatimError) => void): void {
    this.state = 'starting';
    this.lastFatal = undefined;
    const env = { ...this.spec.env(), ...(this.spec.pinPortAs && this.pinnedPort ? { [this.spec.pinPortAs]: this.pinnedPort } : {}) };
    const child = fork(this.spec.entry, [], { execArgv: ['--import', 'tsx'], env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], detached: true });
    this.child = child;
    const log = this.logger.child({ stage: this.name, pid: child.pid });
    let done = false;
    let timedOut = false;
    const settle = (err?: VerbatimError) => {
      if (done) return;
      done = true;
      clearTimeout(readyTimer);
      settled(err);
    };
    // Killed when late; the exit handler below then ends the start with the error.
    const readyTimer = setTimeout(() => {
      timedOut = true;
      log.error({ timeoutMs: this.policy.readyTimeoutMs }, 'stage did not become ready in time: killing it');
      this.killGroup(child);
    }, this.policy.readyTimeoutMs);
    child.on('message', (raw) => {
      const parsed = FromStageSchema.safeParse(raw);
      if (!parsed.success) return log.error({ issues: parsed.error.issues }, 'bad IPC message from a stage');
      const m = parsed.data;
      if (m.t === 'ready') {
        if (m.url) {
          this.url = m.url;
          this.pinnedPort ??= new URL(m.url).port;
        }
        this.notes = m.notes ?? [];
        if (this.state === 'starting') this.state = 'running';
        log.info({ url: m.url }, 'stage ready');
        const restarted = this.restarts > 0 && !done;
        settle();
        if (restarted) this.emit('restarted', m.pid);
      } else if (m.t === 'fatal') {
        this.lastFatal = m;
        log.error({ code: m.code, hint: m.hint }, `stage failed: ${m.message}`);
      }
    });
    child.once('error', (err) => log.error({ err }, 'stage process error'));
    child.once('exit', (code, signal) => {
      this.killGroup(child);
      if (this.child === child) this.child = undefined;
      if (!done) {
        const f = this.lastFatal;
        settle(
          timedOut
            ? new VerbatimError('STAGE_FAILED', `the ${this.name} stage did not start within ${this.policy.readyTimeoutMs} ms`, { hint: 'The machine may be overloaded; raise STAGE_READY_TIMEOUT_MS, or see the log lines above.', details: { stage: this.name, code: null } })
            : new VerbatimError('STAGE_FAILED', `the ${this.name} stage exited during start-up (${signal ?? `code ${code}`})${f ? `: ${f.code} ${f.message}` : ''}`, {
                hint: f?.hint ?? 'See the log lines above.',
                details: { stage: this.name, code: f?.code ?? null },
              }),
        );
        return;
      }
      if (this.state === 'stopping' || this.state === 'stopped' || this.state === 'failed') return;
      this.crashed(code, signal, log);
    });
  }

  private crashed(code: number | null, signal: NodeJS.Signals | null, log: Logger): void {
    if (this.retired) {
      log.warn({ code, signal }, 'stage exited while the launcher stops: not restarted');
      this.state = 'stopped';
      return;
    }
    const now = Date.now();
    this.crashes = [...this.crashes.filter((t) => now - t < this.policy.windowMs), now];
    const why = this.lastFatal ? `${this.lastFatal.code}: ${this.lastFatal.message}` : signal ? `killed by ${signal}` : `exit code ${code}`;
    if (this.crashes.length > this.policy.restartMax) {
      this.state = 'failed';
      const err = new VerbatimError('STAGE_FAILED', `the ${this.name} stage crashed ${this.crashes.length} times within ${Math.round(this.policy.windowMs / 1000)} s (last: ${why}); giving up`, {
        hint: 'See the log lines of that stage above; STAGE_RESTART_MAX and STAGE_RESTART_WINDOW_MS set the limit.',
        details: { stage: this.name, code: this.lastFatal?.code ?? null },
      });
      log.fatal({ crashes: this.crashes.length }, err.message);
      this.emit('failed', err);
      return;
    }
    const delay = Math.min(MAX_BACKOFF_MS, this.policy.backoffMs * 2 ** (this.crashes.length - 1));
    log.error({ code, signal, fatal: this.lastFatal?.code, restartInMs: delay, crashesInWindow: this.crashes.length }, `stage exited unexpectedly (${why}); restarting it`);
    this.state = 'backoff';
    this.backoffTimer = setTimeout(() => {
      this.backoffTimer = undefined;
      if (this.state !== 'backoff') return;
      this.restarts++;
      // A restart that dies before ready is one more crash: the exit handler above counts it.
      this.launch((err) => {
        if (err && this.state === 'starting') {
          this.state = 'running';
          this.crashed(null, null, log);
        }
      });
    }, delay);
  }

  /** The launcher is stopping: a crash from now on is not restarted (stop() follows, in order). */
  retire(): void {
    this.retired = true;
  }

  /** Graceful stop (the stage's own close), SIGKILL after the grace period; a stage still starting is killed at once. */
  async stop(reason: string): Promise<void> {
    clearTimeout(this.backoffTimer);
    const child = this.child;
    const wasRunning = this.state === 'running';
    this.state = 'stopping';
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      if (wasRunning && child.connected) {
        child.send({ t: 'stop', v: STAGE_IPC_VERSION, reason } satisfies ToStage);
        const timer = setTimeout(() => {
          this.logger.error({ stage: this.name, graceMs: this.policy.stopGraceMs }, 'stage did not stop within its grace period: killing it');
          this.killGroup(child);
        }, this.policy.stopGraceMs);
        await exited;
        clearTimeout(timer);
      } else {
        // Not serving yet: nothing to seal or flush.
        this.killGroup(child);
        await exited;
      }
    }
    this.state = 'stopped';
  }

  private killNow(reason: string): void {
    this.state = 'stopping';
    clearTimeout(this.backoffTimer);
    if (this.child) {
      this.logger.warn({ stage: this.name, reason }, 'killing stage');
      this.killGroup(this.child);
    }
  }

  /** The stage leads its own process group: its media and recorder workers go with it. */
  private killGroup(child: ChildProcess): void {
    if (child.pid === undefined) return;
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}
