import type { RtpPacket } from './rtp-stream.ts';
import { writeIvf } from './ivf.ts';

/**
 * RTP H.264 (RFC 6184, packetization-mode 1) → Annex B elementary stream.
 *
 * Access units are the packets sharing an RTP timestamp, in sequence order. One is
 * complete when its last media packet carries the marker bit, its sequence numbers are
 * contiguous, every FU-A is whole and its first slice starts the picture
 * (first_mb_in_slice = 0: catches a lost packet at the very start of the AU).
 * Output starts at the first IDR for which an SPS and a PPS are known; the most recent
 * SPS/PPS are inserted before an IDR that arrives without them. After a damaged AU, or a
 * whole frame lost between two AUs, AUs are skipped until the next IDR, so no corrupt
 * inter frames are written. STAP-B, MTAP16/24 and FU-B (interleaved mode only) are
 * counted and make their AU damaged; NAL types 0, 30 and 31 are ignored.
 */
export interface AnnexBResult {
  data: Buffer;
  frames: number;
  keyframes: number;
  skippedFrames: number;
  firstTs: number | null;
  lastTs: number | null;
  /** RTP (90 kHz) timestamp of each written frame, relative to firstTs. */
  frameTimestamps: number[];
  /** Byte length of each written frame (access unit) in `data`, in order. */
  frameSizes: number[];
  /** Packets of types this depacketizer does not handle (interleaved mode). */
  unsupportedPackets: number;
}

const START_CODE = Buffer.from([0, 0, 0, 1]);
const NAL = { SLICE: 1, IDR: 5, SEI: 6, SPS: 7, PPS: 8, AUD: 9, STAP_A: 24, STAP_B: 25, MTAP16: 26, MTAP24: 27, FU_A: 28, FU_B: 29 } as const;

interface Depacketized {
  nals: Buffer[];
  damaged: boolean;
  unsupported: number;
}

/** The NAL units of one access unit's packets. */
function depacketize(group: RtpPacket[]): Depacketized {
  const nals: Buffer[] = [];
  let damaged = false;
  let unsupported = 0;
  let fu: Buffer[] | null = null;
  for (const p of group) {
    const b = p.payload;
    if (b.length === 0) continue; // padding-only packet
    if (b[0]! & 0x80) {
      damaged = true; // forbidden_zero_bit: the sender marks a corrupt NAL
      continue;
    }
    const type = b[0]! & 0x1f;
    if (fu && type !== NAL.FU_A) {
      damaged = true; // FU-A without its end fragment
      fu = null;
    }
    if (type >= 1 && type <= 23) {
      nals.push(b);
    } else if (type === NAL.STAP_A) {
      let off = 1;
      while (off < b.length) {
        if (off + 2 > b.length) {
          damaged = true;
          break;
        }
        const size = b.readUInt16BE(off);
        off += 2;
        if (size === 0 || off + size > b.length) {
          damaged = true;
          break;
        }
        nals.push(b.subarray(off, off + size));
        off += size;
      }
    } else if (type === NAL.FU_A) {
      if (b.length < 3) {
        damaged = true;
        fu = null;
        continue;
      }
      const h = b[1]!;
      const start = (h & 0x80) !== 0;
      const end = (h & 0x40) !== 0;
      if (start) {
        if (fu) damaged = true; // previous FU-A lost its end
        fu = [Buffer.from([(b[0]! & 0xe0) | (h & 0x1f)])];
      } else if (!fu) {
        damaged = true; // start fragment lost
        continue;
      }
      fu.push(b.subarray(2));
      if (end) {
        nals.push(Buffer.concat(fu));
        fu = null;
      }
    } else if (type === NAL.STAP_B || type === NAL.MTAP16 || type === NAL.MTAP24 || type === NAL.FU_B) {
      unsupported++;
      damaged = true;
    }
    // 0, 30, 31: undefined NAL types, ignored as decoders do
  }
  if (fu) damaged = true;
  return { nals, damaged, unsupported };
}

