import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Config } from '../../../lib/config.ts';
import { VerbatimError } from '../../../lib/errors.ts';
import { KILL_GRACE_MS } from '../../../lib/media/ffmpeg-runner.ts';
import type { TranscribeInput, TranscribeOptions, Transcriber, TranscriptSegment, TranscriptWord } from './transcriber.ts';
import { packedPcm, packSpeechSpans, unpackSegment } from './speech-packing.ts';
import { detectSpeech, readWav16kMono, wavHeader, type VadOptions } from './vad.ts';
import { resolveWhisperModel } from './whisper-models.ts';

/**
 * Whisper through the whisper-cli binary scripts/build-whisper.sh builds. Run as a
 * child process (argument array, never a shell) so a crash, a hang or an abort costs
 * one process, not the worker; the input WAV is only ever read.
 */

const SAMPLE_RATE = 16000;

export interface WhisperCppOptions {
  /** whisper-cli binary (WHISPER_CLI_BIN). */
  cliBin: string;
  /** WHISPER_MODEL: a known name or a path. */
  model: string;
  /** WHISPER_MODELS_DIR. */
  modelsDir: string;
  /** WHISPER_THREADS (default 2). */
  threads?: number;
  /** Beam size; 1 = greedy (default: whisper-cli's 5). */
  beamSize?: number;
  /** Candidates when sampling at temperature > 0 (default: whisper-cli's 5). */
  bestOf?: number;
  /** -nf: no temperature fallback, fully deterministic (default false). */
  noFallback?: boolean;
  /** Per whisper-cli run; default 120 s + 10x the clip's duration. */
  timeoutMs?: number | ((clipSeconds: number) => number);
  /** Scratch directory for span WAVs and JSON (default os.tmpdir()). */
  tmpDir?: string;
  vad?: VadOptions;
  /** Silence between packed speech spans (default 0.3 s). */
  packGapSec?: number;
  /**
   * whisper-cli --audio-ctx for a clip shorter than one window: the encoder then runs on
   * the clip's length instead of a zero-padded 30 s (default off: Whisper was trained on
   * full windows, and a shortened context can cost accuracy on real models).
   */
  shortAudioCtx?: boolean;
  /** whisper-cli --max-context (text tokens of the previous window used as prompt; default: its own). */
  maxContext?: number;
}

/** Options from the service configuration. */
export function whisperCppOptionsFromConfig(cfg: Config): WhisperCppOptions {
  if (!cfg.WHISPER_CLI_BIN) {
    throw new VerbatimError('TRANSCRIBE_FAILED', 'whisper-cli is not available (WHISPER_CLI_BIN is unset)', {
      hint: 'Run `npm run setup` (builds whisper-cli offline and records it in .cache/toolchain.json), or set WHISPER_CLI_BIN.',
    });
  }
  return { cliBin: cfg.WHISPER_CLI_BIN, model: cfg.WHISPER_MODEL, modelsDir: cfg.WHISPER_MODELS_DIR, threads: cfg.WHISPER_THREADS, beamSize: cfg.WHISPER_BEAM_SIZE, shortAudioCtx: cfg.WHISPER_SHORT_AUDIO_CTX };
}

export class WhisperCppTranscriber implements Transcriber {
  readonly threads: number;
  constructor(private readonly opts: WhisperCppOptions) {
    this.threads = opts.threads ?? 2;
  }

  /**
   * VAD first; the speech spans are packed into as few 30 s windows as possible
   * (speech-packing.ts) and go to ONE whisper-cli run, whose segments are mapped back
   * onto the session timeline through the packing table.
   */
  async transcribe(input: TranscribeInput, runOpts: TranscribeOptions = {}): Promise<TranscriptSegment[]> {
    const { signal } = runOpts;
    signal?.throwIfAborted();
    const model = await resolveWhisperModel({ model: this.opts.model, modelsDir: this.opts.modelsDir });
    const wav = await readWav16kMono(input.wavPath);
    const spans = detectSpeech(wav.data, { ...this.opts.vad, sampleRate: SAMPLE_RATE });
    const packing = packSpeechSpans(spans, wav.data.length / 2, { sampleRate: SAMPLE_RATE, ...(this.opts.packGapSec !== undefined ? { gapSec: this.opts.packGapSec } : {}) });
    if (packing.pieces.length === 0) return [];
    const offset = input.offsetSeconds ?? 0;
    const clipSeconds = packing.totalSamples / SAMPLE_RATE;
    return withTmpDir(this.opts.tmpDir, async (dir) => {
      const clip = path.join(dir, 'speech.wav');
      const pcm = packedPcm(wav.data, packing);
      await writeFile(clip, Buffer.concat([wavHeader(pcm.length, SAMPLE_RATE), pcm]));
      const opts = runOpts.threads !== undefined ? { ...this.opts, threads: runOpts.threads } : this.opts;
      const segs = await runWhisperCli(opts, model.path, clip, clipSeconds, input.language, path.join(dir, 'speech'), signal);
      return segs.map((s) => {
        const m = unpackSegment(packing, s.start, s.end);
        // Each word is mapped on its own: a segment can span two packed speech spans.
        const words = s.words?.map((w) => {
          const wm = unpackSegment(packing, w.start, w.end);
          return { text: w.text, start: round3(wm.start + offset), end: round3(wm.end + offset) };
        });
        return { start: round3(m.start + offset), end: round3(m.end + offset), text: s.text, ...(words ? { words } : {}) };
      });
    });
  }
}

