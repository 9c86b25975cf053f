/**
 * Cheap checks on every datagram before it is stored. Anything that is not plausibly
 * this track's RTP/RTCP is dropped and counted by reason; nothing is parsed beyond
 * the fixed header, so the hot path stays a few comparisons.
 */
export const DropReasons = ['too_short', 'over_mtu', 'bad_version', 'not_rtcp', 'unknown_ssrc', 'unknown_payload_type', 'wrong_source', 'segment_closed'] as const;
export type DropReason = (typeof DropReasons)[number];

export const enum Verdict {
  RTP = 1,
  RTCP = 2,
}

export function classifyRtpPort(b: Buffer, maxBytes: number, ssrc: number, payloadType: number): Verdict | DropReason {
  const len = b.length;
  if (len < 12) return len >= 8 && (b[0]! & 0xc0) === 0x80 && isRtcpType(b[1]!) ? Verdict.RTCP : 'too_short';
  if (len > maxBytes) return 'over_mtu';
  if ((b[0]! & 0xc0) !== 0x80) return 'bad_version';
  const second = b[1]!;
  // RTCP multiplexed on the RTP port (RFC 5761): packet types 192-223.
  if (isRtcpType(second)) return rtcpSsrcOk(b, ssrc) ? Verdict.RTCP : 'unknown_ssrc';
  if (b.readUInt32BE(8) !== ssrc) return 'unknown_ssrc';
  if ((second & 0x7f) !== payloadType) return 'unknown_payload_type';
  return Verdict.RTP;
}

export function classifyRtcpPort(b: Buffer, maxBytes: number, ssrc: number): Verdict.RTCP | DropReason {
  const len = b.length;
  if (len < 8) return 'too_short';
  if (len > maxBytes) return 'over_mtu';
  if ((b[0]! & 0xc0) !== 0x80) return 'bad_version';
  if (!isRtcpType(b[1]!)) return 'not_rtcp';
  return rtcpSsrcOk(b, ssrc) ? Verdict.RTCP : 'unknown_ssrc';
}

function isRtcpType(pt: number): boolean {
  return pt >= 192 && pt <= 223;
}

/** Sender reports must come from this track's SSRC; other RTCP (SDES, BYE...) is kept as is. */
function rtcpSsrcOk(b: Buffer, ssrc: number): boolean {
  return b[1] !== 200 || b.readUInt32BE(4) === ssrc;
}
