import type { types as ms } from 'mediasoup';
import nodeDataChannel, { type PeerConnection, type Track } from 'node-datachannel';
import { RtpSender, mediaClips } from './rtp-sender.ts';
import { recvOffer, sendAnswer, sha256Fingerprint, type ConsumerInfo, type TransportInfo } from './sdp.ts';
import { BotSignaling } from './signaling.ts';

/**
 * A real WebRTC participant for load tests (ICE, DTLS, SRTP by libdatachannel), many per
 * process. It joins with signaling like the meeting page, but builds the SDP itself: see
 * shared/recipes/webrtc-bots.md. A viewer consumes the producers present when it joins and
 * counts, per consumer, the RTP that arrives; a publisher sends real Opus and VP8.
 */

export interface BotOptions {
  /** Publish one Opus and one VP8 track. */
  publish?: boolean;
  /** Consume the room's producers present at join (default true). */
  consume?: boolean;
  /** Consume only these participants' producers (default everyone's). */
  from?: string[];
  /** Only these kinds (default both). */
  kinds?: ('audio' | 'video')[];
  /** ICE/DTLS must complete within this (default 20 s). */
  connectTimeoutMs?: number;
  /** Sees each media packet as it arrives (performance.now() time), e.g. to time a path (bench sfu's cascade latency). */
  onRtp?: (consumer: ConsumerCounters, packet: Buffer, at: number) => void;
}

export interface ConsumerCounters {
  consumerId: string;
  producerId: string;
  kind: 'audio' | 'video';
  ssrc: number;
  packets: number;
  bytes: number;
  /** Packets the sequence numbers say were sent (first to highest seen). */
  expected: number;
}

/** Milliseconds of each join step, for the join-storm numbers. */
export interface JoinTimings {
  signaled: number;
  connected: number;
}

/** The router's codecs cut to what bots speak: Opus, VP8 and VP8's RTX. */
export function botRtpCapabilities(router: ms.RtpCapabilities): ms.RtpCapabilities {
  const vp8 = router.codecs!.find((c) => c.mimeType.toLowerCase() === 'video/vp8');
  const codecs = router.codecs!.filter(
    (c) => c.mimeType.toLowerCase() === 'audio/opus' || c === vp8 || (c.mimeType.toLowerCase() === 'video/rtx' && vp8 && c.parameters?.apt === vp8.preferredPayloadType),
  );
  return { codecs, headerExtensions: router.headerExtensions ?? [] };
}

const AUDIO_PT = 100;
const VIDEO_PT = 101;

export class Bot {
  peerId = '';
  readonly consumers = new Map<string, ConsumerCounters>();
  readonly senders: RtpSender[] = [];
  readonly timings: JoinTimings = { signaled: 0, connected: 0 };
  private readonly pcs: PeerConnection[] = [];
  private readonly tracks: Track[] = [];
  private readonly resets: (() => void)[] = [];

  private constructor(
    readonly name: string,
    readonly sig: BotSignaling,
  ) {}

  /** Connects, joins and (per options) publishes and consumes; resolves once media can flow. */
  static async join(baseUrl: string, token: string, name: string, opts: BotOptions = {}): Promise<Bot> {
    const t0 = performance.now();
    const bot = new Bot(name, await BotSignaling.connect(baseUrl));
    try {
      const joined = await bot.sig.request('join', { token });
      bot.peerId = joined.peerId;
      // Without capabilities the SFU refuses consume (CANNOT_CONSUME).
      await bot.sig.request('setRtpCapabilities', { rtpCapabilities: botRtpCapabilities(joined.routerRtpCapabilities) });
      bot.timings.signaled = performance.now() - t0;
      const kinds = opts.kinds ?? ['audio', 'video'];
      const timeout = opts.connectTimeoutMs ?? 20_000;
      if (opts.publish) await bot.publish(kinds, timeout);
      const producers = (joined.producers as { producerId: string; peerId: string; kind: 'audio' | 'video' }[]).filter((p) => kinds.includes(p.kind) && (!opts.from || opts.from.includes(p.peerId)));
      if ((opts.consume ?? true) && producers.length > 0) await bot.receive(producers.map((p) => p.producerId), timeout, opts.onRtp);
      bot.timings.connected = performance.now() - t0;
      return bot;
    } catch (err) {
      bot.close();
      throw err;
    }
  }

  private peerConnection(label: string): PeerConnection {
    // No STUN/TURN: the SFU is on this host and ice-lite.
    const pc = new nodeDataChannel.PeerConnection(`${this.name}-${label}`, { iceServers: [] });
    this.pcs.push(pc);
    return pc;
  }

