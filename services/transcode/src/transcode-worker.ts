import { Queue, Worker } from 'bullmq';
import type { Db } from '../../../db/database.ts';
import { SESSION_FINALIZE_JOB, TRANSCODE_QUEUE, finalizeJobId, type SessionFinalizePayload } from '../../lib/contracts/jobs.ts';
import type { Logger } from '../../lib/logger.ts';
import { redisConnection } from '../../lib/redis.ts';
import { processFinalizeJob, type FinalizeDeps } from './finalize-job.ts';

export interface TranscodeWorkerOptions extends FinalizeDeps {
  redisUrl: string;
  queuePrefix?: string;
  concurrency: number;
  /** Lock on a running job; a crashed worker's job is picked up once it expires. */
  lockMs?: number;
  /** How often the database reconciler looks for sealed sessions without a job. */
  reconcileEveryMs?: number;
}

/**
 * A transcode worker process: consumes `session.finalize` jobs (retries with
 * exponential backoff come from the job options; stalled jobs of a crashed worker are
 * picked up again by BullMQ), and reconciles from the database so that losing Redis
 * loses no work: every sealed session without a queued job is enqueued again.
 */
export class TranscodeWorker {
  readonly worker: Worker;
  readonly queue: Queue;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: TranscodeWorkerOptions) {
    const connection = redisConnection(opts.redisUrl);
    const prefix = opts.queuePrefix ? { prefix: opts.queuePrefix } : {};
    this.queue = new Queue(TRANSCODE_QUEUE, { connection, ...prefix });
    this.worker = new Worker(
      TRANSCODE_QUEUE,
      async (job) => {
        if (job.name !== SESSION_FINALIZE_JOB) throw new Error(`unknown job ${job.name}`);
        return processFinalizeJob(job, opts);
      },
      { connection, ...prefix, concurrency: opts.concurrency, lockDuration: opts.lockMs ?? 60_000, stalledInterval: Math.max(1000, Math.floor((opts.lockMs ?? 60_000) / 2)), maxStalledCount: 3 },
    );
    this.worker.on('failed', (job, err) => opts.logger.error({ job: job?.id, err: err.message, attempts: job?.attemptsMade }, 'finalize job failed'));
  }

  async start(): Promise<void> {
    await this.worker.waitUntilReady();
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
    await this.queue.close();
  }
}