export function createWhisperCppTranscriber(opts: WhisperCppOptions): Transcriber {
  return new WhisperCppTranscriber(opts);
}

/** The whole file in one whisper-cli run, no VAD (benchmarks compare against it). */
export async function transcribeWithoutVad(opts: WhisperCppOptions, input: TranscribeInput, runOpts: TranscribeOptions = {}): Promise<TranscriptSegment[]> {
  runOpts.signal?.throwIfAborted();
  const model = await resolveWhisperModel({ model: opts.model, modelsDir: opts.modelsDir });
  const wav = await readWav16kMono(input.wavPath); // validates the format; whisper-cli reads the file itself
  const seconds = wav.data.length / 2 / SAMPLE_RATE;
  return withTmpDir(opts.tmpDir, async (dir) => {
    const segs = await runWhisperCli(opts, model.path, input.wavPath, seconds, input.language, path.join(dir, 'whole'), runOpts.signal);
    return segs.map((s) => shift(s, input.offsetSeconds ?? 0));
  });
}

function shift(s: TranscriptSegment, by: number): TranscriptSegment {
  const words = s.words?.map((w) => ({ text: w.text, start: round3(w.start + by), end: round3(w.end + by) }));
  return { start: round3(s.start + by), end: round3(s.end + by), text: s.text, ...(words ? { words } : {}) };
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

async function withTmpDir<T>(base: string | undefined, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(base ?? os.tmpdir(), 'verbatim-whisper-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const STDERR_TAIL = 4000;

/**
 * One whisper-cli run over a clip; segments relative to the clip, clamped to its
 * duration (Whisper timestamps can run past the audio to the end of its 30 s window).
 */
export async function runWhisperCli(
  opts: WhisperCppOptions,
  modelPath: string,
  clipPath: string,
  clipSeconds: number,
  language: string,
  outBase: string,
  signal?: AbortSignal,
): Promise<TranscriptSegment[]> {
  // -ojf: the full JSON, with each token's own timestamps (words for redaction spans).
  const args = ['-m', modelPath, '-f', clipPath, '-l', language, '-t', String(opts.threads ?? 2), '-ojf', '-of', outBase, '-np'];
  if (opts.beamSize !== undefined) args.push('-bs', String(opts.beamSize));
  if (opts.bestOf !== undefined) args.push('-bo', String(opts.bestOf));
  if (opts.noFallback) args.push('-nf');
  if (opts.maxContext !== undefined) args.push('-mc', String(opts.maxContext));
  // 1500 encoder positions = 30 s, so 50 per second; whisper.cpp wants no more than the model's.
  if (opts.shortAudioCtx && clipSeconds < 30) args.push('-ac', String(Math.min(1500, Math.ceil((clipSeconds + 0.5) * 50))));
  const timeoutMs = typeof opts.timeoutMs === 'function' ? opts.timeoutMs(clipSeconds) : (opts.timeoutMs ?? 120_000 + clipSeconds * 10_000);

  const { code, stderr, timedOut, aborted, spawnError } = await new Promise<{ code: number | null; stderr: string; timedOut: boolean; aborted: boolean; spawnError?: Error }>((resolve) => {
    let tail = '';
    let timedOut = false;
    let aborted = false;
    let spawnError: Error | undefined;
    const child = spawn(opts.cliBin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      tail = (tail + chunk).slice(-STDERR_TAIL);
    });
    const kill = () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, timeoutMs);
    let graceTimer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      // The job is going away (shutdown, lock lost): SIGTERM, then SIGKILL if it lingers.
      aborted = true;
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      graceTimer = setTimeout(kill, KILL_GRACE_MS);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) onAbort();
    child.on('error', (err) => {
      spawnError = err;
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      clearTimeout(graceTimer);
      signal?.removeEventListener('abort', onAbort);
      resolve({ code, stderr: tail, timedOut, aborted, ...(spawnError ? { spawnError } : {}) });
    });
  });

  if (aborted) throw signal?.reason ?? new DOMException('This operation was aborted', 'AbortError');
  const tail = stderr.trim().split('\n').slice(-15).join('\n');
  if (spawnError) {
    throw new VerbatimError('TRANSCRIBE_FAILED', `cannot run whisper-cli ${opts.cliBin}: ${spawnError.message}`, {
      hint: 'Run `npm run setup` to build whisper-cli, or point WHISPER_CLI_BIN at a working binary.',
      cause: spawnError,
    });
  }
  if (timedOut) {
    throw new VerbatimError('TRANSCRIBE_FAILED', `whisper-cli timed out after ${Math.round(timeoutMs / 1000)} s on ${clipSeconds.toFixed(1)} s of audio`, {
      hint: 'Use a smaller WHISPER_MODEL or more WHISPER_THREADS, or give the host more CPU.',
      details: { stderrTail: tail },
    });
  }
  if (code !== 0) {
    throw new VerbatimError('TRANSCRIBE_FAILED', `whisper-cli exited with ${code}: ${tail.split('\n').at(-1) ?? ''}`, {
      hint: 'See details.stderrTail; a model that does not load points at a damaged or incompatible WHISPER_MODEL file.',
      details: { exitCode: code, stderrTail: tail },
    });
  }

  let raw: string;
  try {
    raw = await readFile(`${outBase}.json`, 'utf8');
  } catch (err) {
    throw new VerbatimError('TRANSCRIBE_FAILED', 'whisper-cli wrote no JSON output', { details: { stderrTail: tail }, cause: err });
  }
  return parseWhisperJson(raw, clipSeconds);
}

