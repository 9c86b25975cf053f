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
}

export interface TrackPackets {
  header: TrackHeader;
  packets: RtpPacket[];
  senderReports: SenderReport[];
  /** Records the reader skipped: duplicates, late beyond the window, unparsable. */
  dropped: { duplicate: number; late: number; malformed: number };
}

/** Packets may arrive this many positions out of order and still be put back in place. */
const REORDER_WINDOW = 128;

/**
 * Reads one recorder segment and returns its RTP in sequence order: sequence and
 * timestamp wraparound unwrapped, duplicates dropped, reordering within a window
 * repaired; RTCP sender reports kept for the NTP ↔ RTP mapping (A/V sync).
 */
export function readTrackPackets(buf: Buffer, file: string): TrackPackets {
  let parsed;
  try {
    parsed = parseRecording(buf, file);
  } catch (err) {
    throw new VerbatimError('BAD_REQUEST', `corrupt recording ${file}: ${(err as Error).message}`, { hint: 'Run `verbatim recording verify` on the session directory.', cause: err });
  }
  const { header } = parsed;
  const out: RtpPacket[] = [];
  const senderReports: SenderReport[] = [];
  const dropped = { duplicate: 0, late: 0, malformed: 0 };
  const seen = new Set<number>();
  let lastSeq: number | undefined;
  let lastTs: number | undefined;
  let maxSeq = -Infinity;
  const pending: RtpPacket[] = [];

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
    const seq = (lastSeq = unwrap(info.sequence, lastSeq, SEQUENCE_MODULUS));
    const ts = (lastTs = unwrap(info.timestamp, lastTs, TIMESTAMP_MODULUS));
    if (seen.has(seq)) {
      dropped.duplicate++;
      continue;
    }
    if (seq < maxSeq - REORDER_WINDOW) {
      dropped.late++;
      continue;
    }
    seen.add(seq);
    maxSeq = Math.max(maxSeq, seq);
    pending.push({ seq, ts, marker: info.marker, payload: rtpPayload(r.data, info), arrivalUs: r.arrivalUs });
  }
  pending.sort((a, b) => a.seq - b.seq);
  out.push(...pending);
  // Sender report RTP timestamps are unwrapped against the nearest packet.
  for (const sr of senderReports) {
    const near = nearestByArrival(out, sr.arrivalUs);
    if (near) sr.rtpTs = unwrapNear(sr.rtpTs, near.ts, TIMESTAMP_MODULUS);
  }
  return { header, packets: out, senderReports, dropped };
}

function nearestByArrival(pkts: RtpPacket[], at: number): RtpPacket | undefined {
  let best: RtpPacket | undefined;
  for (const p of pkts) if (!best || Math.abs(p.arrivalUs - at) < Math.abs(best.arrivalUs - at)) best = p;
  return best;
}

function collectSenderReports(b: Buffer, ssrc: number, arrivalUs: number, out: SenderReport[]): void {
  for (const sr of senderReportsOf(b, ssrc)) out.push({ wallUs: ntpToUnixUs(sr.ntpSeconds, sr.ntpFraction), rtpTs: sr.rtpTimestamp, arrivalUs });
}

/**
 * Offset from the senders' NTP clock to the wall clock, over all tracks of a session.
 * mediasoup stamps sender reports with its own monotonic clock, not the wall clock:
 * its NTP times agree across all tracks (which is what A/V sync needs), and the
 * median of (arrival − NTP) over every report places that clock on the wall clock.
 */
export function ntpToWallOffsetUs(tracks: TrackPackets[]): number {
  const d = tracks.flatMap((t) => t.senderReports.map((sr) => sr.arrivalUs - sr.wallUs)).sort((a, b) => a - b);
  if (d.length === 0) return 0;
  const median = d[Math.floor(d.length / 2)]!;
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
 */
export function wallClockMapper(t: TrackPackets, ntpOffsetUs = 0): { toWallUs: (ts: number) => number; source: 'rtcp-sr' | 'arrival'; captureLeadUs: number } {
  const rate = t.header.codec.clockRate;
  const captureLeadUs = audioPacketDurationUs(t);
  if (t.senderReports.length > 0) {
    const offsets = t.senderReports.map((sr) => sr.wallUs + ntpOffsetUs - (sr.rtpTs / rate) * 1e6).sort((a, b) => a - b);
    const offset = offsets[Math.floor(offsets.length / 2)]! - captureLeadUs;
    return { toWallUs: (ts) => offset + (ts / rate) * 1e6, source: 'rtcp-sr', captureLeadUs };
  }
  const first = t.packets[0];
  const base = (first ? first.arrivalUs - (first.ts / rate) * 1e6 : 0) - captureLeadUs;
  return { toWallUs: (ts) => base + (ts / rate) * 1e6, source: 'arrival', captureLeadUs };
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
