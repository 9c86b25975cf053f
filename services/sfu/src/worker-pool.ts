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
  /** A worker died; its routers are gone. The pool has already started a replacement. */
  workerDied: [worker: ms.Worker, error: Error];
}

/**
 * One mediasoup worker (a C++ process) per core. Rooms are sharded onto the worker
 * with the fewest routers. A dead worker is replaced at once so new rooms keep
 * working; the owner closes the rooms that lived on it.
 */
export class WorkerPool extends EventEmitter<PoolEvents> {
  private readonly workers: ms.Worker[] = [];
  private readonly load = new Map<ms.Worker, number>();
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
    worker.on('died', (error) => {
      this.remove(worker);
      this.opts.metrics.workerDeaths.inc();
      this.opts.logger.error({ workerPid: worker.pid, err: error }, 'mediasoup worker died; replacing it');
      if (!this.closed) {
        this.spawn().catch((err: unknown) => this.opts.logger.error({ err }, 'failed to replace mediasoup worker'));
      }
      this.emit('workerDied', worker, error);
    });
    return worker;
  }

  private remove(worker: ms.Worker): void {
    const i = this.workers.indexOf(worker);
    if (i >= 0) this.workers.splice(i, 1);
    this.load.delete(worker);
    this.opts.metrics.workers.set(this.workers.length);
  }

  /** Picks the least-loaded worker and counts the router until it closes. */
  async createRouter(options: ms.RouterOptions): Promise<{ router: ms.Router; worker: ms.Worker }> {
    const worker = [...this.workers].sort((a, b) => (this.load.get(a) ?? 0) - (this.load.get(b) ?? 0))[0];
    if (!worker) throw new Error('no mediasoup worker available');
    const router = await worker.createRouter(options);
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
