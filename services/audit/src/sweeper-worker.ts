import { Queue, Worker, type Job } from 'bullmq';
import type { Db } from '../../../db/database.ts';
import type { Logger } from '../../lib/logger.ts';
import { redisConnection } from '../../lib/redis.ts';
import type { ArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { AuditLog } from './audit-log.ts';
import { RETENTION_JOB, RetentionSweeper, scheduleSweeper } from './retention.ts';

export const RETENTION_QUEUE = 'retention';

export interface SweeperWorkerOptions {
  db: Db;
  storage: ArtifactStorage;
  recordingsDir: string;
  redisUrl: string;
  queuePrefix?: string;
  /** Sweep interval (RETENTION_SWEEP_INTERVAL_MS). */
  everyMs: number;
  logger: Logger;
  now?: () => Date;
}

export interface SweepSummary {
  at: string;
  dryRun: boolean;
  decisions: number;
  deleted: number;
  skippedHeld: number;
}

/**
 * Runs the retention sweeper on a BullMQ job scheduler: one scheduler id for the whole
 * deployment, so however many processes run this worker, each interval is swept once (by
 * whichever worker takes the job). A sweep that fails is logged and the next interval tries
 * again; every deletion is audited by the sweeper itself.
 */
export class SweeperWorker {
  readonly queue: Queue;
  readonly worker: Worker;
  readonly sweeper: RetentionSweeper;

  constructor(private readonly opts: SweeperWorkerOptions) {
    const connection = redisConnection(opts.redisUrl);
    const prefix = opts.queuePrefix ? { prefix: opts.queuePrefix } : {};
    this.sweeper = new RetentionSweeper({ db: opts.db, storage: opts.storage, audit: new AuditLog(opts.db), recordingsDir: opts.recordingsDir, ...(opts.now ? { now: opts.now } : {}) });
    this.queue = new Queue(RETENTION_QUEUE, { connection, ...prefix, defaultJobOptions: { removeOnComplete: 100, removeOnFail: 100 } });
    this.worker = new Worker(
      RETENTION_QUEUE,
      async (job: Job): Promise<SweepSummary> => {
        if (job.name !== RETENTION_JOB) throw new Error(`unknown job ${job.name}`);
        const r = await this.sweeper.sweep({ dryRun: (job.data as { dryRun?: unknown }).dryRun === true });
        const summary = { at: r.at.toISOString(), dryRun: r.dryRun, decisions: r.decisions.length, deleted: r.deleted.length, skippedHeld: r.skippedHeld.length };
        if (summary.deleted > 0 || summary.skippedHeld > 0) opts.logger.info(summary, 'retention sweep');
        return summary;
      },
      // One sweep at a time per process; the sweeper serializes with holds through the database.
      { connection, ...prefix, concurrency: 1 },
    );
    this.worker.on('failed', (job, err) => opts.logger.error({ job: job?.id, err: err.message }, 'retention sweep failed'));
  }

  async start(): Promise<void> {
    await this.worker.waitUntilReady();
    await scheduleSweeper(this.queue, this.opts.everyMs);
    this.opts.logger.info({ everyMs: this.opts.everyMs }, 'retention sweeper scheduled');
  }

  /** Removes the schedule (no more sweeps anywhere until a worker starts again). */
  async unschedule(): Promise<void> {
    await this.queue.removeJobScheduler('retention-sweeper');
  }

  async close(): Promise<void> {
    await this.worker.close();
    await this.queue.close();
  }
}
