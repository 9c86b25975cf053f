import { randomUUID } from 'node:crypto';
import { Queue, UnrecoverableError, Worker, type Job, type JobsOptions } from 'bullmq';
import type { Kysely } from 'kysely';
import { z } from 'zod';
import type { Database } from '../../../../db/schema.ts';
import { VerbatimError } from '../../../lib/errors.ts';
import type { Logger } from '../../../lib/logger.ts';
import { redisConnection } from '../../../lib/redis.ts';
import { evaluatePolicy } from './evaluate.ts';
import { SupervisionPolicies } from './policies.ts';

/**
 * A policy version run over the transcripts already stored, in the background: a job on the
 * `supervision` queue (taken by whichever compliance process runs its worker), its progress in
 * the supervision_runs row for clients to poll. Creating or changing a policy starts one.
 * Re-running is harmless: evaluation files each item and hit once (evaluate.ts).
 */

export const SUPERVISION_QUEUE = 'supervision';
export const SUPERVISION_RUN_JOB = 'supervision.run';
export const SupervisionRunPayloadSchema = z.object({ v: z.literal(1), run: z.string().min(1) });
export type SupervisionRunPayload = z.output<typeof SupervisionRunPayloadSchema>;
const JOB_OPTIONS: JobsOptions = { attempts: 3, backoff: { type: 'exponential', delay: 5000 }, removeOnComplete: { age: 7 * 24 * 3600 }, removeOnFail: { age: 30 * 24 * 3600 } };

export interface RunRecord {
  id: string;
  policy: string;
  policyVersion: number;
  status: 'queued' | 'running' | 'done' | 'failed';
  progress: { sessionsDone: number; sessionsTotal: number; pct: number };
  itemsTouched: number;
  hitsFound: number;
  requestedBy: string;
  error: string | null;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

export interface SupervisionRunsOptions {
  db: Kysely<Database>;
  redisUrl?: string | undefined;
  queuePrefix?: string | undefined;
  logger: Logger;
}

export class SupervisionRuns {
  private queue: Queue | undefined;
  private worker: Worker | undefined;

  constructor(private readonly opts: SupervisionRunsOptions) {}

  private connection() {
    if (!this.opts.redisUrl) {
      throw new VerbatimError('CONFIG_INVALID', 'policy runs are background jobs on the job queues, and this process was started without them', { hint: 'Set REDIS_URL (npm start passes its own to the compliance service).' });
    }
    return { connection: redisConnection(this.opts.redisUrl), ...(this.opts.queuePrefix ? { prefix: this.opts.queuePrefix } : {}) };
  }

  /** Records a run of the policy's version and queues its job. */
  async request(policy: string, version: number, requestedBy: string): Promise<RunRecord> {
    const c = this.connection();
    const id = randomUUID();
    await this.opts.db.insertInto('supervision_runs').values({ id, policy_id: policy, policy_version: version, status: 'queued', requested_by: requestedBy }).execute();
    this.queue ??= new Queue(SUPERVISION_QUEUE, c);
    await this.queue.add(SUPERVISION_RUN_JOB, { v: 1, run: id } satisfies SupervisionRunPayload, { ...JOB_OPTIONS, jobId: `supervision.${id}` });
    return (await this.get(id))!;
  }

  async get(id: string): Promise<RunRecord | undefined> {
    const r = await this.opts.db.selectFrom('supervision_runs').selectAll().where('id', '=', id).executeTakeFirst();
    return r ? toRecord(r) : undefined;
  }

  async list(policy: string): Promise<RunRecord[]> {
    return (await this.opts.db.selectFrom('supervision_runs').selectAll().where('policy_id', '=', policy).orderBy('created_at', 'desc').limit(50).execute()).map(toRecord);
  }

  /** Runs this process's worker (one run at a time). */
  async start(): Promise<void> {
    this.worker = new Worker(SUPERVISION_QUEUE, (job) => this.process(job), { ...this.connection(), concurrency: 1 });
    this.worker.on('failed', (job, err) => void this.onFailed(job, err));
    await this.worker.waitUntilReady();
  }

  async close(): Promise<void> {
    await this.worker?.close();
    await this.queue?.close();
  }

  private async onFailed(job: Job | undefined, err: Error): Promise<void> {
    if (!job) return;
    const last = err.name === 'UnrecoverableError' || job.attemptsMade >= (job.opts.attempts ?? 1);
    const id = (job.data as Partial<SupervisionRunPayload>).run;
    this.opts.logger.error({ job: job.id, run: id, err: err.message, last }, 'supervision run failed');
    if (!last || !id) return;
    await this.opts.db
      .updateTable('supervision_runs')
      .set({ status: 'failed', error_message: err.message.slice(0, 1000), finished_at: new Date() })
      .where('id', '=', id)
      .execute()
      .catch((e: unknown) => this.opts.logger.error({ err: e, run: id }, 'could not record the failed supervision run'));
  }

  private async process(job: Job): Promise<void> {
    const parsed = SupervisionRunPayloadSchema.safeParse(job.data);
    if (!parsed.success) throw new UnrecoverableError(`BAD_PAYLOAD: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
    const { db } = this.opts;
    const run = await db.selectFrom('supervision_runs').selectAll().where('id', '=', parsed.data.run).executeTakeFirst();
    if (!run) throw new UnrecoverableError(`NOT_FOUND: no supervision run ${parsed.data.run}`);
    if (run.status === 'done') return;
    const log = this.opts.logger.child({ run: run.id, policy: run.policy_id, version: run.policy_version });
    const policy = await new SupervisionPolicies(db).loadVersion(run.policy_id, run.policy_version);
    await db.updateTable('supervision_runs').set({ status: 'running', started_at: new Date(), error_message: null }).where('id', '=', run.id).execute();
    const result = await evaluatePolicy(db, policy, {
      onProgress: async (done, total, sofar) => {
        await db.updateTable('supervision_runs').set({ sessions_done: done, sessions_total: total, items_touched: sofar.items, hits_found: sofar.hits }).where('id', '=', run.id).execute();
        await job.updateProgress(total === 0 ? 100 : Math.floor((100 * done) / total));
      },
    });
    await db
      .updateTable('supervision_runs')
      .set({ status: 'done', sessions_done: result.sessions, sessions_total: result.sessions, items_touched: result.items, hits_found: result.hits, finished_at: new Date() })
      .where('id', '=', run.id)
      .execute();
    log.info({ sessions: result.sessions, items: result.items, hits: result.hits, sampled: result.sampled }, 'supervision run finished');
  }
}

function toRecord(r: {
  id: string;
  policy_id: string;
  policy_version: number;
  status: RunRecord['status'];
  sessions_total: number;
  sessions_done: number;
  items_touched: number;
  hits_found: number;
  requested_by: string;
  error_message: string | null;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
}): RunRecord {
  const iso = (d: Date | null) => (d ? new Date(d).toISOString() : null);
  return {
    id: r.id,
    policy: r.policy_id,
    policyVersion: r.policy_version,
    status: r.status,
    progress: { sessionsDone: r.sessions_done, sessionsTotal: r.sessions_total, pct: r.status === 'done' ? 100 : r.sessions_total === 0 ? 0 : Math.floor((100 * r.sessions_done) / r.sessions_total) },
    itemsTouched: r.items_touched,
    hitsFound: r.hits_found,
    requestedBy: r.requested_by,
    error: r.error_message,
    createdAt: new Date(r.created_at).toISOString(),
    startedAt: iso(r.started_at),
    finishedAt: iso(r.finished_at),
  };
}
