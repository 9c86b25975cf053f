import type { types as ms } from 'mediasoup';
import type { Logger } from '../../lib/logger.ts';
import type { WorkerHealth } from './media-failure.ts';
import type { Peer } from './peer.ts';

/** One of a room's routers: the origin (its producers, the recording tap) or one its producers are piped to. */
export interface RoomRouter {
  router: ms.Router;
  worker: ms.Worker;
  health: WorkerHealth;
  /** Producers piped here from the origin router (pipeToRouter keeps their ids). */
  piped: Map<string, Promise<void>>;
  /** Consumers expected on recv transports being placed here right now (not created yet). */
  reserved: number;
}

export interface RoomRoutersOptions {
  /** Consumers one router takes before viewers go to a router on another worker (SFU_ROOM_WORKER_CONSUMERS). */
  limit: number;
  /** A router for the room on a worker it does not span yet; undefined when every worker is spanned. */
  spanWorker: ((exclude: ms.Worker[]) => Promise<{ router: ms.Router; worker: ms.Worker; health: WorkerHealth } | undefined>) | undefined;
  /** Every producer viewers may consume (all live in the origin router). */
  producers: () => ms.Producer[];
  peers: () => Iterable<Peer>;
  closed: () => boolean;
  /** A spanned router closed under the room (its worker died). */
  onGone: (rr: RoomRouter) => void;
  /** Counts spanned routers (metrics): +1 when one is added, -1 when it closes. */
  counted?: (delta: number) => void;
  logger: Logger;
}

/**
 * A room over every core of the host. Producers live on the origin router (publishers' send
 * transports, the recording tap, the active speaker observer). When the routers the room has
 * cannot take another viewer's consumers, the room spans a router on another worker, and every
 * producer is piped there (router.pipeToRouter, same producer ids); a producer added later is
 * piped to every router before it is announced. A pipe producer closes with its origin producer.
 */
export class RoomRouters {
  readonly list: RoomRouter[];
  private spanning: Promise<RoomRouter | undefined> | undefined;

  constructor(
    origin: { router: ms.Router; worker: ms.Worker; health: WorkerHealth },
    private readonly opts: RoomRoutersOptions,
  ) {
    this.list = [{ ...origin, piped: new Map(), reserved: 0 }];
  }

  get origin(): RoomRouter {
    return this.list[0]!;
  }

  routerOf(transport: ms.Transport): RoomRouter {
    return this.list.find((r) => r.router.id === transport.appData.routerId) ?? this.origin;
  }

  /**
   * Consumers placed on a router: each recv transport counts what it consumes, or the room's
   * producer count while it has consumed nothing yet (a viewer that just joined may consume them all).
   */
  private load(rr: RoomRouter): number {
    const expected = this.opts.producers().length;
    let n = rr.reserved;
    for (const p of this.opts.peers()) {
      for (const t of p.transports.values()) {
        if (t.appData.routerId !== rr.router.id || t.appData.direction !== 'recv') continue;
        let c = 0;
        for (const x of p.consumers.values()) if (x.appData.transportId === t.id) c++;
        n += c > 0 ? c : expected;
      }
    }
    return n;
  }

  /**
   * Where a new viewer's recv transport goes: the least loaded router with room for the room's
   * producers (the origin first on a tie); when none has, a router on a worker the room does not
   * span yet; when every worker is spanned, the least loaded router. Reserves the expected
   * consumers there until the transport exists (the caller takes them back), so a join storm
   * spreads too.
   */
  async placeViewer(): Promise<{ rr: RoomRouter; expected: number }> {
    const expected = Math.max(1, this.opts.producers().length);
    const loads = () => this.list.filter((r) => !r.router.closed).map((r) => ({ r, load: this.load(r) }));
    const fitting = () =>
      loads()
        .filter((x) => x.load === 0 || x.load + expected <= this.opts.limit)
        .sort((a, b) => a.load - b.load)[0]?.r;
    let rr = fitting();
    if (!rr) {
      this.spanning ??= this.span().finally(() => (this.spanning = undefined));
      const added = await this.spanning;
      rr = fitting() ?? added ?? loads().sort((a, b) => a.load - b.load)[0]?.r ?? this.origin;
    }
    rr.reserved += expected;
    return { rr, expected };
  }

  /** Adds a router on another worker and pipes every producer of the room to it. */
  private async span(): Promise<RoomRouter | undefined> {
    if (!this.opts.spanWorker || this.opts.closed()) return undefined;
    const made = await this.opts.spanWorker(this.list.map((r) => r.worker));
    if (!made) return undefined;
    if (this.opts.closed()) {
      made.router.close();
      return undefined;
    }
    const rr: RoomRouter = { ...made, piped: new Map(), reserved: 0 };
    this.list.push(rr);
    this.opts.counted?.(1);
    made.router.observer.once('close', () => {
      this.opts.counted?.(-1);
      const i = this.list.indexOf(rr);
      if (i > 0) this.list.splice(i, 1);
      this.opts.onGone(rr);
    });
    await Promise.all(this.opts.producers().map((p) => this.pipe(rr, p.id).catch((err: unknown) => this.opts.logger.warn({ err, producer: p.id }, 'piping a producer to a new router failed'))));
    this.opts.logger.info({ workerPid: made.worker.pid, routers: this.list.length }, 'room spans another worker');
    return rr;
  }

  /** Pipes an origin producer to another router of the room once; consumers there wait for it. */
  pipe(rr: RoomRouter, producerId: string): Promise<void> {
    if (rr === this.origin) return Promise.resolve();
    let piped = rr.piped.get(producerId);
    if (!piped) {
      piped = this.origin.router.pipeToRouter({ producerId, router: rr.router }).then(({ pipeProducer }) => {
        // The pipe producer closes with the origin producer (mediasoup links them).
        pipeProducer?.observer.once('close', () => rr.piped.delete(producerId));
      });
      piped.catch(() => rr.piped.delete(producerId));
      rr.piped.set(producerId, piped);
    }
    return piped;
  }

  /** Pipes a new producer to every other router; one that fails costs its viewers that track, not the producer. */
  async pipeEverywhere(producer: ms.Producer): Promise<void> {
    await Promise.all(
      this.list.slice(1).map((rr) => this.pipe(rr, producer.id).catch((err: unknown) => this.opts.logger.warn({ err, producer: producer.id, workerPid: rr.worker.pid }, 'piping a producer to another router failed'))),
    );
  }

  /** Which workers the room spans and how its viewers are spread over them. */
  summary(): { routerId: string; workerPid: number; origin: boolean; viewers: string[]; consumers: number }[] {
    return this.list.map((rr) => {
      const viewers: string[] = [];
      let consumers = 0;
      for (const p of this.opts.peers()) {
        const recv = [...p.transports.values()].filter((t) => t.appData.routerId === rr.router.id && t.appData.direction === 'recv').map((t) => t.id);
        if (recv.length === 0) continue;
        viewers.push(p.id);
        for (const c of p.consumers.values()) if (recv.includes(c.appData.transportId as string)) consumers++;
      }
      return { routerId: rr.router.id, workerPid: rr.worker.pid, origin: rr === this.origin, viewers, consumers };
    });
  }

  /** Closes the spanned routers (the room closes the origin itself). */
  closeSpanned(): void {
    for (const rr of this.list.slice(1)) {
      try {
        if (!rr.router.closed) rr.router.close();
      } catch (err) {
        this.opts.logger.error({ err, workerPid: rr.worker.pid }, 'closing a spanned router failed');
        void rr.health.probe();
      }
    }
  }
}
