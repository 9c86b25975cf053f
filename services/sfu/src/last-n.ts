import type { types as ms } from 'mediasoup';
import type { RoomFlags } from '../../lib/contracts/room.ts';
import type { Logger } from '../../lib/logger.ts';
import type { Peer } from './peer.ts';

/** What the last-N policy needs of its room. */
export interface LastNRoom {
  readonly router: ms.Router;
  readonly flags: RoomFlags;
  readonly peers: Map<string, Peer>;
  readonly logger: Logger;
  readonly closed: boolean;
  /** Peers with a video producer: local ones, and those of the origin host when the room cascades. */
  videoPublishers(): string[];
}

/** How often mediasoup's observer re-evaluates the dominant speaker (its default is 300 ms). */
const OBSERVER_INTERVAL_MS = 300;

/**
 * Active speaker and last-N video. mediasoup's ActiveSpeakerObserver watches every audio
 * producer; each dominant-speaker change moves that participant to the front of a recency
 * list. With lastN > 0 only the video of the first N publishers on that list (then in join
 * order, for those who have not spoken yet) is forwarded: other video consumers are paused
 * on the server, so their RTP never leaves the SFU. Audio is always forwarded.
 *
 * A consumer runs when its client wants it (resumeConsumer) and its publisher is in the set;
 * pause/resume requests are ordered on the worker channel, so the last one sent wins.
 */
export class LastN {
  private observer: Promise<ms.ActiveSpeakerObserver> | undefined;
  /** Peer ids, most recent dominant speaker first. */
  private recent: string[] = [];
  private videoSet: string[] = [];
  activeSpeaker: string | undefined;

  constructor(
    private readonly room: LastNRoom,
    private readonly broadcast: (n: Parameters<Peer['notify']>[0]) => void,
  ) {}

  /** Watches an audio producer for the dominant speaker. */
  async watch(producer: ms.Producer): Promise<void> {
    this.observer ??= this.createObserver();
    const observer = await this.observer;
    if (producer.closed || observer.closed) return;
    await observer.addProducer({ producerId: producer.id });
  }

  private async createObserver(): Promise<ms.ActiveSpeakerObserver> {
    const observer = await this.room.router.createActiveSpeakerObserver({ interval: OBSERVER_INTERVAL_MS });
    observer.on('dominantspeaker', ({ producer }) => {
      const peerId = producer.appData.peerId as string | undefined;
      if (peerId && this.room.peers.has(peerId)) this.spoke(peerId);
    });
    return observer;
  }

  /** The room's origin host says who speaks (the observer runs there, on the speakers' audio). */
  spokeRemotely(peerId: string): void {
    this.spoke(peerId);
  }

  private spoke(peerId: string): void {
    if (this.activeSpeaker === peerId) return;
    this.activeSpeaker = peerId;
    this.recent = [peerId, ...this.recent.filter((id) => id !== peerId)];
    this.broadcast({ notification: 'activeSpeaker', data: { peerId } });
    this.refresh();
  }

  peerLeft(peerId: string): void {
    this.recent = this.recent.filter((id) => id !== peerId);
    if (this.activeSpeaker === peerId) this.activeSpeaker = undefined;
    this.refresh();
  }

  /** Whose video is forwarded now. */
  videoPeerIds(): string[] {
    return [...this.videoSet];
  }

  /** Recomputes the set (a speaker changed, video came or went, the flag changed) and applies it to every video consumer. */
  refresh(): void {
    if (this.room.closed) return;
    const publishers = this.room.videoPublishers();
    const ordered = [...this.recent.filter((id) => publishers.includes(id)), ...publishers.filter((id) => !this.recent.includes(id))];
    const next = this.room.flags.lastN > 0 ? ordered.slice(0, this.room.flags.lastN) : ordered;
    const changed = next.length !== this.videoSet.length || next.some((id, i) => id !== this.videoSet[i]);
    this.videoSet = next;
    if (!changed) return;
    this.broadcast({ notification: 'videoSet', data: { peerIds: next } });
    for (const p of this.room.peers.values()) {
      for (const c of p.consumers.values()) {
        if (c.kind !== 'video') continue;
        this.apply(c).catch((err: unknown) => {
          if (!c.closed) this.room.logger.warn({ err, consumer: c.id }, 'applying last-N to a consumer failed');
        });
      }
    }
  }

  /**
   * Runs or pauses one consumer as its client and the policy want. The last state asked of
   * the worker is kept in appData, so a change is sent once and a keyframe asked only on resume.
   */
  async apply(consumer: ms.Consumer): Promise<void> {
    const owner = consumer.appData.producerPeerId as string;
    const run = consumer.appData.clientPaused === false && (consumer.kind === 'audio' || this.videoSet.includes(owner));
    if (consumer.appData.running === run) return;
    consumer.appData.running = run;
    if (!run) return consumer.pause();
    await consumer.resume();
    if (consumer.kind === 'video') await consumer.requestKeyFrame();
  }
}
