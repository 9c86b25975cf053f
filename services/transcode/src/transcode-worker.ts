import { FlowProducer, Queue, Worker, type Job } from 'bullmq';
import type { Db } from '../../../db/database.ts';
import { PARTICIPANT_TRANSCRIBE_JOB, SESSION_FINALIZE_JOB, SESSION_RERENDER_JOB, TRANSCODE_ASR_QUEUE, TRANSCODE_QUEUE, finalizeJobId, type SessionFinalizePayload } from '../../lib/contracts/jobs.ts';
import { redisConnection } from '../../lib/redis.ts';
import { processInProcess } from './in-process-driver.ts';
import { processFlowRoot, processStageJob } from './session-flow.ts';
import { isStageName, type TranscodeDeps } from './session-stages.ts';

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
 */
export class TranscodeWorker {
  readonly worker: Worker;
  readonly queue: Queue;
  private timer: NodeJS.Timeout | undefined;

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
      async (job: Job, token?: string) => {
        if (job.name === SESSION_FINALIZE_JOB || job.name === SESSION_RERENDER_JOB) {
          return flow ? processFlowRoot(job, token, opts, ctx) : processInProcess(job, opts, { concurrency: opts.concurrency, asrConcurrency });
        }
        if (isStageName(job.name) && job.name !== PARTICIPANT_TRANSCRIBE_JOB) return processStageJob(job, opts, asrConcurrency);
        throw new Error(`unknown job ${job.name}`);
      },
      { ...workerOpts, concurrency: opts.concurrency },
    );
    // Transcription on its own queue and worker, so it runs while the composite renders.
    this.asrWorker = flow
      ? new Worker(
          TRANSCODE_ASR_QUEUE,
          async (job: Job) => {
            if (job.name === PARTICIPANT_TRANSCRIBE_JOB) return processStageJob(job, opts, asrConcurrency);
            throw new Error(`unknown job ${job.name}`);
          },
          { ...workerOpts, concurrency: asrConcurrency },
        )
      : undefined;
    for (const w of [this.worker, this.asrWorker]) {
      w?.on('failed', (job, err) => opts.logger.error({ job: job?.id, name: job?.name, err: err.message, attempts: job?.attemptsMade }, 'transcode job failed'));
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

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.worker.close();
    await this.asrWorker?.close();
    await this.flows?.close();
    await this.queue.close();
  }
}
