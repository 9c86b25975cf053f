/** RTCP compound packets (RFC 3550 §6); sender reports carry the NTP ↔ RTP pairing. */
import { ntpToIso } from './ntp-time.ts';

export const RTCP_HEADER_BYTES = 8;
/** Sender report: a plain constant for the hot path (RtcpType.SR is the same). */
export const RTCP_SR = 200;
export const RtcpType = { FIR: 192, IJ: 195, SR: RTCP_SR, RR: 201, SDES: 202, BYE: 203, APP: 204, RTPFB: 205, PSFB: 206, XR: 207 } as const;
const RTCP_TYPE_NAMES: Record<number, string> = Object.fromEntries(Object.entries(RtcpType).map(([name, pt]) => [pt, name]));

/**
 * RTCP packet types share the second byte with RTP's marker + payload type; 192–223 are
 * RTCP when RTP and RTCP arrive on one port (RFC 5761 §4), so RTP must not use PT 64–95.
 */
export function isRtcpPacketType(secondByte: number): boolean {
  return secondByte >= 192 && secondByte <= 223;
}

// Hot-path peeks (see rtp-packet.ts): the caller has checked the length (RTCP_HEADER_BYTES).

/** The packet type of the first RTCP packet of a datagram. */
export function peekRtcpType(b: Buffer): number {
  return b[1]!;
}

/** The SSRC of the first RTCP packet's sender (bytes 4–7): for an SR, the stream it reports on. */
export function peekRtcpSsrc(b: Buffer): number {
  return b.readUInt32BE(4);
}

export interface SenderReportInfo {
  ntpSeconds: number;
  ntpFraction: number;
  /** The NTP time as ISO 8601 ('' before 1970); ntpToUnixUs gives it in µs. */
  ntpTime: string;
  rtpTimestamp: number;
  packetCount: number;
  octetCount: number;
}

export interface RtcpInfo {
  packetType: number;
  name: string;
  /** Report count / FMT field. */
  count: number;
  length: number;
  ssrc?: number;
  /** Sender report fields (PT 200). */
  sr?: SenderReportInfo;
}

/** Walks a (possibly compound) RTCP datagram; stops at the first malformed sub-packet. */
export function parseRtcp(b: Buffer): { packets: RtcpInfo[]; malformed: boolean } {
  const packets: RtcpInfo[] = [];
  let off = 0;
  while (off < b.length) {
    if (b.length - off < 4 || b[off]! >> 6 !== 2) return { packets, malformed: true };
    const packetType = b[off + 1]!;
    const length = (b.readUInt16BE(off + 2) + 1) * 4;
    if (off + length > b.length) return { packets, malformed: true };
    const info: RtcpInfo = { packetType, name: RTCP_TYPE_NAMES[packetType] ?? `PT${packetType}`, count: b[off]! & 0x1f, length };
    if (length >= 8) info.ssrc = b.readUInt32BE(off + 4);
    if (packetType === RtcpType.SR && length >= 28) {
      const ntpSeconds = b.readUInt32BE(off + 8);
      const ntpFraction = b.readUInt32BE(off + 12);
      info.sr = {
        ntpSeconds,
        ntpFraction,
        ntpTime: ntpToIso(ntpSeconds, ntpFraction),
        rtpTimestamp: b.readUInt32BE(off + 16),
        packetCount: b.readUInt32BE(off + 20),
        octetCount: b.readUInt32BE(off + 24),
      };
    }
    packets.push(info);
    off += length;
  }
  return { packets, malformed: false };
}

/** The sender reports of one stream (its SSRC) in a compound RTCP datagram, in order. */
export function senderReportsOf(b: Buffer, ssrc: number): SenderReportInfo[] {
  const out: SenderReportInfo[] = [];
  for (const p of parseRtcp(b).packets) if (p.sr && p.ssrc === ssrc) out.push(p.sr);
  return out;
}
