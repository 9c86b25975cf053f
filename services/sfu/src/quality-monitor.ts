import type { types as ms } from 'mediasoup';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Logger } from '../../lib/logger.ts';
import type { Peer } from './peer.ts';
import type { Room } from './room.ts';

/** One participant's link as the SFU last measured it. */
export interface PeerQuality {
  /** Loss of what they send, measured by the SFU's receiver (percent, the worst of their producers). */
  lossUpPct: number;
  /** Loss of what they receive, from their receiver reports (percent, the worst of their consumers). */
  lossDownPct: number;
  /** Round-trip time from their receiver reports (ms, the worst stream); null before the first report. */
  rttMs: number | null;
  sampledAt: string;
  /** Thresholds this sample crosses. */
  poor: ('loss' | 'rtt')[];
}

export interface QualityThresholds {
  lossPct: number;
  rttMs: number;
}

/** RTCP's fraction lost is 0–255 (of 256): percent. */
const pct = (fractionLost: number) => (fractionLost * 100) / 256;

/** Pure: a participant's quality from mediasoup's producer (inbound) and consumer (outbound) stream stats. */
export function peerQuality(producerStats: ms.ProducerStat[][], consumerStats: ms.ConsumerStat[][], thresholds: QualityThresholds, now = new Date()): PeerQuality {
  const inbound = producerStats.flat();
  const outbound = consumerStats.flat().filter((s) => s.type === 'outbound-rtp');
  const lossUpPct = Math.max(0, ...inbound.map((s) => pct(s.fractionLost)));
  const lossDownPct = Math.max(0, ...outbound.map((s) => pct(s.fractionLost)));
  const rtts = [...outbound, ...inbound].map((s) => s.roundTripTime).filter((r): r is number => typeof r === 'number' && r > 0);
  const rttMs = rtts.length > 0 ? Math.max(...rtts) : null;
  const poor: PeerQuality['poor'] = [];
  if (Math.max(lossUpPct, lossDownPct) > thresholds.lossPct) poor.push('loss');
  if (rttMs !== null && rttMs > thresholds.rttMs) poor.push('rtt');
  return {
    lossUpPct: round(lossUpPct),
    lossDownPct: round(lossDownPct),
    // To the µs: on a LAN the RTT is well under 0.1 ms and must not read as 0.
    rttMs: rttMs === null ? null : Math.round(rttMs * 1000) / 1000,
    sampledAt: now.toISOString(),
    poor,
  };
}

const round = (n: number) => Math.round(n * 10) / 10;

/**
 * Samples every participant's producer and consumer stats every `intervalMs`: per participant
 * loss (up and down) and RTT go to the room stats and /metrics; crossing a threshold (and
 * recovering) is logged once and counted, not on every sample.
 */
export class QualityMonitor {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly loss: Gauge<'room' | 'peer' | 'direction'>;
  private readonly rtt: Gauge<'room' | 'peer'>;
  private readonly crossings: Counter<'threshold'>;

  constructor(
    private readonly opts: { rooms: () => Iterable<Room>; thresholds: QualityThresholds; intervalMs: number; registry: Registry; logger: Logger },
  ) {
    const registers = [opts.registry];
    this.loss = new Gauge({ name: 'verbatim_sfu_peer_packet_loss_percent', help: 'Packet loss per participant and direction (up: what they send; down: what they receive)', labelNames: ['room', 'peer', 'direction'], registers });
    this.rtt = new Gauge({ name: 'verbatim_sfu_peer_rtt_ms', help: 'Round-trip time per participant from their receiver reports', labelNames: ['room', 'peer'], registers });
    this.crossings = new Counter({ name: 'verbatim_sfu_quality_threshold_crossings_total', help: 'Participants whose loss or RTT went over its threshold', labelNames: ['threshold'], registers });
  }

  start(): void {
    if (this.opts.intervalMs <= 0 || this.timer) return;
    this.timer = setInterval(() => {
      this.running ??= this.sample().finally(() => (this.running = undefined));
    }, this.opts.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** One round over every open room (also what the timer runs). */
  async sample(): Promise<void> {
    for (const room of [...this.opts.rooms()]) {
      for (const peer of [...room.peers.values()]) {
        if (peer.closed) continue;
        try {
          await this.samplePeer(room, peer);
        } catch (err) {
          // A producer or consumer closed while it was read: the next round sees the new state.
          this.opts.logger.debug({ err, room: room.id, peer: peer.id }, 'quality sample skipped');
        }
      }
    }
  }

  private async samplePeer(room: Room, peer: Peer): Promise<void> {
    const [up, down] = await Promise.all([Promise.all([...peer.producers.values()].map((p) => p.getStats())), Promise.all([...peer.consumers.values()].map((c) => c.getStats()))]);
    if (peer.closed) return;
    const q = peerQuality(up, down, this.opts.thresholds);
    const before = peer.quality?.poor ?? [];
    peer.quality = q;
    const labels = { room: room.id, peer: peer.id };
    if (!this.watched.has(peer)) {
      this.watched.add(peer);
      peer.once('close', () => {
        this.watched.delete(peer);
        for (const direction of ['up', 'down']) this.loss.remove({ ...labels, direction });
        this.rtt.remove(labels);
      });
    }
    this.loss.set({ ...labels, direction: 'up' }, q.lossUpPct);
    this.loss.set({ ...labels, direction: 'down' }, q.lossDownPct);
    if (q.rttMs !== null) this.rtt.set(labels, q.rttMs);
    for (const t of q.poor) {
      if (before.includes(t)) continue;
      this.crossings.inc({ threshold: t });
      this.opts.logger.warn({ room: room.id, peer: peer.id, lossUpPct: q.lossUpPct, lossDownPct: q.lossDownPct, rttMs: q.rttMs, threshold: t }, t === 'loss' ? `participant's packet loss over ${this.opts.thresholds.lossPct} %` : `participant's RTT over ${this.opts.thresholds.rttMs} ms`);
    }
    for (const t of before) if (!q.poor.includes(t)) this.opts.logger.info({ room: room.id, peer: peer.id, threshold: t, lossUpPct: q.lossUpPct, lossDownPct: q.lossDownPct, rttMs: q.rttMs }, 'participant link recovered');
  }

  private readonly watched = new WeakSet<Peer>();
}