export function rtpH264ToAnnexB(packets: RtpPacket[]): AnnexBResult {
  const frames: { ts: number; data: Buffer; key: boolean }[] = [];
  let skipped = 0;
  let unsupported = 0;
  let needKey = true;
  let sps: Buffer | null = null;
  let pps: Buffer | null = null;
  let prevSeq: number | null = null;
  let i = 0;
  while (i < packets.length) {
    const ts = packets[i]!.ts;
    let j = i;
    while (j < packets.length && packets[j]!.ts === ts) j++;
    const group = packets.slice(i, j);
    i = j;

    // A hole before this AU: the tail of the previous one, or whole frames, were lost.
    const gapBefore = prevSeq !== null && group[0]!.seq !== prevSeq + 1;
    prevSeq = group.at(-1)!.seq;
    let complete = true;
    for (let k = 1; k < group.length; k++) if (group[k]!.seq !== group[k - 1]!.seq + 1) complete = false;
    const media = group.filter((p) => p.payload.length > 0);
    if (media.length === 0) continue; // padding only: not a frame
    if (!media.at(-1)!.marker) complete = false;

    const d = depacketize(group);
    unsupported += d.unsupported;
    for (const n of d.nals) {
      const t = n[0]! & 0x1f;
      if (t === NAL.SPS) sps = n;
      else if (t === NAL.PPS) pps = n;
    }
    const firstVcl = d.nals.find((n) => {
      const t = n[0]! & 0x1f;
      return t === NAL.SLICE || t === NAL.IDR;
    });
    // first_mb_in_slice is ue(v); its first bit is 1 exactly when it is 0.
    if (!firstVcl || firstVcl.length < 2 || (firstVcl[1]! & 0x80) === 0) complete = false;
    if (!complete || d.damaged) {
      skipped++;
      needKey = true;
      continue;
    }
    const key = d.nals.some((n) => (n[0]! & 0x1f) === NAL.IDR);
    if (gapBefore && !key) needKey = true; // a reference frame may be missing
    if (!key && needKey) {
      skipped++;
      continue;
    }
    let nals = d.nals;
    if (key) {
      if (!sps || !pps) {
        skipped++;
        needKey = true;
        continue;
      }
      const has = (t: number) => nals.some((n) => (n[0]! & 0x1f) === t);
      if (!has(NAL.SPS) || !has(NAL.PPS)) {
        // Parameter sets go after an access unit delimiter, before everything else.
        const rest = nals.filter((n) => ![NAL.SPS, NAL.PPS].includes((n[0]! & 0x1f) as 7 | 8));
        const aud = rest.length > 0 && (rest[0]![0]! & 0x1f) === NAL.AUD ? 1 : 0;
        nals = [...rest.slice(0, aud), sps, pps, ...rest.slice(aud)];
      }
    }
    needKey = false;
    frames.push({ ts, data: Buffer.concat(nals.flatMap((n) => [START_CODE, n])), key });
  }
  const first = frames[0]?.ts ?? 0;
  return {
    data: Buffer.concat(frames.map((f) => f.data)),
    frames: frames.length,
    keyframes: frames.filter((f) => f.key).length,
    skippedFrames: skipped,
    firstTs: frames[0]?.ts ?? null,
    lastTs: frames.at(-1)?.ts ?? null,
    frameTimestamps: frames.map((f) => f.ts - first),
    frameSizes: frames.map((f) => f.data.length),
    unsupportedPackets: unsupported,
  };
}

/**
 * Wraps the Annex B access units in IVF with the fourcc 'H264' and a 90 kHz timebase, so
 * ffmpeg demuxes them with their real (variable) RTP timing; `-c copy` then remuxes to
 * Matroska. ffmpeg's IVF demuxer maps the fourcc through its generic codec tag table, so
 * this needs no frame-rate guess. Width/height are left 0: ffmpeg reads them from the SPS.
 */
export function annexBToIvf(r: Pick<AnnexBResult, 'data' | 'frameTimestamps' | 'frameSizes'>): Buffer {
  let off = 0;
  const frames = r.frameSizes.map((size, k) => {
    const data = r.data.subarray(off, off + size);
    off += size;
    return { pts: r.frameTimestamps[k]!, data };
  });
  // Width/height 0: ffmpeg takes them from the SPS.
  return writeIvf('H264', 0, 0, frames);
}