/**
 * whisper-cli escapes only quotes and backslashes, so a control character inside a
 * token would make the JSON invalid: blank them (they are never wanted in text).
 */
export function parseWhisperJson(raw: string, clipSeconds: number): TranscriptSegment[] {
  let doc: unknown;
  try {
    // eslint-disable-next-line no-control-regex
    doc = JSON.parse(raw.replace(/[\u0000-\u001f]/g, ' '));
  } catch (err) {
    throw new VerbatimError('TRANSCRIBE_FAILED', 'whisper-cli wrote unparsable JSON', { cause: err, details: { head: raw.slice(0, 500) } });
  }
  const items = (doc as { transcription?: unknown }).transcription;
  if (!Array.isArray(items)) throw new VerbatimError('TRANSCRIBE_FAILED', 'whisper-cli JSON has no transcription array');
  const out: TranscriptSegment[] = [];
  for (const item of items as Array<{ offsets?: { from?: unknown; to?: unknown }; text?: unknown; tokens?: unknown }>) {
    const from = Number(item.offsets?.from);
    const to = Number(item.offsets?.to);
    const text = typeof item.text === 'string' ? item.text.replace(/\s+/g, ' ').trim() : '';
    if (!text || !Number.isFinite(from) || !Number.isFinite(to)) continue;
    const start = Math.min(from / 1000, clipSeconds);
    const end = Math.min(Math.max(to / 1000, start), clipSeconds);
    if (start >= clipSeconds) continue; // a timestamp past the audio: hallucinated
    const words = Array.isArray(item.tokens) ? wordsOf(item.tokens as WhisperToken[], start, end) : undefined;
    out.push({ start, end, text, ...(words ? { words } : {}) });
  }
  return out;
}

interface WhisperToken {
  text?: unknown;
  offsets?: { from?: unknown; to?: unknown };
}

/**
 * Words from whisper.cpp's tokens (-ojf): special tokens ([_BEG_], [_TT_n], <|endoftext|>) are
 * dropped; a token starting with a space starts a new word, others continue the current one.
 * Times are clamped into their segment (token timestamps can stray a little past it).
 */
export function wordsOf(tokens: readonly WhisperToken[], segStart: number, segEnd: number): TranscriptWord[] {
  const words: TranscriptWord[] = [];
  for (const t of tokens) {
    if (typeof t.text !== 'string' || /^\[_[A-Z_0-9]*\]$|^<\|.*\|>$/.test(t.text)) continue;
    const from = Number(t.offsets?.from);
    const to = Number(t.offsets?.to);
    if (!Number.isFinite(from) || !Number.isFinite(to)) continue;
    const start = Math.min(Math.max(from / 1000, segStart), segEnd);
    const end = Math.min(Math.max(to / 1000, start), segEnd);
    const last = words.at(-1);
    if (last && !/^\s/.test(t.text)) {
      last.text += t.text;
      last.end = Math.max(last.end, end);
    } else {
      const text = t.text.replace(/\s+/g, ' ').trim();
      if (text) words.push({ text, start, end });
    }
  }
  return words;
}

