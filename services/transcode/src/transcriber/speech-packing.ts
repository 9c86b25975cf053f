import type { SpeechSpan } from './vad.ts';

/**
 * Packs a track's speech spans into as few Whisper windows as possible: the spans are
 * cut out of the track and laid end to end (in order, a short digital silence between
 * them) in one clip that a single whisper-cli run transcribes. whisper.cpp encodes whole
 * 30 s windows whatever their content, so a 4 s span sent alone costs the encoder as
 * much as 30 s of speech; packed, the encoder's work follows the speech time.
 *
 * A span never straddles a window boundary when it fits in one window (the rest of the
 * window is padded with silence instead), so Whisper never sees a word cut in half at
 * the edge of its 30 s context. The returned table maps every sample of the clip back
 * onto the track exactly (integer samples, no drift).
 */

export interface PackedPiece {
  /** Sample range in the source track [srcFrom, srcTo). */
  srcFrom: number;
  srcTo: number;
  /** Where the piece starts in the packed clip (samples). */
  dstFrom: number;
}

export interface SpeechPacking {
  sampleRate: number;
  pieces: PackedPiece[];
  /** Length of the packed clip in samples. */
  totalSamples: number;
  /** 30 s Whisper windows the clip occupies. */
  windows: number;
}

export interface PackingOptions {
  sampleRate?: number;
  /** Whisper's window (default 30 s). */
  windowSec?: number;
  /** Silence between two pieces inside a window (default 0.3 s). */
  gapSec?: number;
}

export function packSpeechSpans(spans: readonly SpeechSpan[], trackSamples: number, options: PackingOptions = {}): SpeechPacking {
  const sampleRate = options.sampleRate ?? 16000;
  const window = Math.round((options.windowSec ?? 30) * sampleRate);
  const gap = Math.round((options.gapSec ?? 0.3) * sampleRate);
  const pieces: PackedPiece[] = [];
  let at = 0; // next free sample in the clip
  for (const s of spans) {
    const srcFrom = Math.max(0, Math.floor(s.start * sampleRate));
    const srcTo = Math.min(trackSamples, Math.ceil(s.end * sampleRate));
    const len = srcTo - srcFrom;
    if (len <= 0) continue;
    let dstFrom = pieces.length === 0 ? 0 : at + gap;
    const windowStart = Math.floor(dstFrom / window) * window;
    // Does not fit in the rest of this window but would fit in a fresh one: start the next window.
    if (len <= window && dstFrom + len > windowStart + window) dstFrom = windowStart + window;
    pieces.push({ srcFrom, srcTo, dstFrom });
    at = dstFrom + len;
  }
  return { sampleRate, pieces, totalSamples: at, windows: Math.ceil(at / window) };
}

/** The packed clip's PCM (s16le), silence in the gaps. */
export function packedPcm(pcm: Buffer, packing: SpeechPacking): Buffer {
  const out = Buffer.alloc(packing.totalSamples * 2);
  for (const p of packing.pieces) pcm.copy(out, p.dstFrom * 2, p.srcFrom * 2, p.srcTo * 2);
  return out;
}

/**
 * A time in the packed clip (seconds) → seconds on the source track. Inside a piece the
 * mapping is exact; a time in the silence between pieces snaps to the next piece's start
 * (`edge: 'start'`) or the previous piece's end (`edge: 'end'`), so no segment claims
 * time in which the participant was not speaking.
 */
export function unpackTime(packing: SpeechPacking, seconds: number, edge: 'start' | 'end'): number {
  const { pieces, sampleRate } = packing;
  if (pieces.length === 0) return 0;
  const t = Math.round(seconds * sampleRate);
  let lo = 0;
  let hi = pieces.length - 1;
  // last piece with dstFrom <= t
  let k = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (pieces[mid]!.dstFrom <= t) {
      k = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  if (k === -1) return pieces[0]!.srcFrom / sampleRate;
  const p = pieces[k]!;
  // An end exactly where a piece begins ends the speech before it.
  if (edge === 'end' && t === p.dstFrom && k > 0) return pieces[k - 1]!.srcTo / sampleRate;
  const len = p.srcTo - p.srcFrom;
  if (t <= p.dstFrom + len && (edge === 'end' || t < p.dstFrom + len || k === pieces.length - 1)) return (p.srcFrom + (t - p.dstFrom)) / sampleRate;
  // In the gap after piece k.
  const next = pieces[k + 1];
  return edge === 'start' && next ? next.srcFrom / sampleRate : p.srcTo / sampleRate;
}

/** A segment of the packed clip → the source track; a segment wholly inside a gap sticks to the end of the speech before it. */
export function unpackSegment(packing: SpeechPacking, start: number, end: number): { start: number; end: number } {
  const s = unpackTime(packing, start, 'start');
  const e = unpackTime(packing, end, 'end');
  if (e >= s) return { start: s, end: e };
  const before = unpackTime(packing, start, 'end');
  return { start: before, end: before };
}
