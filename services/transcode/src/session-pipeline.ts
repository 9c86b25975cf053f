import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { SessionManifestSchema, type SegmentEntry, type SessionManifest } from '../../lib/contracts/recording.ts';
import { readManifest } from '../../lib/recording/manifest-file.ts';
import { isMissingSegment, readSegment, uploadPending, type SegmentSource } from '../../lib/recording/segment-source.ts';
import type { ArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { rawManifestKey } from '../../lib/storage/artifact-keys.ts';
import { buffer } from 'node:stream/consumers';
import { SEGMENT_EXTENSION } from '../../lib/recording/session-dir.ts';
import { parseHeader } from '../../lib/recording/vrtp-format.ts';
import { VerbatimError } from '../../lib/errors.ts';
import { depacketizerFor } from './depacketize/registry.ts';
import { opusPacketSamples, rtpOpusToOgg } from './depacketize/ogg-opus.ts';
import { oggPackets } from '../../lib/media/ogg-packets.ts';
import { mergeReplicas } from './depacketize/replica-merge.ts';
import { ARRIVAL_TOLERANCE_US, ntpToWallOffsetUs, readTrackPackets, wallClockMapper, type RtpPacket, type TrackPackets } from './depacketize/rtp-stream.ts';
import { BITEXACT, type FfmpegRunner } from '../../lib/media/ffmpeg-runner.ts';
import { COMPOSITE_AAC, COMPOSITE_PROFILE, COMPOSITE_X264, compositeContainer } from '../../lib/media/encode-profile.ts';
import type { ClockAnomaly } from '../../lib/contracts/jobs.ts';
import { DEFAULT_SESSION_LIMITS, TOO_LARGE_HINT, checkManifestLimits, tooLong, type LimitCheck, type SessionLimits } from './session-limits.ts';

/** Raised for input that no retry can fix: the job fails with this code, unretried. */
export class CorruptInputError extends VerbatimError {
  constructor(
    message: string,
    readonly errorCode = 'CORRUPT_RECORDING',
    hint = 'Run `verbatim recording verify <session dir>`; the raw files are kept for forensic recovery.',
  ) {
    super('BAD_REQUEST', message, { hint });
  }
}

function failLimit(check: LimitCheck): void {
  if (check?.code === 'UPLOAD_PENDING') throw new VerbatimError('UPLOAD_PENDING', check.message, { hint: 'The recorder uploads sealed segments in the background; the job is retried.' });
  if (check) throw new CorruptInputError(check.message, check.code, check.code === 'SESSION_TOO_LARGE' ? TOO_LARGE_HINT : undefined);
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
  /** Tracks whose RTP clock disagreed with arrival (see SessionClock). */
  anomalies: ClockAnomaly[];
}

const PIECE_DIR = 'tracks';

/**
 * Depacketizes every segment of a sealed session (manifest + raw RTP files) and puts
 * each on the session's wall clock, then builds the outputs with ffmpeg:
 * per-participant A/V (stream copy), 16 kHz mono WAV per participant (on the session
 * timeline, for ASR) and the room composite MP4 (H.264 + AAC, faststart).
 * Deterministic: same input → same paths and bytes. The media primitives below on one local
 * directory, without storage, rows or transcription: for tests and tools that look at a
 * session's media. The worker runs the same primitives as stages (session-stages.ts).
 */
export async function runSessionPipeline(manifestPath: string, outDir: string, ffmpeg: FfmpegRunner, progress: (pct: number, stage: string) => void = () => {}, storage?: ArtifactStorage): Promise<PipelineResult> {
  const result = await prepareSession(manifestPath, outDir, ffmpeg, progress, storage);
  progress(55, 'composite');
  await renderComposite(result, outDir, ffmpeg);
  progress(75, 'transcribe');
  return result;
}

/** A sealed session's common clock: every track mapped onto the wall clock by its sender reports. */
export interface SessionClock {
  manifest: SessionManifest;
  /** The senders' NTP clock → wall clock (µs), over all tracks' sender reports. */
  ntpOffsetUs: number;
  /** Wall clock of composite t = 0 (µs). */
  originUs: number;
  durationSeconds: number;
  /** Indexes into manifest.tracks of the tracks with media packets, in manifest order. */
  tracks: number[];
  /** Tracks whose RTP clock disagreed with arrival (packets dropped, or the whole track left out). */
  anomalies: ClockAnomaly[];
}

interface LoadedSegment {
  participant: string;
  kind: 'audio' | 'video';
  name: string;
  channels: number;
  t: TrackPackets;
}

/**
 * Reads and validates a session manifest: the recorder's file when this host has it, else the copy the
 * recorder publishes to storage (rawManifestKey) for transcode hosts that do not share its disk. Missing
 * or corrupt → CORRUPT_MANIFEST, unretried.
 */
export async function readSessionManifest(manifestPath: string, storage?: ArtifactStorage): Promise<SessionManifest> {
  if (storage && !existsSync(manifestPath)) {
    // RECORDINGS_DIR/<room>/<session>/manifest.json (lib/recording/session-dir.ts)
    const dir = path.dirname(manifestPath);
    const key = rawManifestKey(path.basename(path.dirname(dir)), path.basename(dir));
    let text: string;
    try {
      text = (await buffer(await storage.getStream(key))).toString('utf8');
    } catch {
      // The recorder publishes it before it queues the session: absent here and there, it is gone.
      throw new CorruptInputError(`manifest ${manifestPath} is not on this host and not in storage (${key})`, 'CORRUPT_MANIFEST');
    }
    const r = SessionManifestSchema.safeParse(safeJson(text));
    if (!r.success) throw new CorruptInputError(`manifest ${key} in storage is not a verbatim-session v1: ${r.error.message}`, 'CORRUPT_MANIFEST');
    return r.data;
  }
  try {
    return readManifest(manifestPath);
  } catch (err) {
    throw new CorruptInputError((err as Error).message, 'CORRUPT_MANIFEST');
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** A segment neither here nor in storage: retried while its upload is pending, else gone (corrupt input). */
function missingSegmentError(src: SegmentSource, entry: Pick<SegmentEntry, 'stored'>, message: string): VerbatimError {
  if (uploadPending(src, entry)) return new VerbatimError('UPLOAD_PENDING', message, { hint: 'The recorder uploads sealed segments in the background; the job is retried.' });
  return new CorruptInputError(message, 'MISSING_SEGMENT');
}

/** Where a session's raw segments are read from: its directory beside the manifest, then artifact storage. */
export function segmentSourceOf(manifest: SessionManifest, manifestPath: string, storage?: ArtifactStorage): SegmentSource {
  return { dir: path.dirname(manifestPath), room: manifest.room, session: manifest.session, storage };
}

/**
 * Reads and verifies (size, SHA-256, format) every segment of one track, from the local file or
 * its stored copy (segment-source.ts); segments without packets on the arrival clock are left
 * out, and `offClock` counts the packets dropped for it.
 */
async function loadTrack(manifest: SessionManifest, src: SegmentSource, index: number): Promise<{ segments: LoadedSegment[]; offClock: number }> {
  const track = manifest.tracks[index];
  if (!track) throw new CorruptInputError(`the manifest has no track ${index}`, 'CORRUPT_MANIFEST');
  const out: LoadedSegment[] = [];
  let offClock = 0;
  // Segments split only by the recorder's timed rotation (RECORDER_SEGMENT_SECONDS) are one
  // stream from one sender: they are read as one, so video cut between keyframes still decodes.
  let chain: { file: string; bufs: Buffer[] } | undefined;
  const readChain = () => {
    if (!chain) return;
    let t: TrackPackets;
    try {
      t = readTrackPackets(chain.bufs.length === 1 ? chain.bufs[0]! : Buffer.concat(chain.bufs), chain.file);
    } catch (err) {
      throw new CorruptInputError((err as Error).message);
    }
    offClock += t.dropped.offClock;
    if (t.packets.length > 0) out.push({ participant: track.participant, kind: track.kind, name: chain.file.slice(0, -SEGMENT_EXTENSION.length), channels: track.codec.channels ?? 2, t });
    chain = undefined;
  };
  for (const [i, s] of track.segments.entries()) {
    let buf: Buffer;
    try {
      // Size first (a larger copy is not read into memory to find that out), then the SHA-256.
      buf = await readSegment(src, s);
    } catch (err) {
      if (isMissingSegment(err)) throw missingSegmentError(src, s, (err as Error).message);
      // A copy that does not match is corrupt input; a storage that cannot be reached is retried.
      if (err instanceof VerbatimError && (err.details as { reason?: string } | undefined)?.reason === 'mismatch') throw new CorruptInputError(err.message);
      throw err;
    }
    const prev = track.segments[i - 1];
    if (chain && prev?.endReason === 'rotation' && prev.ssrc === s.ssrc) {
      let headerBytes: number;
      try {
        headerBytes = parseHeader(buf, s.file).headerBytes;
      } catch (err) {
        throw new CorruptInputError((err as Error).message);
      }
      chain.bufs.push(buf.subarray(headerBytes));
      continue;
    }
    readChain();
    chain = { file: s.file, bufs: [buf] };
  }
  readChain();
  // Copies of the track (RECORDER_REPLICAS=2, a drain's overlap) become one stream: a packet either holds is kept.
  return { segments: mergeReplicas(out).pieces, offClock };
}

/** One segment on the session clock: its mapping, and the packets that fall inside its arrival window. */
interface PlacedSegment {
  map: ReturnType<typeof wallClockMapper>;
  packets: RtpPacket[];
  /** Packets whose mapped time fell outside the window (dropped). */
  outsideArrival: number;
  /** First and last arrival of the packets kept, and their span on the session clock (µs). */
  firstArrivalUs: number;
  lastArrivalUs: number;
  startUs: number;
  endUs: number;
}

/**
 * Maps a segment onto the wall clock and cuts it to when its packets arrived: a packet whose
 * mapped time lies outside [first arrival − tolerance − capture lead, last arrival + tolerance]
 * is dropped, whatever its RTP timestamp or the sender reports say. The clock stage and the
 * track stage place a segment through this one function, so they agree on every packet.
 */
function placeSegment(s: LoadedSegment, ntpOffsetUs: number): PlacedSegment {
  const map = wallClockMapper(s.t, ntpOffsetUs);
  const window = arrivalRange(s.t.packets);
  const lo = window.firstUs - ARRIVAL_TOLERANCE_US - map.captureLeadUs;
  const hi = window.lastUs + ARRIVAL_TOLERANCE_US;
  const packets = s.t.packets.filter((p) => {
    const at = map.toWallUs(p.ts);
    return at >= lo && at <= hi;
  });
  const kept = arrivalRange(packets);
  const audioEndUs = s.kind === 'audio' ? 20_000 : 0;
  return {
    map,
    packets,
    outsideArrival: s.t.packets.length - packets.length,
    firstArrivalUs: kept.firstUs,
    lastArrivalUs: kept.lastUs,
    startUs: packets.length > 0 ? map.toWallUs(packets[0]!.ts) : 0,
    endUs: packets.length > 0 ? map.toWallUs(packets.at(-1)!.ts) + audioEndUs : 0,
  };
}

/** First and last arrival of some packets (a loop: a track can hold millions). */
function arrivalRange(packets: readonly RtpPacket[]): { firstUs: number; lastUs: number } {
  let firstUs = Infinity;
  let lastUs = -Infinity;
  for (const p of packets) {
    if (p.arrivalUs < firstUs) firstUs = p.arrivalUs;
    if (p.arrivalUs > lastUs) lastUs = p.arrivalUs;
  }
  return { firstUs, lastUs };
}

/**
 * Steps 1–2: read and verify every segment and put all tracks on one clock. Only packet
 * headers and sender reports matter here (no media is written), so it is cheap next to
 * depacketizing, and each track can then be depacketized on its own (track.depacketize).
 */
export async function sessionClock(manifestPath: string, limits: SessionLimits = DEFAULT_SESSION_LIMITS, storage?: ArtifactStorage): Promise<SessionClock> {
  return (await clockOf(manifestPath, limits, storage)).clock;
}

/**
 * The session's extent comes from arrival: from the first to the last arrival of a kept
 * packet over all tracks, widened only where a piece's first sample was captured before its
 * packet arrived (the audio capture lead) or its last one lasts past it; placement within it
 * comes from the RTP clock (sender reports or first arrival), cut to arrival by placeSegment.
 */
async function clockOf(manifestPath: string, limits: SessionLimits, storage?: ArtifactStorage): Promise<{ clock: SessionClock; loaded: Map<number, LoadedSegment[]> }> {
  const manifest = await readSessionManifest(manifestPath, storage);
  const src = segmentSourceOf(manifest, manifestPath, storage);
  failLimit(await checkManifestLimits(manifest, src, limits));
  const read: Awaited<ReturnType<typeof loadTrack>>[] = [];
  for (let i = 0; i < manifest.tracks.length; i++) read.push(await loadTrack(manifest, src, i));
  const ntpOffsetUs = ntpToWallOffsetUs(read.flatMap((r) => r.segments.map((s) => s.t)));
  const loaded = new Map<number, LoadedSegment[]>();
  const placed: PlacedSegment[] = [];
  const anomalies: ClockAnomaly[] = [];
  read.forEach((r, i) => {
    const mine = r.segments.map((s) => placeSegment(s, ntpOffsetUs)).filter((p) => p.packets.length > 0 || p.outsideArrival > 0);
    const kept = mine.filter((p) => p.packets.length > 0);
    if (kept.length > 0) loaded.set(i, r.segments);
    placed.push(...kept);
    const outsideArrivalPackets = mine.reduce((n, p) => n + p.outsideArrival, 0);
    const rejectedSenderReports = mine.reduce((n, p) => n + p.map.rejectedSenderReports, 0);
    if (r.offClock + outsideArrivalPackets + rejectedSenderReports > 0) {
      const t = manifest.tracks[i]!;
      anomalies.push({ track: t.track, participant: t.participant, offClockPackets: r.offClock, outsideArrivalPackets, rejectedSenderReports, dropped: kept.length === 0 });
    }
  });
  if (placed.length === 0) throw new CorruptInputError('the session has no media packets on the arrival clock', 'EMPTY_SESSION');
  const originUs = Math.min(...placed.map((p) => Math.min(p.firstArrivalUs, p.startUs)));
  const endUs = Math.max(...placed.map((p) => Math.max(p.lastArrivalUs, p.endUs)));
  const durationSeconds = round3((endUs - originUs) / 1e6);
  if (!(durationSeconds > 0)) throw new CorruptInputError(`the session's media spans ${durationSeconds} s`, 'EMPTY_SESSION');
  if (durationSeconds > limits.maxSessionSeconds) failLimit(tooLong(durationSeconds, limits));
  return { clock: { manifest, ntpOffsetUs, originUs, durationSeconds, tracks: [...loaded.keys()], anomalies }, loaded };
}

export interface TrackPieces {
  pieces: MediaPiece[];
  files: PipelineResult['files'];
  syncSource: Record<string, 'rtcp-sr' | 'arrival'>;
}

/**
 * Step 3, one track: depacketize each of its segments into a codec file, placed on the
 * session clock (offsets from clock.originUs). Deterministic paths and bytes.
 */
export async function depacketizeTrack(
  manifestPath: string,
  index: number,
  clock: Pick<SessionClock, 'ntpOffsetUs' | 'originUs'>,
  outDir: string,
  ffmpeg: FfmpegRunner,
  preloaded?: LoadedSegment[],
  trackId?: string,
  storage?: ArtifactStorage,
): Promise<TrackPieces> {
  let segs = preloaded;
  if (!segs) {
    const manifest = await readSessionManifest(manifestPath, storage);
    // The clock stage named this track; a manifest that changed since is not the session it measured.
    if (trackId !== undefined && manifest.tracks[index]?.track !== trackId) throw new CorruptInputError(`track ${index} of ${manifestPath} is not ${trackId}`, 'CORRUPT_MANIFEST');
    segs = (await loadTrack(manifest, segmentSourceOf(manifest, manifestPath, storage), index)).segments;
  }
  // Every segment's codec is checked before anything is written: an unknown one fails the track, unguessed.
  const plan = segs.map((p) => {
    const d = depacketizerFor(p.t.header.codec, p.kind);
    if ('unsupported' in d) throw new CorruptInputError(`track ${p.name}: ${d.unsupported}`, 'CODEC_UNSUPPORTED');
    return { p, depacketize: d.depacketize };
  });
  const dir = path.join(outDir, PIECE_DIR);
  mkdirSync(dir, { recursive: true });
  const { ntpOffsetUs, originUs } = clock;
  const pieces: MediaPiece[] = [];
  const files: PipelineResult['files'] = [];
  const syncSource: Record<string, 'rtcp-sr' | 'arrival'> = {};
  for (const { p, depacketize } of plan) {
    const placed = placeSegment(p, ntpOffsetUs);
    if (placed.packets.length === 0) continue;
    const m = placed.map;
    syncSource[p.name] = m.source;
    const piece = await depacketize({ name: p.name, packets: placed.packets, channels: p.channels, serial: serialOf(p.name) }, { dir, ffmpeg, write: writeAtomic });
    if (!piece) continue;
    const offset = round3((m.toWallUs(piece.firstTs) - originUs) / 1e6);
    pieces.push({ participant: p.participant, kind: p.kind, file: piece.file, offset, duration: piece.durationSeconds });
    files.push({ participant: p.participant, kind: 'track', path: piece.file });
  }
  return { pieces, files, syncSource };
}

/** Steps 1–3 in one process: the clock, then every track depacketized into codec files. */
export async function depacketizeSession(
  manifestPath: string,
  outDir: string,
  ffmpeg: FfmpegRunner,
  progress: (pct: number, stage: string) => void = () => {},
  limits: SessionLimits = DEFAULT_SESSION_LIMITS,
  storage?: ArtifactStorage,
): Promise<PipelineResult> {
  const { clock, loaded } = await clockOf(manifestPath, limits, storage);
  progress(10, 'depacketize');
  const pieces: MediaPiece[] = [];
  const files: PipelineResult['files'] = [];
  const syncSource: Record<string, 'rtcp-sr' | 'arrival'> = {};
  for (const i of clock.tracks) {
    const r = await depacketizeTrack(manifestPath, i, clock, outDir, ffmpeg, loaded.get(i));
    pieces.push(...r.pieces);
    files.push(...r.files);
    Object.assign(syncSource, r.syncSource);
  }
  progress(30, 'mux');
  return { manifest: clock.manifest, originUs: clock.originUs, durationSeconds: clock.durationSeconds, pieces, files, syncSource, anomalies: clock.anomalies };
}

/**
 * Everything before the composite: depacketize, one clock, per-participant A/V files and
 * ASR WAVs. Transcription can start as soon as this returns, while the composite renders.
 */
export async function prepareSession(manifestPath: string, outDir: string, ffmpeg: FfmpegRunner, progress: (pct: number, stage: string) => void = () => {}, storage?: ArtifactStorage): Promise<PipelineResult> {
  const r = await depacketizeSession(manifestPath, outDir, ffmpeg, progress, DEFAULT_SESSION_LIMITS, storage);
  // Two participants at a time: each ffmpeg run is single-threaded and mostly waits on I/O and demuxing.
  const participants = [...new Set(r.pieces.map((p) => p.participant))].sort();
  const perParticipant = await mapLimit(participants, PARTICIPANT_CONCURRENCY, (who) => muxParticipant(who, r.pieces, r.durationSeconds, outDir, ffmpeg));
  r.files.push(...perParticipant.flat());
  return r;
}

/**
 * Step 4, one participant: A/V file (stream copy) and the ASR WAV. A track the recorder
 * wrote as several segments (it restarted mid-session) yields several pieces of a kind;
 * all of them go into the file, each at its real offset on the participant's timeline.
 */
export async function muxParticipant(who: string, pieces: readonly MediaPiece[], durationSeconds: number, outDir: string, ffmpeg: FfmpegRunner): Promise<PipelineResult['files']> {
  const out: PipelineResult['files'] = [];
  const mine = pieces.filter((p) => p.participant === who);
  if (mine.length === 0) return out; // e.g. a camera track whose packets held no complete frame
  const audio = mine.filter((p) => p.kind === 'audio').sort(byOffset);
  const video = mine.filter((p) => p.kind === 'video').sort(byOffset);
  const base = Math.min(...mine.map((p) => p.offset));
  const av = path.join(outDir, `participant-${who}.mkv`);
  const scratch: string[] = [];
  const inputs: { path: string; options: string[] }[] = [];
  if (audio.length > 0) {
    let file = audio[0]!.file;
    if (audio.length > 1) {
      file = `${av}.audio.ogg`;
      writeAtomic(file, joinOggPieces(audio, serialOf(`participant-${who}`)));
      scratch.push(file);
    }
    inputs.push({ path: file, options: ['-itsoffset', (audio[0]!.offset - base).toFixed(3)] });
  }
  if (video.length > 0) {
    const options = ['-itsoffset', (video[0]!.offset - base).toFixed(3)];
    let file = video[0]!.file;
    if (video.length > 1) {
      // Video has no "silence": the concat demuxer starts each piece at the previous one's
      // start + its declared duration, so the restart gap simply has no frames.
      file = `${av}.video.ffconcat`;
      writeAtomic(file, Buffer.from(videoConcatList(video)));
      scratch.push(file);
      options.unshift('-f', 'concat', '-safe', '0');
    }
    inputs.push({ path: file, options });
  }
  await ffmpeg.run({
    inputs,
    outputOptions: [...inputs.flatMap((_, i) => ['-map', `${i}`]), '-c', 'copy', ...BITEXACT, '-f', 'matroska'],
    output: `${av}.tmp`,
  });
  renameSync(`${av}.tmp`, av);
  for (const f of scratch) unlinkSync(f);
  out.push({ participant: who, kind: 'participant-av', path: av });

  if (audio.length > 0) {
    const wav = path.join(outDir, `participant-${who}.16k.wav`);
    await ffmpeg.run({ inputs: audio.map((p) => ({ path: p.file })), filterComplex: asrWavFilter(audio, durationSeconds), outputOptions: ASR_WAV_OUTPUT, output: `${wav}.tmp` });
    renameSync(`${wav}.tmp`, wav);
    out.push({ participant: who, kind: 'participant-wav', path: wav });
  }
  return out;
}

const byOffset = (a: MediaPiece, b: MediaPiece) => a.offset - b.offset || a.file.localeCompare(b.file);

/**
 * One Ogg Opus stream from a participant's audio pieces (in offset order): each piece's
 * packets are placed at its offset on a 48 kHz timeline and rtpOpusToOgg fills the time
 * between pieces with silence packets, as it does for DTX, so the file's duration equals
 * the track's wall-clock span and every later sample keeps its real time. Stream copy: no
 * decode, and the same pieces give the same bytes.
 */
export function joinOggPieces(audio: readonly Pick<MediaPiece, 'file' | 'offset'>[], serial: number): Buffer {
  const first = audio[0]!.offset;
  const packets: RtpPacket[] = [];
  let seq = 0;
  for (const piece of audio) {
    // Offsets are whole milliseconds: 48 samples each, so the placement is exact.
    let ts = Math.round((piece.offset - first) * 48000);
    for (const payload of oggPackets(readFileSync(piece.file))) {
      packets.push({ seq: seq++, ts, marker: false, payload, arrivalUs: 0 });
      ts += opusPacketSamples(payload);
    }
  }
  // The channel count from the first piece's OpusHead (page 0: 27-byte header, lacing, then the packet).
  const head = readFileSync(audio[0]!.file);
  const channels = head[27 + head[26]! + 9] ?? 2;
  return rtpOpusToOgg(packets, { channels, serial }).data;
}

/** ffconcat list: every piece but the last lasts until the next one starts. */
function videoConcatList(video: readonly MediaPiece[]): string {
  const lines = ['ffconcat version 1.0'];
  video.forEach((p, i) => {
    lines.push(`file '${p.file.replaceAll("'", "'\\''")}'`);
    const next = video[i + 1];
    if (next) lines.push(`duration ${(next.offset - p.offset).toFixed(3)}`);
  });
  return `${lines.join('\n')}\n`;
}

/** ffmpeg processes of one session's per-participant stage that run at once. */
const PARTICIPANT_CONCURRENCY = 2;

/**
 * The 16 kHz mono WAV for ASR, on the session timeline. Opus always decodes at 48 kHz, so
 * there is one resampling (after the downmix, on one channel instead of two).
 */
export function asrWavFilter(audio: readonly Pick<MediaPiece, 'offset'>[], durationSeconds: number): string {
  const chains = audio.map((p, i) => `[${i}:a]aformat=channel_layouts=mono,adelay=${Math.round(p.offset * 1000)}:all=1[a${i}]`);
  const mix = audio.length > 1 ? `${audio.map((_, i) => `[a${i}]`).join('')}amix=inputs=${audio.length}:normalize=0[m]` : `[a0]anull[m]`;
  return `${chains.join(';')};${mix};[m]apad,atrim=0:${durationSeconds},aresample=16000,aformat=sample_fmts=s16[out]`;
}
export const ASR_WAV_OUTPUT = ['-map', '[out]', '-c:a', 'pcm_s16le', ...BITEXACT, '-f', 'wav'];

/**
 * The composite's audio: everyone mixed into one mono channel, encoded with the composite
 * profile's AAC settings (services/lib/media/encode-profile.ts). Returns the filter chains
 * (output label `aout`) and output options.
 */
export function compositeAudio(audio: readonly Pick<MediaPiece, 'offset'>[], durationSeconds: number, firstInput = 0): { filters: string[]; outputOptions: string[] } {
  const filters = audio.map((p, i) => `[${firstInput + i}:a]aformat=channel_layouts=mono,adelay=${Math.round(p.offset * 1000)}:all=1[ca${i}]`);
  filters.push(`${audio.map((_, i) => `[ca${i}]`).join('')}amix=inputs=${audio.length}:normalize=0:duration=longest,apad,atrim=0:${durationSeconds}[aout]`);
  return { filters, outputOptions: ['-map', '[aout]', ...COMPOSITE_AAC] };
}

/** Step 5, the room composite: everyone's audio mixed, a video grid, on the session timeline. */
export async function renderComposite(r: Pick<PipelineResult, 'pieces' | 'durationSeconds' | 'files'>, outDir: string, ffmpeg: FfmpegRunner): Promise<string> {
  const { pieces, durationSeconds } = r;
  const participants = [...new Set(pieces.map((p) => p.participant))].sort();
  const composite = path.join(outDir, 'composite.mp4');
  const audio = pieces.filter((p) => p.kind === 'audio');
  const video = pieces.filter((p) => p.kind === 'video');
  const cols = Math.max(1, Math.ceil(Math.sqrt(Math.max(1, participants.length))));
  const rows = Math.max(1, Math.ceil(Math.max(1, participants.length) / cols));
  const { cellWidth: cw, cellHeight: ch, fps, pixelFormat } = COMPOSITE_PROFILE.video;
  const inputs = [...audio, ...video];
  const parts: string[] = [`color=c=black:s=${cols * cw}x${rows * ch}:r=${fps}:d=${durationSeconds}[bg0]`];
  let last = 'bg0';
  video.forEach((p, i) => {
    const idx = audio.length + i;
    const cell = participants.indexOf(p.participant);
    parts.push(`[${idx}:v]setpts=PTS-STARTPTS+${p.offset}/TB,scale=${cw}:${ch}:force_original_aspect_ratio=decrease,pad=${cw}:${ch}:(ow-iw)/2:(oh-ih)/2[v${i}]`);
    parts.push(`[${last}][v${i}]overlay=x=${(cell % cols) * cw}:y=${Math.floor(cell / cols) * ch}:eof_action=pass:eval=init[bg${i + 1}]`);
    last = `bg${i + 1}`;
  });
  parts.push(`[${last}]format=${pixelFormat}[vout]`);
  const a = audio.length > 0 ? compositeAudio(audio, durationSeconds) : undefined;
  if (a) parts.push(...a.filters);
  await ffmpeg.run({
    inputs: inputs.map((p) => ({ path: p.file })),
    filterComplex: parts.join(';'),
    outputOptions: ['-map', '[vout]', ...(a ? a.outputOptions : []), ...COMPOSITE_X264, ...compositeContainer(durationSeconds)],
    output: `${composite}.tmp`,
  });
  renameSync(`${composite}.tmp`, composite);
  // Replaced, not appended, so a re-render (e.g. after an erasure) lists it once.
  const i = r.files.findIndex((f) => f.kind === 'composite' && f.path === composite);
  if (i >= 0) r.files.splice(i, 1);
  r.files.push({ kind: 'composite', path: composite });
  return composite;
}

/** Runs fn over items with at most `limit` in flight; results in input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, lane));
  return out;
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
