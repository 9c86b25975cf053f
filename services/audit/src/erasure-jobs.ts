import { randomUUID } from 'node:crypto';
import { DelayedError, Queue, QueueEvents, UnrecoverableError, Worker, type Job, type JobsOptions } from 'bullmq';
import { z } from 'zod';
import type { ErasureStatus } from '../../../db/schema.ts';
import { SESSION_RERENDER_JOB, SessionRerenderResultSchema, TRANSCODE_QUEUE, rerenderJobId, type SessionRerenderPayload, type SessionRerenderResult } from '../../lib/contracts/jobs.ts';
import { VerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { redisConnection } from '../../lib/redis.ts';
import { ErasureService, FINAL_STATUSES, type ErasureInput, type ErasureJobContext, type ErasureOptions, type ErasureRecord, type ErasureStep, type SessionWork } from './erasure.ts';
import type { Actor } from './retention.ts';

/**
 * GDPR erasure requests as background jobs, like exports: the request is recorded and answered
 * at once (202), and the work runs as a BullMQ job on the `erasure` queue, on whichever
 * compliance process (or `verbatim erasure request`) takes it. Its progress is written to the
 * request's row for clients to poll. The composite re-render is a transcode `session.rerender`
 * job (services/lib/contracts/jobs.ts) that this job queues and waits for (QueueEvents), passing
 * its progress on.
 *
 * A restart mid-erasure resumes: every step of every session is recorded in the row together with
 * its effects (erasure.ts), so a job taken over after a crash (stalled lock), retried after an
 * error, or re-queued by the reconciler (Redis lost) continues with the next step, never repeating
 * or skipping one. A job that still fails after its retries marks the request failed with
 * ERASURE_FAILED; submitting the same request again resumes it.
 */

export const ERASURE_QUEUE = 'erasure';
export const ERASURE_JOB = 'erasure.request';
/** The erasure queue's job (v1): which request to run; everything else is in its row. */
export const ErasureJobPayloadSchema = z.object({ v: z.literal(1), request: z.string().min(1) });
export type ErasureJobPayload = z.output<typeof ErasureJobPayloadSchema>;
export const erasureJobId = (request: string): string => `erasure.${request}`;

const ERASURE_JOB_OPTIONS: JobsOptions = { attempts: 5, backoff: { type: 'exponential', delay: 5000 }, removeOnComplete: { age: 7 * 24 * 3600 }, removeOnFail: { age: 30 * 24 * 3600 } };
const RERENDER_JOB_OPTIONS: JobsOptions = { attempts: 3, backoff: { type: 'exponential', delay: 5000 }, removeOnComplete: { age: 7 * 24 * 3600 }, removeOnFail: { age: 30 * 24 * 3600 } };

/** How far into a session each step starts (the composite step takes most of the rest). */
const STEP_SHARE: Record<ErasureStep, number> = { erase: 0, raw: 0.15, transcripts: 0.25, composite: 0.3, audit: 0.95, done: 1 };
const STEP_LABEL: Record<ErasureStep, string> = {
  erase: 'erasing their rows and files',
  raw: 'deleting their raw recording',
  transcripts: 'rebuilding the transcript',
  composite: 're-rendering the composite',
  audit: 'recording the outcome',
  done: 'done',
};

export interface ErasureJobsOptions extends ErasureOptions {
  /** The job queues' Redis (REDIS_URL): the erasure queue, and transcode's for the re-render. */
  redisUrl?: string | undefined;
  queuePrefix?: string | undefined;
  /** Lock of a running erasure job: a crashed process's job is taken over once it expires. */
  lockMs?: number;
  /** Minimum time between progress writes while a re-render runs. */
  progressEveryMs?: number;
  logger: Logger;
}

/** Thrown inside a job when the process is stopping: the job is parked and resumes later. */
class Stopping extends Error {}

export class ErasureJobs {
  readonly service: ErasureService;
  private queue: Queue | undefined;
  private worker: Worker | undefined;
  private transcode: Queue | undefined;
  private transcodeEvents: QueueEvents | undefined;
  private readonly stopping = new AbortController();

  constructor(private readonly opts: ErasureJobsOptions) {
    this.service = new ErasureService(opts);
  }

  private connection() {
    if (!this.opts.redisUrl) {
      throw new VerbatimError('CONFIG_INVALID', 'erasure runs as a background job on the job queues, and this process was started without them', {
        hint: 'Set REDIS_URL to the Redis the transcode workers use (npm start passes its own to the compliance service).',
      });
    }
    return { connection: redisConnection(this.opts.redisUrl), ...(this.opts.queuePrefix ? { prefix: this.opts.queuePrefix } : {}) };
  }

  private erasureQueue(): Queue {
    return (this.queue ??= new Queue(ERASURE_QUEUE, this.connection()));
  }

  get(id: string): Promise<ErasureRecord | undefined> {
    return this.service.get(id);
  }

  list(opts: { participant?: string | undefined } = {}): Promise<ErasureRecord[]> {
    return this.service.list(opts);
  }

  /**
   * Records the request and queues its job; resolves with the request as accepted. A participant
   * with nothing stored is completed at once. An earlier request for the same participant and
   * scope that failed as a whole (ERASURE_FAILED) is resumed instead of starting another.
   */
  async request(input: ErasureInput): Promise<ErasureRecord> {
    const { db } = this.opts;
    const resumable = await db
      .selectFrom('erasure_requests')
      .select('id')
      .where('participant_id', '=', input.participant)
      .where('status', '=', 'failed')
      .where('error_code', '=', 'ERASURE_FAILED')
      .where((eb) => (input.session === undefined ? eb('session_id', 'is', null) : eb('session_id', '=', input.session)))
      .orderBy('requested_at', 'desc')
      .executeTakeFirst();
    if (resumable) {
      this.connection();
      await db.updateTable('erasure_requests').set({ status: 'pending', error_code: null, error_message: null, stage: 'resuming', completed_at: null }).where('id', '=', resumable.id).execute();
      await this.enqueue(resumable.id);
      return (await this.get(resumable.id))!;
    }
    const sessions = await this.service.scope(input);
    if (sessions.length > 0) this.connection();
    const id = randomUUID();
    const now = this.service.now();
    const works: SessionWork[] = sessions.map((session) => ({ session, step: 'erase' }));
    await db
      .insertInto('erasure_requests')
      .values({
        id,
        participant_id: input.participant,
        session_id: input.session ?? null,
        reason: input.reason,
        status: sessions.length > 0 ? 'pending' : 'completed',
        requested_by: `${input.requestedBy.type}:${input.requestedBy.id}`,
        requested_at: now,
        sessions: JSON.stringify(works),
        progress: sessions.length > 0 ? 0 : 100,
        completed_at: sessions.length > 0 ? null : now,
      })
      .execute();
    if (sessions.length > 0) await this.enqueue(id);
    return (await this.get(id))!;
  }

  private async enqueue(id: string): Promise<void> {
    const q = this.erasureQueue();
    const jobId = erasureJobId(id);
    const existing = await q.getJob(jobId);
    // A finished job of a request that runs again (resumed, or re-queued by the reconciler).
    if (existing && ((await existing.isFailed()) || (await existing.isCompleted()))) await existing.remove();
    await q.add(ERASURE_JOB, { v: 1, request: id } satisfies ErasureJobPayload, { ...ERASURE_JOB_OPTIONS, jobId });
  }

  /** Whether some process consumes the erasure queue now. */
  async workersConnected(): Promise<boolean> {
    return (await this.erasureQueue().getWorkersCount()) > 0;
  }

  /** Runs this process's erasure worker (one request at a time) and re-queues requests that lost their job. */
  async start(): Promise<void> {
    const c = this.connection();
    const lockDuration = this.opts.lockMs ?? 30_000;
    this.worker = new Worker(ERASURE_QUEUE, (job, token) => this.process(job, token), { ...c, concurrency: 1, lockDuration, stalledInterval: Math.max(1000, Math.floor(lockDuration / 2)), maxStalledCount: 10 });
    this.worker.on('failed', (job, err) => void this.onFailed(job, err));
    await this.worker.waitUntilReady();
    await this.reconcile();
  }

  /** Requests still pending or running whose job is gone (Redis lost) are queued again. */
  async reconcile(): Promise<number> {
    const rows = await this.opts.db.selectFrom('erasure_requests').select('id').where('status', 'in', ['pending', 'running']).execute();
    let added = 0;
    for (const r of rows) {
      const job = await this.erasureQueue().getJob(erasureJobId(r.id));
      if (job && !(await job.isCompleted()) && !(await job.isFailed())) continue;
      // Its job may have finished it since the rows were read.
      const now = await this.opts.db.selectFrom('erasure_requests').select('status').where('id', '=', r.id).executeTakeFirst();
      if (!now || FINAL_STATUSES.includes(now.status)) continue;
      await this.enqueue(r.id);
      added++;
    }
    if (added > 0) this.opts.logger.warn({ added }, 'erasure requests re-queued');
    return added;
  }

  /** Polls the request until it is finished. */
  async waitFor(id: string, opts: { pollMs?: number } = {}): Promise<ErasureRecord> {
    for (;;) {
      const r = await this.get(id);
      if (!r) throw new VerbatimError('NOT_FOUND', `no erasure request ${id}`, { hint: 'List them with `verbatim erasure list`.' });
      if (FINAL_STATUSES.includes(r.status)) return r;
      await new Promise((res) => setTimeout(res, opts.pollMs ?? 250));
    }
  }

  async close(): Promise<void> {
    this.stopping.abort();
    await this.worker?.close();
    await this.transcodeEvents?.close();
    await this.transcode?.close();
    await this.queue?.close();
  }

  private async onFailed(job: Job | undefined, err: Error): Promise<void> {
    if (!job) return;
    const last = err.name === 'UnrecoverableError' || job.attemptsMade >= (job.opts.attempts ?? 1);
    const id = (job.data as Partial<ErasureJobPayload>).request;
    this.opts.logger.error({ job: job.id, request: id, err: err.message, attempts: job.attemptsMade, last }, 'erasure job failed');
    if (!last || !id) return;
    await this.opts.db
      .updateTable('erasure_requests')
      .set({ status: 'failed', error_code: 'ERASURE_FAILED', error_message: err.message.slice(0, 1000), stage: null, completed_at: this.service.now() })
      .where('id', '=', id)
      .where('status', 'in', ['pending', 'running'])
      .execute()
      .catch((e: unknown) => this.opts.logger.error({ err: e, request: id }, 'could not record the failed erasure request'));
  }

  private async process(job: Job, token: string | undefined): Promise<void> {
    const parsed = ErasureJobPayloadSchema.safeParse(job.data);
    if (!parsed.success) throw new UnrecoverableError(`BAD_PAYLOAD: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
    const { db } = this.opts;
    const row = await db.selectFrom('erasure_requests').selectAll().where('id', '=', parsed.data.request).executeTakeFirst();
    if (!row) throw new UnrecoverableError(`NOT_FOUND: no erasure request ${parsed.data.request}`);
    if (FINAL_STATUSES.includes(row.status)) return; // finished already: a duplicate job
    const req: ErasureJobContext = { id: row.id, participant: row.participant_id, reason: row.reason, actor: actorOf(row.requested_by) };
    const works = (typeof row.sessions === 'string' ? JSON.parse(row.sessions) : row.sessions) as SessionWork[];
    const log = this.opts.logger.child({ request: req.id, job: job.id });
    await db.updateTable('erasure_requests').set({ status: 'running', error_code: null, error_message: null }).where('id', '=', req.id).execute();
    try {
      for (let i = 0; i < works.length; i++) {
        for (let w = works[i]!; w.step !== 'done'; w = works[i]!) {
          if (this.stopping.signal.aborted) throw new Stopping();
          await this.progress(req.id, works, i, 0);
          if (w.step === 'erase') await this.service.erase(req, works, i).catch((err: unknown) => this.service.failed(req, works, i, err));
          else if (w.step === 'raw') await this.service.eraseRaw(req, works, i);
          else if (w.step === 'transcripts') await this.service.rebuildTranscripts(req, works, i);
          else if (w.step === 'composite') await this.composite(req, works, i, log);
          else await this.service.auditSession(req, works, i);
        }
      }
    } catch (err) {
      if (!(err instanceof Stopping)) throw err;
      // The process is stopping: park the job; this or another process resumes it from its recorded step.
      log.info('erasure parked while the process stops');
      await job.moveToDelayed(Date.now() + 1000, token);
      throw new DelayedError();
    }
    const outcome = works.map((w) => w.outcome!);
    const states = new Set(outcome.map((o) => o.state));
    const status: ErasureStatus = states.has('failed') ? 'failed' : states.has('restricted') ? (states.has('erased') ? 'partial' : 'restricted') : 'completed';
    const holds = [...new Set(outcome.flatMap((o) => (o.holds ?? []).map((h) => h.id)))];
    await db
      .updateTable('erasure_requests')
      .set({ status, holds: JSON.stringify(holds), outcome: JSON.stringify(outcome), progress: 100, stage: null, completed_at: this.service.now() })
      .where('id', '=', req.id)
      .execute();
    log.info({ status, sessions: works.length }, 'erasure request finished');
  }

  /** The composite step: nothing, a deletion, or a re-render by transcode (deleted instead when that fails). */
  private async composite(req: ErasureJobContext, works: SessionWork[], i: number, log: Logger): Promise<void> {
    const plan = this.service.compositePlan(works[i]!);
    if (plan.kind === 'none') return this.service.noComposite(req, works, i);
    if (plan.kind === 'drop') return this.service.dropComposite(req, works, i, plan.why, plan.note);
    let result: SessionRerenderResult;
    try {
      result = await this.rerender(req, works, i, { ...plan.payload, requestedBy: { type: 'erasure', id: req.id } });
      const key = works[i]!.erased!.composite!.key;
      if (result.composite.key !== key) throw new Error(`the re-render stored ${result.composite.key}, not the session's composite ${key}`);
    } catch (err) {
      if (err instanceof Stopping) throw err;
      log.error({ err, session: works[i]!.session }, 'erasure: composite re-render failed; deleting the composite');
      const note = `re-rendering the composite failed (${(err as Error).message.slice(0, 200)}), so it was deleted rather than kept with the participant in it`;
      return this.service.dropComposite(req, works, i, 'deleted: re-render failed', note);
    }
    await this.service.replaceComposite(req, works, i, result);
  }

  /** Queues the session's re-render on transcode (once: a deterministic job id) and waits for it, passing its progress on. */
  private async rerender(req: ErasureJobContext, works: SessionWork[], i: number, payload: SessionRerenderPayload): Promise<SessionRerenderResult> {
    const c = this.connection();
    this.transcode ??= new Queue(TRANSCODE_QUEUE, c);
    this.transcodeEvents ??= new QueueEvents(TRANSCODE_QUEUE, c);
    const events = this.transcodeEvents;
    const jobId = rerenderJobId(req.id, payload.session);
    const job = (await this.transcode.getJob(jobId)) ?? (await this.transcode.add(SESSION_RERENDER_JOB, payload, { ...RERENDER_JOB_OPTIONS, jobId }));
    if ((await this.transcode.getWorkersCount()) === 0) {
      this.opts.logger.warn({ request: req.id, session: payload.session }, 'no transcode worker is connected: the composite re-render waits for one');
      await this.progress(req.id, works, i, 0, 're-rendering the composite (waiting for a transcode worker)');
    }
    const every = this.opts.progressEveryMs ?? 500;
    let last = 0;
    const onProgress = ({ jobId: id, data }: { jobId: string; data: unknown }) => {
      const pct = typeof data === 'object' && data !== null ? Number((data as { pct?: unknown }).pct) : Number(data);
      if (id !== jobId || !Number.isFinite(pct) || Date.now() - last < every) return;
      last = Date.now();
      void this.progress(req.id, works, i, pct).catch(() => {});
    };
    events.on('progress', onProgress);
    let onAbort: (() => void) | undefined;
    try {
      const stopped = new Promise<never>((_, reject) => {
        onAbort = () => reject(new Stopping());
        if (this.stopping.signal.aborted) onAbort();
        else this.stopping.signal.addEventListener('abort', onAbort, { once: true });
      });
      return SessionRerenderResultSchema.parse(await Promise.race([job.waitUntilFinished(events), stopped]));
    } finally {
      events.off('progress', onProgress);
      if (onAbort) this.stopping.signal.removeEventListener('abort', onAbort);
    }
  }

  /** The request's progress: sessions done, the current step, and within the composite step the re-render's own progress. */
  private async progress(id: string, works: SessionWork[], i: number, stepPct: number, label?: string): Promise<void> {
    const w = works[i]!;
    const share = STEP_SHARE[w.step] + (w.step === 'composite' ? (0.6 * Math.max(0, Math.min(100, stepPct))) / 100 : 0);
    const pct = Math.min(99, Math.floor((100 * (i + share)) / Math.max(1, works.length)));
    const stage = `${w.session}: ${label ?? (w.step === 'composite' && stepPct > 0 ? `${STEP_LABEL.composite} (${Math.round(stepPct)}%)` : STEP_LABEL[w.step])}`;
    await this.opts.db.updateTable('erasure_requests').set({ progress: pct, stage }).where('id', '=', id).where('status', '=', 'running').execute();
  }
}

/** The requester as stored (`<type>:<id>`), the actor of the request's audit entries. */
function actorOf(requestedBy: string): Actor {
  const at = requestedBy.indexOf(':');
  const type = requestedBy.slice(0, at);
  return { type: type === 'user' || type === 'api_key' ? type : 'service', id: requestedBy.slice(at + 1) };
}
