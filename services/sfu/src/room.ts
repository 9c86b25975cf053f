import { EventEmitter } from 'node:events';
import type { types as ms } from 'mediasoup';
import { codecByMimeType, routerCodecCapabilities } from '../../lib/contracts/codecs.ts';
import type { RoomFlags } from '../../lib/contracts/room.ts';
import type { RecordingState } from '../../lib/contracts/signaling.ts';
import { VerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { mediaFailure, type WorkerHealth } from './media-failure.ts';
import type { Peer } from './peer.ts';
import { checkProduce, type PeerLimits } from './produce-checks.ts';
import type { SfuMetrics } from './sfu-metrics.ts';
import type { PeerQuality } from './quality-monitor.ts';
import { LastN } from './last-n.ts';
import { RoomRoles } from './room-roles.ts';
import { RoomRouters, type RoomRouter } from './room-routers.ts';

export interface RoomTransportConfig {
  listenIp: string;
  announcedAddress?: string | undefined;
  portRange: { min: number; max: number };
}

/** What a room is given besides its router: transport settings, per-participant limits, its worker's health. */
export interface RoomOptions {
  transport: RoomTransportConfig;
  limits: PeerLimits;
  worker: WorkerHealth;
  /** Consumers one router takes before viewers go to a router on another worker (SFU_ROOM_WORKER_CONSUMERS). */
  routerConsumers?: number;
  /** A router for this room on a worker it does not span yet; undefined when every worker is spanned. */
  spanWorker?: (exclude: ms.Worker[]) => Promise<{ router: ms.Router; worker: ms.Worker; health: WorkerHealth } | undefined>;
}

/** A producer of the room that no participant of this host owns: piped in from the room's origin host. */
export interface RemoteProducer {
  producer: ms.Producer;
  peerId: string;
  peerName: string;
}

export interface RoomEvents {
  peerJoined: [peer: Peer];
  peerLeft: [peer: Peer];
  producerAdded: [peer: Peer, producer: ms.Producer];
  producerClosed: [peer: Peer, producer: ms.Producer];
  producerPaused: [peer: Peer, producer: ms.Producer];
  producerResumed: [peer: Peer, producer: ms.Producer];
  consent: [peer: Peer, decision: 'granted' | 'declined', method: 'click' | 'announcement' | 'pre-accepted'];
  recordingChanged: [recording: boolean, by: string];
  /** Whether the peer may be recorded changed without a decision (one could not be stored). */
  recordableChanged: [peer: Peer];
  /** The dominant speaker changed (the cascade forwards it to the room's other hosts). */
  activeSpeaker: [peerId: string];
  close: [code: string, reason: string];
}

/** The routers' codecs: lib/contracts/codecs.ts, the table transcode depacketizes by. */
export const mediaCodecs: ms.RouterRtpCodecCapability[] = routerCodecCapabilities();

/** What an external sender (ingest) must send for each kind: the table's Opus and VP8. */
const INGEST_CODECS = { audio: codecByMimeType('audio/opus')!, video: codecByMimeType('video/VP8')! } as const;

/**
 * A meeting: one mediasoup Router on one worker, its peers, and its recording state.
 * Emits typed events (joins, producers, consent, recording toggles) that the recorder
 * tap and the audit trail subscribe to. close() is idempotent and closes the router,
 * which cascades to every transport, producer and consumer.
 */
export class Room extends EventEmitter<RoomEvents> {
  readonly peers = new Map<string, Peer>();
  private closedFlag = false;
  /** Failure shown to participants when recording should run but cannot. */
  recordingFailure: { code: string; message: string } | undefined;
  /** Who may publish (meeting / allhands), raised hands, promotions. */
  readonly roles: RoomRoles;
  /** Active speaker and the last-N video policy. */
  readonly lastN: LastN;
  /** The routers the room spans on this host: the origin router (`router`) first, the others get every producer piped. */
  readonly routerSet: RoomRouters;
  /** Producers piped in from the room's origin host (this host serves viewers only), by id. */
  readonly remoteProducers = new Map<string, RemoteProducer>();
  /** Set when another host is the room's origin: only that host takes publishers and records. */
  originHost: string | undefined;

  constructor(
    readonly id: string,
    public name: string,
    public flags: RoomFlags,
    public recording: boolean,
    readonly router: ms.Router,
    readonly worker: ms.Worker,
    private readonly options: RoomOptions,
    private readonly metrics: SfuMetrics,
    readonly logger: Logger,
  ) {
    super();
    this.roles = new RoomRoles(this);
    this.lastN = new LastN(this, (n) => {
      for (const p of this.peers.values()) p.notify(n);
      if (n.notification === 'activeSpeaker') this.emit('activeSpeaker', n.data.peerId);
    });
    this.routerSet = new RoomRouters({ router, worker, health: options.worker }, {
      limit: options.routerConsumers ?? Number.POSITIVE_INFINITY,
      spanWorker: options.spanWorker,
      producers: () => this.allProducers(),
      peers: () => this.peers.values(),
      closed: () => this.closedFlag,
      onGone: (rr) => this.routerGone(rr),
      counted: (delta) => this.metrics.spannedRouters.inc(delta),
      logger,
    });
    // A router closes under us when its worker dies or is retired (mediasoup cascades the close).
    router.observer.once('close', () =>
      options.worker.gone() ? this.close('WORKER_DIED', 'the media server process for this room restarted; rejoin to continue') : this.close('ROOM_CLOSED', 'router closed'),
    );
  }

  private get transportConfig(): RoomTransportConfig {
    return this.options.transport;
  }

  /** Runs a mediasoup call; its failure becomes a client error code, or retires a broken worker (see media-failure.ts). */
  private media<T>(what: string, fn: () => Promise<T> | T, health: WorkerHealth = this.options.worker): Promise<T> {
    return mediaFailure(what, fn, health);
  }

  /** Every producer a viewer here may consume: local participants' and those piped in from the origin host. */
  private allProducers(): ms.Producer[] {
    const out: ms.Producer[] = [];
    for (const p of this.peers.values()) out.push(...p.producers.values());
    for (const r of this.remoteProducers.values()) out.push(r.producer);
    return out;
  }

  /** Peers with a video producer, local or remote (the last-N candidates). */
  videoPublishers(): string[] {
    const ids = [...this.peers.values()].filter((p) => [...p.producers.values()].some((pr) => pr.kind === 'video')).map((p) => p.id);
    for (const r of this.remoteProducers.values()) if (r.producer.kind === 'video' && !ids.includes(r.peerId)) ids.push(r.peerId);
    return ids;
  }

  /** The routers the room spans, the origin first. */
  get routers(): readonly RoomRouter[] {
    return this.routerSet.list;
  }

  /** A router other than the origin closed (its worker died): its viewers leave and rejoin, the room goes on. */
  private routerGone(rr: RoomRouter): void {
    if (this.closedFlag) return;
    this.logger.warn({ workerPid: rr.worker.pid }, 'a router the room spans closed; its viewers rejoin');
    for (const p of [...this.peers.values()]) {
      if (![...p.transports.values()].some((t) => t.appData.routerId === rr.router.id)) continue;
      p.notify({ notification: 'roomClosed', data: { code: 'WORKER_DIED', reason: 'the media server process serving you restarted; rejoin to continue' } });
      p.close();
      p.channel?.close(4000, 'WORKER_DIED');
    }
  }

  /**
   * A producer of the room's origin host, piped in over a PipeTransport (cascade-link.ts): viewers
   * here consume it like a local one; it closes when the origin's does or the link is lost.
   */
  async addRemoteProducer(remote: RemoteProducer): Promise<void> {
    const { producer } = remote;
    this.remoteProducers.set(producer.id, remote);
    producer.observer.once('close', () => {
      this.remoteProducers.delete(producer.id);
      if (producer.kind === 'video') this.lastN.refresh();
      this.broadcast(undefined, { notification: 'producerClosed', data: { producerId: producer.id } });
    });
    await this.routerSet.pipeEverywhere(producer);
    if (producer.closed) return;
    if (producer.kind === 'video') this.lastN.refresh();
    this.broadcast(undefined, { notification: 'newProducer', data: { producerId: producer.id, peerId: remote.peerId, peerName: remote.peerName, kind: producer.kind } });
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  get transportListenIp(): string {
    return this.transportConfig.listenIp;
  }

  addPeer(peer: Peer): void {
    this.assertOpen();
    peer.onCloseFault = (err) => {
      this.logger.error({ err, peer: peer.id }, 'closing a participant\'s transports failed; checking the worker');
      void this.options.worker.probe();
    };
    this.peers.set(peer.id, peer);
    this.metrics.peers.inc();
    peer.once('close', () => {
      if (this.peers.get(peer.id) === peer) this.peers.delete(peer.id);
      this.metrics.peers.dec();
      this.roles.left(peer);
      this.lastN.peerLeft(peer.id);
      if (this.flags.notifyJoining) this.broadcast(peer, { notification: 'peerLeft', data: { peerId: peer.id } });
      this.emit('peerLeft', peer);
    });
    if (this.flags.notifyJoining) this.broadcast(peer, { notification: 'peerJoined', data: { peerId: peer.id, name: peer.name } });
    this.emit('peerJoined', peer);
  }

  /** A regulated participant with a producer: recording may not be switched off under it. */
  hasRegulatedPublisher(): boolean {
    for (const p of this.peers.values()) if (p.regulated && p.producers.size > 0) return true;
    return false;
  }

  /** Producers a newly joined peer should consume. */
  existingProducers(except: Peer | undefined): { producerId: string; peerId: string; peerName: string; kind: ms.MediaKind }[] {
    const out = [];
    for (const p of this.peers.values()) {
      if (p === except) continue;
      for (const prod of p.producers.values()) out.push({ producerId: prod.id, peerId: p.id, peerName: p.name, kind: prod.kind });
    }
    for (const r of this.remoteProducers.values()) out.push({ producerId: r.producer.id, peerId: r.peerId, peerName: r.peerName, kind: r.producer.kind });
    return out;
  }

  listPeers(): { id: string; name: string; kind: string; role: string; handRaised: boolean; producers: { id: string; kind: string; paused: boolean }[]; consent: string; joinedAt: string; quality: PeerQuality | null }[] {
    return [...this.peers.values()].map((p) => ({
      id: p.id,
      name: p.name,
      kind: p.kind,
      role: this.roles.roleOf(p),
      handRaised: this.roles.handRaised(p),
      consent: p.consent,
      joinedAt: p.joinedAt.toISOString(),
      quality: p.quality ?? null,
      producers: [...p.producers.values()].map((pr) => ({ id: pr.id, kind: pr.kind, paused: pr.paused })),
    }));
  }

  async createWebRtcTransport(peer: Peer, direction: 'send' | 'recv'): Promise<{ id: string; iceParameters: ms.IceParameters; iceCandidates: ms.IceCandidate[]; dtlsParameters: ms.DtlsParameters }> {
    this.assertOpen();
    const max = this.options.limits.transports;
    if (peer.transports.size >= max) {
      throw new VerbatimError('LIMIT_EXCEEDED', `you already hold ${peer.transports.size} transports; the limit is ${max}`, {
        hint: 'A client needs one send and one recv transport; close unused ones, or ask the operator about SFU_MAX_TRANSPORTS_PER_PEER.',
      });
    }
    const { listenIp, announcedAddress, portRange } = this.transportConfig;
    const info = (protocol: 'udp' | 'tcp'): ms.TransportListenInfo => ({ protocol, ip: listenIp, portRange, ...(announcedAddress ? { announcedAddress } : {}) });
    // Publishers send to the origin router (the recording tap and the pipes take from there); viewers are spread.
    const { rr, expected } = direction === 'send' ? { rr: this.routerSet.origin, expected: 0 } : await this.routerSet.placeViewer();
    let transport: ms.WebRtcTransport;
    try {
      transport = await this.media(
        'create transport',
        () =>
          rr.router.createWebRtcTransport({
            listenInfos: [info('udp'), info('tcp')],
            enableUdp: true,
            enableTcp: true,
            preferUdp: true,
            initialAvailableOutgoingBitrate: 1_000_000,
            appData: { peerId: peer.id, direction, routerId: rr.router.id },
          }),
        rr.health,
      );
    } finally {
      rr.reserved -= expected;
    }
    // The participant left while the transport was being made: do not keep its ports.
    if (peer.closed) {
      transport.close();
      throw goneWhileWaiting();
    }
    peer.transports.set(transport.id, transport);
    transport.observer.once('close', () => peer.transports.delete(transport.id));
    transport.on('dtlsstatechange', (state) => {
      if (state === 'failed' || state === 'closed') this.logger.warn({ peer: peer.id, transport: transport.id, state }, 'transport DTLS state');
    });
    return { id: transport.id, iceParameters: transport.iceParameters, iceCandidates: transport.iceCandidates, dtlsParameters: transport.dtlsParameters };
  }

  async connectWebRtcTransport(peer: Peer, transportId: string, dtlsParameters: ms.DtlsParameters): Promise<void> {
    const transport = this.transport(peer, transportId);
    if (transport.type !== 'webrtc') throw new VerbatimError('WRONG_DIRECTION', `transport ${transportId} is not a WebRTC transport`, { hint: 'Connect the transports createWebRtcTransport returned.' });
    if (transport.appData.connect) {
      throw new VerbatimError('ALREADY_CONNECTED', `transport ${transportId} is already ${transport.appData.connect as string}`, { hint: 'Connect each transport once; create a new one to start over.' });
    }
    transport.appData.connect = 'connecting';
    try {
      await this.media('connect transport', () => (transport as ms.WebRtcTransport).connect({ dtlsParameters }), this.routerSet.routerOf(transport).health);
      transport.appData.connect = 'connected';
    } catch (err) {
      delete transport.appData.connect;
      throw err;
    }
  }

  /** Publishers are peers with at least one producer; maxPublishers caps how many. */
  publisherCount(): number {
    let n = 0;
    for (const p of this.peers.values()) if (p.producers.size > 0) n++;
    return n;
  }

  async produce(peer: Peer, transportId: string, kind: ms.MediaKind, rtpParameters: ms.RtpParameters, appData: Record<string, unknown> = {}): Promise<ms.Producer> {
    this.assertOpen();
    if (this.originHost) {
      throw new VerbatimError('NOT_ORIGIN', `room ${this.id} takes publishers on its origin host ${this.originHost}; this host serves its viewers`, {
        hint: 'Join with a new link to publish: speakers are placed on the origin host.',
      });
    }
    this.roles.assertMayPublish(peer);
    const transport = this.transport(peer, transportId);
    // Refused here with a code: mediasoup would take some of these and fail later, or fail inside the worker.
    checkProduce(peer, transport, kind, rtpParameters, this.options.limits);
    if (peer.producers.size === 0 && this.publisherCount() >= this.flags.maxPublishers) {
      throw new VerbatimError('MAX_PUBLISHERS', `room ${this.id} already has its maximum of ${this.flags.maxPublishers} publishers`, {
        hint: 'Join as a viewer, or ask an admin to raise the room\'s maxPublishers flag.',
      });
    }
    const producer = await this.media('produce', () => transport.produce({ kind, rtpParameters, appData: { ...appData, peerId: peer.id, transportId: transport.id } }));
    if (peer.closed) {
      producer.close();
      throw goneWhileWaiting();
    }
    peer.producers.set(producer.id, producer);
    this.metrics.producers.inc({ kind });
    producer.observer.once('close', () => {
      peer.producers.delete(producer.id);
      this.metrics.producers.dec({ kind });
      if (kind === 'video') this.lastN.refresh();
      this.broadcast(peer, { notification: 'producerClosed', data: { producerId: producer.id } });
      this.emit('producerClosed', peer, producer);
    });
    producer.observer.on('pause', () => this.emit('producerPaused', peer, producer));
    producer.observer.on('resume', () => this.emit('producerResumed', peer, producer));
    // In the background: a failed observer costs the speaker indication, never the producer.
    if (kind === 'audio') this.lastN.watch(producer).catch((err: unknown) => this.logger.warn({ err, producer: producer.id }, 'active speaker observer: could not add producer'));
    // Viewers on the other routers consume it as soon as they hear of it: piped first.
    await this.routerSet.pipeEverywhere(producer);
    // Closed while it was being piped: its producerClosed went out already.
    if (producer.closed) return producer;
    if (kind === 'video') this.lastN.refresh();
    this.broadcast(peer, { notification: 'newProducer', data: { producerId: producer.id, peerId: peer.id, peerName: peer.name, kind } });
    this.emit('producerAdded', peer, producer);
    // A regulated participant's first producer starts recording in any room (capture assurance).
    if (!this.recording && (this.flags.record || peer.regulated)) this.setRecording(true, this.flags.record ? 'auto:first-producer' : 'auto:regulated');
    return producer;
  }

  async consume(peer: Peer, transportId: string, producerId: string): Promise<{ id: string; producerId: string; kind: ms.MediaKind; rtpParameters: ms.RtpParameters; producerPeerId: string }> {
    this.assertOpen();
    const transport = this.transport(peer, transportId);
    if (transport.appData.direction !== 'recv') {
      throw new VerbatimError('WRONG_DIRECTION', `transport ${transportId} is a send transport; consume on a recv transport`, { hint: 'Create one with createWebRtcTransport {direction: "recv"}.' });
    }
    const max = this.options.limits.consumers;
    if (peer.consumers.size >= max) {
      throw new VerbatimError('LIMIT_EXCEEDED', `you already receive ${peer.consumers.size} tracks; the limit is ${max}`, { hint: 'Close consumers you no longer show, or ask the operator about SFU_MAX_CONSUMERS_PER_PEER.' });
    }
    const local = [...this.peers.values()].find((p) => p.producers.has(producerId));
    const remote = this.remoteProducers.get(producerId);
    const owner = local ? { id: local.id } : remote ? { id: remote.peerId } : undefined;
    if (!owner) throw new VerbatimError('PRODUCER_NOT_FOUND', `producer ${producerId} is not in room ${this.id}`, { hint: 'It may have closed; wait for the next newProducer notification.' });
    const rr = this.routerSet.routerOf(transport);
    await this.routerSet.pipe(rr, producerId).catch((err: unknown) => {
      throw new VerbatimError('PRODUCER_NOT_FOUND', `producer ${producerId} could not be brought to the media server process serving you`, { hint: 'Retry; the producer may have closed.', cause: err });
    });
    const caps = peer.rtpCapabilities;
    if (!caps || !(await this.media('check capabilities', () => rr.router.canConsume({ producerId, rtpCapabilities: caps }), rr.health))) {
      throw new VerbatimError('CANNOT_CONSUME', 'your device cannot receive this producer\'s codec', { hint: 'Send rtpCapabilities on join (mediasoup-client device.rtpCapabilities).' });
    }
    // Consumers start paused and are resumed once the client acks (resumeConsumer),
    // so no RTP arrives before the client's consumer exists.
    const consumer = await this.media(
      'consume',
      () => transport.consume({ producerId, rtpCapabilities: caps, paused: true, appData: { peerId: peer.id, producerPeerId: owner.id, transportId: transport.id, clientPaused: true, running: false } }),
      rr.health,
    );
    if (peer.closed) {
      consumer.close();
      throw goneWhileWaiting();
    }
    peer.consumers.set(consumer.id, consumer);
    this.metrics.consumers.inc();
    consumer.observer.once('close', () => {
      peer.consumers.delete(consumer.id);
      this.metrics.consumers.dec();
    });
    consumer.on('producerclose', () => {
      peer.notify({ notification: 'consumerClosed', data: { consumerId: consumer.id, producerId } });
      consumer.close();
    });
    consumer.on('producerpause', () => peer.notify({ notification: 'consumerPaused', data: { consumerId: consumer.id } }));
    consumer.on('producerresume', () => peer.notify({ notification: 'consumerResumed', data: { consumerId: consumer.id } }));
    consumer.on('layerschange', (layers) =>
      peer.notify({ notification: 'consumerLayers', data: { consumerId: consumer.id, spatialLayer: layers?.spatialLayer ?? null, temporalLayer: layers?.temporalLayer ?? null } }),
    );
    return { id: consumer.id, producerId, kind: consumer.kind, rtpParameters: consumer.rtpParameters, producerPeerId: owner.id };
  }

  /** pause / resume / close of a participant's own producer, and pause / resume (with a keyframe) of its consumer. */
  async producerAction(peer: Peer, producerId: string, action: 'pause' | 'resume' | 'close'): Promise<void> {
    const p = this.producer(peer, producerId);
    await this.media(`${action} producer`, () => (action === 'close' ? p.close() : action === 'pause' ? p.pause() : p.resume()));
  }

  async consumerAction(peer: Peer, consumerId: string, action: 'pause' | 'resume'): Promise<void> {
    const c = this.consumer(peer, consumerId);
    c.appData.clientPaused = action === 'pause';
    // Resuming also waits for the last-N policy: a video outside the set stays paused on the server.
    await this.media(`${action} consumer`, () => this.lastN.apply(c));
  }

  /**
   * The simulcast/SVC layer a participant wants for one consumer (its tile's size); mediasoup
   * forwards at most that, less when the participant's bandwidth estimate is short.
   * A single-stream consumer has no layers: nothing to do.
   */
  async setPreferredLayers(peer: Peer, consumerId: string, spatialLayer: number, temporalLayer: number | undefined): Promise<{ spatialLayer: number | null; temporalLayer: number | null }> {
    const c = this.consumer(peer, consumerId);
    if (c.type === 'simulcast' || c.type === 'svc') {
      await this.media('set preferred layers', () => c.setPreferredLayers({ spatialLayer, ...(temporalLayer === undefined ? {} : { temporalLayer }) }));
    }
    return { spatialLayer: c.preferredLayers?.spatialLayer ?? null, temporalLayer: c.preferredLayers?.temporalLayer ?? null };
  }

  consumer(peer: Peer, consumerId: string): ms.Consumer {
    const c = peer.consumers.get(consumerId);
    if (!c) throw new VerbatimError('CONSUMER_NOT_FOUND', `consumer ${consumerId} not found`, { hint: 'Use the id returned by consume.' });
    return c;
  }

  producer(peer: Peer, producerId: string): ms.Producer {
    const p = peer.producers.get(producerId);
    if (!p) throw new VerbatimError('PRODUCER_NOT_FOUND', `producer ${producerId} is not yours or is closed`, { hint: 'Use the id returned by produce.' });
    return p;
  }

  /** Applies a decision that is already stored (see Sfu.decideConsent). */
  setConsent(peer: Peer, decision: 'granted' | 'declined', method: 'click' | 'announcement' | 'pre-accepted'): void {
    peer.consentUnstored = false;
    peer.consent = decision;
    peer.consentDecision = { method, at: new Date() };
    this.emit('consent', peer, decision, method);
    peer.notify({ notification: 'recordingState', data: this.recordingStateFor(peer) });
  }

  setRecording(enabled: boolean, by: string): void {
    this.assertOpen();
    if (this.recording === enabled) return;
    this.recording = enabled;
    if (!enabled) this.recordingFailure = undefined;
    this.logger.info({ room: this.id, recording: enabled, by }, 'recording toggled');
    this.emit('recordingChanged', enabled, by);
    this.broadcastRecordingState();
  }

  /** The origin host's recording state, shown to the viewers here (the recording itself runs on the origin's taps). */
  mirrorRecording(recording: boolean): void {
    if (this.recording === recording) return;
    this.recording = recording;
    this.broadcastRecordingState();
  }

  setRecordingFailure(failure: { code: string; message: string } | undefined): void {
    this.recordingFailure = failure;
    this.broadcastRecordingState();
  }

  broadcastRecordingState(): void {
    for (const p of this.peers.values()) p.notify({ notification: 'recordingState', data: this.recordingStateFor(p) });
  }

  recordingStateFor(peer: Peer): RecordingState {
    const recordingYou = this.recording && this.isRecordable(peer);
    return {
      recording: this.recording,
      consent: this.flags.consent,
      recordingYou,
      ...(this.recording && this.recordingFailure ? { failure: this.recordingFailure } : {}),
    };
  }

  /**
   * In `required` rooms only an explicit grant makes a participant recordable; a regulated one
   * always is. A participant
   * whose last decision could not be stored is not recorded until one is (no evidence, no recording).
   */
  isRecordable(peer: Peer): boolean {
    // Regulated identities are recorded wherever they meet (their basis is not the room's consent).
    if (peer.regulated) return true;
    if (peer.consentUnstored) return false;
    return this.flags.consent === 'notify' ? peer.consent !== 'declined' : peer.consent === 'granted';
  }

  /** A decision could not be stored: stop recording the participant until one is, and tell them. */
  consentNotStored(peer: Peer): void {
    peer.consentUnstored = true;
    this.emit('recordableChanged', peer);
    peer.notify({ notification: 'recordingState', data: this.recordingStateFor(peer) });
  }

  async stats(): Promise<{ peers: unknown[]; routers: ReturnType<RoomRouters['summary']> }> {
    const peers = await Promise.all(
      [...this.peers.values()].map(async (p) => ({
        id: p.id,
        name: p.name,
        quality: p.quality ?? null,
        transports: await Promise.all([...p.transports.values()].map(async (t) => ({ id: t.id, stats: await t.getStats() }))),
        producers: await Promise.all([...p.producers.values()].map(async (pr) => ({ id: pr.id, kind: pr.kind, paused: pr.paused, stats: await pr.getStats() }))),
        consumers: await Promise.all(
          [...p.consumers.values()].map(async (c) => ({
            id: c.id,
            kind: c.kind,
            type: c.type,
            producerId: c.producerId,
            producerPeerId: c.appData.producerPeerId as string,
            paused: c.paused,
            preferredLayers: c.preferredLayers ?? null,
            currentLayers: c.currentLayers ?? null,
            stats: await c.getStats(),
          })),
        ),
      })),
    );
    return { peers, routers: this.routerSet.summary() };
  }


  /**
   * External RTP source (ffmpeg, a SIP gateway): a PlainTransport per track with
   * comedia, so the transport learns the sender's address from its first packet.
   * rtcpMux is off because such senders send RTCP from a separate socket; with mux on
   * and comedia, whichever port speaks first would win and RTP would be dropped.
   */
  async ingest(peer: Peer, tracks: { kind: ms.MediaKind; ssrc: number; payloadType: number }[]): Promise<{ kind: ms.MediaKind; producerId: string; ip: string; rtpPort: number; rtcpPort: number; payloadType: number; ssrc: number }[]> {
    this.assertOpen();
    const out = [];
    for (const t of tracks) {
      const transport = await this.media('create ingest transport', () =>
        this.router.createPlainTransport({
          listenInfo: { protocol: 'udp', ip: this.transportConfig.listenIp, portRange: this.transportConfig.portRange },
          rtcpMux: false,
          comedia: true,
          appData: { peerId: peer.id, ingest: true },
        }),
      );
      peer.transports.set(transport.id, transport);
      const spec = INGEST_CODECS[t.kind];
      const codec = { mimeType: spec.mimeType, clockRate: spec.clockRate, ...(spec.channels ? { channels: spec.channels } : {}), payloadType: t.payloadType };
      const producer = await this.produce(peer, transport.id, t.kind, {
        codecs: [codec],
        encodings: [{ ssrc: t.ssrc }],
        rtcp: { cname: `ingest-${peer.id}`, reducedSize: false },
      });
      out.push({ kind: t.kind, producerId: producer.id, ip: transport.tuple.localAddress, rtpPort: transport.tuple.localPort, rtcpPort: transport.rtcpTuple!.localPort, payloadType: t.payloadType, ssrc: t.ssrc });
    }
    return out;
  }

  private transport(peer: Peer, transportId: string): ms.Transport {
    const t = peer.transports.get(transportId);
    if (!t) throw new VerbatimError('TRANSPORT_NOT_FOUND', `transport ${transportId} not found`, { hint: 'Create a transport with createWebRtcTransport first.' });
    return t;
  }

  private broadcast(from: Peer | undefined, n: Parameters<Peer['notify']>[0]): void {
    for (const p of this.peers.values()) if (p !== from) p.notify(n);
  }

  private assertOpen(): void {
    if (this.closedFlag) throw new VerbatimError('ROOM_CLOSED', `room ${this.id} is closed`, { hint: 'Ask the host to reopen the meeting.' });
  }

  close(code = 'ROOM_CLOSED', reason = 'room closed'): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    for (const p of [...this.peers.values()]) {
      p.notify({ notification: 'roomClosed', data: { code, reason } });
      p.close();
      p.channel?.close(4000, code);
    }
    this.peers.clear();
    this.routerSet.closeSpanned();
    try {
      if (!this.router.closed) this.router.close();
    } catch (err) {
      // A broken channel throws while building the close request; the worker is retired instead.
      this.logger.error({ err }, 'closing the router failed');
      void this.options.worker.probe();
    }
    this.emit('close', code, reason);
  }
}

function goneWhileWaiting(): VerbatimError {
  return new VerbatimError('NOT_JOINED', 'you left the room while this request was running', { hint: 'Join again.' });
}
