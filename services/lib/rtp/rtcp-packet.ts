/** RTCP compound packets (RFC 3550 §6); sender reports carry the NTP ↔ RTP pairing. */

const RTCP_TYPE_NAMES: Record<number, string> = { 192: 'FIR', 195: 'IJ', 200: 'SR', 201: 'RR', 202: 'SDES', 203: 'BYE', 204: 'APP', 205: 'RTPFB', 206: 'PSFB', 207: 'XR' };

/** Seconds between the NTP epoch (1900) and the Unix epoch (1970). */
const NTP_UNIX_OFFSET = 2_208_988_800;

export interface RtcpInfo {
  packetType: number;
  name: string;
  /** Report count / FMT field. */
  count: number;
  length: number;
  ssrc?: number;
  /** Sender report fields (PT 200). */
  sr?: { ntpSeconds: number; ntpFraction: number; ntpTime: string; rtpTimestamp: number; packetCount: number; octetCount: number };
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
    if (packetType === 200 && length >= 28) {
      const ntpSeconds = b.readUInt32BE(off + 8);
      const ntpFraction = b.readUInt32BE(off + 12);
      const unixMs = (ntpSeconds - NTP_UNIX_OFFSET) * 1000 + Math.floor((ntpFraction / 0x1_0000_0000) * 1000);
      info.sr = {
        ntpSeconds,
        ntpFraction,
        ntpTime: Number.isFinite(unixMs) && unixMs >= 0 ? new Date(unixMs).toISOString() : '',
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
