import { UnrecoverableError, type Job } from 'bullmq';
import { SESSION_RERENDER_JOB, SessionFinalizePayloadSchema, SessionRerenderPayloadSchema } from '../../lib/contracts/jobs.ts';
import type { Logger } from '../../lib/logger.ts';
import { finalizeSession, rerenderSession, type StageCall, type StageDriver, type StepSpec } from './session-orchestration.ts';
import { STAGES, runStage, type TranscodeDeps } from './session-stages.ts';

/**
 * The in-process driver of the session orchestration (TranscodeWorker mode 'single'): the
 * flow's own steps and stages, called in order inside one job — no child jobs, no stage
 * results through Redis, no fetching of earlier stages' files (they are in this host's work
 * dir). For one-host installs and for callers without a flow to wait on. The stages, their
 * contracts, the order of the steps and the registration are the flow's (session-stages.ts,
 * session-orchestration.ts); only the scheduling differs.
 */

export interface InProcessOptions {
  /** Media stages of one step run at once (TRANSCODE_CONCURRENCY). */
  concurrency: number;
  /** Transcriptions run at once; they share the transcriber's thread budget. */
  asrConcurrency: number;
  /** The job's: every stage's ffmpeg and whisper-cli die with it. */
  signal?: AbortSignal;
}

export async function processInProcess(job: Job, deps: TranscodeDeps, opts: InProcessOptions): Promise<unknown> {
  const badPayload = (e: { issues: { message: string }[] }) => new UnrecoverableError(`BAD_PAYLOAD: ${e.issues.map((i) => i.message).join('; ')}`);
  if (job.name === SESSION_RERENDER_JOB) {
    const parsed = SessionRerenderPayloadSchema.safeParse(job.data);
    if (!parsed.success) throw badPayload(parsed.error);
    const p = parsed.data;
    const log = deps.logger.child({ job: job.id, room: p.room, session: p.session, request: p.requestedBy.id });
    return rerenderSession(p, deps, new InProcessDriver(job, deps, log, opts), log);
  }
  const parsed = SessionFinalizePayloadSchema.safeParse(job.data);
  if (!parsed.success) throw badPayload(parsed.error);
  const p = parsed.data;
  const log = deps.logger.child({ job: job.id, room: p.room, session: p.session });
  return finalizeSession(p, deps, new InProcessDriver(job, deps, log, opts), log);
}

class InProcessDriver implements StageDriver {
  constructor(
    private readonly job: Job,
    private readonly deps: TranscodeDeps,
    private readonly log: Logger,
    private readonly opts: InProcessOptions,
  ) {}

  async step(spec: StepSpec, calls: StageCall[]): Promise<unknown[]> {
    await this.report(spec.pct, spec.stage);
    await spec.onStart?.();
    const asr = calls.filter((c) => STAGES[c.name].queue === 'asr').length;
    const asrLanes = Math.max(1, Math.min(asr, this.opts.asrConcurrency));
    const lanes = { media: limiter(this.opts.concurrency), asr: limiter(asrLanes) };
    const settled = await Promise.allSettled(
      calls.map((c) =>
        lanes[STAGES[c.name].queue](async () => {
          const log = this.log.child({ stage: c.name, id: c.id });
          const signal = this.opts.signal;
          return STAGES[c.name].result.parse(await runStage(c.name, c.payload, { deps: this.deps, log, asrLanes, progress: async () => {}, ...(signal ? { signal } : {}) }));
        }),
      ),
    );
    // Every stage of the step has settled (no ffmpeg left running behind the job) before a failure is reported.
    const failed = settled.find((s) => s.status === 'rejected');
    if (failed) throw failed.reason;
    return settled.map((s) => (s as PromiseFulfilledResult<unknown>).value);
  }

  async report(pct: number, stage: string): Promise<void> {
    await this.job.updateProgress({ pct, stage });
  }

  async failedForGood(): Promise<void> {
    // Nothing to reset: a retry of this job runs every stage again.
  }
}

/** At most n of the functions passed run at once. */
function limiter(n: number): <T>(fn: () => Promise<T>) => Promise<T> {
  let active = 0;
  const waiting: (() => void)[] = [];
  return async <T>(fn: () => Promise<T>): Promise<T> => {
    // A finishing call hands its slot straight to the next waiting one.
    if (active < Math.max(1, n)) active++;
    else await new Promise<void>((r) => waiting.push(r));
    try {
      return await fn();
    } finally {
      const next = waiting.shift();
      if (next) next();
      else active--;
    }
  };
}
