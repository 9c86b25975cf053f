import { createHash } from 'node:crypto';
import type { RtpPacket, TrackPackets } from './rtp-stream.ts';

/** Packets both copies must share (by payload) before their numbering is trusted to line up. */
const MIN_SHARED = 3;

export interface ReplicaMergeResult<T> {
  pieces: T[];
  /** Pieces folded into an earlier one (a replica, or a drain's overlapping tap). */
  merged: number;
  /** Packets only a folded piece held: what the merge saved. */
  added: number;
}

/**
 * Merges copies of one track's stream (issue 15: RECORDER_REPLICAS=2 taps a producer to two
 * recorders; a drain overlaps the old and the new tap): a piece whose arrival overlaps an
 * earlier one is folded into it by RTP sequence number, so a packet either copy holds is in
 * the output once. Each copy came through its own SFU consumer, which numbers (and may offset
 * the timestamps of) the same packets its own way: the two numberings are lined up by the
 * packets both hold (same payload bytes), taking the offset most of them agree on. A piece
 * that shares too few packets with any earlier one (another sender, a failover after a gap)
 * stays a piece of its own.
 */
export function mergeReplicas<T extends { t: TrackPackets }>(input: readonly T[]): ReplicaMergeResult<T> {
  const pieces = [...input].sort((a, b) => firstArrival(a.t) - firstArrival(b.t));
  const kept: T[] = [];
  let merged = 0;
  let added = 0;
  for (const p of pieces) {
    const into = kept.find((k) => overlaps(k.t, p.t) && alignment(k.t, p.t) !== undefined);
    if (!into) {
      kept.push(p);
      continue;
    }
    const a = alignment(into.t, p.t)!;
    const have = new Set(into.t.packets.map((x) => x.seq));
    const extra: RtpPacket[] = [];
    for (const x of p.t.packets) {
      const seq = x.seq + a.dSeq;
      if (have.has(seq)) continue;
      have.add(seq);
      extra.push({ ...x, seq, ts: x.ts + a.dTs });
    }
    if (extra.length > 0) {
      const packets = [...into.t.packets, ...extra].sort((m, n) => m.seq - n.seq);
      into.t = { ...into.t, packets, senderReports: [...into.t.senderReports, ...p.t.senderReports.map((sr) => ({ ...sr, rtpTs: sr.rtpTs + a.dTs, ...(sr.near ? { near: { ...sr.near, ts: sr.near.ts + a.dTs } } : {}) }))] };
    }
    added += extra.length;
    merged++;
  }
  return { pieces: kept, merged, added };
}

/**
 * How `b`'s numbering maps onto `a`'s: the (sequence, timestamp) offset most packets with the same
 * payload agree on, if at least MIN_SHARED do (identical payloads elsewhere, e.g. silence, are outvoted).
 */
function alignment(a: TrackPackets, b: TrackPackets): { dSeq: number; dTs: number } | undefined {
  const byPayload = new Map<string, RtpPacket[]>();
  for (const x of a.packets) {
    const k = key(x.payload);
    const list = byPayload.get(k);
    if (list) list.push(x);
    else byPayload.set(k, [x]);
  }
  const votes = new Map<string, number>();
  for (const y of b.packets) {
    const matches = byPayload.get(key(y.payload));
    // A payload found many times (silence, padding) says nothing about which packet is which.
    if (!matches || matches.length > 4) continue;
    for (const x of matches) {
      const v = `${x.seq - y.seq}:${x.ts - y.ts}`;
      votes.set(v, (votes.get(v) ?? 0) + 1);
    }
  }
  let best: [string, number] | undefined;
  for (const e of votes) if (!best || e[1] > best[1]) best = e;
  if (!best || best[1] < MIN_SHARED) return undefined;
  const [dSeq, dTs] = best[0].split(':').map(Number) as [number, number];
  return { dSeq, dTs };
}

function key(payload: Buffer): string {
  return createHash('sha1').update(payload).digest('base64');
}

function firstArrival(t: TrackPackets): number {
  let min = Infinity;
  for (const p of t.packets) if (p.arrivalUs < min) min = p.arrivalUs;
  return min;
}

function lastArrival(t: TrackPackets): number {
  let max = -Infinity;
  for (const p of t.packets) if (p.arrivalUs > max) max = p.arrivalUs;
  return max;
}

function overlaps(a: TrackPackets, b: TrackPackets): boolean {
  return firstArrival(b) <= lastArrival(a) && firstArrival(a) <= lastArrival(b);
}
