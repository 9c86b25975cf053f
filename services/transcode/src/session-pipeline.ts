import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { SessionManifestSchema, type SessionManifest } from '../../lib/contracts/recording.ts';
import { VerbatimError } from '../../lib/errors.ts';
import { annexBToIvf, rtpH264ToAnnexB } from './depacketize/h264-annexb.ts';
import { rtpOpusToOgg } from './depacketize/ogg-opus.ts';
import { ntpToWallOffsetUs, readTrackPackets, wallClockMapper, type TrackPackets } from './depacketize/rtp-stream.ts';
import { rtpVp8ToIvf } from './depacketize/vp8-ivf.ts';
import { BITEXACT, type FfmpegRunner } from './media/ffmpeg-runner.ts';

/** Raised for input that no retry can fix: the job fails with this code, unretried. */
export class CorruptInputError extends VerbatimError {
  constructor(message: string, readonly errorCode = 'CORRUPT_RECORDING') {
    super('BAD_REQUEST', message, { hint: 'Run `verbatim recording verify <session dir>`; the raw files are kept for forensic recovery.' });
  }
}

export interface MediaPiece {
  participant: string;
  kind: 'audio' | 'video';
  file: string;
  /** Seconds from the session origin (composite t = 0) to this piece's first sample. */
  offset: number;
  duration: number;
}

export interface PipelineResult {
  manifest: SessionManifest;
  /** Wall clock of composite t = 0 (µs). */
  originUs: number;
  durationSeconds: number;
  pieces: MediaPiece[];
  files: { participant?: string; kind: 'participant-av' | 'participant-wav' | 'composite' | 'track'; path: string }[];
  syncSource: Record<string, 'rtcp-sr' | 'arrival'>;
}

const PIECE_DIR = 'tracks';

/**
 * Depacketizes every segment of a sealed session (manifest + raw RTP files) and puts
 * each on the session's wall clock, then builds the outputs with ffmpeg:
 * per-participant A/V (stream copy), 16 kHz mono WAV per participant (on the session
 * timeline, for ASR) and the room composite MP4 (H.264 + AAC, faststart).
 * Deterministic: same input → same paths and bytes.
 */
