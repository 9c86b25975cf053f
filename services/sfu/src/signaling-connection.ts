import type { types as ms } from 'mediasoup';
import type { WebSocket } from 'ws';
import { ClientFrameSchema, SIGNALING_VERSION, type ClientRequest, type NotificationFrame, type ResponseFrame, type ServerNotification } from '../../lib/contracts/signaling.ts';
import { VerbatimError, toVerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { verifyJoinToken } from './join-token.ts';
import type { Peer, PeerChannel } from './peer.ts';
import type { Room } from './room.ts';
import type { Sfu } from './sfu.ts';

/**
 * One browser's WebSocket. Every frame is size-checked, JSON-parsed and validated
 * against the versioned schema; a bad frame gets an error response with a stable code
 * and the connection stays open. Requests are handled one at a time, in order.
 */
export class SignalingConnection implements PeerChannel {
  private room: Room | undefined;
  private peer: Peer | undefined;
  private queue: Promise<void> = Promise.resolve();
  lastSeen = Date.now();
  private log: Logger;

  constructor(
    private readonly sfu: Sfu,
    private readonly ws: WebSocket,
    readonly remoteAddress: string,
  ) {
    this.log = sfu.logger.child({ remote: remoteAddress });
    ws.on('message', (data, isBinary) => {
      this.lastSeen = Date.now();
      const size = Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : (data as Buffer | ArrayBuffer).byteLength;
      if (isBinary) return this.fail(null, new VerbatimError('MESSAGE_MALFORMED', 'binary frames are not part of the signaling protocol', { hint: 'Send JSON text frames.' }));
      if (size > sfu.config.SFU_MAX_MESSAGE_BYTES) {
        return this.fail(null, new VerbatimError('MESSAGE_TOO_LARGE', `message of ${size} bytes exceeds the ${sfu.config.SFU_MAX_MESSAGE_BYTES}-byte limit`, { hint: 'Signaling messages are small; check the client.' }));
      }
      const text = Buffer.isBuffer(data) ? data.toString('utf8') : Buffer.from(data as ArrayBuffer).toString('utf8');
      this.queue = this.queue.then(() => this.onText(text));
    });
    ws.on('pong', () => (this.lastSeen = Date.now()));
    ws.on('close', () => this.onClose());
    ws.on('error', (err) => this.log.warn({ err }, 'websocket error'));
  }

  private async onText(text: string): Promise<void> {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      return this.fail(null, new VerbatimError('MESSAGE_MALFORMED', 'message is not valid JSON', { hint: 'Each frame must be one JSON object.' }));
    }
    const id = typeof json === 'object' && json !== null && typeof (json as { id?: unknown }).id === 'number' ? (json as { id: number }).id : null;
    const version = typeof json === 'object' && json !== null ? (json as { v?: unknown }).v : undefined;
    if (version !== SIGNALING_VERSION) {
      return this.fail(id, new VerbatimError('UNSUPPORTED_VERSION', `signaling version ${JSON.stringify(version)} is not supported; this server speaks v${SIGNALING_VERSION}`, { hint: 'Reload the meeting page to get a matching client.' }));
    }
    const parsed = ClientFrameSchema.safeParse(json);
    if (!parsed.success) {
      const detail = parsed.error.issues.slice(0, 3).map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
      return this.fail(id, new VerbatimError('MESSAGE_MALFORMED', `invalid message: ${detail}`, { hint: 'See services/lib/contracts/signaling.ts for the protocol.' }));
    }
    const frame = parsed.data;
    try {
      const data = await this.handle(frame);
      this.send({ v: SIGNALING_VERSION, id: frame.id, ok: true, data });
    } catch (err) {
      this.fail(frame.id, err);
    }
  }

  private async handle(req: ClientRequest): Promise<unknown> {
    if (req.method === 'ping') return { now: Date.now() };
    if (req.method === 'join') return this.join(req.data.token, req.data.rtpCapabilities as ms.RtpCapabilities | undefined);
    const room = this.room;
    const peer = this.peer;
    if (!room || !peer || peer.closed) throw new VerbatimError('NOT_JOINED', `"${req.method}" needs a joined session`, { hint: 'Send join with your token first.' });
    const log = this.log.child({ room: room.id, peer: peer.id });
    switch (req.method) {
      case 'setRtpCapabilities':
        peer.rtpCapabilities = req.data.rtpCapabilities as unknown as ms.RtpCapabilities;
        return {};
      case 'createWebRtcTransport':
        return room.createWebRtcTransport(peer, req.data.direction);
      case 'connectWebRtcTransport':
        await room.connectWebRtcTransport(peer, req.data.transportId, req.data.dtlsParameters as unknown as ms.DtlsParameters);
        return {};
      case 'produce': {
        const producer = await room.produce(peer, req.data.transportId, req.data.kind, req.data.rtpParameters as unknown as ms.RtpParameters, req.data.appData ?? {});
        log.info({ producer: producer.id, kind: producer.kind }, 'producing');
        return { id: producer.id };
      }
      case 'closeProducer':
        room.producer(peer, req.data.producerId).close();
        return {};
      case 'pauseProducer':
        await room.producer(peer, req.data.producerId).pause();
        return {};
      case 'resumeProducer':
        await room.producer(peer, req.data.producerId).resume();
        return {};
      case 'consume':
        return room.consume(peer, req.data.transportId, req.data.producerId);
      case 'resumeConsumer': {
        const c = room.consumer(peer, req.data.consumerId);
        await c.resume();
        if (c.kind === 'video') await c.requestKeyFrame();
        return {};
      }
      case 'pauseConsumer':
        await room.consumer(peer, req.data.consumerId).pause();
        return {};
      case 'consent':
        room.setConsent(peer, req.data.decision, req.data.method);
        log.info({ decision: req.data.decision }, 'consent answer');
        return room.recordingStateFor(peer);
      case 'setRecording':
        await this.sfu.setRecording(room.id, req.data.enabled, { peerId: peer.id, roomSecret: req.data.roomSecret });
        return room.recordingStateFor(peer);
      case 'listPeers':
        return { peers: room.listPeers() };
      case 'leave':
        peer.close();
        this.peer = undefined;
        this.room = undefined;
        return {};
    }
  }

  private async join(token: string, rtpCapabilities: ms.RtpCapabilities | undefined): Promise<unknown> {
    if (this.peer && !this.peer.closed) throw new VerbatimError('ALREADY_JOINED', 'this connection already joined a room', { hint: 'Open a new connection to join another room.' });
    const claims = verifyJoinToken(this.sfu.deps.secrets.tokenSecret, token);
    const { room, peer, reclaimed } = await this.sfu.join(claims, this);
    if (rtpCapabilities) peer.rtpCapabilities = rtpCapabilities;
    this.room = room;
    this.peer = peer;
    this.log = this.log.child({ room: room.id, peer: peer.id });
    return {
      peerId: peer.id,
      name: peer.name,
      room: { id: room.id, name: room.name, flags: room.flags },
      routerRtpCapabilities: room.router.rtpCapabilities,
      producers: room.existingProducers(peer),
      recording: room.recordingStateFor(peer),
      consentNeeded: room.flags.consent === 'required' && (room.flags.record || room.recording) && peer.consent === 'pending',
      reclaimed,
    };
  }

  notify(n: ServerNotification): void {
    this.send({ v: SIGNALING_VERSION, ...n } as NotificationFrame);
  }

  close(code: number, reason: string): void {
    if (this.ws.readyState === this.ws.OPEN || this.ws.readyState === this.ws.CONNECTING) this.ws.close(code, reason);
  }

  private send(frame: ResponseFrame | NotificationFrame): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(JSON.stringify(frame));
  }

  private fail(id: number | null, err: unknown): void {
    const e = toVerbatimError(err);
    if (e.code === 'INTERNAL') this.log.error({ err }, 'signaling request failed');
    else this.log.debug({ code: e.code, msg: e.message }, 'signaling request refused');
    this.sfu.metrics.signalingErrors.inc({ code: e.code });
    const { code, message, hint } = e.toJSON();
    this.send({ v: SIGNALING_VERSION, id, ok: false, error: { code, message, ...(hint ? { hint } : {}) } });
  }

  private onClose(): void {
    if (this.room && this.peer && this.peer.channel === this) this.sfu.disconnected(this.room, this.peer);
    this.peer = undefined;
    this.room = undefined;
  }
}
