import { RecordType, parseRecording } from '../../../lib/recording/vrtp-format.ts';
import { SEQUENCE_MODULUS, TIMESTAMP_MODULUS, ntpToUnixUs, parseRtp, rtpPayload, senderReportsOf, unwrap, unwrapNear } from '../../../lib/rtp/index.ts';
import type { TrackHeader } from '../../../lib/contracts/recording.ts';
import { VerbatimError } from '../../../lib/errors.ts';
import { opusPacketSamples } from './ogg-opus.ts';

export interface RtpPacket {
  /** Extended (wrap-free) sequence number. */
  seq: number;
  /** Extended (wrap-free) RTP timestamp. */
  ts: number;
  marker: boolean;
  payload: Buffer;
  arrivalUs: number;
}

export interface SenderReport {
  /** Wall clock of the report in µs since the Unix epoch (from NTP). */
  wallUs: number;
  /** Extended RTP timestamp matching that wall clock. */
  rtpTs: number;
  arrivalUs: number;
  /** The kept packet that arrived nearest to the report: what checks the report against arrival. */
  near?: { ts: number; arrivalUs: number };
}

export interface TrackPackets {
  header: TrackHeader;
  packets: RtpPacket[];
  senderReports: SenderReport[];
  /**
   * Records the reader skipped: duplicates, late beyond the window, unparsable, and RTP
   * whose timestamp disagrees with its arrival (offClock: junk, or a sender clock that jumped).
   */
  dropped: { duplicate: number; late: number; malformed: number; offClock: number };
}

/** Packets may arrive this many positions out of order and still be put back in place. */
const REORDER_WINDOW = 128;

/**
 * How far a packet's RTP time may disagree with its arrival (µs), relative to the rest of
 * its stream: network jitter, a burst after a stall, the sender's clock drifting from ours
 * over a long meeting. Beyond it the timestamp is not believed: the packet is junk.
 */
export const ARRIVAL_TOLERANCE_US = 2_000_000;
/** A stream needs this many packets on one clock (or half of its packets, if fewer) to be believed at all. */
const MIN_CONSISTENT_PACKETS = 25;

/**
 * Reads one recorder segment and returns its RTP in sequence order: sequence and
 * timestamp wraparound unwrapped, duplicates dropped, reordering within a window
 * repaired; RTCP sender reports kept for the NTP ↔ RTP mapping (A/V sync).
 *
 * RTP timestamps are the sender's word; arrival times are the recorder's (monotonic) clock.
 * Packets whose timestamp disagrees with arrival by more than ARRIVAL_TOLERANCE_US are
 * dropped as offClock before anything is unwrapped, so a few absurd timestamps can neither
 * stretch the track nor push the real packets into another 32-bit cycle; a stream with no
 * consistent clock at all keeps no packets.
 */
export function readTrackPackets(buf: Buffer, file: string): TrackPackets {
  let parsed;
  try {
    parsed = parseRecording(buf, file);
  } catch (err) {
    throw new VerbatimError('BAD_REQUEST', `corrupt recording ${file}: ${(err as Error).message}`, { hint: 'Run `verbatim recording verify` on the session directory.', cause: err });
  }
  const { header } = parsed;
  const senderReports: SenderReport[] = [];
  const dropped = { duplicate: 0, late: 0, malformed: 0, offClock: 0 };
  const candidates: Candidate[] = [];
  for (const r of parsed.records) {
    if (r.type === RecordType.RTCP) {
      collectSenderReports(r.data, header.ssrc, r.arrivalUs, senderReports);
      continue;
    }
    const info = parseRtp(r.data);
    if (!info || info.ssrc !== header.ssrc || info.payloadType !== header.codec.payloadType) {
      dropped.malformed++;
      continue;
    }
    candidates.push({ seq: info.sequence, ts: info.timestamp, marker: info.marker, payload: rtpPayload(r.data, info), arrivalUs: r.arrivalUs });
  }

  const rate = header.codec.clockRate;
  const onClock = onArrivalClock(candidates, rate);
  const seen = new Set<number>();
  let lastSeq: number | undefined;
  let maxSeq = -Infinity;
  let anchor: { ts: number; arrivalUs: number } | undefined;
  /** Kept packets in arrival order, for pairing sender reports. */
  const byArrival: RtpPacket[] = [];
  candidates.forEach((c, i) => {
    if (!onClock[i]) {
      dropped.offClock++;
      return;
    }
    const seq = (lastSeq = unwrap(c.seq, lastSeq, SEQUENCE_MODULUS));
    // Each timestamp goes into the cycle its arrival predicts (the first one's cycle starts one up, as unwrap does).
    const ts = anchor ? unwrapNear(c.ts, Math.round(anchor.ts + ((c.arrivalUs - anchor.arrivalUs) * rate) / 1e6), TIMESTAMP_MODULUS) : c.ts + TIMESTAMP_MODULUS;
    anchor ??= { ts, arrivalUs: c.arrivalUs };
    if (seen.has(seq)) {
      dropped.duplicate++;
      return;
    }
    if (seq < maxSeq - REORDER_WINDOW) {
      dropped.late++;
      return;
    }
    seen.add(seq);
    maxSeq = Math.max(maxSeq, seq);
    byArrival.push({ seq, ts, marker: c.marker, payload: c.payload, arrivalUs: c.arrivalUs });
  });
  const packets = [...byArrival].sort((a, b) => a.seq - b.seq);
  // Sender report RTP timestamps are unwrapped against the packet that arrived nearest.
  for (const sr of senderReports) {
    const near = nearestByArrival(byArrival, sr.arrivalUs);
    if (!near) continue;
    sr.rtpTs = unwrapNear(sr.rtpTs, near.ts, TIMESTAMP_MODULUS);
    sr.near = { ts: near.ts, arrivalUs: near.arrivalUs };
  }
  return { header, packets, senderReports, dropped };
}

