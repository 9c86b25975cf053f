import { Queue, Worker, type Job } from 'bullmq';
import type { Db } from '../../../../db/database.ts';
import type { Logger } from '../../../lib/logger.ts';
import { redisConnection } from '../../../lib/redis.ts';
import type { ArtifactStorage } from '../../../lib/storage/artifact-storage.ts';
import { AuditLog } from '../audit-log.ts';
import { PROCESSING_GRACE_MS, Reconciler } from './reconciliation.ts';

export const RECONCILE_QUEUE = 'capture-reconciliation';
export const RECONCILE_JOB = 'capture.reconcile';
/** One scheduler id for the deployment: however many compliance processes run, one reconciliation per interval. */
export const RECONCILE_SCHEDULER_ID = 'capture-reconciler';

export interface ReconciliationWorkerOptions {
  db: Db;
  storage: ArtifactStorage;
  redisUrl: string;
  queuePrefix?: string;
  /** RECONCILE_INTERVAL_MS: each run covers the interval that just ended. */
  everyMs: number;
  gapSeconds: number;
  logger: Logger;
  now?: () => Date;
}

/**
 * Runs capture reconciliation on a BullMQ job scheduler (as the retention sweeper does). Each
 * scheduled run covers the interval that ended PROCESSING_GRACE_MS ago, so every session in it
 * has had its time to be transcoded and transcribed (none is left pending, never to be judged);
 * a run that fails is stored as failed, logged, and the next interval tries again (its window
 * does not cover the failed one: run that on demand).
 */
export class ReconciliationWorker {
  readonly queue: Queue;
  readonly worker: Worker;
  readonly reconciler: Reconciler;

  constructor(private readonly opts: ReconciliationWorkerOptions) {
    const connection = redisConnection(opts.redisUrl);
    const prefix = opts.queuePrefix ? { prefix: opts.queuePrefix } : {};
    this.reconciler = new Reconciler({ db: opts.db, storage: opts.storage, audit: new AuditLog(opts.db), logger: opts.logger, gapSeconds: opts.gapSeconds, ...(opts.now ? { now: opts.now } : {}) });
    this.queue = new Queue(RECONCILE_QUEUE, { connection, ...prefix, defaultJobOptions: { removeOnComplete: 100, removeOnFail: 100 } });
    this.worker = new Worker(
      RECONCILE_QUEUE,
      async (job: Job) => {
        if (job.name !== RECONCILE_JOB) throw new Error(`unknown job ${job.name}`);
        const to = new Date((opts.now?.() ?? new Date()).getTime() - PROCESSING_GRACE_MS);
        const run = await this.reconciler.run({ from: new Date(to.getTime() - opts.everyMs), to }, 'capture-reconciler');
        return { run: run.id, summary: run.summary };
      },
      { connection, ...prefix, concurrency: 1 },
    );
    this.worker.on('failed', (job, err) => opts.logger.error({ job: job?.id, err: err.message }, 'capture reconciliation failed'));
  }

  async start(): Promise<void> {
    await this.worker.waitUntilReady();
    await this.queue.upsertJobScheduler(RECONCILE_SCHEDULER_ID, { every: this.opts.everyMs }, { name: RECONCILE_JOB, data: {} });
    this.opts.logger.info({ everyMs: this.opts.everyMs }, 'capture reconciliation scheduled');
  }

  async unschedule(): Promise<void> {
    await this.queue.removeJobScheduler(RECONCILE_SCHEDULER_ID);
  }

  async close(): Promise<void> {
    await this.worker.close();
    await this.queue.close();
  }
}
