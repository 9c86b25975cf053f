import { EventEmitter } from 'node:events';
import type { types as ms } from 'mediasoup';
import WebSocket from 'ws';
import { VerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { CASCADE_PROTOCOL_VERSION, OriginFrameSchema, rawText, type CascadeProducer, type EdgeFrame, type OriginFrame } from './cascade-protocol.ts';
import type { ClusterHost } from './room-registry.ts';
import type { Room } from './room.ts';

export interface CascadeLinkOptions {
  room: Room;
  origin: ClusterHost;
  selfId: string;
  secret: string;
  pipeListen: { ip: string; announcedAddress?: string | undefined; portRange: { min: number; max: number } };
  logger: Logger;
  /** The link and its initial producers must be up within this (default 10 s). */
  timeoutMs?: number;
}

interface LinkEvents {
  /** The origin went away (closed the link, died, or the room closed there). */
  lost: [code: number, reason: string];
}

/**
 * This host's end of a cascaded room: it serves viewers of a room whose origin (speakers,
 * recording taps) is another host. It opens the host-to-host link (cascade-protocol.ts), sets
 * up a PipeTransport pair with the origin, and recreates each origin producer here as a pipe
 * producer with the same id, which the room's viewers consume like a local one.
 */
export class CascadeLink extends EventEmitter<LinkEvents> {
  private transport: ms.PipeTransport | undefined;
  private readonly producers = new Map<string, ms.Producer>();
  private readonly pending = new Map<string, { resolve: () => void; reject: (e: Error) => void }>();
  private closed = false;

  private constructor(
    private readonly opts: CascadeLinkOptions,
    private readonly ws: WebSocket,
  ) {
    super();
  }

  /** Resolves once the pipe is connected and the origin's producers present now are piped here. */
  static async open(opts: CascadeLinkOptions): Promise<CascadeLink> {
    const url = `${opts.origin.controlUrl.replace(/^http/, 'ws').replace(/\/$/, '')}/cluster/v1/rooms/${encodeURIComponent(opts.room.id)}/link`;
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${opts.secret}`, 'x-verbatim-host': opts.selfId }, handshakeTimeout: opts.timeoutMs ?? 10_000 });
    const link = new CascadeLink(opts, ws);
    try {
      await link.start(url);
      return link;
    } catch (err) {
      link.close();
      throw new VerbatimError('CASCADE_FAILED', `could not link room ${opts.room.id} to its origin host ${opts.origin.id}: ${(err as Error).message}`, {
        hint: 'Check that the SFU hosts reach each other (SFU_CLUSTER_URL, SFU_PIPE_ANNOUNCED_IP) and share SFU_CLUSTER_SECRET; rejoin to be placed again.',
        cause: err,
      });
    }
  }

  private async start(url: string): Promise<void> {
    const { room, pipeListen } = this.opts;
    const timeoutMs = this.opts.timeoutMs ?? 10_000;
    const log = this.opts.logger;
    this.transport = await room.router.createPipeTransport({
      listenInfo: { protocol: 'udp', ip: pipeListen.ip, portRange: pipeListen.portRange, ...(pipeListen.announcedAddress ? { announcedAddress: pipeListen.announcedAddress } : {}) },
      enableSrtp: true,
      enableRtx: true,
      appData: { cascade: this.opts.origin.id },
    });
    let opened!: (f: Extract<OriginFrame, { t: 'opened' }>) => void;
    let failed!: (e: Error) => void;
    const openedFrame = new Promise<Extract<OriginFrame, { t: 'opened' }>>((res, rej) => {
      opened = res;
      failed = rej;
    });
    const timer = setTimeout(() => failed(new Error(`no answer from ${url} within ${timeoutMs} ms`)), timeoutMs);
    this.ws.on('message', (data) => {
      let frame: OriginFrame;
      try {
        frame = OriginFrameSchema.parse(JSON.parse(rawText(data)));
      } catch (err) {
        log.warn({ err }, 'malformed frame from the origin; dropping the link');
        this.ws.close(4400, 'malformed frame');
        return;
      }
      if (frame.t === 'opened') opened(frame);
      else this.onFrame(frame).catch((err: unknown) => log.warn({ err, frame: frame.t }, 'cascade frame failed'));
    });
    this.ws.on('error', (err) => failed(err));
    this.ws.on('close', (code, reason) => {
      failed(new Error(`link closed (${code} ${reason.toString()})`));
      if (!this.closed) {
        log.warn({ code, reason: reason.toString() }, 'link to the origin host lost');
        this.close();
        this.emit('lost', code, reason.toString());
      }
    });
    const local = this.transport.tuple;
    try {
      await new Promise<void>((resolve, reject) => {
        this.ws.once('open', () => resolve());
        this.ws.once('error', reject);
        this.ws.once('unexpected-response', (_req, res) => reject(new Error(`origin refused the link: HTTP ${res.statusCode}`)));
      });
    } catch (err) {
      clearTimeout(timer);
      throw err;
    }
    this.send({ t: 'open', v: CASCADE_PROTOCOL_VERSION, host: this.opts.selfId, ip: local.localAddress, port: local.localPort, srtp: this.transport.srtpParameters! });
    try {
      const o = await openedFrame;
      await this.transport.connect({ ip: o.ip, port: o.port, srtpParameters: o.srtp });
      room.mirrorRecording(o.recording);
      if (o.activeSpeaker) room.lastN.spokeRemotely(o.activeSpeaker);
      // Joiners see the origin's producers in their join answer: wait until they are here.
      await Promise.all(o.producers.map((p) => this.pipeIn(p).catch((err: unknown) => log.warn({ err, producer: p.producerId }, 'piping a producer from the origin failed'))));
      log.info({ origin: this.opts.origin.id, producers: o.producers.length, pipe: `${local.localAddress}:${local.localPort} -> ${o.ip}:${o.port}` }, 'cascade link up');
    } finally {
      clearTimeout(timer);
    }
  }

  private send(f: EdgeFrame): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(JSON.stringify(f));
  }

  /** Asks the origin for one producer and makes its twin here. */
  private pipeIn(p: CascadeProducer): Promise<void> {
    if (this.producers.has(p.producerId) || this.pending.has(p.producerId)) return Promise.resolve();
    const consumed = new Promise<void>((resolve, reject) => this.pending.set(p.producerId, { resolve, reject }));
    this.info.set(p.producerId, p);
    this.send({ t: 'consume', producerId: p.producerId });
    return consumed;
  }

  private readonly info = new Map<string, CascadeProducer>();

  private async onFrame(f: Exclude<OriginFrame, { t: 'opened' }>): Promise<void> {
    switch (f.t) {
      case 'producer':
        return this.pipeIn(f);
      case 'consumed': {
        const wait = this.pending.get(f.producerId);
        this.pending.delete(f.producerId);
        const info = this.info.get(f.producerId);
        try {
          if (!this.transport || this.transport.closed || !info) throw new Error('link closed');
          const producer = await this.transport.produce({ id: f.producerId, kind: f.kind, rtpParameters: f.rtpParameters as unknown as ms.RtpParameters, paused: f.paused, appData: { peerId: info.peerId, cascade: true } });
          this.producers.set(producer.id, producer);
          producer.observer.once('close', () => {
            this.producers.delete(producer.id);
            this.info.delete(producer.id);
          });
          await this.opts.room.addRemoteProducer({ producer, peerId: info.peerId, peerName: info.peerName });
          wait?.resolve();
        } catch (err) {
          wait?.reject(err as Error);
        }
        return;
      }
      case 'consumeFailed': {
        const wait = this.pending.get(f.producerId);
        this.pending.delete(f.producerId);
        this.info.delete(f.producerId);
        wait?.reject(new Error(`${f.code}: ${f.message}`));
        return;
      }
      case 'closed':
        this.producers.get(f.producerId)?.close();
        return;
      case 'paused':
        return this.producers.get(f.producerId)?.pause();
      case 'resumed':
        return this.producers.get(f.producerId)?.resume();
      case 'speaker':
        return this.opts.room.lastN.spokeRemotely(f.peerId);
      case 'recording':
        return this.opts.room.mirrorRecording(f.recording);
    }
  }

  /** Idempotent: closes the link and the pipe (its producers close, so viewers here hear producerClosed). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.pending.values()) w.reject(new Error('link closed'));
    this.pending.clear();
    try {
      if (this.transport && !this.transport.closed) this.transport.close();
    } catch (err) {
      this.opts.logger.warn({ err }, 'closing the cascade pipe failed');
    }
    if (this.ws.readyState === this.ws.OPEN || this.ws.readyState === this.ws.CONNECTING) this.ws.close(1000, 'closed');
  }
}
