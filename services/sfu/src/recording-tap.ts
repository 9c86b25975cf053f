import { randomBytes } from 'node:crypto';
import type { types as ms } from 'mediasoup';
import type { TimelineEvent } from '../../lib/contracts/recorder-control.ts';
import { toVerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import type { Peer } from './peer.ts';
import type { RecorderClient } from './recorder-client.ts';
import type { Room } from './room.ts';

interface Tap {
  peer: Peer;
  producer: ms.Producer;
  track: string;
  transport?: ms.PlainTransport;
  consumer?: ms.Consumer;
}

/**
 * Taps a recorded room into the recorder: every producer of every recordable
 * participant gets a paused consumer on a PlainTransport aimed at the recorder's port
 * pair (RTP and RTCP apart, so sender reports arrive for A/V sync); it is resumed, and
 * a keyframe requested, once the recorder says it listens. Joins, leaves, pauses,
 * consent and toggles go to the session timeline. If the recorder cannot be reached,
 * participants are told (never a silent gap) and taps re-attach when it is back.
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
  /**
   * Called when a session opens with the consent decisions made before it (e.g. answered
   * before recording was switched on), so the consent log ties them to this session too.
   */
  onSessionStarted: ((session: string, earlier: { peer: Peer; decision: 'granted' | 'declined'; method: 'click' | 'announcement' | 'pre-accepted'; at: Date }[]) => void) | undefined;

  constructor(
    private readonly room: Room,
    private readonly recorder: RecorderClient,
    private readonly logger: Logger,
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
    recorder.on('down', this.onRecorderDown);
    recorder.on('up', this.onRecorderUp);
    if (room.recording) this.run(() => this.startRecording('resume'));
  }

  private readonly onRecorderDown = (error: string) => {
    if (!this.room.recording || this.room.closed) return;
    this.logger.error({ error }, 'recorder unreachable while recording');
    this.room.setRecordingFailure({ code: 'RECORDER_UNAVAILABLE', message: 'the recorder is not reachable; this part of the meeting is not being recorded' });
  };

  private readonly onRecorderUp = (_h: unknown, restarted: boolean) => {
    if (!this.room.recording || this.room.closed) return;
    this.run(async () => {
      if (restarted) this.event({ type: 'recorder-restarted' });
      // Re-attach every tap: the recorder's old ports are gone after a restart.
      for (const tap of [...this.taps.values()]) await this.attach(tap, true);
      this.room.setRecordingFailure(undefined);
    });
  };

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

  private async flushEvents(): Promise<void> {
    if (!this.session || this.queue.length === 0) return;
    const batch = this.queue.splice(0, this.queue.length);
    try {
      await this.recorder.events(this.room.id, this.session, batch);
    } catch (err) {
      this.queue.unshift(...batch); // kept for the next attempt; the recorder may be restarting
      throw err;
    }
  }

  /** Opens a session (if none) and taps every recordable producer in the room. */
  private async startRecording(by: string): Promise<void> {
    if (this.session) return;
    this.session = `${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '')}-${randomBytes(3).toString('hex')}`;
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
    try {
      await this.recorder.endSession(this.room.id, session, reason);
      this.logger.info({ session, reason }, 'recording session ended');
    } catch (err) {
      this.logger.error({ err, session }, 'recorder could not end the session; it stays recoverable on the recorder');
    }
  }

  private async maybeTap(peer: Peer, producer: ms.Producer): Promise<void> {
    if (this.closed || !this.room.recording || this.room.closed || producer.closed || this.taps.has(producer.id)) return;
    if (!this.room.isRecordable(peer)) return;
    // Starting a session taps every producer, this one included.
    if (!this.session) return this.startRecording('producer');
    const tap: Tap = { peer, producer, track: trackId(peer, producer) };
    this.taps.set(producer.id, tap);
    await this.attach(tap, false);
  }

  private async attach(tap: Tap, reattach: boolean): Promise<void> {
    const { peer, producer } = tap;
    tap.consumer?.close();
    tap.transport?.close();
    tap.consumer = undefined;
    tap.transport = undefined;
    if (producer.closed || !this.session) return;
    const router = this.room.router;
    const transport = await router.createPlainTransport({ listenInfo: { protocol: 'udp', ip: this.room.transportListenIp }, rtcpMux: false, comedia: false, appData: { tap: tap.track } });
    tap.transport = transport;
    // The recorder never sends NACKs, so no RTX; and it takes the highest simulcast layer.
    const caps: ms.RtpCapabilities = {
      codecs: (router.rtpCapabilities.codecs ?? []).filter((c) => !/\/rtx$/i.test(c.mimeType)),
      headerExtensions: router.rtpCapabilities.headerExtensions ?? [],
    };
    const consumer = await transport.consume({ producerId: producer.id, rtpCapabilities: caps, paused: true, appData: { tap: tap.track } });
    tap.consumer = consumer;
    if (consumer.type === 'simulcast' || consumer.type === 'svc') await consumer.setPreferredLayers({ spatialLayer: 10, temporalLayer: 10 });
    const codec = consumer.rtpParameters.codecs[0]!;
    try {
      const res = await this.recorder.startTrack({
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
      });
      if (tap.consumer !== consumer) return; // superseded while waiting
      await transport.connect({ ip: res.ip, port: res.rtpPort, rtcpPort: res.rtcpPort });
      await consumer.resume();
      if (producer.kind === 'video') await consumer.requestKeyFrame();
      this.logger.info({ track: tap.track, peer: peer.id, rtpPort: res.rtpPort, reattach }, 'track tapped to recorder');
      if (this.room.recordingFailure) this.room.setRecordingFailure(undefined);
    } catch (err) {
      const e = toVerbatimError(err);
      this.logger.error({ err: e, track: tap.track }, 'recorder refused or failed a track');
      this.room.setRecordingFailure({ code: e.code, message: e.message });
      this.event({ type: 'track-failed', participant: peer.id, track: tap.track, details: { code: e.code } });
    }
  }

  private async untap(producerId: string): Promise<void> {
    const tap = this.taps.get(producerId);
    if (!tap) return;
    this.taps.delete(producerId);
    tap.consumer?.close();
    tap.transport?.close();
    if (!this.session) return;
    await this.recorder.stopTrack(this.session, tap.track).catch((err: unknown) => this.logger.warn({ err, track: tap.track }, 'recorder stopTrack failed'));
  }

  get sessionId(): string | undefined {
    return this.session;
  }

  /** Ends the session (SFU shutdown) and detaches from the recorder's health events. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.run(() => this.endSession('sfu-shutdown'));
    await this.chain;
    this.closed = true;
    this.recorder.off('down', this.onRecorderDown);
    this.recorder.off('up', this.onRecorderUp);
  }
}

function joinDetails(peer: Peer): Record<string, unknown> {
  return peer.regulated ? { name: peer.name, regulated: true } : { name: peer.name };
}

export function trackId(peer: Peer, producer: ms.Producer): string {
  return `${peer.id}-${producer.kind}-${producer.id.slice(0, 8)}`;
}
