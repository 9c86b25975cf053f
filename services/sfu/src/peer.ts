import { EventEmitter } from 'node:events';
import type { types as ms } from 'mediasoup';
import type { ServerNotification } from '../../lib/contracts/signaling.ts';

export type ConsentState = 'pending' | 'granted' | 'declined';

interface PeerEvents {
  close: [];
}

/** The sink a peer's notifications go to: a signaling connection, or nothing for ingest peers. */
export interface PeerChannel {
  notify(n: ServerNotification): void;
  close(code: number, reason: string): void;
}

/**
 * A participant in a room: its transports, producers and consumers. Closing a peer
 * closes its transports, which cascades to producers and consumers in mediasoup.
 */
export class Peer extends EventEmitter<PeerEvents> {
  readonly transports = new Map<string, ms.Transport>();
  readonly producers = new Map<string, ms.Producer>();
  readonly consumers = new Map<string, ms.Consumer>();
  rtpCapabilities: ms.RtpCapabilities | undefined;
  consent: ConsentState = 'pending';
  /** How and when the current decision was made (a recording session started later restates it). */
  consentDecision: { method: 'click' | 'announcement' | 'pre-accepted'; at: Date } | undefined;
  readonly joinedAt = new Date();
  lastSeen = Date.now();
  private closedFlag = false;

  constructor(
    readonly id: string,
    readonly name: string,
    public channel: PeerChannel | undefined,
    readonly kind: 'webrtc' | 'ingest' = 'webrtc',
  ) {
    super();
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  notify(n: ServerNotification): void {
    if (!this.closedFlag) this.channel?.notify(n);
  }

  close(): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    for (const t of this.transports.values()) t.close();
    this.transports.clear();
    this.producers.clear();
    this.consumers.clear();
    this.emit('close');
  }
}
