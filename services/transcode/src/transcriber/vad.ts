import { readFile } from 'node:fs/promises';
import { VerbatimError } from '../../../lib/errors.ts';

/**
 * Energy-based voice activity detection on 16 kHz mono s16le PCM. Cheap and
 * deterministic: it only has to find where someone is talking so Whisper is not run
 * on (and does not hallucinate into) silence; it does not have to tell speech from
 * other sounds.
 */

export interface SpeechSpan {
  /** Seconds from the start of the PCM. */
  start: number;
  end: number;
}

export interface VadOptions {
  sampleRate?: number;
  /** Analysis window (default 30 ms), advanced by hopMs (default 10 ms). */
  frameMs?: number;
  hopMs?: number;
  /** A frame starts speech at this many dB over the local noise floor... */
  onDb?: number;
  /** ...and speech continues while frames stay this far above it (hysteresis). */
  offDb?: number;
  /** Never call anything quieter than this speech (dBFS): digital silence, faint hum. */
  minSpeechDbfs?: number;
  /** The noise floor is the quietest frame within ± this many seconds (minimum statistics). */
  floorWindowSec?: number;
  /** Pauses shorter than this stay inside one span (hangover). */
  mergeGapSec?: number;
  /** Added on both sides of every span (clamped to the audio), so word edges are kept. */
  padSec?: number;
  /** Bursts shorter than this (before padding) are dropped: clicks, bumps. */
  minSpeechSec?: number;
}

const DEFAULTS: Required<VadOptions> = {
  sampleRate: 16000,
  frameMs: 30,
  hopMs: 10,
  onDb: 10,
  offDb: 6,
  minSpeechDbfs: -60,
  floorWindowSec: 5,
  mergeGapSec: 0.5,
  padSec: 0.2,
  minSpeechSec: 0.3,
};

/** Floor for the lowest noise estimate, so digital silence does not make every hiss "speech". */
const FLOOR_MIN_DBFS = -80;

function asInt16(pcm: Buffer | Int16Array): Int16Array {
  if (pcm instanceof Int16Array) return pcm;
  const n = pcm.length >> 1;
  if (pcm.byteOffset % 2 === 0) return new Int16Array(pcm.buffer, pcm.byteOffset, n);
  const copy = new Int16Array(n); // unaligned view: copy once
  for (let i = 0; i < n; i++) copy[i] = pcm.readInt16LE(i * 2);
  return copy;
}

/** Per-frame energy (dBFS, DC removed) at hop resolution. */
export function frameEnergiesDb(samples: Int16Array, frameLen: number, hopLen: number): Float64Array {
  const hopsPerFrame = Math.max(1, Math.round(frameLen / hopLen));
  const nHops = Math.floor(samples.length / hopLen);
  const s1 = new Float64Array(nHops);
  const s2 = new Float64Array(nHops);
  for (let h = 0; h < nHops; h++) {
    let a = 0;
    let b = 0;
    for (let i = h * hopLen, end = i + hopLen; i < end; i++) {
      const v = samples[i]!;
      a += v;
      b += v * v;
    }
    s1[h] = a;
    s2[h] = b;
  }
  const nFrames = Math.max(0, nHops - hopsPerFrame + 1);
  const out = new Float64Array(nFrames);
  const n = hopsPerFrame * hopLen;
  const full = 32768 * 32768;
  for (let f = 0; f < nFrames; f++) {
    let a = 0;
    let b = 0;
    for (let k = 0; k < hopsPerFrame; k++) {
      a += s1[f + k]!;
      b += s2[f + k]!;
    }
    const mean = a / n;
    const variance = Math.max(0, b / n - mean * mean);
    out[f] = 10 * Math.log10(variance / full + 1e-12);
  }
  return out;
}

/** Minimum of `values` within ±radius (monotonic deque, O(n)). */
function slidingMin(values: Float64Array, radius: number): Float64Array {
  const n = values.length;
  const out = new Float64Array(n);
  const dq = new Int32Array(n);
  let head = 0;
  let tail = 0;
  let next = 0;
  for (let i = 0; i < n; i++) {
    const hi = Math.min(n - 1, i + radius);
    for (; next <= hi; next++) {
      while (tail > head && values[dq[tail - 1]!]! >= values[next]!) tail--;
      dq[tail++] = next;
    }
    while (dq[head]! < i - radius) head++;
    out[i] = values[dq[head]!]!;
  }
  return out;
}

