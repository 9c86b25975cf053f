import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { types as ms } from 'mediasoup';
import type { Registry } from 'prom-client';
import type { Db } from '../../../db/database.ts';
import type { Config } from '../../lib/config.ts';
import { RoomFlagsSchema, type RoomFlags } from '../../lib/contracts/room.ts';
import { VerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { mintJoinToken, type JoinClaims } from './join-token.ts';
import { Peer, type ConsentState, type PeerChannel } from './peer.ts';
import { Room, mediaCodecs } from './room.ts';
import { RoomStore, type StoredRoom } from './room-store.ts';
import { createSfuMetrics, type SfuMetrics } from './sfu-metrics.ts';
import { WorkerPool } from './worker-pool.ts';
import { RecorderPool } from './recorder-pool.ts';
import { RecordingTap } from './recording-tap.ts';
import type { AuditEntryInput, AuditSink } from '../../lib/audit-sink.ts';
import type { AuditContext } from './audit-context.ts';
import { QualityMonitor } from './quality-monitor.ts';
import { CascadeHub } from './cascade-hub.ts';
import { CascadeLink } from './cascade-link.ts';
import { RoomRegistry } from './room-registry.ts';
import type { WorkerHealth } from './media-failure.ts';
import { RegulatedAttendance } from './regulated-attendance.ts';

export interface SfuDeps {
  config: Config;
  db: Db;
  logger: Logger;
  registry: Registry;
  secrets: { apiSecret: string; tokenSecret: string; recorderSecret: string };
  /** The audit trail: room and recording changes and consent decisions are written to it. */
  audit: AuditSink;
}

/**
 * The SFU's state: the worker pool, open rooms (one Router each), room flags in the
 * database, drain mode, and the reclaim window for participants who reconnect.
 */
export class Sfu {
  readonly rooms = new Map<string, Room>();
  readonly store: RoomStore;
  /** Room and recording changes and consent decisions go to the hash-chained audit trail. */
  private readonly audit: AuditSink;
  readonly metrics: SfuMetrics;
  readonly pool: WorkerPool;
  private readonly opening = new Map<string, Promise<Room>>();
  /** identity state kept for SFU_RECLAIM_WINDOW_MS after a disconnect, keyed room/identity. */
  private readonly reclaim = new Map<string, { consent: ConsentState; expiresAt: number }>();
  /**
   * Join tokens already used, by jti, until they expire: a token joins once (a reload or a
   * reconnect within the reclaim window excepted). In memory: right for one SFU process; a
   * restarted SFU forgets them, so a token could be used once more after a restart.
   */
  private readonly spentTokens = new Map<string, { identity: string; expiresAt: number }>();
  private spentPrunedAt = 0;
  private drainingFlag = false;
  private closed = false;
  /** The recorders recorded rooms are tapped to: RECORDER_URL, and the registry with RECORDER_DISCOVERY=registry. */
  readonly recorders: RecorderPool | undefined;
  readonly taps = new Map<string, RecordingTap>();
  readonly quality: QualityMonitor;
  /** The cluster's room registry (SFU_CLUSTER_SECRET set): which host is each room's origin, which hosts have capacity. */
  registry: RoomRegistry | undefined;
  /** The origin side of cascaded rooms: other hosts link here for the producers of rooms this host is origin of. */
  readonly cascade: CascadeHub | undefined;
  /** Links to other hosts for rooms this host serves viewers of, by room id. */
  readonly links = new Map<string, CascadeLink>();
  readonly regulated: RegulatedAttendance;

  constructor(readonly deps: SfuDeps) {
    this.store = new RoomStore(deps.db);
    this.regulated = new RegulatedAttendance(deps.db, deps.logger.child({ component: 'regulated' }));
    this.audit = deps.audit;
    this.metrics = createSfuMetrics(deps.registry);
    this.pool = new WorkerPool({ size: deps.config.SFU_WORKERS, workerBin: deps.config.MEDIASOUP_WORKER_BIN, logger: deps.logger, metrics: this.metrics });
    this.quality = new QualityMonitor({
      rooms: () => this.rooms.values(),
      thresholds: { lossPct: deps.config.SFU_QUALITY_LOSS_PCT, rttMs: deps.config.SFU_QUALITY_RTT_MS },
      intervalMs: deps.config.SFU_QUALITY_SAMPLE_MS,
      registry: deps.registry,
      logger: deps.logger.child({ component: 'quality' }),
    });
    if (deps.config.RECORDER_URL || deps.config.RECORDER_DISCOVERY === 'registry') {
      this.recorders = new RecorderPool({
        db: deps.db,
        secret: deps.secrets.recorderSecret,
        logger: deps.logger.child({ component: 'recorder-pool' }),
        staticUrl: deps.config.RECORDER_URL,
        discovery: deps.config.RECORDER_DISCOVERY === 'registry',
        deadAfterMs: deps.config.RECORDER_DEAD_AFTER_MS,
        // Health (and the secret check) at a third of the dead-after time: a dead recorder is seen within it.
        healthPollMs: Math.max(100, Math.min(1000, Math.round(deps.config.RECORDER_DEAD_AFTER_MS / 3))),
        metrics: deps.registry,
      });
    }
    if (deps.config.SFU_CLUSTER_SECRET) {
      this.cascade = new CascadeHub({
        originRoom: async (roomId) => {
          const room = await this.openRoom(roomId);
          if (room.originHost) throw new VerbatimError('NOT_ORIGIN', `room ${roomId} has its origin on ${room.originHost}, not here`, { hint: 'Link to the origin host named in the room registry.' });
          return room;
        },
        pipeListen: this.pipeListen(),
        logger: deps.logger.child({ component: 'cascade' }),
        onLinks: (n) => this.metrics.cascadeLinks.set({ side: 'origin' }, n),
      });
    }
  }

  async start(): Promise<void> {
    await this.pool.start();
    this.recorders?.start();
    this.quality.start();
  }

  private pipeListen(): { ip: string; announcedAddress?: string | undefined; portRange: { min: number; max: number } } {
    const cfg = this.deps.config;
    const ip = cfg.SFU_PIPE_LISTEN_IP ?? cfg.SFU_RTC_LISTEN_IP;
    return { ip, announcedAddress: cfg.SFU_PIPE_ANNOUNCED_IP, portRange: { min: cfg.SFU_RTC_MIN_PORT, max: cfg.SFU_RTC_MAX_PORT } };
  }

  /**
   * Joins the cluster (SFU_CLUSTER_SECRET set): registers this host in the room registry with
   * the URLs it is reached at, once its HTTP server listens.
   */
  async startCluster(urls: { control: string; public: string }): Promise<void> {
    const cfg = this.config;
    if (!cfg.SFU_CLUSTER_SECRET || this.registry) return;
    const registry = new RoomRegistry({
      db: this.deps.db,
      self: { id: cfg.SFU_HOST_ID ?? `${hostname()}:${new URL(urls.control).port}`, controlUrl: urls.control, publicUrl: urls.public, capacity: cfg.SFU_HOST_CAPACITY },
      heartbeatMs: cfg.SFU_HEARTBEAT_MS,
      participants: () => this.participantCount(),
      logger: this.logger.child({ component: 'registry' }),
    });
    await registry.start();
    this.registry = registry;
    this.logger.info({ host: registry.hostId, control: urls.control }, 'joined the SFU cluster');
  }

  participantCount(): number {
    let n = 0;
    for (const r of this.rooms.values()) n += r.peers.size;
    return n;
  }

  /** Where a new join link for the room should send its participant (a host of the cluster with capacity). */
  async joinHostUrl(roomId: string, fallback: string): Promise<string> {
    return this.registry ? (await this.registry.pickHost(roomId)).publicUrl : fallback;
  }

  get config(): Config {
    return this.deps.config;
  }

  get logger(): Logger {
    return this.deps.logger;
  }

  get draining(): boolean {
    return this.drainingFlag;
  }

  setDraining(enabled: boolean): void {
    this.drainingFlag = enabled;
    this.logger.warn({ draining: enabled }, enabled ? 'drain mode on: no new rooms or joins' : 'drain mode off');
  }

  private assertNotDraining(): void {
    if (this.drainingFlag) {
      throw new VerbatimError('DRAINING', 'this SFU is draining: existing meetings continue, new rooms and joins are refused', { hint: 'Use another SFU host, or turn drain mode off.' });
    }
  }

  async createRoom(input: { id?: string | undefined; name?: string | undefined; flags: RoomFlags }, ctx?: AuditContext): Promise<{ room: StoredRoom; roomSecret: string }> {
    this.assertNotDraining();
    const id = input.id ?? randomBytes(6).toString('base64url').replace(/^[_-]/, 'r');
    if (await this.store.get(id)) throw new VerbatimError('ROOM_EXISTS', `room ${id} already exists`, { hint: 'Pick another id or omit it to get a generated one.' });
    const created = await this.store.create({ id, name: input.name ?? id, flags: input.flags });
    await this.appendRequired({ action: 'room.create', actor: ADMIN_ACTOR, target: { type: 'room', id }, details: { name: input.name ?? id, flags: input.flags } }, ctx);
    this.logger.info({ room: id, flags: input.flags }, 'room created');
    return created;
  }

  async getRoomInfo(id: string): Promise<StoredRoom & { open: boolean; peers: number }> {
    const stored = await this.store.get(id);
    if (!stored) throw roomNotFound(id);
    const live = this.rooms.get(id);
    return { ...stored, recording: live?.recording ?? stored.recording, open: !!live, peers: live?.peers.size ?? 0 };
  }

  /** Returns the live room, creating its router on the least-loaded worker on first use. */
  async openRoom(id: string): Promise<Room> {
    const live = this.rooms.get(id);
    if (live && !live.closed) return live;
    const pending = this.opening.get(id);
    if (pending) return pending;
    const p = this.doOpenRoom(id).finally(() => this.opening.delete(id));
    this.opening.set(id, p);
    return p;
  }

  private async doOpenRoom(id: string): Promise<Room> {
    const stored = await this.store.get(id);
    if (!stored) throw roomNotFound(id);
    if (stored.closedAt) throw new VerbatimError('ROOM_CLOSED', `room ${id} was closed at ${stored.closedAt.toISOString()}`, { hint: 'Create a new room.' });
    // In a cluster the room has one origin host: speakers and recording there, viewers anywhere.
    const origin = this.registry ? await this.registry.claimOrigin(id) : undefined;
    const remoteOrigin = origin && origin.id !== this.registry?.hostId ? origin : undefined;
    const { router, worker } = await this.pool.createRouter({ mediaCodecs: structuredClone(mediaCodecs), appData: { room: id } });
    const cfg = this.config;
    const room = new Room(
      id,
      stored.name,
      stored.flags,
      stored.recording,
      router,
      worker,
      {
        transport: { listenIp: cfg.SFU_RTC_LISTEN_IP, announcedAddress: cfg.SFU_RTC_ANNOUNCED_IP, portRange: { min: cfg.SFU_RTC_MIN_PORT, max: cfg.SFU_RTC_MAX_PORT } },
        limits: { transports: cfg.SFU_MAX_TRANSPORTS_PER_PEER, producers: cfg.SFU_MAX_PRODUCERS_PER_PEER, consumers: cfg.SFU_MAX_CONSUMERS_PER_PEER },
        worker: this.healthOf(worker),
        routerConsumers: cfg.SFU_ROOM_WORKER_CONSUMERS,
        spanWorker: async (exclude) => {
          const made = await this.pool.createRouterAway({ mediaCodecs: structuredClone(mediaCodecs), appData: { room: id } }, exclude);
          return made && { ...made, health: this.healthOf(made.worker) };
        },
      },
      this.metrics,
      this.logger.child({ room: id }),
    );
    this.rooms.set(id, room);
    this.metrics.rooms.inc();
    this.regulated.watch(room);
    room.on('recordingChanged', (recording, by) => {
      this.store.setRecording(id, recording).catch((err: unknown) => room.logger.error({ err }, 'failed to persist recording state'));
      // An admin's toggle is audited by setRecording itself, before the admin API answers.
      if (by !== 'admin') this.auditInBackground(room, { action: 'recording.toggle', actor: actorOf(by), target: { type: 'room', id }, details: { recording, by, session: this.taps.get(id)?.sessionId ?? null } });
    });
    room.once('close', () => {
      if (this.rooms.get(id) === room) this.rooms.delete(id);
      this.taps.delete(id);
      this.links.get(id)?.close();
      this.links.delete(id);
      this.metrics.cascadeLinks.set({ side: 'edge' }, this.links.size);
      this.metrics.rooms.dec();
    });
    if (remoteOrigin) {
      room.originHost = remoteOrigin.id;
      try {
        await this.linkToOrigin(room, remoteOrigin);
      } catch (err) {
        room.close('CASCADE_FAILED', 'could not reach the room\'s origin host');
        throw err;
      }
      // A host serving viewers keeps the link only while it has viewers.
      room.on('peerLeft', () => {
        if (room.peers.size > 0) return;
        setTimeout(() => room.peers.size === 0 && room.close('ROOM_CLOSED', 'no participants left on this host'), EDGE_IDLE_CLOSE_MS).unref();
      });
      room.logger.info({ workerPid: worker.pid, origin: remoteOrigin.id }, 'room opened: serving viewers of another host\'s room');
      return room;
    }
    this.takeOriginDuties(room);
    room.logger.info({ workerPid: worker.pid }, 'room opened');
    return room;
  }

  private async linkToOrigin(room: Room, origin: { id: string; controlUrl: string; publicUrl: string; capacity: number; participants: number }): Promise<void> {
    const link = await CascadeLink.open({
      room,
      origin,
      selfId: this.registry!.hostId,
      secret: this.config.SFU_CLUSTER_SECRET!,
      pipeListen: this.pipeListen(),
      logger: room.logger.child({ component: 'cascade-link', origin: origin.id }),
    });
    if (room.closed) return link.close();
    this.links.set(room.id, link);
    this.metrics.cascadeLinks.set({ side: 'edge' }, this.links.size);
    link.once('lost', () => {
      if (this.links.get(room.id) === link) this.links.delete(room.id);
      this.metrics.cascadeLinks.set({ side: 'edge' }, this.links.size);
      void this.relink(room);
    });
  }

  /**
   * The origin host went away: its participants rejoin elsewhere, and this host's viewers stay.
   * The room is linked again to its (new) origin, or this host becomes the origin when the old
   * one is dead and nobody claimed the room first.
   */
  private async relink(room: Room): Promise<void> {
    for (let attempt = 0; !room.closed && !this.closed; attempt++) {
      await new Promise((r) => setTimeout(r, Math.min(5000, 500 * 2 ** attempt)));
      if (room.closed || this.closed || !this.registry) return;
      try {
        // Closed by an admin on the origin: this host's viewers are told, not relinked.
        const stored = await this.store.get(room.id);
        if (!stored || stored.closedAt) return room.close('ROOM_CLOSED', 'the room was closed');
        const origin = await this.registry.claimOrigin(room.id);
        if (origin.id === this.registry.hostId) {
          room.originHost = undefined;
          this.takeOriginDuties(room);
          room.logger.warn('the origin host is gone: this host is the room\'s origin now');
          return;
        }
        room.originHost = origin.id;
        await this.linkToOrigin(room, origin);
        return;
      } catch (err) {
        room.logger.warn({ err, attempt }, 'relinking to the room\'s origin failed; retrying');
      }
    }
  }

  /** What only the origin host of a room does: its recording tap (or saying that recording is unavailable). */
  private takeOriginDuties(room: Room): void {
    const id = room.id;
    if (this.recorders) {
      const tap = new RecordingTap(room, this.recorders, room.logger.child({ component: 'tap' }), this.config.RECORDER_REPLICAS, { srtp: this.config.RECORDER_TAP_SRTP });
      tap.onSessionStarted = (sessionId, earlier) => {
        for (const e of earlier) {
          this.auditInBackground(room, {
            action: 'consent.event',
            actor: { type: 'service', id: 'sfu' },
            target: { type: 'participant', id: e.peer.id },
            details: { room: id, session: sessionId, participantName: e.peer.name, decision: e.decision, method: e.method, policy: room.flags.consent, decidedAt: e.at.toISOString(), decidedBeforeSession: true },
          });
          this.store
            .recordConsent({ roomId: id, sessionId, participantId: e.peer.id, participantName: e.peer.name, policy: room.flags.consent, decision: e.decision, method: e.method, clientInfo: { decidedAt: e.at.toISOString(), decidedBeforeSession: true } })
            .catch((err: unknown) => room.logger.error({ err, peer: e.peer.id }, 'failed to store consent event'));
        }
      };
      this.taps.set(id, tap);
    } else {
      // No recorder configured: a recorded room says so instead of pretending.
      const noRecorder = () => room.recording && room.setRecordingFailure({ code: 'RECORDER_UNAVAILABLE', message: 'no recorder is configured for this SFU (RECORDER_URL)' });
      room.on('recordingChanged', noRecorder);
      noRecorder();
    }
  }

  private healthOf(worker: ms.Worker): WorkerHealth {
    return { gone: () => this.pool.isGone(worker), probe: () => this.pool.probe(worker), retire: (err) => this.pool.retire(worker, err) };
  }

  /**
   * Events from a live meeting (a toggle, a consent click) are not held up by the audit
   * append; a failure is logged loudly (the change itself is already stored).
   */
  private auditInBackground(room: Room, entry: AuditEntryInput): void {
    this.audit.append(entry).catch((err: unknown) => room.logger.error({ err, action: entry.action }, 'could not write the audit entry'));
  }

  /**
   * The audit entry of a change an admin asked for: written before the admin API answers, and
   * when it cannot be, the request fails with AUDIT_UNAVAILABLE (never a success without evidence).
   * `ctx` ties it to the request (its id, the caller's address) and records that it was written.
   */
  private async appendRequired(entry: AuditEntryInput, ctx?: AuditContext): Promise<void> {
    try {
      await this.audit.append(ctx ? { ...entry, clientAddress: ctx.clientAddress, details: { ...entry.details, requestId: ctx.requestId } } : entry);
    } catch (err) {
      this.logger.error({ err, action: entry.action }, 'could not write the audit entry');
      throw new VerbatimError('AUDIT_UNAVAILABLE', `the change was made, but its audit entry (${entry.action}) could not be written`, {
        hint: 'The audit trail is not writable (database?); check the state and retry once it is back.',
        cause: err,
      });
    }
    if (ctx) ctx.written = true;
  }

  /**
   * A participant's consent decision: stored in the consent log and the audit trail first, and
   * only then applied and acknowledged. A decision that cannot be stored is not acknowledged
   * (CONSENT_NOT_STORED, retryable): the participant is asked again and is not recorded meanwhile.
   */
  async decideConsent(room: Room, peer: Peer, decision: 'granted' | 'declined', method: 'click' | 'announcement' | 'pre-accepted'): Promise<void> {
    const session = this.taps.get(room.id)?.sessionId ?? null;
    let stored: string | undefined;
    try {
      stored = await this.store.recordConsent({ roomId: room.id, sessionId: session, participantId: peer.id, participantName: peer.name, policy: room.flags.consent, decision, method, clientInfo: {} });
      await this.audit.append({
        action: 'consent.event',
        actor: { type: 'user', id: `participant:${peer.id}` },
        target: { type: 'participant', id: peer.id },
        details: { room: room.id, session, participantName: peer.name, decision, method, policy: room.flags.consent },
      });
    } catch (err) {
      // The consent log keeps only acknowledged decisions: one without its audit entry is taken back.
      if (stored) await this.store.withdrawConsent(stored).catch((e: unknown) => room.logger.error({ err: e, consentEvent: stored }, 'could not withdraw an unacknowledged consent row'));
      room.logger.error({ err, peer: peer.id, decision }, 'consent decision not stored: not acknowledged, participant not recorded until one is');
      if (!peer.closed && !room.closed) room.consentNotStored(peer);
      throw new VerbatimError('CONSENT_NOT_STORED', 'your answer could not be stored, so it does not count yet', {
        hint: 'Answer again in a moment; until an answer is stored you are not recorded.',
        cause: err,
      });
    }
    if (!peer.closed && !room.closed) room.setConsent(peer, decision, method);
  }

  async updateFlags(id: string, patch: Partial<RoomFlags>, ctx?: AuditContext): Promise<RoomFlags> {
    const stored = await this.store.get(id);
    if (!stored) throw roomNotFound(id);
    const flags = RoomFlagsSchema.parse({ ...stored.flags, ...patch });
    await this.store.updateFlags(id, flags);
    await this.appendRequired({ action: 'room.flags', actor: ADMIN_ACTOR, target: { type: 'room', id }, details: { before: stored.flags, after: flags } }, ctx);
    const live = this.rooms.get(id);
    if (live) {
      live.flags = flags;
      live.broadcastRecordingState();
      live.lastN.refresh();
    }
    return flags;
  }

  /**
   * Toggles recording. `authority` says who asks: the admin key always may; a
   * participant may only when the room is not lockRecord or with the room secret.
   */
  async setRecording(id: string, enabled: boolean, authority: { admin: true } | { peerId: string; roomSecret?: string | undefined }, ctx?: AuditContext): Promise<void> {
    const stored = await this.store.get(id);
    if (!stored) throw roomNotFound(id);
    if (!('admin' in authority) && stored.flags.lockRecord) {
      const ok = authority.roomSecret !== undefined && (await this.store.verifySecret(id, authority.roomSecret));
      if (!ok) {
        throw new VerbatimError('RECORDING_LOCKED', `recording of room ${id} is locked`, { hint: 'Only the room secret or the admin key may toggle recording in a lockRecord room.' });
      }
    }
    const by = 'admin' in authority ? 'admin' : `peer:${authority.peerId}`;
    const live = this.rooms.get(id);
    if (live?.originHost) {
      throw new VerbatimError('NOT_ORIGIN', `room ${id} is recorded on its origin host ${live.originHost}`, { hint: 'Toggle recording on the origin host (its admin API, or a participant there).' });
    }
    if (!enabled && live?.hasRegulatedPublisher()) {
      throw new VerbatimError('RECORDING_REQUIRED', `room ${id} has a regulated participant: recording stays on while they publish`, {
        hint: 'Regulated identities are recorded in every room they join (compliance API: /api/v1/capture/regulated).',
      });
    }
    const changed = (live ? live.recording : stored.recording) !== enabled;
    if (live) live.setRecording(enabled, by);
    else await this.store.setRecording(id, enabled);
    // A participant's toggle in a live room is audited from its recordingChanged event; an
    // admin's (one entry per request, a no-op included) and a stored-only change here.
    if ('admin' in authority || !live) {
      await this.appendRequired({ action: 'recording.toggle', actor: actorOf(by), target: { type: 'room', id }, details: { recording: enabled, by, changed, session: this.taps.get(id)?.sessionId ?? null } }, ctx);
    }
  }

  async closeRoom(id: string, ctx?: AuditContext): Promise<void> {
    const stored = await this.store.get(id);
    if (!stored) throw roomNotFound(id);
    await this.store.close(id);
    await this.appendRequired({ action: 'room.close', actor: ADMIN_ACTOR, target: { type: 'room', id } }, ctx);
    this.rooms.get(id)?.close('ROOM_CLOSED', 'the room was closed by an admin');
  }

  mintToken(room: string, identity: string, name: string, ttlMinutes?: number, host = false): { token: string; expiresAt: Date; jti: string } {
    return mintJoinToken(this.deps.secrets.tokenSecret, { room, identity, name, ttlMinutes: ttlMinutes ?? this.config.SFU_TOKEN_TTL_MIN, host });
  }

  /**
   * Promotes a viewer of an allhands room to speaker: asked by a host in the room or by the admin
   * API. An admin change of the room, so it is audited before it is answered.
   */
  async promote(roomId: string, targetId: string, by: { admin: true } | { host: Peer }, ctx?: AuditContext): Promise<{ role: string; changed: boolean }> {
    const room = this.rooms.get(roomId);
    if (!room) throw new VerbatimError('ROOM_NOT_FOUND', `room ${roomId} is not open on this SFU`, { hint: 'Participants can be promoted only while they are in the room.' });
    if ('host' in by && !by.host.host) throw new VerbatimError('NOT_HOST', 'only a host may promote participants', { hint: 'Join with a host link (admin API: POST /rooms/:id/tokens with role "host").' });
    const { peer, changed } = room.roles.promote(targetId);
    const actor = 'admin' in by ? ADMIN_ACTOR : { type: 'user' as const, id: `participant:${by.host.id}` };
    await this.appendRequired({ action: 'room.promote', actor, target: { type: 'participant', id: peer.id }, details: { room: roomId, name: peer.name, changed } }, ctx);
    room.logger.info({ peer: peer.id, changed, by: 'admin' in by ? 'admin' : by.host.id }, 'participant promoted to speaker');
    return { role: room.roles.roleOf(peer), changed };
  }

  /**
   * Joins a verified identity. A second session of the same identity replaces the
   * first (page reloads); state kept from a recent disconnect (consent) is reclaimed.
   */
  async join(claims: JoinClaims, channel: PeerChannel): Promise<{ room: Room; peer: Peer; reclaimed: boolean }> {
    this.assertNotDraining();
    this.assertTokenUnspent(claims);
    // Looked up before the room is touched: from here to addPeer nothing may wait (join races).
    const regulated = await this.regulated.isRegulated(claims.sub);
    const room = await this.openRoom(claims.room);
    const key = `${room.id}/${claims.sub}`;
    let consent: ConsentState = 'pending';
    let reclaimed = false;
    const previous = room.peers.get(claims.sub);
    if (previous) {
      consent = previous.consent;
      reclaimed = true;
      previous.notify({ notification: 'sessionReplaced', data: {} });
      previous.channel?.close(4002, 'SESSION_REPLACED');
      previous.close();
    } else {
      const r = this.reclaim.get(key);
      if (r && r.expiresAt > Date.now()) {
        consent = r.consent;
        reclaimed = true;
      }
    }
    this.reclaim.delete(key);
    const peer = new Peer(claims.sub, claims.name, channel);
    peer.consent = consent;
    peer.host = claims.role === 'host';
    peer.regulated = regulated;
    room.addPeer(peer);
    this.spendToken(claims);
    this.metrics.joins.inc();
    room.logger.info({ peer: peer.id, reclaimed }, 'peer joined');
    return { room, peer, reclaimed };
  }

  /**
   * A token joins once. Its identity may use it again only to come back: replacing its own
   * live session (a reload) or within the reclaim window after a disconnect; never after `leave`.
   */
  private assertTokenUnspent(claims: JoinClaims): void {
    if (!this.spentTokens.has(claims.jti)) return;
    const live = this.rooms.get(claims.room)?.peers.get(claims.sub);
    const r = this.reclaim.get(`${claims.room}/${claims.sub}`);
    if ((live && !live.closed) || (r && r.expiresAt > Date.now())) return;
    throw new VerbatimError('TOKEN_REUSED', 'this join link was already used', { hint: 'Ask the meeting host for a new join link; each link joins once.' });
  }

  private spendToken(claims: JoinClaims): void {
    const now = Date.now();
    this.spentTokens.set(claims.jti, { identity: claims.sub, expiresAt: claims.exp * 1000 });
    if (now - this.spentPrunedAt > 60_000) {
      this.spentPrunedAt = now;
      for (const [jti, t] of this.spentTokens) if (t.expiresAt <= now) this.spentTokens.delete(jti);
    }
  }

  /** Connection lost without `leave`: keep the identity's state for the reclaim window. */
  disconnected(room: Room, peer: Peer): void {
    if (peer.closed) return;
    const window = this.config.SFU_RECLAIM_WINDOW_MS;
    if (window > 0) this.reclaim.set(`${room.id}/${peer.id}`, { consent: peer.consent, expiresAt: Date.now() + window });
    peer.close();
    for (const [k, v] of this.reclaim) if (v.expiresAt <= Date.now()) this.reclaim.delete(k);
  }

  /** External RTP source joining as a participant (see Room.ingest). */
  async ingest(roomId: string, identity: string, name: string, tracks: { kind: 'audio' | 'video'; ssrc: number; payloadType: number }[]) {
    this.assertNotDraining();
    const room = await this.openRoom(roomId);
    room.peers.get(identity)?.close();
    const peer = new Peer(identity, name, undefined, 'ingest');
    room.addPeer(peer);
    try {
      // The operator who configured the ingest accepted recording for that source.
      await this.decideConsent(room, peer, 'granted', 'pre-accepted');
      return { peerId: identity, tracks: await room.ingest(peer, tracks) };
    } catch (err) {
      peer.close();
      throw err;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.quality.stop();
    // End recording sessions first so the recorder seals them while media still flows.
    await Promise.all([...this.taps.values()].map((t) => t.close()));
    await this.recorders?.close();
    this.cascade?.close();
    for (const l of this.links.values()) l.close();
    for (const room of [...this.rooms.values()]) room.close('ROOM_CLOSED', 'the SFU is shutting down');
    await this.registry?.close();
    this.pool.close();
  }
}

/** A host serving viewers of another host's room lets the link go this long after its last viewer left. */
const EDGE_IDLE_CLOSE_MS = 5000;

function roomNotFound(id: string): VerbatimError {
  return new VerbatimError('ROOM_NOT_FOUND', `room ${id} does not exist`, { hint: 'Check the room id, or create the room through the admin API.' });
}

/** The SFU admin API authenticates with one shared secret: its actor is that key. */
const ADMIN_ACTOR = { type: 'api_key', id: 'sfu-admin' } as const;

/** Who toggled recording: 'admin', 'peer:<id>' or an automatic reason ('auto:first-producer'). */
function actorOf(by: string): NonNullable<AuditEntryInput['actor']> {
  if (by === 'admin') return ADMIN_ACTOR;
  if (by.startsWith('peer:')) return { type: 'user', id: `participant:${by.slice(5)}` };
  return { type: 'service', id: 'sfu' };
}
