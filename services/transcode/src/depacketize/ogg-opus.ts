import type { RtpPacket } from './rtp-stream.ts';

/**
 * RTP Opus → Ogg Opus (RFC 7845). Granule positions come from RTP timestamps (48 kHz),
 * and every hole — lost packets, or DTX where the sender stopped sending — is filled
 * with 20 ms silence frames, so the file's duration equals the track's wall-clock span
 * and later muxing needs no drift correction.
 */
const OGG_CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let r = i << 24;
    for (let j = 0; j < 8; j++) r = r & 0x80000000 ? ((r << 1) ^ 0x04c11db7) >>> 0 : (r << 1) >>> 0;
    t[i] = r >>> 0;
  }
  return t;
})();

function oggCrc(buf: Buffer): number {
  let crc = 0;
  for (const b of buf) crc = ((crc << 8) ^ OGG_CRC_TABLE[((crc >>> 24) ^ b) & 0xff]!) >>> 0;
  return crc;
}

/** Samples (48 kHz) in one Opus packet, from its TOC byte (RFC 6716 §3.1). */
export function opusPacketSamples(p: Buffer): number {
  if (p.length === 0) return 0;
  const toc = p[0]!;
  const config = toc >> 3;
  const frameSamples =
    config < 12 ? [480, 960, 1920, 2880][config & 3]! : config < 16 ? [480, 960][config & 1]! : [120, 240, 480, 960][config & 3]!;
  const code = toc & 3;
  const frames = code === 0 ? 1 : code < 3 ? 2 : p.length > 1 ? p[1]! & 0x3f : 0;
  return frameSamples * frames;
}

/** A 20 ms CELT silence frame (config 31), mono or stereo TOC. */
const silence = (channels: number) => Buffer.from([channels === 2 ? 0xfc : 0xf8, 0xff, 0xfe]);

export interface OggOpusResult {
  data: Buffer;
  /** RTP timestamp (extended) of the first sample. */
  firstTs: number;
  samples: number;
  filledSamples: number;
  packets: number;
}

export function rtpOpusToOgg(packets: RtpPacket[], opts: { channels: number; serial: number; endTs?: number }): OggOpusResult {
  const pages: Buffer[] = [];
  let pageSeq = 0;
  const page = (segments: Buffer[], granule: bigint, flags: number) => {
    const lacing: number[] = [];
    for (const s of segments) {
      let n = s.length;
      while (n >= 255) {
        lacing.push(255);
        n -= 255;
      }
      lacing.push(n);
    }
    const head = Buffer.alloc(27 + lacing.length);
    head.write('OggS', 0, 'latin1');
    head[4] = 0;
    head[5] = flags;
    head.writeBigInt64LE(granule, 6);
    head.writeUInt32LE(opts.serial >>> 0, 14);
    head.writeUInt32LE(pageSeq++, 18);
    head[26] = lacing.length;
    Buffer.from(lacing).copy(head, 27);
    const pageBuf = Buffer.concat([head, ...segments]);
    pageBuf.writeUInt32LE(oggCrc(pageBuf), 22);
    pages.push(pageBuf);
  };

  const opusHead = Buffer.alloc(19);
  opusHead.write('OpusHead', 0, 'latin1');
  opusHead[8] = 1;
  opusHead[9] = opts.channels;
  // pre-skip 312: RTP Opus does not signal the encoder's lookahead, but WebRTC senders
  // run libopus (VoIP/audio modes: 6.5 ms at 48 kHz); without it every decoded sample
  // lands 6.5 ms after its RTP timestamp (measured in services/transcode/test/av-sync.test.ts).
  opusHead.writeUInt16LE(312, 10);
  opusHead.writeUInt32LE(48000, 12);
  page([opusHead], 0n, 0x02);
  const vendor = Buffer.from('verbatim', 'latin1');
  const tags = Buffer.alloc(8 + 4 + vendor.length + 4);
  tags.write('OpusTags', 0, 'latin1');
  tags.writeUInt32LE(vendor.length, 8);
  vendor.copy(tags, 12);
  page([tags], 0n, 0);

  const firstTs = packets[0]?.ts ?? 0;
  let granule = 0;
  let filled = 0;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const flushPage = (last: boolean) => {
    if (pending.length === 0 && !last) return;
    page(pending, BigInt(granule), last ? 0x04 : 0);
    pending = [];
    pendingBytes = 0;
  };
  const push = (p: Buffer, samples: number) => {
    // ≤ 255 lacing values per page: keep pages to ~50 packets (~1 s).
    if (pending.length >= 50 || pendingBytes + p.length > 60_000) flushPage(false);
    pending.push(p);
    pendingBytes += p.length;
    granule += samples;
  };
  const sil = silence(opts.channels);
  for (const pkt of packets) {
    const expected = firstTs + granule;
    let gap = pkt.ts - expected;
    while (gap >= 960) {
      push(sil, 960);
      filled += 960;
      gap -= 960;
    }
    if (gap < -960 * 3) continue; // overlaps what we already wrote (sender restarted its clock)
    const n = opusPacketSamples(pkt.payload);
    if (n === 0) continue;
    push(pkt.payload, n);
  }
  if (opts.endTs !== undefined) {
    while (opts.endTs - (firstTs + granule) >= 960) {
      push(sil, 960);
      filled += 960;
    }
  }
  flushPage(true);
  return { data: Buffer.concat(pages), firstTs, samples: granule, filledSamples: filled, packets: packets.length };
}