/** An RTP packet as recorded: 16-bit sequence number, 32-bit timestamp. */
interface Candidate {
  seq: number;
  ts: number;
  marker: boolean;
  payload: Buffer;
  arrivalUs: number;
}

/**
 * Which packets are on the stream's clock. A packet's residual is its RTP timestamp minus
 * its arrival on the RTP clock, modulo 2^32: constant for a real stream up to jitter and
 * drift, scattered for junk. The densest window of residuals (circular, 2 × tolerance wide)
 * is the stream's clock; packets within the tolerance of its median are kept. A stream
 * whose densest window holds too few packets, or whose kept packets' timestamps run
 * backwards or at a rate far from their arrival's, has no believable clock: nothing is kept.
 */
function onArrivalClock(c: readonly Candidate[], rate: number): boolean[] {
  const n = c.length;
  if (n === 0) return [];
  const mod = TIMESTAMP_MODULUS;
  const a0 = c[0]!.arrivalUs;
  // Arrivals relative to the first: µs × clock rate stays exact in a double for days.
  const residual = c.map((x) => wrap(x.ts - Math.round(((x.arrivalUs - a0) * rate) / 1e6), mod));
  const tol = Math.round((ARRIVAL_TOLERANCE_US * rate) / 1e6);
  const sorted = Float64Array.from(residual).sort();
  const at = (k: number) => (k < n ? sorted[k]! : sorted[k - n]! + mod);
  let best = 0;
  let bestStart = 0;
  for (let i = 0, j = 0; i < n; i++) {
    j = Math.max(j, i);
    while (j + 1 < i + n && at(j + 1) - sorted[i]! <= 2 * tol) j++;
    if (j - i + 1 > best) [best, bestStart] = [j - i + 1, i];
  }
  const center = wrap(at(bestStart + Math.floor(best / 2)), mod);
  const keep = residual.map((r) => Math.abs(circular(r - center, mod)) <= tol);
  const kept = keep.flatMap((k, i) => (k ? [i] : []));
  const none = () => new Array<boolean>(n).fill(false);
  if (kept.length < Math.min(MIN_CONSISTENT_PACKETS, Math.ceil(n / 2))) return none();
  const first = kept[0]!;
  const last = kept.at(-1)!;
  const arrivalSpanUs = c[last]!.arrivalUs - c[first]!.arrivalUs;
  if (arrivalSpanUs >= 1_000_000) {
    // RTP time elapsed = arrival time elapsed + the change of residual (small: no 32-bit wrap to mind).
    const rtpSpanUs = arrivalSpanUs + (circular(residual[last]! - residual[first]!, mod) / rate) * 1e6;
    const ratio = rtpSpanUs / arrivalSpanUs;
    if (ratio < 0.25 || ratio > 4) return none();
  }
  return keep;
}

/** v mod m in [0, m). */
const wrap = (v: number, m: number) => ((v % m) + m) % m;
/** A difference mod m as the signed value nearest zero. */
const circular = (d: number, m: number) => {
  const w = wrap(d, m);
  return w > m / 2 ? w - m : w;
};

/** The packet whose arrival is nearest `at` (binary search: arrivals are the recorder's monotonic clock). */
function nearestByArrival(pkts: readonly RtpPacket[], at: number): RtpPacket | undefined {
  if (pkts.length === 0) return undefined;
  let lo = 0;
  let hi = pkts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (pkts[mid]!.arrivalUs < at) lo = mid + 1;
    else hi = mid;
  }
  const prev = pkts[lo - 1];
  return prev && Math.abs(prev.arrivalUs - at) <= Math.abs(pkts[lo]!.arrivalUs - at) ? prev : pkts[lo];
}

