import type { types as ms } from 'mediasoup';
import type { RawData, WebSocket } from 'ws';
import {
  ClientFrameSchema,
  MAX_FRAME_DEPTH,
  SIGNALING_VERSION,
  jsonDepth,
  type ClientRequest,
  type NotificationFrame,
  type ResponseFrame,
  type ServerNotification,
} from '../../lib/contracts/signaling.ts';
import { VerbatimError, toVerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { verifyJoinToken } from './join-token.ts';
import type { Peer, PeerChannel } from './peer.ts';
import type { Room } from './room.ts';
import type { Sfu } from './sfu.ts';
import { TokenBucket } from './token-bucket.ts';
import { turnIceServers } from './turn-credentials.ts';

/** WebSocket close codes this server uses besides the room's 4000-4002. */
export const CLOSE_INTERNAL = 1011;
export const CLOSE_RATE_LIMITED = 1008;

/**
 * One browser's WebSocket. Every frame is rate-limited, size-checked, JSON-parsed, depth-checked
 * and validated against the versioned schema; a bad frame gets an error response with a stable
 * code and the connection stays open. Requests are handled one at a time, in order.
 *
 * Failures stay inside the connection: whatever one of its handlers throws (a request, the
 * close handler, a notification, an async rejection) is logged and closes this connection with
 * 1011 INTERNAL; the process and every other participant carry on.
 */
export class SignalingConnection implements PeerChannel {
  private room: Room | undefined;
  private peer: Peer | undefined;
  private queue: Promise<void> = Promise.resolve();
  private socketClosed = false;
  private readonly bucket: TokenBucket;
  /** Refusals a client may collect at the same rate and burst before it counts as a flood. */
  private readonly strikes: TokenBucket;
  lastSeen = Date.now();
  private log: Logger;

  constructor(
    private readonly sfu: Sfu,
    private readonly ws: WebSocket,
    readonly remoteAddress: string,
  ) {
    this.log = sfu.logger.child({ remote: remoteAddress });
    this.bucket = new TokenBucket(sfu.config.SFU_SIGNALING_RATE_PER_SEC, sfu.config.SFU_SIGNALING_BURST);
    this.strikes = new TokenBucket(sfu.config.SFU_SIGNALING_RATE_PER_SEC, sfu.config.SFU_SIGNALING_BURST);
    ws.on('message', (data, isBinary) => this.contain('message', () => this.onMessage(data, isBinary)));
    ws.on('pong', () => this.contain('pong', () => (this.lastSeen = Date.now())));
    ws.on('close', () => this.contain('close', () => this.onClose()));
    ws.on('error', (err) => this.contain('error', () => this.log.warn({ err }, 'websocket error')));
  }

  /** Runs one event handler: what it throws closes this connection, never the process. */
  private contain(handler: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.crashed(handler, err);
    }
  }

  private crashed(handler: string, err: unknown): void {
    try {
      this.log.error({ err, handler }, 'signaling handler failed; closing this connection');
    } catch {
      // Logging is best effort here; closing the connection is what matters.
    }
    if (handler !== 'close') this.close(CLOSE_INTERNAL, 'INTERNAL');
  }

  private onMessage(data: RawData, isBinary: boolean): void {
    this.lastSeen = Date.now();
    const max = this.sfu.config.SFU_MAX_MESSAGE_BYTES;
    const size = Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : data.byteLength;
    if (!this.bucket.take()) return this.rateLimited(isBinary || size > max ? null : peekId(data));
    if (isBinary) return this.fail(null, new VerbatimError('MESSAGE_MALFORMED', 'binary frames are not part of the signaling protocol', { hint: 'Send JSON text frames.' }));
    if (size > max) {
      return this.fail(null, new VerbatimError('MESSAGE_TOO_LARGE', `message of ${size} bytes exceeds the ${max}-byte limit`, { hint: 'Signaling messages are small; check the client.' }));
    }
    const text = Buffer.isBuffer(data) ? data.toString('utf8') : Array.isArray(data) ? Buffer.concat(data).toString('utf8') : Buffer.from(data).toString('utf8');
    this.queue = this.queue.then(() => this.onText(text)).catch((err: unknown) => this.crashed('request', err));
  }

  /**
   * Over the rate: this request is refused. A client that keeps going anyway (refused faster than
   * the rate, for a whole burst's worth) is cut off; one merely a little too fast is not.
   */
  private rateLimited(id: number | null): void {
    if (!this.strikes.take()) {
      this.log.warn('signaling flood: closing the connection');
      this.close(CLOSE_RATE_LIMITED, 'RATE_LIMITED');
      return;
    }
    this.fail(
      id,
      new VerbatimError('RATE_LIMITED', `more than ${this.sfu.config.SFU_SIGNALING_RATE_PER_SEC} signaling requests a second`, {
        hint: 'Slow down and retry this request; a client that keeps flooding is disconnected.',
      }),
    );
  }

  private async onText(text: string): Promise<void> {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      return this.fail(null, new VerbatimError('MESSAGE_MALFORMED', 'message is not valid JSON', { hint: 'Each frame must be one JSON object.' }));
    }
    const id = typeof json === 'object' && json !== null && Number.isSafeInteger((json as { id?: unknown }).id) ? (json as { id: number }).id : null;
    if (jsonDepth(json) > MAX_FRAME_DEPTH) {
      return this.fail(id, new VerbatimError('MESSAGE_MALFORMED', `message is nested deeper than ${MAX_FRAME_DEPTH} levels`, { hint: 'See services/lib/contracts/signaling.ts for the protocol.' }));
    }
    const version = typeof json === 'object' && json !== null ? (json as { v?: unknown }).v : undefined;
    if (version !== SIGNALING_VERSION) {
      return this.fail(id, new VerbatimError('UNSUPPORTED_VERSION', `signaling version ${JSON.stringify(version)?.slice(0, 40)} is not supported; this server speaks v${SIGNALING_VERSION}`, { hint: 'Reload the meeting page to get a matching client.' }));
    }
    const parsed = ClientFrameSchema.safeParse(json);
    if (!parsed.success) {
      const detail = parsed.error.issues.slice(0, 3).map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
      return this.fail(id, new VerbatimError('MESSAGE_MALFORMED', `invalid message: ${detail.slice(0, 500)}`, { hint: 'See services/lib/contracts/signaling.ts for the protocol.' }));
    }
    const frame = parsed.data;
    let data: unknown;
    try {
      data = await this.handle(frame);
    } catch (err) {
      return this.fail(frame.id, err);
    }
    this.send({ v: SIGNALING_VERSION, id: frame.id, ok: true, data });
  }

  private async handle(req: ClientRequest): Promise<unknown> {
    if (req.method === 'ping') return { now: Date.now() };
    if (req.method === 'join') return this.join(req.data.token, req.data.rtpCapabilities);
    const room = this.room;
    const peer = this.peer;
    if (!room || !peer || peer.closed) throw new VerbatimError('NOT_JOINED', `"${req.method}" needs a joined session`, { hint: 'Send join with your token first.' });
    const log = this.log.child({ room: room.id, peer: peer.id });
    switch (req.method) {
      case 'setRtpCapabilities':
        peer.rtpCapabilities = req.data.rtpCapabilities;
        return {};
      case 'createWebRtcTransport':
        return room.createWebRtcTransport(peer, req.data.direction);
      case 'connectWebRtcTransport':
        await room.connectWebRtcTransport(peer, req.data.transportId, req.data.dtlsParameters);
        return {};
      case 'produce': {
        const producer = await room.produce(peer, req.data.transportId, req.data.kind, req.data.rtpParameters, req.data.appData ?? {});
        log.info({ producer: producer.id, kind: producer.kind }, 'producing');
        return { id: producer.id };
      }
      case 'closeProducer':
        await room.producerAction(peer, req.data.producerId, 'close');
        return {};
      case 'pauseProducer':
        await room.producerAction(peer, req.data.producerId, 'pause');
        return {};
      case 'resumeProducer':
        await room.producerAction(peer, req.data.producerId, 'resume');
        return {};
      case 'consume':
        return room.consume(peer, req.data.transportId, req.data.producerId);
      case 'resumeConsumer':
        await room.consumerAction(peer, req.data.consumerId, 'resume');
        return {};
      case 'pauseConsumer':
        await room.consumerAction(peer, req.data.consumerId, 'pause');
        return {};
      case 'consent':
        await this.sfu.decideConsent(room, peer, req.data.decision, req.data.method);
        log.info({ decision: req.data.decision }, 'consent answer');
        return room.recordingStateFor(peer);
      case 'setRecording':
        await this.sfu.setRecording(room.id, req.data.enabled, { peerId: peer.id, roomSecret: req.data.roomSecret });
        return room.recordingStateFor(peer);
      case 'setPreferredLayers':
        return room.setPreferredLayers(peer, req.data.consumerId, req.data.spatialLayer, req.data.temporalLayer);
      case 'raiseHand':
        return room.roles.raiseHand(peer, req.data.raised);
      case 'promote':
        return this.sfu.promote(room.id, req.data.peerId, { host: peer });
      case 'listPeers':
        return { peers: room.listPeers() };
      case 'leave':
        this.peer = undefined;
        this.room = undefined;
        peer.close();
        return {};
    }
  }

  private async join(token: string, rtpCapabilities: ms.RtpCapabilities | undefined): Promise<unknown> {
    if (this.peer && !this.peer.closed) throw new VerbatimError('ALREADY_JOINED', 'this connection already joined a room', { hint: 'Open a new connection to join another room.' });
    const claims = verifyJoinToken(this.sfu.deps.secrets.tokenSecret, token);
    const { room, peer, reclaimed } = await this.sfu.join(claims, this);
    if (this.socketClosed) {
      // The socket closed while the join was in flight (e.g. while the room's router was being
      // created): onClose found no peer to remove, so the peer would stay listed as a ghost.
      this.sfu.disconnected(room, peer);
      throw new VerbatimError('NOT_JOINED', 'the connection closed before the join completed', { hint: 'Join again.' });
    }
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
      iceServers: turnIceServers(this.sfu.config, peer.id),
      role: room.roles.roleOf(peer),
      activeSpeaker: room.lastN.activeSpeaker ?? null,
      videoSet: room.lastN.videoPeerIds(),
      raisedHands: peer.host ? room.roles.raisedHands() : [],
    };
  }

  notify(n: ServerNotification): void {
    // Called from other participants' requests: a failure here is this connection's, not theirs.
    this.contain('notify', () => this.send({ v: SIGNALING_VERSION, ...n }));
  }

  close(code: number, reason: string): void {
    try {
      if (this.ws.readyState === this.ws.OPEN || this.ws.readyState === this.ws.CONNECTING) this.ws.close(code, reason);
    } catch (err) {
      this.log.warn({ err }, 'closing the websocket failed; terminating it');
      this.ws.terminate();
    }
  }

  private send(frame: ResponseFrame | NotificationFrame): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(JSON.stringify(frame));
  }

  private fail(id: number | null, err: unknown): void {
    const e = toVerbatimError(err);
    this.sfu.metrics.signalingErrors.inc({ code: e.code });
    const { code, message, hint } = e.toJSON();
    this.send({ v: SIGNALING_VERSION, id, ok: false, error: { code, message, ...(hint ? { hint } : {}) } });
    if (e.code === 'INTERNAL') {
      // An unexpected failure leaves this participant's state unknown: they rejoin cleanly.
      this.log.error({ err }, 'signaling request failed; closing this connection');
      this.close(CLOSE_INTERNAL, 'INTERNAL');
    } else {
      this.log.debug({ code: e.code, msg: e.message }, 'signaling request refused');
    }
  }

  private onClose(): void {
    this.socketClosed = true;
    const room = this.room;
    const peer = this.peer;
    this.peer = undefined;
    this.room = undefined;
    if (!room || !peer || peer.channel !== this) return;
    try {
      this.sfu.disconnected(room, peer);
    } catch (err) {
      // Whatever failed, the participant does not stay behind as a ghost.
      peer.close();
      throw err;
    }
  }
}

/** The request id of a frame refused before parsing, read cheaply from its start (our clients send it first). */
function peekId(data: RawData): number | null {
  const head = (Buffer.isBuffer(data) ? data : Array.isArray(data) ? (data[0] ?? Buffer.alloc(0)) : Buffer.from(data)).subarray(0, 64).toString('latin1');
  const m = /"id"\s*:\s*(\d{1,15})\b/.exec(head);
  return m ? Number(m[1]) : null;
}
