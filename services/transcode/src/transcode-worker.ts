import { FlowProducer, Queue, UnrecoverableError, WaitingError, Worker, type Job } from 'bullmq';
import type { Db } from '../../../db/database.ts';
import { PARTICIPANT_TRANSCRIBE_JOB, SESSION_FINALIZE_JOB, SESSION_RERENDER_JOB, TRANSCODE_ASR_QUEUE, TRANSCODE_QUEUE, finalizeJobId, type SessionFinalizePayload } from '../../lib/contracts/jobs.ts';
import { redisConnection } from '../../lib/redis.ts';
import { processInProcess } from './in-process-driver.ts';
import { failSessionForGood } from './session-orchestration.ts';
import { processFlowRoot, processStageJob } from './session-flow.ts';
import { isStageName, type TranscodeDeps } from './session-stages.ts';

/** Why a running job was told to stop (the AbortSignal's reason). */
const SHUTDOWN = 'worker shutting down';
const LOCK_LOST = 'job lock lost';
const CONTROL_FLOW = new Set(['WaitingChildrenError', 'WaitingError', 'DelayedError', 'RateLimitError']);

export interface TranscodeWorkerOptions extends TranscodeDeps {
  redisUrl: string;
  queuePrefix?: string;
  concurrency: number;
  /** Lock on a running job; a crashed worker's job is picked up once it expires. */
  lockMs?: number;
  /** How often the database reconciler looks for sealed sessions without a job. */
  reconcileEveryMs?: number;
  /**
   * How a root job (session.finalize, session.rerender) runs the session's stages — the same
   * stages in the same order either way (session-orchestration.ts). 'flow' (default): each
   * stage is a child job, so one session's stages spread over every worker (session-flow.ts);
   * 'single': the stages are called in order inside the root job (in-process-driver.ts).
   */
  mode?: 'flow' | 'single';
  /** Transcription jobs this process runs at once (default 2); they share the transcriber's thread budget. */
  asrConcurrency?: number;
}

/**
 * A transcode worker process: consumes `session.finalize` and `session.rerender` jobs (retries with
 * exponential backoff come from the job options; stalled jobs of a crashed worker are
 * picked up again by BullMQ), and reconciles from the database so that losing Redis
 * loses no work: every sealed session without a queued job is enqueued again.
 *
 * A job's ffmpeg and whisper-cli children live only as long as its claim on the job: each
 * job runs with an AbortSignal (BullMQ's, plus this worker's shutdown) that kills them. On
 * close() the running jobs are stopped and handed back to the queue (waiting, no attempt
 * spent); when a job's lock is lost (renewal refused, or it was declared stalled and may
 * already run elsewhere) its children are killed and the job is left to its new owner.
 */
export class TranscodeWorker {
  readonly worker: Worker;
  readonly queue: Queue;
  private timer: NodeJS.Timeout | undefined;
  private readonly shutdown = new AbortController();

  readonly asrWorker: Worker | undefined;
  private readonly flows: FlowProducer | undefined;

  constructor(private readonly opts: TranscodeWorkerOptions) {
    const connection = redisConnection(opts.redisUrl);
    const prefix = opts.queuePrefix ? { prefix: opts.queuePrefix } : {};
    const lockDuration = opts.lockMs ?? 60_000;
    const workerOpts = { connection, ...prefix, lockDuration, stalledInterval: Math.max(1000, Math.floor(lockDuration / 2)), maxStalledCount: 3 };
    const asrConcurrency = opts.asrConcurrency ?? 2;
    this.queue = new Queue(TRANSCODE_QUEUE, { connection, ...prefix });
    const flow = (opts.mode ?? 'flow') === 'flow';
    this.flows = flow ? new FlowProducer({ connection, ...prefix }) : undefined;
    const ctx = { flows: this.flows!, mediaQueue: TRANSCODE_QUEUE, asrQueue: TRANSCODE_ASR_QUEUE, asrConcurrency };
    this.worker = new Worker(
      TRANSCODE_QUEUE,
      (job: Job, token: string | undefined, signal: AbortSignal | undefined) =>
        this.guarded(job, token, signal, (s) => {
          if (job.name === SESSION_FINALIZE_JOB || job.name === SESSION_RERENDER_JOB) {
            return flow ? processFlowRoot(job, token, opts, ctx) : processInProcess(job, opts, { concurrency: opts.concurrency, asrConcurrency, signal: s });
          }
          if (isStageName(job.name) && job.name !== PARTICIPANT_TRANSCRIBE_JOB) return processStageJob(job, opts, asrConcurrency, s);
          throw new Error(`unknown job ${job.name}`);
        }),
      { ...workerOpts, concurrency: opts.concurrency },
    );
    // Transcription on its own queue and worker, so it runs while the composite renders.
    this.asrWorker = flow
      ? new Worker(
          TRANSCODE_ASR_QUEUE,
          (job: Job, token: string | undefined, signal: AbortSignal | undefined) =>
            this.guarded(job, token, signal, (s) => {
              if (job.name === PARTICIPANT_TRANSCRIBE_JOB) return processStageJob(job, opts, asrConcurrency, s);
              throw new Error(`unknown job ${job.name}`);
            }),
          { ...workerOpts, concurrency: asrConcurrency },
        )
      : undefined;
    for (const w of [this.worker, this.asrWorker]) {
      if (!w) continue;
      w.on('failed', (job, err) => {
        opts.logger.error({ job: job?.id, name: job?.name, err: err.message, attempts: job?.attemptsMade }, 'transcode job failed');
        // A session whose finalize failed for good says why, whatever failed it (a stage's retries, stalls, a bug).
        if (job?.name === SESSION_FINALIZE_JOB) void this.finalizeFailed(job, err);
      });
      // Another worker may own the job now: its children must not keep writing the same files.
      w.on('lockRenewalFailed', (ids) => ids.forEach((id) => w.cancelJob(id, LOCK_LOST)));
      w.on('stalled', (id) => w.cancelJob(id, LOCK_LOST));
      w.on('error', (err) => opts.logger.warn({ err: err.message }, 'transcode worker error'));
    }
  }

