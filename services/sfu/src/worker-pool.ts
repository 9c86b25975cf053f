import { EventEmitter } from 'node:events';
import * as mediasoup from 'mediasoup';
import type { types as ms } from 'mediasoup';
import { VerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import type { SfuMetrics } from './sfu-metrics.ts';

export interface WorkerPoolOptions {
  size: number;
  workerBin?: string | undefined;
  logger: Logger;
  metrics: SfuMetrics;
}

interface PoolEvents {
  /** A worker died or was retired; its routers are gone. The pool has already started a replacement. */
  workerDied: [worker: ms.Worker, error: Error];
}

/**
 * Errors that mean a worker's channel can no longer be trusted: mediasoup serializes every
 * request into one FlatBuffers builder per worker, and a value that fails half-way through an
 * object leaves it "nested" so every later request of that worker fails; a closed channel on a
 * worker that has not died is the same. Such a worker is replaced like a dead one.
 */
export function isChannelBroken(err: unknown): boolean {
  const message = err instanceof Error ? err.message : String(err);
  return /FlatBuffers|Channel closed/i.test(message);
}

/**
 * One mediasoup worker (a C++ process) per core. Rooms are sharded onto the worker
 * with the fewest routers. A dead worker is replaced at once so new rooms keep
 * working; the owner closes the rooms that lived on it.
 */
export class WorkerPool extends EventEmitter<PoolEvents> {
  private readonly workers: ms.Worker[] = [];
  private readonly load = new Map<ms.Worker, number>();
  /** Workers taken out of service while alive (broken channel): their routers close as WORKER_DIED. */
  private readonly retired = new WeakSet<ms.Worker>();
  private closed = false;

  constructor(private readonly opts: WorkerPoolOptions) {
    super();
  }

  async start(): Promise<void> {
    await Promise.all(Array.from({ length: this.opts.size }, () => this.spawn()));
  }

  get size(): number {
    return this.workers.length;
  }

  private async spawn(): Promise<ms.Worker> {
    let worker: ms.Worker;
    try {
      worker = await mediasoup.createWorker({
        logLevel: 'warn',
        ...(this.opts.workerBin ? { workerBin: this.opts.workerBin } : {}),
      });
    } catch (err) {
      throw new VerbatimError('CONFIG_INVALID', `cannot start mediasoup worker ${this.opts.workerBin ?? '(default path)'}: ${(err as Error).message}`, {
        hint: 'Run `npm run setup` to build the worker offline, or set MEDIASOUP_WORKER_BIN to a mediasoup-worker binary.',
        cause: err,
      });
    }
    this.workers.push(worker);
    this.load.set(worker, 0);
    this.opts.metrics.workers.set(this.workers.length);
    worker.on('died', (error) => this.replace(worker, error, 'mediasoup worker died; replacing it'));
    return worker;
  }

  private replace(worker: ms.Worker, error: Error, msg: string): void {
    if (!this.workers.includes(worker)) return;
    this.remove(worker);
    this.opts.metrics.workerDeaths.inc();
    this.opts.logger.error({ workerPid: worker.pid, err: error }, msg);
    if (!this.closed) {
      this.spawn().catch((err: unknown) => this.opts.logger.error({ err }, 'failed to replace mediasoup worker'));
    }
    this.emit('workerDied', worker, error);
  }

  /**
   * Takes a live worker whose channel is broken out of service, as if it had died: a
   * replacement starts, and closing it closes its routers, so their rooms end with
   * WORKER_DIED and their participants rejoin on a healthy worker.
   */
  retire(worker: ms.Worker, error: Error): void {
    if (!this.workers.includes(worker)) return;
    this.retired.add(worker);
    this.replace(worker, error, 'mediasoup worker channel broken; retiring and replacing it');
    try {
      worker.close();
    } catch (err) {
      // close() closes the routers first, then tells the process to exit through the very channel
      // that is broken: the process is ended here instead, or it would keep its ports.
      this.opts.logger.warn({ err, workerPid: worker.pid }, 'a retired mediasoup worker could not be told to exit; killing it');
      try {
        process.kill(worker.pid, 'SIGKILL');
      } catch (killErr) {
        this.opts.logger.error({ err: killErr, workerPid: worker.pid }, 'could not kill a retired mediasoup worker');
      }
    }
  }

  /** Whether a worker is out of service: died, or retired by retire(). */
  isGone(worker: ms.Worker): boolean {
    return worker.died || this.retired.has(worker);
  }

  /**
   * Asks the worker something cheap to tell whether its channel still works (a request that
   * failed may have broken it); a broken one is retired. Resolves true when healthy.
   */
  async probe(worker: ms.Worker, timeoutMs = 2000): Promise<boolean> {
    if (this.isGone(worker) || worker.closed) return false;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        worker.getResourceUsage(),
        new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('Channel closed: no answer to a health probe')), timeoutMs))),
      ]);
      return true;
    } catch (err) {
      if (!worker.closed) this.retire(worker, err instanceof Error ? err : new Error(String(err)));
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  private remove(worker: ms.Worker): void {
    const i = this.workers.indexOf(worker);
    if (i >= 0) this.workers.splice(i, 1);
    this.load.delete(worker);
    this.opts.metrics.workers.set(this.workers.length);
  }

  /** Picks the least-loaded worker and counts the router until it closes. */
  async createRouter(options: ms.RouterOptions): Promise<{ router: ms.Router; worker: ms.Worker }> {
    const made = await this.createRouterAway(options, []);
    if (!made) throw new VerbatimError('WORKER_DIED', 'no media server process is available right now', { hint: 'A replacement is starting; rejoin in a few seconds.' });
    return made;
  }

  /**
   * A router on the least-loaded worker other than `exclude` (the workers a room already
   * spans); undefined when every worker is excluded.
   */
  async createRouterAway(options: ms.RouterOptions, exclude: readonly ms.Worker[]): Promise<{ router: ms.Router; worker: ms.Worker } | undefined> {
    const worker = this.workers.filter((w) => !exclude.includes(w)).sort((a, b) => (this.load.get(a) ?? 0) - (this.load.get(b) ?? 0))[0];
    if (!worker) return undefined;
    let router: ms.Router;
    try {
      router = await worker.createRouter(options);
    } catch (err) {
      if (isChannelBroken(err)) {
        this.retire(worker, err as Error);
        throw new VerbatimError('WORKER_DIED', 'the media server process for this room failed; it is being replaced', { hint: 'Rejoin in a few seconds.', cause: err });
      }
      throw err;
    }
    this.load.set(worker, (this.load.get(worker) ?? 0) + 1);
    router.observer.once('close', () => {
      if (this.load.has(worker)) this.load.set(worker, Math.max(0, (this.load.get(worker) ?? 1) - 1));
    });
    return { router, worker };
  }

  /** Per-worker resource usage for the stats endpoint. */
  async usage(): Promise<{ pid: number; routers: number; usage: ms.WorkerResourceUsage }[]> {
    return Promise.all(this.workers.map(async (w) => ({ pid: w.pid, routers: this.load.get(w) ?? 0, usage: await w.getResourceUsage() })));
  }

  pids(): number[] {
    return this.workers.map((w) => w.pid);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const w of [...this.workers]) w.close();
    this.workers.length = 0;
    this.opts.metrics.workers.set(0);
  }
}
