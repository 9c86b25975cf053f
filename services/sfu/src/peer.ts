import { EventEmitter } from 'node:events';
import type { types as ms } from 'mediasoup';
import type { ServerNotification } from '../../lib/contracts/signaling.ts';
import type { PeerQuality } from './quality-monitor.ts';

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
  /**
   * A decision this participant gave could not be stored (no evidence): they are asked again
   * and not recorded until one is stored, whatever the room's policy.
   */
  consentUnstored = false;
  /** Told about a failure while closing (a broken worker channel); closing goes on regardless. */
  onCloseFault: ((err: unknown) => void) | undefined;
  /** How and when the current decision was made (a recording session started later restates it). */
  consentDecision: { method: 'click' | 'announcement' | 'pre-accepted'; at: Date } | undefined;
  /** Their link as last sampled (QualityMonitor); undefined before the first sample. */
  quality: PeerQuality | undefined;
  /** Joined with a host token: may promote viewers of an allhands room. */
  host = false;
  /** A regulated identity (capture assurance): recorded in every room it joins, whatever the room's flags. */
  regulated = false;
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
    // mediasoup's close() builds its request synchronously: on a worker whose channel is
    // broken it throws. Every transport is still dropped here and the peer still leaves.
    for (const t of this.transports.values()) {
      try {
        t.close();
      } catch (err) {
        this.onCloseFault?.(err);
      }
    }
    this.transports.clear();
    this.producers.clear();
    this.consumers.clear();
    this.emit('close');
  }
}
