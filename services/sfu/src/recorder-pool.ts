import { EventEmitter } from 'node:events';
import { sql } from 'kysely';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Db } from '../../../db/database.ts';
import type { Logger } from '../../lib/logger.ts';
import { RecorderClient } from './recorder-client.ts';

/** One recorder of the pool as this SFU sees it. */
export interface PoolMember {
  /** Registry id (or the URL while a RECORDER_URL recorder has not answered yet). */
  readonly key: string;
  readonly client: RecorderClient;
  /** Verified (proved RECORDER_SECRET), answering, heartbeat fresh. */
  alive: boolean;
  state: 'active' | 'draining';
  capacity: number;
  /** Tracks it reports (health or heartbeat). */
  load: number;
  /** Tracks this SFU placed on it (counted at once, before its next report). */
  placed: number;
  /** From the registry: heartbeat age in the database's clock; undefined for a RECORDER_URL member. */
  heartbeatAgeMs: number | undefined;
  /** It takes tracks (free disk above RECORDER_MIN_FREE_MB). */
  accepting: boolean;
  readonly fromRegistry: boolean;
}

interface RecorderPoolEvents {
  /** A member stopped answering or heartbeating: its tracks must go elsewhere. */
  down: [member: PoolMember, why: string];
  /** A member answers (again); `restarted` when it is a new instance (its taps are gone). */
  up: [member: PoolMember, restarted: boolean];
  /** A member asked to be drained: move its tracks off it, make-before-break. */
  draining: [member: PoolMember];
}

export interface RecorderPoolOptions {
  db?: Db;
  secret: string;
  logger: Logger;
  /** RECORDER_URL: a member of its own (a pool of one without discovery). */
  staticUrl?: string | undefined;
  /** Read the recorders table (RECORDER_DISCOVERY=registry). */
  discovery: boolean;
  /** Heartbeat older than this: dead (RECORDER_DEAD_AFTER_MS). */
  deadAfterMs: number;
  /** Health (with the secret check) of each member this often. */
  healthPollMs?: number;
  /** The registry this often. */
  registryPollMs?: number;
  /** Prometheus registry for the pool's metrics. */
  metrics?: Registry;
}

/**
 * The recorders this SFU may tap recorded producers to (issue 15): RECORDER_URL as a pool of one,
 * and with RECORDER_DISCOVERY=registry every recorder heartbeating in the recorders table. A
 * member gets tracks only while it is alive: it proved RECORDER_SECRET on its last health call
 * (HMAC over our nonce, recorder-client.ts), answers, and its heartbeat is younger than
 * RECORDER_DEAD_AFTER_MS. Placement is least loaded below capacity; the tap keeps one participant's
 * tracks together by asking for the member that already holds them.
 */
export class RecorderPool extends EventEmitter<RecorderPoolEvents> {
  private readonly members = new Map<string, PoolMember>();
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> = Promise.resolve();
  private closed = false;
  readonly metrics;

  constructor(private readonly opts: RecorderPoolOptions) {
    super();
    const registers = opts.metrics ? [opts.metrics] : [];
    this.metrics = {
      alive: new Gauge({ name: 'verbatim_sfu_recorders_alive', help: 'Recorders of the pool that are alive (proved the secret, answer, heartbeat fresh)', registers }),
      down: new Counter({ name: 'verbatim_sfu_recorder_down_total', help: 'Times a recorder of the pool was found dead', registers }),
      unproven: new Counter({ name: 'verbatim_sfu_recorder_unproven_total', help: 'Health answers that failed the RECORDER_SECRET proof (such a recorder gets no tracks)', registers }),
      moved: new Counter({ name: 'verbatim_sfu_recorder_track_moves_total', help: 'Tracks re-tapped to another recorder', labelNames: ['reason'], registers }),
    };
    if (opts.staticUrl) this.addMember(opts.staticUrl.replace(/\/$/, ''), undefined, false);
  }

  start(): void {
    for (const m of this.members.values()) m.client.start();
    if (this.opts.discovery && this.opts.db) {
      const tick = () => {
        this.polling = this.pollRegistry().finally(() => {
          if (!this.closed) this.timer = setTimeout(tick, this.opts.registryPollMs ?? 250);
        });
      };
      tick();
    }
  }

  /** Every member, for the admin API and tests. */
  list(): PoolMember[] {
    return [...this.members.values()];
  }

  get(key: string): PoolMember | undefined {
    return this.members.get(key);
  }

  get anyAlive(): boolean {
    return this.list().some((m) => m.alive);
  }