  private async receive(producerIds: string[], timeoutMs: number, onRtp: BotOptions['onRtp']): Promise<void> {
    const transport = await this.sig.request<TransportInfo>('createWebRtcTransport', { direction: 'recv' });
    const infos: ConsumerInfo[] = [];
    for (const producerId of producerIds) {
      const c = await this.sig.request<ConsumerInfo & { producerId: string }>('consume', { transportId: transport.id, producerId });
      infos.push(c);
      const ssrc = c.rtpParameters.encodings![0]!.ssrc!;
      this.consumers.set(c.rtpParameters.mid!, { consumerId: c.id, producerId, kind: c.kind, ssrc, packets: 0, bytes: 0, expected: 0 });
    }
    const pc = this.peerConnection('recv');
    pc.onTrack((track) => {
      this.tracks.push(track);
      const counters = this.consumers.get(track.mid());
      let first = -1;
      let highest = -1;
      this.resets.push(() => {
        first = highest = -1;
        if (counters) counters.packets = counters.bytes = counters.expected = 0;
      });
      track.onMessage((msg) => {
        // The track's stream also carries RTCP (payload types 192-223 in the second byte): not media.
        if (!counters || msg.length < 12 || (msg[1]! >= 192 && msg[1]! <= 223)) return;
        // Only the consumer's own SSRC (RTX retransmissions are not new media).
        if (msg.readUInt32BE(8) !== counters.ssrc) return;
        counters.packets++;
        counters.bytes += msg.length;
        const seq = msg.readUInt16BE(2);
        if (first < 0) first = highest = seq;
        else {
          // Extended sequence: a wrap past 65535 continues counting.
          const delta = (seq - (highest & 0xffff) + 0x10000) % 0x10000;
          if (delta < 0x8000) highest += delta;
        }
        counters.expected = highest - first + 1;
        onRtp?.(counters, msg, performance.now());
      });
    });
    const connected = waitConnected(pc, timeoutMs);
    pc.setRemoteDescription(recvOffer(transport, infos), 'offer');
    const answer = pc.localDescription();
    if (!answer) throw new Error('libdatachannel produced no answer');
    await this.sig.request('connectWebRtcTransport', { transportId: transport.id, dtlsParameters: { role: 'client', fingerprints: [{ algorithm: 'sha-256', value: sha256Fingerprint(answer.sdp) }] } });
    await connected;
    for (const c of infos) await this.sig.request('resumeConsumer', { consumerId: c.id });
  }

  private async publish(kinds: ('audio' | 'video')[], timeoutMs: number): Promise<void> {
    const transport = await this.sig.request<TransportInfo>('createWebRtcTransport', { direction: 'send' });
    const pc = this.peerConnection('send');
    const clips = mediaClips();
    const cname = `bot-${this.name}`;
    const planned = kinds.map((kind, i) => {
      const ssrc = (Math.floor(Math.random() * 0xfffffff0) + 1) >>> 0;
      const mid = String(i);
      const media = kind === 'audio' ? new nodeDataChannel.Audio(mid, 'SendOnly') : new nodeDataChannel.Video(mid, 'SendOnly');
      if (kind === 'audio') (media as nodeDataChannel.Audio).addOpusCodec(AUDIO_PT);
      else (media as nodeDataChannel.Video).addVP8Codec(VIDEO_PT);
      media.addSSRC(ssrc, cname, cname, `${cname}-${kind}`);
      const track = pc.addTrack(media);
      this.tracks.push(track);
      return { kind, ssrc, mid, track, opened: new Promise<void>((resolve) => track.onOpen(resolve)) };
    });
    const connected = waitConnected(pc, timeoutMs);
    pc.setLocalDescription();
    const offer = pc.localDescription();
    if (!offer) throw new Error('libdatachannel produced no offer');
    pc.setRemoteDescription(sendAnswer(transport, offer.sdp), 'answer');
    // The SFU's side is passive (DTLS server): the bot is the client either way.
    await this.sig.request('connectWebRtcTransport', { transportId: transport.id, dtlsParameters: { role: 'client', fingerprints: [{ algorithm: 'sha-256', value: sha256Fingerprint(offer.sdp) }] } });
    for (const p of planned) {
      const audio = p.kind === 'audio';
      await this.sig.request('produce', {
        transportId: transport.id,
        kind: p.kind,
        rtpParameters: {
          mid: p.mid,
          codecs: [audio ? { mimeType: 'audio/opus', payloadType: AUDIO_PT, clockRate: 48000, channels: 2 } : { mimeType: 'video/VP8', payloadType: VIDEO_PT, clockRate: 90000 }],
          // No MID header extension: the SFU matches the stream by SSRC.
          headerExtensions: [],
          encodings: [{ ssrc: p.ssrc }],
          rtcp: { cname, reducedSize: true },
        },
      });
    }
    await connected;
    await Promise.all(planned.map((p) => p.opened));
    for (const p of planned) {
      const sender = new RtpSender(p.kind === 'audio' ? clips.audio : clips.video, p.kind === 'audio' ? AUDIO_PT : VIDEO_PT, p.ssrc, (packet) => {
        try {
          p.track.sendMessageBinary(packet);
        } catch {
          // A closed track (the SFU closed the transport) is the end of this sender; anything else is counted.
          if (p.track.isClosed()) sender.stop();
          else sender.sendErrors++;
        }
      });
      sender.start();
      this.senders.push(sender);
    }
  }

  /** Per consumer counters, with loss from the sequence numbers. */
  received(): (ConsumerCounters & { lossPct: number })[] {
    return [...this.consumers.values()].map((c) => ({ ...c, lossPct: c.expected > 0 ? Math.max(0, (100 * (c.expected - c.packets)) / c.expected) : 0 }));
  }

  /** Starts counting afresh (to measure one window). */
  resetCounters(): void {
    for (const r of this.resets) r();
  }

  close(): void {
    for (const s of this.senders) s.stop();
    for (const t of this.tracks) t.close();
    for (const pc of this.pcs) pc.close();
    this.sig.close();
  }
}

function waitConnected(pc: PeerConnection, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`WebRTC not connected within ${timeoutMs} ms (state ${pc.state()}, ICE ${pc.iceState()})`)), timeoutMs);
    pc.onStateChange((state) => {
      if (state === 'connected') {
        clearTimeout(timer);
        resolve();
      } else if (state === 'failed' || state === 'closed') {
        clearTimeout(timer);
        reject(new Error(`WebRTC ${state}`));
      }
    });
  });
}
