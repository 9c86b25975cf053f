import { Queue, Worker, type Job } from 'bullmq';
import type { Db } from '../../../db/database.ts';
import { VerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { redisConnection } from '../../lib/redis.ts';
import { writeCheckpoint, type CheckpointDocument, type CheckpointSigner, type CheckpointStore } from './audit-checkpoints.ts';

export const CHECKPOINT_QUEUE = 'audit-checkpoints';
export const CHECKPOINT_JOB = 'audit.checkpoint';
/** One scheduler id for the whole deployment: however many compliance processes run, one checkpoint per interval. */
export const CHECKPOINT_SCHEDULER_ID = 'audit-checkpointer';

export interface CheckpointWorkerOptions {
  db: Db;
  store: CheckpointStore;
  signer: CheckpointSigner;
  redisUrl: string;
  queuePrefix?: string;
  /** AUDIT_CHECKPOINT_INTERVAL_MS; 0: no schedule, only the checkpoint at close(). */
  everyMs: number;
  logger: Logger;
}

/**
 * Checkpoints the audit chain's head on a BullMQ job scheduler (as the retention sweeper), and
 * once more when the process stops. A checkpoint that cannot be written (the chain was tampered
 * with, storage is down) is logged as an error and tried again at the next interval.
 */
export class CheckpointWorker {
  readonly queue: Queue;
  readonly worker: Worker;

  constructor(private readonly opts: CheckpointWorkerOptions) {
    const connection = redisConnection(opts.redisUrl);
    const prefix = opts.queuePrefix ? { prefix: opts.queuePrefix } : {};
    this.queue = new Queue(CHECKPOINT_QUEUE, { connection, ...prefix, defaultJobOptions: { removeOnComplete: 100, removeOnFail: 100 } });
    this.worker = new Worker(
      CHECKPOINT_QUEUE,
      async (job: Job) => {
        if (job.name !== CHECKPOINT_JOB) throw new Error(`unknown job ${job.name}`);
        const cp = await this.checkpoint();
        return cp ? { seq: cp.seq, at: cp.at } : null;
      },
      { connection, ...prefix, concurrency: 1 },
    );
    this.worker.on('failed', (job, err) => opts.logger.error({ job: job?.id, err: err.message }, 'audit checkpoint failed'));
  }

  async checkpoint(): Promise<CheckpointDocument | null> {
    return writeCheckpoint(this.opts.db, this.opts.store, this.opts.signer);
  }

  async start(): Promise<void> {
    await this.worker.waitUntilReady();
    if (this.opts.everyMs === 0) return;
    if (!Number.isInteger(this.opts.everyMs) || this.opts.everyMs < 1000) {
      throw new VerbatimError('CONFIG_INVALID', `audit checkpoint interval ${this.opts.everyMs} ms is too short`, { hint: 'Set AUDIT_CHECKPOINT_INTERVAL_MS to 0 or at least 1000.' });
    }
    await this.queue.upsertJobScheduler(CHECKPOINT_SCHEDULER_ID, { every: this.opts.everyMs }, { name: CHECKPOINT_JOB, data: {} });
    this.opts.logger.info({ everyMs: this.opts.everyMs, key: `${this.opts.signer.algorithm}:${this.opts.signer.keyId}` }, 'audit checkpoints scheduled');
  }

  /** Stops taking jobs, then checkpoints the head one last time (the chain's state at shutdown). */
  async close(): Promise<void> {
    await this.worker.close();
    await this.queue.close();
    try {
      await this.checkpoint();
    } catch (err) {
      this.opts.logger.error({ err }, 'the checkpoint at shutdown failed');
    }
  }
}
