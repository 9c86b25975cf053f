import { randomBytes } from 'node:crypto';
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
import { RecorderClient } from './recorder-client.ts';
import { RecordingTap } from './recording-tap.ts';
import type { AuditEntryInput, AuditSink } from '../../lib/audit-sink.ts';

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
  private drainingFlag = false;
  private closed = false;
  readonly recorder: RecorderClient | undefined;
  readonly taps = new Map<string, RecordingTap>();

  constructor(readonly deps: SfuDeps) {
    this.store = new RoomStore(deps.db);
    this.audit = deps.audit;
    this.metrics = createSfuMetrics(deps.registry);
    this.pool = new WorkerPool({ size: deps.config.SFU_WORKERS, workerBin: deps.config.MEDIASOUP_WORKER_BIN, logger: deps.logger, metrics: this.metrics });
    if (deps.config.RECORDER_URL) this.recorder = new RecorderClient(deps.config.RECORDER_URL, deps.secrets.recorderSecret, deps.logger.child({ component: 'recorder-client' }));
  }

  async start(): Promise<void> {
    await this.pool.start();
    this.recorder?.start();
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

  async createRoom(input: { id?: string | undefined; name?: string | undefined; flags: RoomFlags }): Promise<{ room: StoredRoom; roomSecret: string }> {
    this.assertNotDraining();
    const id = input.id ?? randomBytes(6).toString('base64url').replace(/^[_-]/, 'r');
    if (await this.store.get(id)) throw new VerbatimError('ROOM_EXISTS', `room ${id} already exists`, { hint: 'Pick another id or omit it to get a generated one.' });
    const created = await this.store.create({ id, name: input.name ?? id, flags: input.flags });
    await this.audit.append({ action: 'room.create', actor: ADMIN_ACTOR, target: { type: 'room', id }, details: { name: input.name ?? id, flags: input.flags } });
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
    const { router, worker } = await this.pool.createRouter({ mediaCodecs: structuredClone(mediaCodecs), appData: { room: id } });
    const cfg = this.config;
    const room = new Room(
      id,
      stored.name,
      stored.flags,
      stored.recording,
      router,
      worker,
      { listenIp: cfg.SFU_RTC_LISTEN_IP, announcedAddress: cfg.SFU_RTC_ANNOUNCED_IP, portRange: { min: cfg.SFU_RTC_MIN_PORT, max: cfg.SFU_RTC_MAX_PORT } },
      this.metrics,
      this.logger.child({ room: id }),
    );
    this.rooms.set(id, room);
    this.metrics.rooms.inc();
    room.on('recordingChanged', (recording, by) => {
      this.store.setRecording(id, recording).catch((err: unknown) => room.logger.error({ err }, 'failed to persist recording state'));
      this.auditInBackground(room, { action: 'recording.toggle', actor: actorOf(by), target: { type: 'room', id }, details: { recording, by, session: this.taps.get(id)?.sessionId ?? null } });
    });
    room.on('consent', (peer, decision, method) => {
      this.auditInBackground(room, {
        action: 'consent.event',
        actor: { type: 'user', id: `participant:${peer.id}` },
        target: { type: 'participant', id: peer.id },
        details: { room: id, session: this.taps.get(id)?.sessionId ?? null, participantName: peer.name, decision, method, policy: room.flags.consent },
      });
      this.store
        .recordConsent({ roomId: id, sessionId: this.taps.get(id)?.sessionId ?? null, participantId: peer.id, participantName: peer.name, policy: room.flags.consent, decision, method, clientInfo: {} })
        .catch((err: unknown) => room.logger.error({ err, peer: peer.id }, 'failed to store consent event'));
    });
    room.once('close', () => {
      if (this.rooms.get(id) === room) this.rooms.delete(id);
      this.taps.delete(id);
      this.metrics.rooms.dec();
    });
    if (this.recorder) {
      const tap = new RecordingTap(room, this.recorder, room.logger.child({ component: 'tap' }));
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
    room.logger.info({ workerPid: worker.pid }, 'room opened');
    return room;
  }

  /**
   * Events from a live meeting (a toggle, a consent click) are not held up by the audit
   * append; a failure is logged loudly (the change itself is already stored).
   */
  private auditInBackground(room: Room, entry: AuditEntryInput): void {
    this.audit.append(entry).catch((err: unknown) => room.logger.error({ err, action: entry.action }, 'could not write the audit entry'));
  }

  async updateFlags(id: string, patch: Partial<RoomFlags>): Promise<RoomFlags> {
    const stored = await this.store.get(id);
    if (!stored) throw roomNotFound(id);
    const flags = RoomFlagsSchema.parse({ ...stored.flags, ...patch });
    await this.store.updateFlags(id, flags);
    await this.audit.append({ action: 'room.flags', actor: ADMIN_ACTOR, target: { type: 'room', id }, details: { before: stored.flags, after: flags } });
    const live = this.rooms.get(id);
    if (live) {
      live.flags = flags;
      live.broadcastRecordingState();
    }
    return flags;
  }

  /**
   * Toggles recording. `authority` says who asks: the admin key always may; a
   * participant may only when the room is not lockRecord or with the room secret.
   */
  async setRecording(id: string, enabled: boolean, authority: { admin: true } | { peerId: string; roomSecret?: string | undefined }): Promise<void> {
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
    if (live) live.setRecording(enabled, by);
    else {
      await this.store.setRecording(id, enabled);
      // No live room, so no recordingChanged event: audit the stored change here.
      await this.audit.append({ action: 'recording.toggle', actor: actorOf(by), target: { type: 'room', id }, details: { recording: enabled, by, session: null } });
    }
  }

  async closeRoom(id: string): Promise<void> {
    const stored = await this.store.get(id);
    if (!stored) throw roomNotFound(id);
    await this.store.close(id);
    await this.audit.append({ action: 'room.close', actor: ADMIN_ACTOR, target: { type: 'room', id } });
    this.rooms.get(id)?.close('ROOM_CLOSED', 'the room was closed by an admin');
  }

  mintToken(room: string, identity: string, name: string, ttlMinutes?: number): { token: string; expiresAt: Date } {
    return mintJoinToken(this.deps.secrets.tokenSecret, { room, identity, name, ttlMinutes: ttlMinutes ?? this.config.SFU_TOKEN_TTL_MIN });
  }

  /**
   * Joins a verified identity. A second session of the same identity replaces the
   * first (page reloads); state kept from a recent disconnect (consent) is reclaimed.
   */
  async join(claims: JoinClaims, channel: PeerChannel): Promise<{ room: Room; peer: Peer; reclaimed: boolean }> {
    this.assertNotDraining();
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
    room.addPeer(peer);
    this.metrics.joins.inc();
    room.logger.info({ peer: peer.id, reclaimed }, 'peer joined');
    return { room, peer, reclaimed };
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
    // The operator who configured the ingest accepted recording for that source.
    room.setConsent(peer, 'granted', 'pre-accepted');
    try {
      return { peerId: identity, tracks: await room.ingest(peer, tracks) };
    } catch (err) {
      peer.close();
      throw err;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // End recording sessions first so the recorder seals them while media still flows.
    await Promise.all([...this.taps.values()].map((t) => t.close()));
    this.recorder?.stop();
    for (const room of [...this.rooms.values()]) room.close('ROOM_CLOSED', 'the SFU is shutting down');
    this.pool.close();
  }
}

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
