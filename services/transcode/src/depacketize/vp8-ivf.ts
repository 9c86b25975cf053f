import { writeIvf } from './ivf.ts';
import type { RtpPacket } from './rtp-stream.ts';

/**
 * RTP VP8 (RFC 7741) → IVF. Frames are assembled from packets sharing an RTP
 * timestamp, in sequence order, using the payload descriptor's start bit and the RTP
 * marker. Output starts at the first keyframe; after a frame with a hole (lost packet)
 * frames are skipped until the next keyframe, so no corrupt inter frames are written.
 */
export interface IvfResult {
  data: Buffer;
  frames: number;
  keyframes: number;
  skippedFrames: number;
  firstTs: number | null;
  lastTs: number | null;
  width: number;
  height: number;
}

/** Offset of the VP8 payload after the payload descriptor, and whether this packet starts a frame. */
function descriptor(p: Buffer): { offset: number; start: boolean; pid: number } | null {
  if (p.length < 1) return null;
  const b0 = p[0]!;
  let off = 1;
  if (b0 & 0x80) {
    if (p.length < 2) return null;
    const x = p[1]!;
    off = 2;
    if (x & 0x80) off += p[off]! & 0x80 ? 2 : 1; // picture id, 7 or 15 bits
    if (x & 0x40) off += 1; // TL0PICIDX
    if (x & 0x30) off += 1; // TID / KEYIDX
  }
  if (off > p.length) return null;
  return { offset: off, start: (b0 & 0x10) !== 0, pid: b0 & 0x07 };
}

export function rtpVp8ToIvf(packets: RtpPacket[]): IvfResult {
  const frames: { ts: number; data: Buffer; key: boolean }[] = [];
  let skipped = 0;
  let i = 0;
  let needKey = true;
  let width = 0;
  let height = 0;
  while (i < packets.length) {
    const ts = packets[i]!.ts;
    let j = i;
    while (j < packets.length && packets[j]!.ts === ts) j++;
    const group = packets.slice(i, j);
    i = j;
    const d0 = descriptor(group[0]!.payload);
    let complete = !!d0 && d0.start && d0.pid === 0 && group.at(-1)!.marker;
    for (let k = 1; k < group.length && complete; k++) if (group[k]!.seq !== group[k - 1]!.seq + 1) complete = false;
    if (!complete) {
      skipped++;
      needKey = true;
      continue;
    }
    const parts: Buffer[] = [];
    for (const p of group) {
      const d = descriptor(p.payload);
      if (!d) {
        complete = false;
        break;
      }
      parts.push(p.payload.subarray(d.offset));
    }
    if (!complete) {
      skipped++;
      needKey = true;
      continue;
    }
    const data = Buffer.concat(parts);
    const key = data.length >= 10 && (data[0]! & 0x01) === 0 && data[3] === 0x9d && data[4] === 0x01 && data[5] === 0x2a;
    if (needKey && !key) {
      skipped++;
      continue;
    }
    if (key) {
      width = data.readUInt16LE(6) & 0x3fff;
      height = data.readUInt16LE(8) & 0x3fff;
    }
    needKey = false;
    frames.push({ ts, data, key });
  }
  const first = frames[0]?.ts ?? 0;
  const data = writeIvf('VP80', width, height, frames.map((f) => ({ pts: f.ts - first, data: f.data })));
  return { data, frames: frames.length, keyframes: frames.filter((f) => f.key).length, skippedFrames: skipped, firstTs: frames[0]?.ts ?? null, lastTs: frames.at(-1)?.ts ?? null, width, height };
}