export async function runSessionPipeline(manifestPath: string, outDir: string, ffmpeg: FfmpegRunner, progress: (pct: number, stage: string) => void = () => {}): Promise<PipelineResult> {
  let manifest: SessionManifest;
  try {
    manifest = SessionManifestSchema.parse(JSON.parse(readFileSync(manifestPath, 'utf8')));
  } catch (err) {
    throw new CorruptInputError(`manifest ${manifestPath} is unreadable: ${(err as Error).message}`, 'CORRUPT_MANIFEST');
  }
  const sessionDir = path.dirname(manifestPath);
  mkdirSync(path.join(outDir, PIECE_DIR), { recursive: true });

  // 1. read + verify every segment
  const segs: { participant: string; kind: 'audio' | 'video'; name: string; channels: number; t: TrackPackets }[] = [];
  for (const track of manifest.tracks) {
    for (const s of track.segments) {
      let buf: Buffer;
      try {
        buf = readFileSync(path.join(sessionDir, s.file));
      } catch (err) {
        throw new CorruptInputError(`segment ${s.file} is missing: ${(err as Error).message}`, 'MISSING_SEGMENT');
      }
      if (createHash('sha256').update(buf).digest('hex') !== s.sha256) throw new CorruptInputError(`segment ${s.file} does not match its manifest SHA-256`);
      let t: TrackPackets;
      try {
        t = readTrackPackets(buf, s.file);
      } catch (err) {
        throw new CorruptInputError((err as Error).message);
      }
      if (t.packets.length === 0) continue;
      segs.push({ participant: track.participant, kind: track.kind, name: s.file.replace(/\.vrtp$/, ''), channels: track.codec.channels ?? 2, t });
    }
  }
  if (segs.length === 0) throw new CorruptInputError('the session has no media packets', 'EMPTY_SESSION');
  progress(10, 'depacketize');

  // 2. one clock for all tracks
  const ntpOffset = ntpToWallOffsetUs(segs.map((s) => s.t));
  const placed = segs.map((s) => {
    const m = wallClockMapper(s.t, ntpOffset);
    const first = s.t.packets[0]!;
    const last = s.t.packets.at(-1)!;
    return { ...s, startUs: m.toWallUs(first.ts), endUs: m.toWallUs(last.ts) + (s.kind === 'audio' ? 20_000 : 0), source: m.source, lastTs: last.ts };
  });
  const originUs = Math.min(...placed.map((p) => p.startUs));
  const endUs = Math.max(...placed.map((p) => p.endUs));
  const durationSeconds = round3((endUs - originUs) / 1e6);

  // 3. depacketize into codec files
  const pieces: MediaPiece[] = [];
  const files: PipelineResult['files'] = [];
  const syncSource: Record<string, 'rtcp-sr' | 'arrival'> = {};
  for (const p of placed) {
    syncSource[p.name] = p.source;
    const offset = round3((p.startUs - originUs) / 1e6);
    if (p.kind === 'audio') {
      const ogg = rtpOpusToOgg(p.t.packets, { channels: p.channels, serial: serialOf(p.name) });
      const file = path.join(outDir, PIECE_DIR, `${p.name}.ogg`);
      writeAtomic(file, ogg.data);
      pieces.push({ participant: p.participant, kind: 'audio', file, offset, duration: ogg.samples / 48000 });
    } else if (p.t.header.codec.mimeType.toLowerCase() === 'video/h264') {
      // H.264: Annex B access units with their RTP timing (IVF, fourcc H264) → Matroska, stream copy.
      const h264 = rtpH264ToAnnexB(p.t.packets);
      if (h264.frames === 0) continue;
      const ivfH264 = path.join(outDir, PIECE_DIR, `${p.name}.h264.ivf`);
      writeAtomic(ivfH264, annexBToIvf(h264));
      const file = path.join(outDir, PIECE_DIR, `${p.name}.mkv`);
      await ffmpeg.run({ inputs: [{ path: ivfH264 }], outputOptions: ['-map', '0:v', '-c', 'copy', ...BITEXACT, '-f', 'matroska'], output: `${file}.tmp` });
      renameSync(`${file}.tmp`, file);
      unlinkSync(ivfH264);
      const h264Offset = round3((wallClockMapper(p.t, ntpOffset).toWallUs(h264.firstTs!) - originUs) / 1e6);
      pieces.push({ participant: p.participant, kind: 'video', file, offset: h264Offset, duration: (h264.lastTs! - h264.firstTs!) / 90000 });
    } else {
      const ivf = rtpVp8ToIvf(p.t.packets);
      if (ivf.frames === 0) continue;
      const file = path.join(outDir, PIECE_DIR, `${p.name}.ivf`);
      writeAtomic(file, ivf.data);
      const ivfOffset = round3((wallClockMapper(p.t, ntpOffset).toWallUs(ivf.firstTs!) - originUs) / 1e6);
      pieces.push({ participant: p.participant, kind: 'video', file, offset: ivfOffset, duration: (ivf.lastTs! - ivf.firstTs!) / 90000 });
    }
    files.push({ participant: p.participant, kind: 'track', path: pieces.at(-1)!.file });
  }
  progress(30, 'mux');

  // 4. per participant: A/V file (first piece of each kind, stream copy) and the ASR WAV
  const participants = [...new Set(pieces.map((p) => p.participant))].sort();
  for (const who of participants) {
    const mine = pieces.filter((p) => p.participant === who);
    const a = mine.find((p) => p.kind === 'audio');
    const v = mine.find((p) => p.kind === 'video');
    const base = Math.min(...mine.map((p) => p.offset));
    const inputs = [a, v].filter((x): x is MediaPiece => !!x);
    const av = path.join(outDir, `participant-${who}.mkv`);
    await ffmpeg.run({
      inputs: inputs.map((p) => ({ path: p.file, options: ['-itsoffset', (p.offset - base).toFixed(3)] })),
      outputOptions: [...inputs.flatMap((_, i) => ['-map', `${i}`]), '-c', 'copy', ...BITEXACT, '-f', 'matroska'],
      output: `${av}.tmp`,
    });
    renameSync(`${av}.tmp`, av);
    files.push({ participant: who, kind: 'participant-av', path: av });

    const audio = mine.filter((p) => p.kind === 'audio');
    if (audio.length > 0) {
      const wav = path.join(outDir, `participant-${who}.16k.wav`);
      const chains = audio.map((p, i) => `[${i}:a]aresample=48000,adelay=${Math.round(p.offset * 1000)}:all=1[a${i}]`);
      const mix = audio.length > 1 ? `${audio.map((_, i) => `[a${i}]`).join('')}amix=inputs=${audio.length}:normalize=0[m]` : `[a0]anull[m]`;
      await ffmpeg.run({
        inputs: audio.map((p) => ({ path: p.file })),
        filterComplex: `${chains.join(';')};${mix};[m]apad,atrim=0:${durationSeconds},aresample=16000,aformat=sample_fmts=s16:channel_layouts=mono[out]`,
        outputOptions: ['-map', '[out]', '-c:a', 'pcm_s16le', ...BITEXACT, '-f', 'wav'],
        output: `${wav}.tmp`,
      });
      renameSync(`${wav}.tmp`, wav);
      files.push({ participant: who, kind: 'participant-wav', path: wav });
    }
  }
  progress(55, 'composite');

  // 5. room composite: everyone's audio mixed, a video grid, on the session timeline
  const composite = path.join(outDir, 'composite.mp4');
  const audio = pieces.filter((p) => p.kind === 'audio');
  const video = pieces.filter((p) => p.kind === 'video');
  const cols = Math.max(1, Math.ceil(Math.sqrt(Math.max(1, participants.length))));
  const rows = Math.max(1, Math.ceil(Math.max(1, participants.length) / cols));
  const cw = 320;
  const ch = 240;
  const inputs = [...audio, ...video];
  const parts: string[] = [`color=c=black:s=${cols * cw}x${rows * ch}:r=15:d=${durationSeconds}[bg0]`];
  let last = 'bg0';
  video.forEach((p, i) => {
    const idx = audio.length + i;
    const cell = participants.indexOf(p.participant);
    parts.push(`[${idx}:v]setpts=PTS-STARTPTS+${p.offset}/TB,scale=${cw}:${ch}:force_original_aspect_ratio=decrease,pad=${cw}:${ch}:(ow-iw)/2:(oh-ih)/2[v${i}]`);
    parts.push(`[${last}][v${i}]overlay=x=${(cell % cols) * cw}:y=${Math.floor(cell / cols) * ch}:eof_action=pass:eval=init[bg${i + 1}]`);
    last = `bg${i + 1}`;
  });
  parts.push(`[${last}]format=yuv420p[vout]`);
  if (audio.length > 0) {
    audio.forEach((p, i) => parts.push(`[${i}:a]aresample=48000,adelay=${Math.round(p.offset * 1000)}:all=1[ca${i}]`));
    parts.push(`${audio.map((_, i) => `[ca${i}]`).join('')}amix=inputs=${audio.length}:normalize=0:duration=longest,apad,atrim=0:${durationSeconds}[aout]`);
  }
  await ffmpeg.run({
    inputs: inputs.map((p) => ({ path: p.file })),
    filterComplex: parts.join(';'),
    outputOptions: [
      '-map', '[vout]',
      ...(audio.length > 0 ? ['-map', '[aout]', '-c:a', 'aac', '-b:a', '96k', '-ar', '48000'] : []),
      '-c:v', 'libx264', '-preset', 'veryfast', '-crf', '28', '-threads', '1', '-r', '15',
      '-t', String(durationSeconds), '-movflags', '+faststart', ...BITEXACT, '-f', 'mp4',
    ],
    output: `${composite}.tmp`,
  });
  renameSync(`${composite}.tmp`, composite);
  files.push({ kind: 'composite', path: composite });
  progress(75, 'transcribe');
  return { manifest, originUs, durationSeconds, pieces, files, syncSource };
}

function writeAtomic(file: string, data: Buffer): void {
  writeFileSync(`${file}.tmp`, data);
  renameSync(`${file}.tmp`, file);
}

function serialOf(name: string): number {
  return createHash('sha256').update(name).digest().readUInt32LE(0);
}

function round3(n: number): number {
  return Math.round(n * 1000) / 1000;
}
