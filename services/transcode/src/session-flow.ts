import { UnrecoverableError, WaitingChildrenError, type FlowProducer, type Job, type JobsOptions } from 'bullmq';
import {
  FlowStepSchema,
  SESSION_RERENDER_JOB,
  SessionFlowRootSchema,
  SessionRerenderRootSchema,
  flowStageJobId,
  type FlowStep,
} from '../../lib/contracts/jobs.ts';
import { finalizeSession, rerenderSession, type StageCall, type StageDriver, type StepSpec } from './session-orchestration.ts';
import { STAGES, runStage, type StageName, type TranscodeDeps } from './session-stages.ts';

/**
 * The BullMQ driver of the session orchestration (contracts in services/lib/contracts/jobs.ts).
 * A root job (`session.finalize`, `session.rerender`) runs the orchestration; each step's
 * stages become child jobs (FlowProducer), and the root parks in BullMQ's waiting-children
 * state. When they are done the root is processed again and replays the orchestration: the
 * steps it already started (kept in its data as `flowStep`) answer with their children's
 * results, and the next step starts. Children have retries with exponential backoff; a child
 * that fails for good (corrupt input: UnrecoverableError) wakes the root
 * (continueParentOnFailure), which fails with that child's code. Every stage writes to
 * deterministic paths and keys, so any rerun — retry, stalled job taken over after a crash,
 * reconciler — gives byte-identical artifacts and replaces the rows as a whole.
 */

export interface FlowContext {
  flows: FlowProducer;
  /** Qualified names (prefix:name) are built by BullMQ; these are the plain queue names. */
  mediaQueue: string;
  asrQueue: string;
  /** ASR jobs one worker runs at once: each gets threads = budget / this. */
  asrConcurrency: number;
}

export const STAGE_JOB_OPTIONS: JobsOptions = { attempts: 5, backoff: { type: 'exponential', delay: 2000 }, continueParentOnFailure: true, removeOnComplete: { age: 7 * 24 * 3600 }, removeOnFail: { age: 30 * 24 * 3600 } };

/** One stage job (a root's child), on whichever worker takes it; its children die with `signal`. */
export function processStageJob(job: Job, deps: TranscodeDeps, asrConcurrency: number, signal?: AbortSignal): Promise<unknown> {
  const name = job.name as StageName;
  const data = job.data as { session?: string; room?: string };
  const log = deps.logger.child({ job: job.id, room: data.room, session: data.session, stage: name });
  return runStage(name, job.data, { deps, log, asrLanes: asrConcurrency, progress: (pct) => job.updateProgress({ pct, stage: name }), ...(signal ? { signal } : {}) });
}

/** A flow root: session.finalize or session.rerender. */
export async function processFlowRoot(job: Job, token: string | undefined, deps: TranscodeDeps, ctx: FlowContext): Promise<unknown> {
  const badPayload = (e: { issues: { message: string }[] }) => new UnrecoverableError(`BAD_PAYLOAD: ${e.issues.map((i) => i.message).join('; ')}`);
  if (job.name === SESSION_RERENDER_JOB) {
    const parsed = SessionRerenderRootSchema.safeParse(job.data);
    if (!parsed.success) throw badPayload(parsed.error);
    const { flowStep: _step, flowRun: _run, ...p } = parsed.data;
    const driver = new FlowDriver(job, token, ctx, parsed.data);
    await driver.enter();
    return rerenderSession(p, deps, driver, deps.logger.child({ job: job.id, room: p.room, session: p.session, request: p.requestedBy.id }));
  }
  const parsed = SessionFlowRootSchema.safeParse(job.data);
  if (!parsed.success) throw badPayload(parsed.error);
  const { flowStep: _step, flowRun: _run, ...p } = parsed.data;
  const driver = new FlowDriver(job, token, ctx, parsed.data);
  await driver.enter();
  return finalizeSession(p, deps, driver, deps.logger.child({ job: job.id, room: p.room, session: p.session }));
}

const ORDER = FlowStepSchema.options;
const after = (step: FlowStep): FlowStep => ORDER[Math.min(ORDER.indexOf(step) + 1, ORDER.length - 1)]!;

class FlowDriver implements StageDriver {
  /** This run's generation: a manual retry of a failed root starts over with new stage jobs. */
  private readonly run: number;
  private current: FlowStep;
  private values: Record<string, unknown> | undefined;

  constructor(
    private readonly job: Job,
    private readonly token: string | undefined,
    private readonly ctx: FlowContext,
    private readonly data: { flowStep?: FlowStep | undefined; flowRun?: number | undefined },
  ) {
    this.run = data.flowRun ?? 0;
    this.current = data.flowStep ?? 'prepare';
  }

  private id(stage: string): string {
    return flowStageJobId(this.job.id!, stage, this.run);
  }

  /** The run a child belongs to, from its id (`<root>[.<run>].<stage>`). */
  private runOf(childKey: string): number {
    const childId = childKey.slice(childKey.lastIndexOf(':') + 1);
    return Number(/^(\d+)\./.exec(childId.slice(this.job.id!.length + 1))?.[1] ?? 0);
  }

  /** Fails the root when one of this run's stages failed for good; parks it while they run. */
  async enter(): Promise<void> {
    const failed = Object.entries(await this.job.getFailedChildrenValues()).filter(([k]) => this.runOf(k) === this.run);
    const reason = failed[0]?.[1];
    if (reason !== undefined) {
      // A stage failed for good (its own code first: "CORRUPT_RECORDING: ..."). Nothing to retry here.
      await this.failedForGood();
      throw new UnrecoverableError(String(reason));
    }
    if (this.token && (await this.job.moveToWaitingChildren(this.token))) throw new WaitingChildrenError();
  }

  async step(spec: StepSpec, calls: StageCall[]): Promise<unknown[]> {
    if (ORDER.indexOf(spec.step) < ORDER.indexOf(this.current)) {
      // Started by an earlier pass of this root: its children's results.
      const result = (c: StageCall) => Object.entries(this.values!).find(([k]) => k.endsWith(`:${this.id(c.id)}`));
      this.values ??= await this.job.getChildrenValues();
      if (calls.some((c) => !result(c))) {
        // A stage that failed after the last check: the root fails with its reason (or waits, if one still runs).
        await this.enter();
        this.values = await this.job.getChildrenValues();
      }
      return calls.map((c) => {
        const hit = result(c);
        if (!hit) throw new Error(`stage ${this.id(c.id)} left no result`);
        return STAGES[c.name].result.parse(hit[1]);
      });
    }
    await this.report(spec.pct, spec.stage);
    await spec.onStart?.();
    const parent = { id: this.job.id!, queue: this.job.queueQualifiedName };
    await this.ctx.flows.addBulk(
      calls.map((c) => ({ name: c.name, queueName: STAGES[c.name].queue === 'asr' ? this.ctx.asrQueue : this.ctx.mediaQueue, data: c.payload, opts: { ...STAGE_JOB_OPTIONS, jobId: this.id(c.id), parent } })),
    );
    this.current = after(spec.step);
    await this.job.updateData({ ...this.data, flowStep: this.current });
    this.data.flowStep = this.current;
    await this.enter();
    // Already done (nothing left to wait for): read them now.
    this.values = undefined;
    return this.step(spec, calls);
  }

  async report(pct: number, stage: string): Promise<void> {
    await this.job.updateProgress({ pct, stage });
  }

  async failedForGood(): Promise<void> {
    await this.job.updateData({ ...this.data, flowStep: 'prepare', flowRun: this.run + 1 });
  }
}
