/**
 * SRTP/SRTCP receive side (RFC 3711) for the recording tap, suite AES_CM_128_HMAC_SHA1_80 (mediasoup's
 * default for PlainTransport SRTP). The native receive path uses libsrtp for the same job; this is the
 * Node receive path's (RECORDER_RX=node), with node:crypto doing the AES and HMAC. Sessions are receive
 * only: the recorder never sends media back.
 */
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';

export const SRTP_CRYPTO_SUITES = ['AES_CM_128_HMAC_SHA1_80'] as const;
export type SrtpCryptoSuite = (typeof SRTP_CRYPTO_SUITES)[number];

const MASTER_KEY_BYTES = 16;
const MASTER_SALT_BYTES = 14;
/** Master key and salt, concatenated: what mediasoup's srtpParameters.keyBase64 holds for this suite. */
export const SRTP_KEY_BYTES = MASTER_KEY_BYTES + MASTER_SALT_BYTES;
const AUTH_KEY_BYTES = 20;
const TAG_BYTES = 10;
const SRTCP_INDEX_BYTES = 4;

const enum Label {
  RtpCipher = 0,
  RtpAuth = 1,
  RtpSalt = 2,
  RtcpCipher = 3,
  RtcpAuth = 4,
  RtcpSalt = 5,
}

interface SessionKeys {
  cipher: Buffer;
  auth: Buffer;
  salt: Buffer;
}

/** AES-CM keystream of `length` bytes from a 14-byte IV prefix (the counter is the last two bytes). */
function keystream(key: Buffer, ivPrefix: Buffer, length: number): Buffer {
  const iv = Buffer.alloc(16);
  ivPrefix.copy(iv, 0, 0, 14);
  const c = createCipheriv('aes-128-ctr', key, iv);
  return Buffer.concat([c.update(Buffer.alloc(length)), c.final()]);
}

/** The key derivation of RFC 3711 §4.3 with a key derivation rate of 0. */
export function deriveSrtpKey(masterKey: Buffer, masterSalt: Buffer, label: number, length: number): Buffer {
  const x = Buffer.from(masterSalt);
  x[7] = x[7]! ^ label;
  return keystream(masterKey, x, length);
}

function sessionKeys(master: Buffer, rtcp: boolean): SessionKeys {
  const key = master.subarray(0, MASTER_KEY_BYTES);
  const salt = master.subarray(MASTER_KEY_BYTES, SRTP_KEY_BYTES);
  return {
    cipher: deriveSrtpKey(key, salt, rtcp ? Label.RtcpCipher : Label.RtpCipher, MASTER_KEY_BYTES),
    auth: deriveSrtpKey(key, salt, rtcp ? Label.RtcpAuth : Label.RtpAuth, AUTH_KEY_BYTES),
    salt: deriveSrtpKey(key, salt, rtcp ? Label.RtcpSalt : Label.RtpSalt, MASTER_SALT_BYTES),
  };
}

/** The counter-mode IV of §4.1.1: salt ⊕ (SSRC · 2^64) ⊕ (index · 2^16). */
function packetIv(salt: Buffer, ssrc: number, index: bigint): Buffer {
  const iv = Buffer.alloc(16);
  salt.copy(iv, 0, 0, MASTER_SALT_BYTES);
  iv.writeUInt32BE((iv.readUInt32BE(4) ^ ssrc) >>> 0, 4);
  const hi = Number((index >> 16n) & 0xffff_ffffn);
  const lo = Number(index & 0xffffn);
  iv.writeUInt32BE((iv.readUInt32BE(8) ^ hi) >>> 0, 8);
  iv.writeUInt16BE(iv.readUInt16BE(12) ^ lo, 12);
  return iv;
}

function ctr(key: Buffer, iv: Buffer, data: Buffer): Buffer {
  const c = createCipheriv('aes-128-ctr', key, iv);
  return Buffer.concat([c.update(data), c.final()]);
}

function tag(authKey: Buffer, ...parts: Buffer[]): Buffer {
  const h = createHmac('sha1', authKey);
  for (const p of parts) h.update(p);
  return h.digest().subarray(0, TAG_BYTES);
}

/** Where an RTP packet's payload starts (fixed header, CSRCs, extension); -1 when it does not fit. */
function rtpHeaderLength(b: Buffer): number {
  let n = 12 + 4 * (b[0]! & 0x0f);
  if (b[0]! & 0x10) {
    if (b.length < n + 4) return -1;
    n += 4 + 4 * b.readUInt16BE(n + 2);
  }
  return n <= b.length ? n : -1;
}

/** Rollover counters per SSRC: the index estimate of RFC 3711 Appendix A. */
interface StreamState {
  roc: number;
  highestSeq: number;
}

/**
 * One receive-only SRTP session (one tap: one producer's RTP and RTCP). `unprotect` returns the clear
 * packet, or null when it fails authentication (a forged, corrupted or replayed-with-other-key datagram).
 */
