import type { types as ms } from 'mediasoup';
import type { RawData, WebSocket } from 'ws';
import { toVerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { EdgeFrameSchema, LINK_CLOSE, rawText, type OriginFrame } from './cascade-protocol.ts';
import type { Room } from './room.ts';

/** What the origin side needs of the SFU. */
export interface CascadeHubDeps {
  /** The live room, opened here when needed; refuses when this host is not its origin. */
  originRoom(roomId: string): Promise<Room>;
  pipeListen: { ip: string; announcedAddress?: string | undefined; portRange: { min: number; max: number } };
  logger: Logger;
  /** The number of links changed (metrics). */
  onLinks?: (count: number) => void;
}

/**
 * The origin side of cascaded rooms: another host of the cluster links to a room here over a
 * WebSocket (cascade-protocol.ts) and a PipeTransport, and gets each producer it asks for as a
 * pipe consumer. A link that drops takes its pipe transport (and so only that host's viewers'
 * media) with it; the room and its participants here carry on.
 */
export class CascadeHub {
  private readonly links = new Set<WebSocket>();

  constructor(private readonly deps: CascadeHubDeps) {}

  get linkCount(): number {
    return this.links.size;
  }

  accept(ws: WebSocket, roomId: string, remoteHost: string): void {
    const log = this.deps.logger.child({ room: roomId, edgeHost: remoteHost });
    this.links.add(ws);
    this.deps.onLinks?.(this.links.size);
    let room: Room | undefined;
    let transport: ms.PipeTransport | undefined;
    const consumers = new Map<string, ms.Consumer>();
    const detach: (() => void)[] = [];
    let queue: Promise<void> = Promise.resolve();
    const send = (f: OriginFrame) => {
      if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(f));
    };
    const end = (code: number, reason: string) => {
      if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(code, reason.slice(0, 120));
    };

    const open = async (frame: { host: string; ip: string; port: number; srtp: ms.SrtpParameters }) => {
      if (transport) return end(LINK_CLOSE.protocol, 'already open');
      room = await this.deps.originRoom(roomId);
      const { ip, announcedAddress, portRange } = this.deps.pipeListen;
      transport = await room.router.createPipeTransport({
        listenInfo: { protocol: 'udp', ip, portRange, ...(announcedAddress ? { announcedAddress } : {}) },
        enableSrtp: true,
        // NACK and retransmission across hosts: the link may lose packets like any network.
        enableRtx: true,
        appData: { cascade: remoteHost },
      });
      await transport.connect({ ip: frame.ip, port: frame.port, srtpParameters: frame.srtp });
      const r = room;
      const onProducer = (peer: { id: string; name: string }, producer: ms.Producer) => send({ t: 'producer', producerId: producer.id, peerId: peer.id, peerName: peer.name, kind: producer.kind });
      const onSpeaker = (peerId: string) => send({ t: 'speaker', peerId });
      const onRecording = (recording: boolean) => send({ t: 'recording', recording });
      const onClose = () => end(LINK_CLOSE.roomClosed, 'room closed');
      r.on('producerAdded', onProducer);
      r.on('activeSpeaker', onSpeaker);
      r.on('recordingChanged', onRecording);
      r.once('close', onClose);
      detach.push(() => {
        r.off('producerAdded', onProducer);
        r.off('activeSpeaker', onSpeaker);
        r.off('recordingChanged', onRecording);
        r.off('close', onClose);
      });
      const local = transport.tuple;
      const srtp = transport.srtpParameters!;
      send({
        t: 'opened',
        ip: local.localAddress,
        port: local.localPort,
        srtp,
        recording: r.recording,
        activeSpeaker: r.lastN.activeSpeaker ?? null,
        // Only the origin's own participants' producers: a room's producers all live here.
        producers: r.existingProducers(undefined).map((p) => ({ producerId: p.producerId, peerId: p.peerId, peerName: p.peerName, kind: p.kind })),
      });
      log.info({ pipe: `${local.localAddress}:${local.localPort}`, remote: `${frame.ip}:${frame.port}` }, 'cascade link opened');
    };

    const consume = async (producerId: string) => {
      if (!transport || transport.closed) return end(LINK_CLOSE.protocol, 'consume before open');
      if (consumers.has(producerId)) return;
      let consumer: ms.Consumer;
      try {
        consumer = await transport.consume({ producerId, appData: { cascade: remoteHost } });
      } catch (err) {
        const e = toVerbatimError(err);
        return send({ t: 'consumeFailed', producerId, code: e.code, message: e.message });
      }
      consumers.set(producerId, consumer);
      consumer.observer.once('close', () => consumers.delete(producerId));
      consumer.on('producerclose', () => send({ t: 'closed', producerId }));
      consumer.on('producerpause', () => send({ t: 'paused', producerId }));
      consumer.on('producerresume', () => send({ t: 'resumed', producerId }));
      send({ t: 'consumed', producerId, kind: consumer.kind, rtpParameters: consumer.rtpParameters as unknown as Record<string, unknown>, paused: consumer.producerPaused });
    };

    const onMessage = (data: RawData) => {
      let frame;
      try {
        frame = EdgeFrameSchema.parse(JSON.parse(rawText(data)));
      } catch (err) {
        log.warn({ err }, 'malformed cascade frame; closing the link');
        return end(LINK_CLOSE.protocol, 'malformed frame');
      }
      queue = queue
        .then(() => (frame.t === 'open' ? open(frame) : consume(frame.producerId)))
        .catch((err: unknown) => {
          const e = toVerbatimError(err);
          log.warn({ err, code: e.code }, 'cascade request failed; closing the link');
          end(e.code === 'NOT_ORIGIN' ? LINK_CLOSE.notOrigin : LINK_CLOSE.protocol, `${e.code}: ${e.message}`);
        });
    };

    ws.on('message', onMessage);
    ws.on('error', (err) => log.warn({ err }, 'cascade link error'));
    ws.on('close', (code) => {
      this.links.delete(ws);
      this.deps.onLinks?.(this.links.size);
      for (const d of detach) d();
      // Closing the pipe transport closes its consumers: only that host's viewers lose media.
      if (transport && !transport.closed) transport.close();
      log.info({ code }, 'cascade link closed');
    });
  }

  close(): void {
    for (const ws of this.links) ws.close(LINK_CLOSE.shutdown, 'origin shutting down');
  }
}
