/** RTP fixed header, CSRCs, header extension and padding (RFC 3550 §5.1, RFC 8285). */

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
  if (b.length < 12) return null;
  const version = b[0]! >> 6;
  if (version !== 2) return null;
  const hasPadding = (b[0]! & 0x20) !== 0;
  const hasExtension = (b[0]! & 0x10) !== 0;
  const csrcCount = b[0]! & 0x0f;
  let off = 12 + 4 * csrcCount;
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
    payloadType: b[1]! & 0x7f,
    sequence: b.readUInt16BE(2),
    timestamp: b.readUInt32BE(4),
    ssrc: b.readUInt32BE(8),
    csrcCount,
    ...(extensionProfile !== undefined ? { extensionProfile } : {}),
    extensionBytes,
    paddingBytes,
    payloadBytes: b.length - off - paddingBytes,
  };
}
