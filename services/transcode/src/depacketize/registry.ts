import { renameSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { CODECS, codecByMimeType, type DepacketizerId } from '../../../lib/contracts/codecs.ts';
import { BITEXACT, type FfmpegRunner } from '../../../lib/media/ffmpeg-runner.ts';
import { annexBToIvf, rtpH264ToAnnexB } from './h264-annexb.ts';
import { rtpOpusToOgg } from './ogg-opus.ts';
import type { RtpPacket } from './rtp-stream.ts';
import { rtpVp8ToIvf } from './vp8-ivf.ts';

/** One recorded segment's packets (in sequence order, unwrapped) and what to call its file. */
export interface DepacketizeInput {
  /** File stem: `<track>-<n>`. */
  name: string;
  packets: RtpPacket[];
  /** Audio channels from the track's codec. */
  channels: number;
  /** Ogg stream serial (deterministic per piece). */
  serial: number;
}

export interface DepacketizeOutput {
  dir: string;
  ffmpeg: FfmpegRunner;
  /** Writes a finished file so a crash never leaves half of one under its name. */
  write: (file: string, data: Buffer) => void;
}

/** A codec file made from one segment: where its first sample is on the RTP clock, and how long it lasts. */
export interface DepacketizedPiece {
  file: string;
  /** Extended RTP timestamp of the first sample in the file. */
  firstTs: number;
  durationSeconds: number;
}

/** null: the segment held nothing decodable (no complete frame). */
export type Depacketizer = (input: DepacketizeInput, out: DepacketizeOutput) => Promise<DepacketizedPiece | null>;

/**
 * Every depacketizer the codec table (lib/contracts/codecs.ts) can name: a table entry
 * naming one that is missing here does not compile.
 */
const DEPACKETIZERS: Record<DepacketizerId, Depacketizer> = {
  // Opus → Ogg, every hole filled with silence: the file spans the track's wall-clock time.
  'opus-ogg': async (s, out) => {
    const ogg = rtpOpusToOgg(s.packets, { channels: s.channels, serial: s.serial });
    const file = path.join(out.dir, `${s.name}.ogg`);
    out.write(file, ogg.data);
    return { file, firstTs: ogg.firstTs, durationSeconds: ogg.samples / 48000 };
  },
  'vp8-ivf': async (s, out) => {
    const ivf = rtpVp8ToIvf(s.packets);
    if (ivf.frames === 0) return null;
    const file = path.join(out.dir, `${s.name}.ivf`);
    out.write(file, ivf.data);
    return { file, firstTs: ivf.firstTs!, durationSeconds: (ivf.lastTs! - ivf.firstTs!) / 90000 };
  },
  // H.264: Annex B access units with their RTP timing (IVF, fourcc H264) → Matroska, stream copy.
  'h264-annexb': async (s, out) => {
    const h264 = rtpH264ToAnnexB(s.packets);
    if (h264.frames === 0) return null;
    const ivf = path.join(out.dir, `${s.name}.h264.ivf`);
    out.write(ivf, annexBToIvf(h264));
    const file = path.join(out.dir, `${s.name}.mkv`);
    await out.ffmpeg.run({ inputs: [{ path: ivf }], outputOptions: ['-map', '0:v', '-c', 'copy', ...BITEXACT, '-f', 'matroska'], output: `${file}.tmp` });
    renameSync(`${file}.tmp`, file);
    unlinkSync(ivf);
    return { file, firstTs: h264.firstTs!, durationSeconds: (h264.lastTs! - h264.firstTs!) / 90000 };
  },
};

/**
 * The depacketizer for a recorded track's codec, or why there is none: a codec missing
 * from the table, or one recorded as the wrong kind, is never guessed at.
 */
export function depacketizerFor(codec: { mimeType: string }, kind: 'audio' | 'video'): { depacketize: Depacketizer } | { unsupported: string } {
  const spec = codecByMimeType(codec.mimeType);
  if (!spec) return { unsupported: `no depacketizer for ${codec.mimeType} (supported: ${CODECS.map((c) => c.mimeType).join(', ')})` };
  if (spec.kind !== kind) return { unsupported: `${codec.mimeType} recorded as a ${kind} track` };
  return { depacketize: DEPACKETIZERS[spec.depacketizer] };
}