export class SrtpReceiver {
  private readonly rtp: SessionKeys;
  private readonly rtcp: SessionKeys;
  private readonly streams = new Map<number, StreamState>();

  constructor(suite: SrtpCryptoSuite, masterKeyAndSalt: Buffer) {
    if (!SRTP_CRYPTO_SUITES.includes(suite)) throw new Error(`unsupported SRTP crypto suite ${suite}`);
    if (masterKeyAndSalt.length !== SRTP_KEY_BYTES) throw new Error(`SRTP ${suite} needs a ${SRTP_KEY_BYTES}-byte master key and salt, got ${masterKeyAndSalt.length}`);
    this.rtp = sessionKeys(masterKeyAndSalt, false);
    this.rtcp = sessionKeys(masterKeyAndSalt, true);
  }

  unprotectRtp(b: Buffer): Buffer | null {
    if (b.length < 12 + TAG_BYTES) return null;
    const body = b.subarray(0, b.length - TAG_BYTES);
    const header = rtpHeaderLength(body);
    if (header < 0) return null;
    const ssrc = b.readUInt32BE(8);
    const seq = b.readUInt16BE(2);
    const state = this.streams.get(ssrc);
    const roc = state ? estimateRoc(state, seq) : 0;
    const rocBytes = Buffer.alloc(4);
    rocBytes.writeUInt32BE(roc >>> 0);
    if (!timingSafeEqual(tag(this.rtp.auth, body, rocBytes), b.subarray(b.length - TAG_BYTES))) return null;
    // Only an authenticated packet moves the rollover state.
    if (!state) this.streams.set(ssrc, { roc, highestSeq: seq });
    else if (roc > state.roc || (roc === state.roc && seq > state.highestSeq)) Object.assign(state, { roc, highestSeq: seq });
    const index = (BigInt(roc >>> 0) << 16n) | BigInt(seq);
    const clear = ctr(this.rtp.cipher, packetIv(this.rtp.salt, ssrc, index), body.subarray(header));
    return Buffer.concat([body.subarray(0, header), clear]);
  }

  unprotectRtcp(b: Buffer): Buffer | null {
    if (b.length < 8 + SRTCP_INDEX_BYTES + TAG_BYTES) return null;
    const authed = b.subarray(0, b.length - TAG_BYTES);
    if (!timingSafeEqual(tag(this.rtcp.auth, authed), b.subarray(b.length - TAG_BYTES))) return null;
    const word = authed.readUInt32BE(authed.length - SRTCP_INDEX_BYTES);
    const packet = authed.subarray(0, authed.length - SRTCP_INDEX_BYTES);
    // E flag clear: authenticated but not encrypted.
    if ((word & 0x8000_0000) === 0) return Buffer.from(packet);
    const index = BigInt(word & 0x7fff_ffff);
    const clear = ctr(this.rtcp.cipher, packetIv(this.rtcp.salt, packet.readUInt32BE(4), index), packet.subarray(8));
    return Buffer.concat([packet.subarray(0, 8), clear]);
  }
}

/** RFC 3711 Appendix A: the ROC that puts `seq` closest to the highest sequence number seen. */
function estimateRoc(s: StreamState, seq: number): number {
  if (s.highestSeq < 32768) return seq - s.highestSeq > 32768 ? s.roc - 1 : s.roc;
  return s.highestSeq - 32768 > seq ? s.roc + 1 : s.roc;
}

/**
 * The tap's SRTP key travels from the SFU to the recorder in the control API's start-track request.
 * That API is authenticated but may be plain HTTP, so the key is wrapped (AES-256-GCM) under a key
 * derived from RECORDER_SECRET, bound to the session and track: someone who reads the request off the
 * wire learns nothing, and a wrapped key cannot be replayed for another track.
 */
const WRAP_INFO = 'verbatim tap srtp key wrap v1';

function wrapKeyOf(secret: string): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), WRAP_INFO, 32));
}

/** What a tap's wrapped key is bound to. */
export const tapKeyContext = (session: string, track: string): string => `${session}/${track}`;

export function wrapTapKey(secret: string, context: string, key: Buffer): string {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', wrapKeyOf(secret), iv);
  c.setAAD(Buffer.from(context));
  const ct = Buffer.concat([c.update(key), c.final()]);
  return Buffer.concat([iv, ct, c.getAuthTag()]).toString('base64');
}

/** The clear key, or null when it was not wrapped with this secret for this context. */
export function unwrapTapKey(secret: string, context: string, wrapped: string): Buffer | null {
  const b = Buffer.from(wrapped, 'base64');
  if (b.length < 12 + 16 + 1) return null;
  try {
    const d = createDecipheriv('aes-256-gcm', wrapKeyOf(secret), b.subarray(0, 12));
    d.setAAD(Buffer.from(context));
    d.setAuthTag(b.subarray(b.length - 16));
    return Buffer.concat([d.update(b.subarray(12, b.length - 16)), d.final()]);
  } catch {
    return null;
  }
}