  /**
   * Where a track goes: `prefer` (the member holding the participant's other tracks) when it can
   * take it, else the least loaded live active member below capacity, never one in `exclude`.
   */
  place(opts: { prefer?: PoolMember | undefined; exclude?: ReadonlySet<PoolMember> } = {}): PoolMember | undefined {
    const ok = (m: PoolMember) => m.alive && m.accepting && m.state === 'active' && !opts.exclude?.has(m) && Math.max(m.load, m.placed) < m.capacity;
    if (opts.prefer && ok(opts.prefer)) return opts.prefer;
    let best: PoolMember | undefined;
    for (const m of this.members.values()) if (ok(m) && (!best || Math.max(m.load, m.placed) < Math.max(best.load, best.placed))) best = m;
    return best;
  }

  private addMember(url: string, id: string | undefined, fromRegistry: boolean): PoolMember {
    const client = new RecorderClient(url, this.opts.secret, this.opts.logger.child({ recorder: id ?? url }), this.opts.healthPollMs ?? 500, id);
    const m: PoolMember = { key: id ?? url, client, alive: false, state: 'active', capacity: Number.MAX_SAFE_INTEGER, load: 0, placed: 0, heartbeatAgeMs: undefined, accepting: true, fromRegistry };
    client.on('up', (_h, restarted) => this.setAlive(m, true, restarted));
    client.on('health', (h) => {
      m.load = h.tracks;
      m.accepting = h.acceptingTracks;
      // A RECORDER_URL member says its state itself; a registry member's comes from its row too.
      if (!fromRegistry) this.setState(m, h.state ?? 'active');
    });
    client.on('down', (error) => {
      if (/did not prove RECORDER_SECRET|not .* as the registry says/.test(error)) this.metrics.unproven.inc();
      this.setAlive(m, false, false, error);
    });
    this.members.set(m.key, m);
    // Discovered after start: watched at once.
    if (fromRegistry) client.start();
    return m;
  }

  private setAlive(m: PoolMember, alive: boolean, restarted: boolean, why = ''): void {
    // A registry member is alive only with a fresh heartbeat as well.
    const fresh = m.heartbeatAgeMs === undefined || m.heartbeatAgeMs <= this.opts.deadAfterMs;
    const next = alive && fresh && m.client.up;
    if (next === m.alive && !restarted) return;
    m.alive = next;
    this.metrics.alive.set(this.list().filter((x) => x.alive).length);
    if (next) {
      this.opts.logger.info({ recorder: m.key, restarted }, 'recorder in the pool is alive');
      this.emit('up', m, restarted);
    } else {
      m.placed = 0;
      this.metrics.down.inc();
      this.opts.logger.error({ recorder: m.key, why }, 'recorder in the pool is down: its tracks move to another');
      this.emit('down', m, why || 'heartbeat stale');
    }
  }

  private setState(m: PoolMember, state: 'active' | 'draining'): void {
    const was = m.state;
    m.state = state;
    if (m.alive && was !== 'draining' && state === 'draining') {
      this.opts.logger.warn({ recorder: m.key }, 'recorder draining: moving its tracks off it');
      this.emit('draining', m);
    }
  }

  private async pollRegistry(): Promise<void> {
    let rows;
    try {
      rows = await this.opts
        .db!.selectFrom('recorders')
        .select(['id', 'url', 'capacity', 'load', 'state', sql<number>`(extract(epoch from (now() - heartbeat_at)) * 1000)::float8`.as('age_ms')])
        .execute();
    } catch (err) {
      this.opts.logger.warn({ err }, 'could not read the recorder registry');
      return;
    }
    for (const r of rows) {
      let m = this.members.get(r.id);
      if (m && m.client.url !== r.url.replace(/\/$/, '')) {
        // Re-registered elsewhere: a new member (the old client stops).
        m.client.stop();
        this.members.delete(r.id);
        if (m.alive) this.setAlive(m, false, false, 'moved');
        m = undefined;
      }
      // A RECORDER_URL member is the same recorder as its registry row once it proved that id.
      const same = [...this.members.values()].find((x) => !x.fromRegistry && x.client.url === r.url.replace(/\/$/, ''));
      if (same) {
        same.heartbeatAgeMs = Number(r.age_ms);
        same.capacity = r.capacity;
        this.setAlive(same, same.client.up, false);
        continue;
      }
      m ??= this.addMember(r.url.replace(/\/$/, ''), r.id, true);
      m.heartbeatAgeMs = Number(r.age_ms);
      m.capacity = r.capacity;
      m.load = r.load;
      this.setAlive(m, m.client.up, false);
      this.setState(m, r.state);
    }
    // A registry member whose row is gone (clean shutdown) is gone.
    for (const m of this.members.values()) {
      if (m.fromRegistry && !rows.some((r) => r.id === m.key)) {
        m.heartbeatAgeMs = Number.POSITIVE_INFINITY;
        this.setAlive(m, false, false, 'left the registry');
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.polling;
    for (const m of this.members.values()) m.client.stop();
  }
}