/** Speech spans in seconds, sorted and non-overlapping. */
export function detectSpeech(pcm: Buffer | Int16Array, options: VadOptions = {}): SpeechSpan[] {
  const o = { ...DEFAULTS, ...options };
  const samples = asInt16(pcm);
  const hopLen = Math.max(1, Math.round((o.sampleRate * o.hopMs) / 1000));
  const frameLen = Math.max(hopLen, Math.round((o.sampleRate * o.frameMs) / 1000));
  const duration = samples.length / o.sampleRate;
  const energy = frameEnergiesDb(samples, frameLen, hopLen);
  if (energy.length === 0) return [];

  const hopSec = hopLen / o.sampleRate;
  const floor = slidingMin(energy, Math.max(1, Math.round(o.floorWindowSec / hopSec)));

  // Hysteresis over frames, then raw spans in seconds (frame centres ± half a hop).
  const raw: SpeechSpan[] = [];
  const centre = (f: number) => (f * hopLen + frameLen / 2) / o.sampleRate;
  let inSpeech = false;
  let first = 0;
  for (let f = 0; f < energy.length; f++) {
    const nf = Math.max(floor[f]!, FLOOR_MIN_DBFS);
    const e = energy[f]!;
    const on = e >= Math.max(nf + o.onDb, o.minSpeechDbfs);
    const stay = e >= Math.max(nf + o.offDb, o.minSpeechDbfs);
    if (!inSpeech && on) {
      inSpeech = true;
      first = f;
    } else if (inSpeech && !stay) {
      inSpeech = false;
      raw.push({ start: Math.max(0, centre(first) - hopSec / 2), end: centre(f - 1) + hopSec / 2 });
    }
  }
  if (inSpeech) raw.push({ start: Math.max(0, centre(first) - hopSec / 2), end: Math.min(duration, centre(energy.length - 1) + hopSec / 2) });

  // Hangover: short pauses between words stay inside one span.
  const merged: SpeechSpan[] = [];
  for (const s of raw) {
    const last = merged.at(-1);
    if (last && s.start - last.end < o.mergeGapSec) last.end = s.end;
    else merged.push({ ...s });
  }

  const out: SpeechSpan[] = [];
  for (const s of merged) {
    if (s.end - s.start < o.minSpeechSec) continue;
    const padded = { start: Math.max(0, s.start - o.padSec), end: Math.min(duration, s.end + o.padSec) };
    const last = out.at(-1);
    if (last && padded.start <= last.end) last.end = padded.end;
    else out.push(padded);
  }
  return out.map((s) => ({ start: round3(s.start), end: round3(s.end) }));
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

export interface WavPcm {
  sampleRate: number;
  channels: number;
  bitsPerSample: number;
  /** Raw interleaved sample bytes of the data chunk. */
  data: Buffer;
}

/**
 * Parses a PCM WAV: walks the RIFF chunks (LIST, fact, ... are skipped) instead of
 * assuming a 44-byte header. A data size of 0 or 0xFFFFFFFF (streamed writers such as
 * ffmpeg to a pipe) means "to the end of the file".
 */
export function parseWav(buf: Buffer, source = 'WAV'): WavPcm {
  const bad = (why: string) => new VerbatimError('BAD_REQUEST', `${source} is not a usable PCM WAV file: ${why}`, { hint: 'Expected a 16 kHz mono 16-bit PCM WAV (ffmpeg -i in -ar 16000 -ac 1 -c:a pcm_s16le out.wav).' });
  if (buf.length < 12 || buf.toString('ascii', 0, 4) !== 'RIFF' || buf.toString('ascii', 8, 12) !== 'WAVE') throw bad('no RIFF/WAVE header');
  let pos = 12;
  let fmt: { format: number; channels: number; sampleRate: number; bitsPerSample: number } | undefined;
  while (pos + 8 <= buf.length) {
    const id = buf.toString('ascii', pos, pos + 4);
    const size = buf.readUInt32LE(pos + 4);
    const body = pos + 8;
    if (id === 'fmt ') {
      if (size < 16 || body + 16 > buf.length) throw bad('truncated fmt chunk');
      let format = buf.readUInt16LE(body);
      // WAVE_FORMAT_EXTENSIBLE: the real format is the first 2 bytes of the sub-format GUID.
      if (format === 0xfffe && size >= 40 && body + 26 <= buf.length) format = buf.readUInt16LE(body + 24);
      fmt = { format, channels: buf.readUInt16LE(body + 2), sampleRate: buf.readUInt32LE(body + 4), bitsPerSample: buf.readUInt16LE(body + 14) };
    } else if (id === 'data') {
      if (!fmt) throw bad('data chunk before fmt chunk');
      if (fmt.format !== 1) throw bad(`format ${fmt.format} is not integer PCM`);
      const end = size === 0 || size === 0xffffffff || body + size > buf.length ? buf.length : body + size;
      const frameBytes = (fmt.bitsPerSample / 8) * fmt.channels;
      const usable = end - body - ((end - body) % frameBytes);
      return { sampleRate: fmt.sampleRate, channels: fmt.channels, bitsPerSample: fmt.bitsPerSample, data: buf.subarray(body, body + usable) };
    }
    pos = body + size + (size % 2); // chunks are word-aligned
  }
  throw bad('no data chunk');
}

/** Reads a WAV file and insists on 16 kHz mono s16le (what Whisper and the VAD take). */
export async function readWav16kMono(file: string): Promise<WavPcm> {
  const wav = parseWav(await readFile(file), file);
  if (wav.sampleRate !== 16000 || wav.channels !== 1 || wav.bitsPerSample !== 16) {
    throw new VerbatimError('BAD_REQUEST', `${file} is ${wav.sampleRate} Hz, ${wav.channels} channel(s), ${wav.bitsPerSample}-bit; expected 16000 Hz mono 16-bit`, {
      hint: 'Convert it first: ffmpeg -i in -ar 16000 -ac 1 -c:a pcm_s16le out.wav',
    });
  }
  return wav;
}

/** VAD over a 16 kHz mono s16le WAV file. */
export async function detectSpeechInWav(file: string, options: VadOptions = {}): Promise<SpeechSpan[]> {
  const wav = await readWav16kMono(file);
  return detectSpeech(wav.data, { ...options, sampleRate: 16000 });
}

/** A canonical 44-byte header for mono s16le PCM (we write our own; no in-place conversion). */
export function wavHeader(dataBytes: number, sampleRate = 16000): Buffer {
  const h = Buffer.alloc(44);
  h.write('RIFF', 0, 'ascii');
  h.writeUInt32LE(36 + dataBytes, 4);
  h.write('WAVE', 8, 'ascii');
  h.write('fmt ', 12, 'ascii');
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(1, 20); // PCM
  h.writeUInt16LE(1, 22); // mono
  h.writeUInt32LE(sampleRate, 24);
  h.writeUInt32LE(sampleRate * 2, 28);
  h.writeUInt16LE(2, 32);
  h.writeUInt16LE(16, 34);
  h.write('data', 36, 'ascii');
  h.writeUInt32LE(dataBytes, 40);
  return h;
}