function collectSenderReports(b: Buffer, ssrc: number, arrivalUs: number, out: SenderReport[]): void {
  for (const sr of senderReportsOf(b, ssrc)) out.push({ wallUs: ntpToUnixUs(sr.ntpSeconds, sr.ntpFraction), rtpTs: sr.rtpTimestamp, arrivalUs });
}

/**
 * Offset from the senders' NTP clock to the wall clock, over all tracks of a session.
 * mediasoup stamps sender reports with its own monotonic clock, not the wall clock:
 * its NTP times agree across all tracks (which is what A/V sync needs), and the
 * median of (arrival − NTP) over the reports places that clock on the wall clock. Only
 * the reports that agree with each other count (the densest window of the tolerance's
 * width), so a junk report cannot move the clock of a session with two good ones.
 */
export function ntpToWallOffsetUs(tracks: TrackPackets[]): number {
  const d = tracks.flatMap((t) => t.senderReports.map((sr) => sr.arrivalUs - sr.wallUs)).sort((a, b) => a - b);
  if (d.length === 0) return 0;
  let best = { from: 0, count: 0 };
  for (let i = 0, j = 0; i < d.length; i++) {
    while (j + 1 < d.length && d[j + 1]! - d[i]! <= 2 * ARRIVAL_TOLERANCE_US) j++;
    if (j - i + 1 > best.count) best = { from: i, count: j - i + 1 };
  }
  const median = d[best.from + Math.floor(best.count / 2)]!;
  return Math.abs(median) < 10_000_000 ? 0 : median; // a sender already on wall-clock NTP
}

/**
 * Maps RTP timestamps of a track to wall-clock µs (capture time of that sample). With
 * sender reports, the NTP ↔ RTP pairing (the median offset over all reports, robust to
 * one bad SR), shifted by the session's NTP→wall offset; without, the arrival of the
 * first packet. Both pairings are transmission times: the recorder is fed by mediasoup
 * consumers, whose SRs pair "now" with the newest forwarded packet (RtpStreamSend::
 * GetRtcpSenderReport), not the publisher's capture clock. A video frame leaves the
 * sender a few ms after capture (encode), but an audio packet's timestamp is its first
 * sample and it cannot leave before its last one is captured: audio is moved back by
 * one packet duration, or it lands ~20 ms late against the picture.
 *
 * A report that would put the packet that arrived nearest to it further than the
 * tolerance from that arrival is not used (junk, or a sender clock unlike the session's):
 * sender reports may refine where a track sits, never move it away from when it arrived.
 */
export function wallClockMapper(t: TrackPackets, ntpOffsetUs = 0): { toWallUs: (ts: number) => number; source: 'rtcp-sr' | 'arrival'; captureLeadUs: number; rejectedSenderReports: number } {
  const rate = t.header.codec.clockRate;
  const captureLeadUs = audioPacketDurationUs(t);
  const offsetOf = (sr: SenderReport) => sr.wallUs + ntpOffsetUs - (sr.rtpTs / rate) * 1e6;
  const usable = t.senderReports.filter((sr) => !sr.near || Math.abs(offsetOf(sr) + (sr.near.ts / rate) * 1e6 - sr.near.arrivalUs) <= ARRIVAL_TOLERANCE_US);
  const rejectedSenderReports = t.senderReports.length - usable.length;
  if (usable.length > 0) {
    const offsets = usable.map(offsetOf).sort((a, b) => a - b);
    const offset = offsets[Math.floor(offsets.length / 2)]! - captureLeadUs;
    return { toWallUs: (ts) => offset + (ts / rate) * 1e6, source: 'rtcp-sr', captureLeadUs, rejectedSenderReports };
  }
  const first = t.packets[0];
  const base = (first ? first.arrivalUs - (first.ts / rate) * 1e6 : 0) - captureLeadUs;
  return { toWallUs: (ts) => base + (ts / rate) * 1e6, source: 'arrival', captureLeadUs, rejectedSenderReports };
}

/** Median duration (µs) of an Opus track's packets, from their TOC bytes; 0 for video. */
function audioPacketDurationUs(t: TrackPackets): number {
  if (t.header.codec.mimeType.toLowerCase() !== 'audio/opus') return 0;
  const d = t.packets
    .slice(0, 200)
    .map((p) => opusPacketSamples(p.payload))
    .filter((n) => n > 0)
    .sort((a, b) => a - b);
  return d.length ? (d[Math.floor(d.length / 2)]! / 48000) * 1e6 : 0;
}
