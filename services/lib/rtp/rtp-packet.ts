/** RTP fixed header, CSRCs, header extension and padding (RFC 3550 §5.1, RFC 8285). */

/** Bytes of the RTP fixed header (no CSRCs). */
export const RTP_HEADER_BYTES = 12;

// Hot-path peeks: the recorder classifies every datagram with these before storing it, so
// they read single fields in place (no parsing, no allocation) and trust the caller to
// have checked the length (RTP_HEADER_BYTES for the RTP fields).

/** The version field is 2 (the top two bits of the first byte), as for RTP and RTCP alike. */
export function hasVersion2(b: Buffer): boolean {
  return (b[0]! & 0xc0) === 0x80;
}

/** Payload type (7 bits, marker masked off). */
export function peekPayloadType(b: Buffer): number {
  return b[1]! & 0x7f;
}

/** SSRC of an RTP packet (bytes 8–11). */
export function peekSsrc(b: Buffer): number {
  return b.readUInt32BE(8);
}

export interface RtpInfo {
  version: number;
  marker: boolean;
  payloadType: number;
  sequence: number;
  timestamp: number;
  ssrc: number;
  csrcCount: number;
  /** One-byte (0xBEDE) / two-byte (0x100x) header extension profile, if any. */
  extensionProfile?: number;
  extensionBytes: number;
  paddingBytes: number;
  payloadBytes: number;
}

/** Parses an RTP fixed header, CSRCs, extension and padding; null when malformed. */
export function parseRtp(b: Buffer): RtpInfo | null {
  if (b.length < RTP_HEADER_BYTES) return null;
  const version = b[0]! >> 6;
  if (version !== 2) return null;
  const hasPadding = (b[0]! & 0x20) !== 0;
  const hasExtension = (b[0]! & 0x10) !== 0;
  const csrcCount = b[0]! & 0x0f;
  let off = RTP_HEADER_BYTES + 4 * csrcCount;
  if (off > b.length) return null;
  let extensionProfile: number | undefined;
  let extensionBytes = 0;
  if (hasExtension) {
    if (off + 4 > b.length) return null;
    extensionProfile = b.readUInt16BE(off);
    extensionBytes = 4 + 4 * b.readUInt16BE(off + 2);
    off += extensionBytes;
    if (off > b.length) return null;
  }
  let paddingBytes = 0;
  if (hasPadding) {
    // The last byte counts the padding including itself (RFC 3550 §5.1); 0 is invalid.
    paddingBytes = b[b.length - 1]!;
    if (paddingBytes === 0 || off + paddingBytes > b.length) return null;
  }
  return {
    version,
    marker: (b[1]! & 0x80) !== 0,
    payloadType: peekPayloadType(b),
    sequence: b.readUInt16BE(2),
    timestamp: b.readUInt32BE(4),
    ssrc: peekSsrc(b),
    csrcCount,
    ...(extensionProfile !== undefined ? { extensionProfile } : {}),
    extensionBytes,
    paddingBytes,
    payloadBytes: b.length - off - paddingBytes,
  };
}

/** The payload of a packet parseRtp accepted (CSRCs, extension and padding cut off); no copy. */
export function rtpPayload(b: Buffer, info: RtpInfo): Buffer {
  const start = b.length - info.paddingBytes - info.payloadBytes;
  return b.subarray(start, start + info.payloadBytes);
}

/** A plain RTP packet (no CSRCs, extensions or padding): what test senders and benches put on the wire. */
export function buildRtp(h: { payloadType: number; seq: number; timestamp: number; ssrc: number; marker?: boolean }, payload: Buffer): Buffer {
  const b = Buffer.alloc(RTP_HEADER_BYTES + payload.length);
  b[0] = 0x80;
  b[1] = (h.marker ? 0x80 : 0) | h.payloadType;
  b.writeUInt16BE(h.seq & 0xffff, 2);
  b.writeUInt32BE(h.timestamp >>> 0, 4);
  b.writeUInt32BE(h.ssrc >>> 0, 8);
  payload.copy(b, RTP_HEADER_BYTES);
  return b;
}
