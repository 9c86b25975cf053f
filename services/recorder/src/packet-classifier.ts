/**
 * Cheap checks on every datagram before it is stored. Anything that is not plausibly
 * this track's RTP/RTCP is dropped and counted by reason; nothing is parsed beyond
 * the fixed header (lib/rtp's peeks), so the hot path stays a few comparisons.
 */
import { RTCP_HEADER_BYTES, RTCP_SR, RTP_HEADER_BYTES, hasVersion2, isRtcpPacketType, peekPayloadType, peekRtcpSsrc, peekRtcpType, peekSsrc } from '../../lib/rtp/index.ts';

export const DropReasons = ['too_short', 'over_mtu', 'bad_version', 'not_rtcp', 'unknown_ssrc', 'unknown_payload_type', 'wrong_source', 'segment_closed', 'srtp_failed'] as const;
export type DropReason = (typeof DropReasons)[number];

export const enum Verdict {
  RTP = 1,
  RTCP = 2,
}

export function classifyRtpPort(b: Buffer, maxBytes: number, ssrc: number, payloadType: number): Verdict | DropReason {
  const len = b.length;
  if (len < RTP_HEADER_BYTES) return len >= RTCP_HEADER_BYTES && hasVersion2(b) && isRtcpPacketType(peekRtcpType(b)) ? Verdict.RTCP : 'too_short';
  if (len > maxBytes) return 'over_mtu';
  if (!hasVersion2(b)) return 'bad_version';
  // RTCP multiplexed on the RTP port (RFC 5761): byte 1 is its packet type, or RTP's marker + payload type.
  const second = peekRtcpType(b);
  if (isRtcpPacketType(second)) return rtcpSsrcOk(b, second, ssrc) ? Verdict.RTCP : 'unknown_ssrc';
  if (peekSsrc(b) !== ssrc) return 'unknown_ssrc';
  if (peekPayloadType(b) !== payloadType) return 'unknown_payload_type';
  return Verdict.RTP;
}

export function classifyRtcpPort(b: Buffer, maxBytes: number, ssrc: number): Verdict.RTCP | DropReason {
  const len = b.length;
  if (len < RTCP_HEADER_BYTES) return 'too_short';
  if (len > maxBytes) return 'over_mtu';
  if (!hasVersion2(b)) return 'bad_version';
  const type = peekRtcpType(b);
  if (!isRtcpPacketType(type)) return 'not_rtcp';
  return rtcpSsrcOk(b, type, ssrc) ? Verdict.RTCP : 'unknown_ssrc';
}

/** Sender reports must come from this track's SSRC; other RTCP (SDES, BYE...) is kept as is. */
function rtcpSsrcOk(b: Buffer, type: number, ssrc: number): boolean {
  return type !== RTCP_SR || peekRtcpSsrc(b) === ssrc;
}