  /**
   * Runs a job with a signal that aborts on BullMQ's cancellation (lock lost, cancelJob) and on
   * this worker's shutdown. A job stopped by shutdown goes back to waiting for the next worker;
   * one whose lock was lost is left to whoever holds it; one cancelled otherwise fails, unretried.
   */
  private async guarded(job: Job, token: string | undefined, jobSignal: AbortSignal | undefined, run: (signal: AbortSignal) => Promise<unknown>): Promise<unknown> {
    const signal = jobSignal ? AbortSignal.any([jobSignal, this.shutdown.signal]) : this.shutdown.signal;
    try {
      signal.throwIfAborted();
      return await run(signal);
    } catch (err) {
      if (!signal.aborted || (err instanceof Error && CONTROL_FLOW.has(err.name))) throw err;
      const reason: unknown = signal.reason;
      this.opts.logger.warn({ job: job.id, name: job.name, reason: String(reason) }, 'transcode job stopped');
      if (reason === SHUTDOWN) {
        if (token) await job.moveToWait(token).catch((e: unknown) => this.opts.logger.warn({ job: job.id, err: String(e) }, 'could not hand the job back'));
        throw new WaitingError();
      }
      if (reason === LOCK_LOST) throw new WaitingError();
      throw new UnrecoverableError(`CANCELLED: ${String(reason)}`);
    }
  }

  private async finalizeFailed(job: Job, err: Error): Promise<void> {
    try {
      if ((await job.getState()) !== 'failed') return; // retried later
      const { session } = job.data as { session?: unknown };
      if (typeof session === 'string') await failSessionForGood(this.opts, session, err.message);
    } catch (e) {
      this.opts.logger.error({ job: job.id, err: String(e) }, 'could not mark the failed session');
    }
  }

  async start(): Promise<void> {
    await this.worker.waitUntilReady();
    await this.asrWorker?.waitUntilReady();
    await this.reconcile();
    this.timer = setInterval(() => void this.reconcile().catch((err: unknown) => this.opts.logger.error({ err }, 'reconcile failed')), this.opts.reconcileEveryMs ?? 30_000);
    this.timer.unref();
  }

  /** Enqueues sealed (or interrupted 'processing') sessions that have no job in the queue. */
  async reconcile(): Promise<number> {
    const db: Db = this.opts.db;
    const rows = await db.selectFrom('recording_sessions').select(['id', 'room_id', 'manifest_path', 'manifest_sha256', 'status']).where('status', 'in', ['sealed', 'processing']).execute();
    let added = 0;
    for (const r of rows) {
      if (!r.manifest_path || !r.manifest_sha256) continue;
      const existing = await this.queue.getJob(finalizeJobId(r.id));
      if (existing) continue;
      const payload: SessionFinalizePayload = { v: 1, room: r.room_id, session: r.id, manifestPath: r.manifest_path, manifestSha256: r.manifest_sha256 };
      await this.queue.add(SESSION_FINALIZE_JOB, payload, { jobId: finalizeJobId(r.id), attempts: 5, backoff: { type: 'exponential', delay: 5000 }, removeOnComplete: 1000 });
      added++;
    }
    if (added > 0) this.opts.logger.warn({ added }, 'reconciler re-enqueued sealed sessions');
    return added;
  }

  /**
   * Stops the worker without waiting for long encodes: running jobs are aborted (their ffmpeg
   * and whisper-cli children get SIGTERM, then SIGKILL after a grace period) and handed back
   * to the queue, so this returns within seconds and leaves no child process behind.
   */
  async close(): Promise<void> {
    clearInterval(this.timer);
    // Closing first: no job is fetched after this, and the ones running see the abort.
    const closing = Promise.all([this.worker.close(), this.asrWorker?.close()]);
    this.shutdown.abort(SHUTDOWN);
    await closing;
    await this.flows?.close();
    await this.queue.close();
  }
}
