import { sql } from 'kysely';
import type { Db } from '../../../db/database.ts';
import type { Logger } from '../../lib/logger.ts';

/** An SFU host of the cluster as the registry knows it. */
export interface ClusterHost {
  id: string;
  /** Where other hosts reach its host-to-host control API. */
  controlUrl: string;
  /** Where participants reach it (join links). */
  publicUrl: string;
  capacity: number;
  participants: number;
}

export interface RoomRegistryOptions {
  db: Db;
  self: Omit<ClusterHost, 'participants'>;
  heartbeatMs: number;
  /** Participants on this host now (written with each heartbeat). */
  participants: () => number;
  logger: Logger;
}

/** A host that missed this many heartbeats is dead: never picked, and its rooms may be claimed. */
const MISSED_BEATS = 3;

/**
 * The room registry in the shared database (migration 0018): every SFU host of the cluster
 * writes a heartbeat with its participant count, and each room has an origin host (the first
 * host that opened it; another takes it over only when that one is dead). Times are the
 * database's (now()), so the hosts' clocks need not agree.
 */
export class RoomRegistry {
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly opts: RoomRegistryOptions) {}

  get hostId(): string {
    return this.opts.self.id;
  }

  async start(): Promise<void> {
    await this.beat();
    this.timer = setInterval(() => {
      this.beat().catch((err: unknown) => this.opts.logger.error({ err }, 'room registry heartbeat failed'));
    }, this.opts.heartbeatMs);
    this.timer.unref();
  }

  private alive() {
    return sql<Date>`now() - make_interval(secs => ${(MISSED_BEATS * this.opts.heartbeatMs) / 1000})`;
  }

  private async beat(): Promise<void> {
    const { self } = this.opts;
    const participants = this.opts.participants();
    await this.opts.db
      .insertInto('sfu_hosts')
      .values({ id: self.id, control_url: self.controlUrl, public_url: self.publicUrl, capacity: self.capacity, participants })
      .onConflict((oc) => oc.column('id').doUpdateSet({ control_url: self.controlUrl, public_url: self.publicUrl, capacity: self.capacity, participants, heartbeat_at: sql`now()` }))
      .execute();
  }

  /**
   * The room's origin host: this host when the room has none yet or its origin is dead (this
   * host claims it then), otherwise the live origin.
   */
  async claimOrigin(roomId: string): Promise<ClusterHost> {
    const claimed = await sql<{ host_id: string }>`
      insert into room_origins (room_id, host_id) values (${roomId}, ${this.hostId})
      on conflict (room_id) do update set host_id = excluded.host_id, claimed_at = now()
      where room_origins.host_id = excluded.host_id
         or room_origins.host_id not in (select id from sfu_hosts where heartbeat_at > ${this.alive()})
      returning host_id`.execute(this.opts.db);
    if (claimed.rows.length > 0) return this.selfRecord();
    const origin = await this.originOf(roomId);
    // The origin died between the two statements: claim again (its row is now stale).
    return origin ?? this.claimOrigin(roomId);
  }

  /** The live origin host of a room, or undefined when it has none or it is dead. */
  async originOf(roomId: string): Promise<ClusterHost | undefined> {
    const row = await this.opts.db
      .selectFrom('room_origins')
      .innerJoin('sfu_hosts', 'sfu_hosts.id', 'room_origins.host_id')
      .select(['sfu_hosts.id', 'sfu_hosts.control_url', 'sfu_hosts.public_url', 'sfu_hosts.capacity', 'sfu_hosts.participants'])
      .where('room_origins.room_id', '=', roomId)
      .where('sfu_hosts.heartbeat_at', '>', this.alive())
      .executeTakeFirst();
    return row && toHost(row);
  }

  /**
   * Where a join link for the room sends its participant: the room's origin while it has
   * capacity (speakers and the first viewers); for a room no host has opened yet, this host
   * while it has capacity (it will be the origin); else the live host with the most room left;
   * this host when the registry knows no better.
   */
  async pickHost(roomId: string): Promise<ClusterHost> {
    const origin = await this.originOf(roomId);
    if (origin && origin.participants < origin.capacity) return origin;
    const self = this.selfRecord();
    if (!origin && self.participants < self.capacity) return self;
    const rows = await this.opts.db
      .selectFrom('sfu_hosts')
      .select(['id', 'control_url', 'public_url', 'capacity', 'participants'])
      .where('heartbeat_at', '>', this.alive())
      .where(sql<boolean>`participants < capacity`)
      .orderBy(sql`capacity - participants`, 'desc')
      .orderBy('id')
      .limit(1)
      .execute();
    return rows[0] ? toHost(rows[0]) : (origin ?? this.selfRecord());
  }

  /** The live hosts (for the admin API). */
  async hosts(): Promise<ClusterHost[]> {
    const rows = await this.opts.db.selectFrom('sfu_hosts').select(['id', 'control_url', 'public_url', 'capacity', 'participants']).where('heartbeat_at', '>', this.alive()).orderBy('id').execute();
    return rows.map(toHost);
  }

  private selfRecord(): ClusterHost {
    return { ...this.opts.self, participants: this.opts.participants() };
  }

  /** A host that stops cleanly leaves at once: its rooms may be claimed without waiting for its heartbeat to go stale. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    try {
      await this.opts.db.deleteFrom('room_origins').where('host_id', '=', this.hostId).execute();
      await this.opts.db.deleteFrom('sfu_hosts').where('id', '=', this.hostId).execute();
    } catch (err) {
      this.opts.logger.warn({ err }, 'could not leave the room registry; the heartbeat will go stale instead');
    }
  }
}

function toHost(r: { id: string; control_url: string; public_url: string; capacity: number; participants: number }): ClusterHost {
  return { id: r.id, controlUrl: r.control_url, publicUrl: r.public_url, capacity: r.capacity, participants: r.participants };
}
