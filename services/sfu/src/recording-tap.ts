import { randomBytes } from 'node:crypto';
import type { types as ms } from 'mediasoup';
import type { TimelineEvent } from '../../lib/contracts/recorder-control.ts';
import { toVerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { SRTP_KEY_BYTES, type SrtpCryptoSuite } from '../../lib/rtp/srtp.ts';
import type { Peer } from './peer.ts';
import type { PoolMember, RecorderPool } from './recorder-pool.ts';
import type { Room } from './room.ts';

/** Receiver feedback the recorder never sends (a PLI, `nack pli`, is the SFU's own keyframe request and stays). */
const TAP_FEEDBACK_DROPPED = new Set(['nack', 'transport-cc', 'goog-remb']);
const TAP_EXTENSIONS_DROPPED = new Set(['http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01', 'http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time']);

/** The suite both mediasoup and the recorder's receive paths (libsrtp, lib/rtp/srtp.ts) implement. */
const TAP_SRTP_SUITE: SrtpCryptoSuite = 'AES_CM_128_HMAC_SHA1_80';

/** One copy of a tapped producer on one recorder of the pool. */
interface Attachment {
  member: PoolMember;
  copy: number;
  transport: ms.PlainTransport;
  consumer: ms.Consumer;
}

interface Tap {
  peer: Peer;
  producer: ms.Producer;
  track: string;
  /** By copy (RECORDER_REPLICAS): each on a different recorder. */
  copies: (Attachment | undefined)[];
}

/**
 * Taps a recorded room into the recorder pool (recorder-pool.ts): every producer of every
 * recordable participant gets a paused consumer on a PlainTransport aimed at a recorder's
 * port pair (RTP and RTCP apart, so sender reports arrive for A/V sync); it is resumed, and
 * a keyframe requested, once the recorder says it listens. A participant's tracks go to one
 * recorder (the least loaded when their first track is placed); with RECORDER_REPLICAS=2 each
 * producer is tapped to two different recorders. When a recorder dies its tracks are re-tapped
 * to another (new segments there; the session's manifest shows the gap); a draining recorder's
 * tracks move make-before-break (the new tap runs and has its keyframe before the old stops).
 * Joins, leaves, pauses, consent and toggles go to the session timeline at the session's home
 * recorder (any live one holding it; every recorder shares it through the database). If no
 * recorder can be reached, participants are told (never a silent gap) and taps re-attach when
 * one is back.
 */
export class RecordingTap {
  private session: string | undefined;
  private readonly taps = new Map<string, Tap>();
  private readonly queue: TimelineEvent[] = [];
  /** When each live producer appeared, so a session started later still logs real times. */
  private readonly producerSince = new Map<string, string>();
  private chain: Promise<void> = Promise.resolve();
  private eventChain: Promise<void> = Promise.resolve();
  private closed = false;
  /** The recorder the session's timeline goes to and that seals it. */
  private home: PoolMember | undefined;
  /** Every recorder that opened this session (they are released, or seal, at its end). */
  private readonly held = new Set<PoolMember>();
  /**
   * Called when a session opens with the consent decisions made before it (e.g. answered
   * before recording was switched on), so the consent log ties them to this session too.
   */
  onSessionStarted: ((session: string, earlier: { peer: Peer; decision: 'granted' | 'declined'; method: 'click' | 'announcement' | 'pre-accepted'; at: Date }[]) => void) | undefined;

  constructor(
    private readonly room: Room,
    private readonly pool: RecorderPool,
    private readonly logger: Logger,
    /** Recorders each producer is tapped to (RECORDER_REPLICAS). */
    private readonly replicas = 1,
    private readonly opts: { srtp: boolean } = { srtp: true },
  ) {
    room.on('recordingChanged', (on, by) => this.run(() => (on ? this.startRecording(by) : this.stopRecording(`recording-off:${by}`))));
    room.on('peerJoined', (peer) => this.event({ type: 'participant-joined', participant: peer.id, details: joinDetails(peer) }));
    room.on('peerLeft', (peer) => {
      this.event({ type: 'participant-left', participant: peer.id });
      this.run(async () => {
        if (this.room.peers.size === 0 && this.session) await this.endSession('room-empty');
      });
    });
    room.on('producerAdded', (peer, producer) => {
      this.producerSince.set(producer.id, new Date().toISOString());
      this.event({ type: 'producer-added', participant: peer.id, track: trackId(peer, producer), details: { kind: producer.kind } });
      this.run(() => this.maybeTap(peer, producer));
    });
    room.on('producerClosed', (peer, producer) => {
      this.producerSince.delete(producer.id);
      this.event({ type: 'producer-closed', participant: peer.id, track: trackId(peer, producer) });
      this.run(() => this.untap(producer.id));
    });
    room.on('producerPaused', (peer, producer) => this.event({ type: 'producer-paused', participant: peer.id, track: trackId(peer, producer) }));
    room.on('producerResumed', (peer, producer) => this.event({ type: 'producer-resumed', participant: peer.id, track: trackId(peer, producer) }));
    room.on('consent', (peer, decision, method) => {
      this.event({ type: 'consent', participant: peer.id, details: { decision, method, policy: room.flags.consent } });
      this.run(async () => {
        for (const producer of peer.producers.values()) {
          // isRecordable, not the decision: a regulated participant stays recorded whatever they answer.
          if (this.room.isRecordable(peer)) await this.maybeTap(peer, producer);
          else await this.untap(producer.id);
        }
      });
    });
    // A decision that could not be stored stops the participant's taps until one is.
    room.on('recordableChanged', (peer) => {
      this.run(async () => {
        for (const producer of peer.producers.values()) {
          if (this.room.isRecordable(peer)) await this.maybeTap(peer, producer);
          else await this.untap(producer.id);
        }
      });
    });
    room.once('close', () => {
      this.run(() => this.endSession('room-closed'));
    });
    pool.on('down', this.onRecorderDown);
    pool.on('up', this.onRecorderUp);
    pool.on('draining', this.onRecorderDraining);
    if (room.recording) this.run(() => this.startRecording('resume'));
  }

  private readonly onRecorderDown = (member: PoolMember, error: string) => {
    if (!this.room.recording || this.room.closed) return;
    if (this.home === member) this.home = undefined;
    const lost = this.attachmentsOn(member);
    if (!this.pool.anyAlive) this.unreachable(error);
    if (lost.length === 0) return;
    this.logger.error({ error, recorder: member.key, tracks: lost.length }, 'recorder lost while recording: re-tapping its tracks to another');
    // Its taps are dead now: close them at once, so nothing is sent into the void while we re-place.
    for (const { tap, att } of lost) {
      this.detach(att);
      if (tap.copies[att.copy] === att) tap.copies[att.copy] = undefined;
    }
    this.run(async () => {
      for (const { tap, att } of lost) await this.attachCopy(tap, att.copy, { exclude: new Set([member]), movedFrom: { member, reason: 'recorder-down' } });
    });
  };

  private readonly onRecorderUp = (member: PoolMember, restarted: boolean) => {
    if (!this.room.recording || this.room.closed) return;
    this.run(async () => {
      if (restarted && this.held.has(member)) this.event({ type: 'recorder-restarted', details: { recorder: member.key } });
      // A restarted recorder's ports are gone: its taps re-attach (to it, or wherever placement says).
      if (restarted) {
        for (const { tap, att } of this.attachmentsOn(member)) {
          this.detach(att);
          tap.copies[att.copy] = undefined;
        }
      }
      await this.attachMissing();
    });
  };

  private readonly onRecorderDraining = (member: PoolMember) => {
    if (!this.room.recording || this.room.closed) return;
    this.run(async () => {
      const moving = this.attachmentsOn(member);
      for (const { tap, att } of moving) await this.attachCopy(tap, att.copy, { exclude: new Set([member]), movedFrom: { member, reason: 'recorder-draining' }, keepOld: att });
      if (this.home === member) this.home = undefined;
      // Nothing of the session left there: it lets go of it (another recorder seals).
      if (this.session && this.held.has(member) && this.attachmentsOn(member).length === 0) {
        await this.eventChain;
        await this.flushEvents().catch(() => {});
        await member.client.releaseSession(this.room.id, this.session).catch((err: unknown) => this.logger.warn({ err, recorder: member.key }, 'draining recorder did not release the session'));
        this.held.delete(member);
      }
    });
  };

  private unreachable(error: string): void {
    this.logger.error({ error }, 'no recorder reachable while recording');
    this.room.setRecordingFailure({ code: 'RECORDER_UNAVAILABLE', message: 'the recorder is not reachable; this part of the meeting is not being recorded' });
  }

  private attachmentsOn(member: PoolMember): { tap: Tap; att: Attachment }[] {
    const out: { tap: Tap; att: Attachment }[] = [];
    for (const tap of this.taps.values()) for (const att of tap.copies) if (att?.member === member) out.push({ tap, att });
    return out;
  }

  /** Serializes tap work: events from one room arrive faster than the recorder answers. */
  private run(fn: () => Promise<void>): void {
    this.chain = this.chain.then(fn).catch((err: unknown) => this.logger.error({ err }, 'recording tap step failed'));
  }

  private event(e: Omit<TimelineEvent, 'at' | 'details'> & { details?: Record<string, unknown>; at?: string }): void {
    if (!this.session) return;
    this.queue.push({ at: new Date().toISOString(), details: {}, ...e });
    // Timeline posts go on their own chain so they never delay a tap.
    this.eventChain = this.eventChain.then(() => this.flushEvents()).catch((err: unknown) => this.logger.warn({ err }, 'timeline events not delivered yet'));
  }

  /** The session's home: kept while alive, else a live recorder holding it, else any live one. */
  private homeMember(): PoolMember | undefined {
    if (this.home?.alive) return this.home;
    this.home = [...this.held].find((m) => m.alive) ?? this.pool.place() ?? this.pool.list().find((m) => m.alive);
    return this.home;
  }

  private async flushEvents(): Promise<void> {
    if (!this.session || this.queue.length === 0) return;
    const home = this.homeMember();
    if (!home) throw new Error('no recorder reachable for the timeline');
    const batch = this.queue.splice(0, this.queue.length);
    try {
      await home.client.events(this.room.id, this.session, batch);
      this.held.add(home);
    } catch (err) {
      this.queue.unshift(...batch); // kept for the next attempt; the recorder may be restarting
      throw err;
    }
  }

  /** Opens a session (if none) and taps every recordable producer in the room. */
  private async startRecording(by: string): Promise<void> {
    if (this.session) return;
    this.session = `${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '')}-${randomBytes(3).toString('hex')}`;
    this.home = undefined;
    this.held.clear();
    this.logger.info({ session: this.session, by }, 'recording session started');
    this.event({ type: 'recording-on', details: { by, transcribe: this.room.flags.transcribe, language: this.room.flags.language } });
    // Decisions made before this session opened still govern it: restate them on its timeline and
    // in the consent log. Collected with no await since `session` was set, so a decision arriving
    // from here on is logged once, live, with this session.
    const earlier: NonNullable<Parameters<NonNullable<RecordingTap['onSessionStarted']>>[1]> = [];
    for (const peer of this.room.peers.values()) {
      this.event({ type: 'participant-joined', participant: peer.id, at: peer.joinedAt.toISOString(), details: joinDetails(peer) });
      if (peer.consent !== 'pending' && peer.consentDecision) {
        const { method, at } = peer.consentDecision;
        earlier.push({ peer, decision: peer.consent, method, at });
        this.event({ type: 'consent', participant: peer.id, at: at.toISOString(), details: { decision: peer.consent, method, policy: this.room.flags.consent, decidedBeforeSession: true } });
      }
    }
    if (earlier.length > 0) this.onSessionStarted?.(this.session, earlier);
    for (const peer of this.room.peers.values()) {
      for (const producer of peer.producers.values()) {
        const at = this.producerSince.get(producer.id);
        this.event({ type: 'producer-added', participant: peer.id, track: trackId(peer, producer), ...(at ? { at } : {}), details: { kind: producer.kind } });
        await this.maybeTap(peer, producer);
      }
    }
  }

  private async stopRecording(reason: string): Promise<void> {
    this.event({ type: 'recording-off', details: { reason } });
    await this.endSession(reason);
  }

  private async endSession(reason: string): Promise<void> {
    const session = this.session;
    if (!session) return;
    for (const id of [...this.taps.keys()]) await this.untap(id);
    await this.eventChain;
    await this.flushEvents().catch(() => {});
    this.session = undefined;
    const sealer = this.homeMember();
    // Recorders that held part of the session let go of it first (their segments are in the
    // database by then), then one seals it with everyone's segments.
    for (const m of this.held) {
      if (m === sealer || !m.alive) continue;
      await m.client.releaseSession(this.room.id, session).catch((err: unknown) => this.logger.warn({ err, session, recorder: m.key }, 'recorder did not release the session'));
    }
    this.held.clear();
    this.home = undefined;
    if (!sealer) {
      this.logger.error({ session }, 'no recorder reachable to seal the session; it stays recoverable at the recorders');
      return;
    }
    try {
      await sealer.client.endSession(this.room.id, session, reason);
      this.logger.info({ session, reason, recorder: sealer.key }, 'recording session ended');
    } catch (err) {
      this.logger.error({ err, session }, 'recorder could not end the session; it stays recoverable on the recorder');
    }
  }

  private async maybeTap(peer: Peer, producer: ms.Producer): Promise<void> {
    if (this.closed || !this.room.recording || this.room.closed || producer.closed || this.taps.has(producer.id)) return;
    if (!this.room.isRecordable(peer)) return;
    // Starting a session taps every producer, this one included.
    if (!this.session) return this.startRecording('producer');
    const tap: Tap = { peer, producer, track: trackId(peer, producer), copies: [] };
    this.taps.set(producer.id, tap);
    for (let copy = 0; copy < this.replicas; copy++) await this.attachCopy(tap, copy, {});
  }

  /** Taps every copy that has no recorder now (one came back, or joined the pool). */
  private async attachMissing(): Promise<void> {
    for (const tap of [...this.taps.values()]) {
      for (let copy = 0; copy < this.replicas; copy++) if (!tap.copies[copy] && this.taps.get(tap.producer.id) === tap) await this.attachCopy(tap, copy, {});
    }
  }

  /**
   * Taps one copy of a producer to a recorder: the one holding the participant's other tracks
   * (same copy) when it can take it, else the least loaded; never one holding another copy of this
   * producer. With `keepOld` (a drain) the old tap is stopped only once the new one runs.
   */
  private async attachCopy(tap: Tap, copy: number, opts: { exclude?: Set<PoolMember>; movedFrom?: { member: PoolMember; reason: string }; keepOld?: Attachment }): Promise<void> {
    const { peer, producer } = tap;
    if (producer.closed || !this.session || this.taps.get(producer.id) !== tap) return;
    const exclude = new Set(opts.exclude);
    tap.copies.forEach((a, c) => a && c !== copy && exclude.add(a.member));
    let prefer: PoolMember | undefined;
    for (const other of this.taps.values()) if (other.peer === peer && other !== tap && other.copies[copy]?.member.alive) prefer ??= other.copies[copy].member;
    const member = this.pool.place({ prefer, exclude });
    if (!member) {
      if (opts.keepOld) return this.logger.warn({ track: tap.track }, 'no other recorder to move the track to: it stays on the draining one');
      if (copy === 0) return this.unreachable('no live recorder can take the track');
      return this.logger.warn({ track: tap.track, copy }, 'no second recorder for the replica: recording one copy until one is available');
    }
    const router = this.room.router;
    const transport = await router.createPlainTransport({
      listenInfo: { protocol: 'udp', ip: this.room.transportListenIp },
      rtcpMux: false,
      comedia: false,
      ...(this.opts.srtp ? { enableSrtp: true, srtpCryptoSuite: TAP_SRTP_SUITE } : {}),
      appData: { tap: tap.track },
    });
    // The recorder never sends feedback: no NACK (so no RTX, and mediasoup keeps no retransmission
    // buffer for the tap), no transport-wide CC or REMB (so no send-side bandwidth estimation per
    // tap transport, and no abs-send-time to stamp): per packet the tap costs less than a viewer.
    // It takes the highest simulcast layer.
    const caps: ms.RtpCapabilities = {
      codecs: (router.rtpCapabilities.codecs ?? [])
        .filter((c) => !/\/rtx$/i.test(c.mimeType))
        .map((c) => ({ ...c, rtcpFeedback: (c.rtcpFeedback ?? []).filter((f) => !TAP_FEEDBACK_DROPPED.has(f.type) || (f.type === 'nack' && f.parameter === 'pli')) })),
      headerExtensions: (router.rtpCapabilities.headerExtensions ?? []).filter((h) => !TAP_EXTENSIONS_DROPPED.has(h.uri)),
    };
    let consumer: ms.Consumer;
    try {
      consumer = await transport.consume({ producerId: producer.id, rtpCapabilities: caps, paused: true, appData: { tap: tap.track } });
    } catch (err) {
      transport.close();
      throw err;
    }
    const att: Attachment = { member, copy, transport, consumer };
    if (consumer.type === 'simulcast' || consumer.type === 'svc') await consumer.setPreferredLayers({ spatialLayer: 10, temporalLayer: 10 });
    const codec = consumer.rtpParameters.codecs[0]!;
    try {
      const res = await member.client.startTrack({
        room: this.room.id,
        session: this.session,
        track: tap.track,
        participant: { id: peer.id, name: peer.name },
        kind: producer.kind,
        codec: {
          mimeType: codec.mimeType,
          clockRate: codec.clockRate,
          ...(codec.channels ? { channels: codec.channels } : {}),
          payloadType: codec.payloadType,
          parameters: Object.fromEntries(Object.entries(codec.parameters ?? {}).filter(([, v]) => typeof v === 'string' || typeof v === 'number')) as Record<string, string | number>,
        },
        ssrc: consumer.rtpParameters.encodings![0]!.ssrc!,
        headerExtensions: (consumer.rtpParameters.headerExtensions ?? []).map((h) => ({ uri: h.uri, id: h.id })),
        // A regulated participant is recorded on the firm's obligation, not on the room's consent.
        consent: peer.regulated
          ? { decision: 'not-required', ref: 'regulated' }
          : { decision: this.room.flags.consent === 'required' ? 'granted' : 'not-required', ...(this.room.flags.consent === 'notify' ? { method: 'announcement' as const } : { method: 'click' as const }) },
        ...(copy > 0 ? { copy } : {}),
        ...(transport.srtpParameters ? { srtp: { cryptoSuite: TAP_SRTP_SUITE, wrappedKey: member.client.wrapTapKey(this.session, tap.track, Buffer.from(transport.srtpParameters.keyBase64, 'base64')) } } : {}),
      });
      this.held.add(member);
      member.placed++;
      if (this.taps.get(producer.id) !== tap || !this.session) {
        // Untapped while the recorder answered.
        this.detach(att);
        await member.client.stopTrack(this.session ?? '', tap.track).catch(() => {});
        return;
      }
      // The recorder never sends media back, so the key mediasoup would decrypt with is a random one nobody holds.
      const srtpParameters = transport.srtpParameters ? { cryptoSuite: TAP_SRTP_SUITE, keyBase64: randomBytes(SRTP_KEY_BYTES).toString('base64') } : undefined;
      await transport.connect({ ip: res.ip, port: res.rtpPort, rtcpPort: res.rtcpPort, ...(srtpParameters ? { srtpParameters } : {}) });
      await consumer.resume();
      if (producer.kind === 'video') {
        await consumer.requestKeyFrame();
        void keyframeUntilFlowing(consumer);
      }
      const old = tap.copies[copy];
      tap.copies[copy] = att;
      this.logger.info({ track: tap.track, peer: peer.id, recorder: member.key, copy, rtpPort: res.rtpPort, movedFrom: opts.movedFrom?.member.key }, 'track tapped to recorder');
      if (opts.movedFrom) this.pool.metrics.moved.inc({ reason: opts.movedFrom.reason });
      if (opts.movedFrom) this.event({ type: 'track-moved', participant: peer.id, track: tap.track, details: { from: opts.movedFrom.member.key, to: member.key, reason: opts.movedFrom.reason, copy } });
      // Make-before-break: the old tap stops once the new one sends (video starts at a keyframe).
      if (old && old !== att) {
        if (opts.keepOld) await firstPacket(consumer, KEYFRAME_WAIT_MS);
        await this.release(old, tap.track);
      }
      if (copy === 0 && this.room.recordingFailure) this.room.setRecordingFailure(undefined);
    } catch (err) {
      this.detach(att);
      const e = toVerbatimError(err);
      // A full recorder (disk, capacity) or one that stopped answering: the next one of the pool, if any.
      if ((e.code === 'DISK_FULL' || e.code === 'RECORDER_UNAVAILABLE') && this.pool.place({ exclude: new Set([...exclude, member]) })) {
        this.logger.warn({ err: e, track: tap.track, recorder: member.key }, 'recorder refused the track: trying another');
        return this.attachCopy(tap, copy, { ...opts, exclude: new Set([...exclude, member]) });
      }
      this.logger.error({ err: e, track: tap.track, recorder: member.key }, 'recorder refused or failed a track');
      if (copy === 0) this.room.setRecordingFailure({ code: e.code, message: e.message });
      this.event({ type: 'track-failed', participant: peer.id, track: tap.track, details: { code: e.code, recorder: member.key } });
    }
  }

  private detach(att: Attachment): void {
    att.consumer.close();
    att.transport.close();
  }

  /** Stops one copy: its consumer, and the recorder's track (if it still answers). */
  private async release(att: Attachment, track: string): Promise<void> {
    this.detach(att);
    att.member.placed = Math.max(0, att.member.placed - 1);
    if (!this.session || !att.member.alive) return;
    await att.member.client.stopTrack(this.session, track).catch((err: unknown) => this.logger.warn({ err, track, recorder: att.member.key }, 'recorder stopTrack failed'));
  }

  private async untap(producerId: string): Promise<void> {
    const tap = this.taps.get(producerId);
    if (!tap) return;
    this.taps.delete(producerId);
    for (const att of tap.copies) if (att) await this.release(att, tap.track);
  }

  get sessionId(): string | undefined {
    return this.session;
  }

  /** Which recorder holds each copy of each tapped track (tests, the admin API). */
  placements(): { track: string; participant: string; copy: number; recorder: string }[] {
    return [...this.taps.values()].flatMap((t) => t.copies.flatMap((a) => (a ? [{ track: t.track, participant: t.peer.id, copy: a.copy, recorder: a.member.key }] : [])));
  }

  /** Ends the session (SFU shutdown) and detaches from the pool's events. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.run(() => this.endSession('sfu-shutdown'));
    await this.chain;
    this.closed = true;
    this.pool.off('down', this.onRecorderDown);
    this.pool.off('up', this.onRecorderUp);
    this.pool.off('draining', this.onRecorderDraining);
  }
}

/** Longest a drain keeps the old tap while the new one waits for its first packet (a keyframe the sender may not give on request). */
const KEYFRAME_WAIT_MS = 5000;

/** Resolves when the consumer has sent a packet, or after `maxMs`. */
/** Resolves true once the consumer has sent a packet (video: from a keyframe on), false after maxMs. */
async function firstPacket(consumer: ms.Consumer, maxMs: number): Promise<boolean> {
  const end = Date.now() + maxMs;
  while (Date.now() < end && !consumer.closed) {
    const stats = await consumer.getStats().catch(() => []);
    if (stats.some((st) => st.type === 'outbound-rtp' && st.packetCount > 0)) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

/**
 * A tapped video track is recorded from its first keyframe. A browser drops a keyframe request that
 * comes within ~300 ms of the one before (libwebrtc's minimum keyframe interval), and mediasoup asks
 * again only after 1 s, so a tap attached just after a join could start a second late: ask again
 * every 400 ms until video flows (a few times at most).
 */
async function keyframeUntilFlowing(consumer: ms.Consumer): Promise<void> {
  for (let i = 0; i < 5 && !consumer.closed; i++) {
    if (await firstPacket(consumer, 400)) return;
    await consumer.requestKeyFrame().catch(() => {});
  }
}

function joinDetails(peer: Peer): Record<string, unknown> {
  return peer.regulated ? { name: peer.name, regulated: true } : { name: peer.name };
}

export function trackId(peer: Peer, producer: ms.Producer): string {
  return `${peer.id}-${producer.kind}-${producer.id.slice(0, 8)}`;
}
