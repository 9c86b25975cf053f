/**
 * `npm run bench -- transcribe [--quick]`: what transcription costs, with Whisper
 * models of the real tiny / base shapes and random weights (no real model can be
 * downloaded here: the compute is real, the text is not), greedy and without
 * temperature fallback (beam 1, -nf).
 *
 *   asr_work_ratio            4-person meeting (4 min, 1 min quick), each participant
 *                             speaking (espeak-ng) through their own quarter with natural
 *                             pauses, silence + mic hiss elsewhere: seconds of audio the
 *                             real WhisperCppTranscriber (VAD, speech spans packed into 30 s
 *                             windows, one whisper-cli run per track) sends to whisper-cli ÷
 *                             (tracks × meeting length). Measured by
 *                             pointing the transcriber at a stand-in whisper-cli that records
 *                             the length of every clip it is given.
 *   wrapper_overhead_pct      transcribeWithoutVad vs spawning whisper-cli directly with the
 *                             same arguments on the same WAV (tiny), medians of interleaved runs.
 *   end_to_end_latency_ratio  the real TranscodeWorker (in process; the session.finalize flow:
 *                             prepare, then composite and per-participant ASR at once) on
 *                             Redis + an in-process PGlite: from meeting end (sealed session registered + job
 *                             enqueued, as the recorder does) to the transcript in the
 *                             database, ÷ meeting length (base, WHISPER_THREADS 2).
 */
import { spawn, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openDatabase, type Db } from '../db/database.ts';
import { loadConfig } from '../services/lib/config.ts';
import { SESSION_FINALIZE_JOB, finalizeJobId, type SessionFinalizePayload } from '../services/lib/contracts/jobs.ts';
import { createLogger } from '../services/lib/logger.ts';
import { SessionStore } from '../services/recorder/src/session-store.ts';
import { FluentFfmpegRunner, type FfmpegRunner } from '../services/lib/media/ffmpeg-runner.ts';
import { LocalArtifactStorage } from '../services/lib/storage/artifact-storage.ts';
import { randomWeightsModelPath } from '../services/transcode/src/transcriber/ggml-test-model.ts';
import { transcriberFromConfig } from '../services/transcode/src/transcriber-factory.ts';
import type { Transcriber } from '../services/transcode/src/transcriber/transcriber.ts';
import { packSpeechSpans } from '../services/transcode/src/transcriber/speech-packing.ts';
import { detectSpeechInWav, parseWav, wavHeader } from '../services/transcode/src/transcriber/vad.ts';
import { createWhisperCppTranscriber, transcribeWithoutVad, whisperCppOptionsFromConfig, type WhisperCppOptions } from '../services/transcode/src/transcriber/whisper-cpp-transcriber.ts';
import { TranscodeWorker } from '../services/transcode/src/transcode-worker.ts';
import { killNow, onCleanup, sleep } from './lib/children.ts';
import { BENCH_REDIS_URL, dropRedisPrefix } from './lib/recorder-proc.ts';
import { atMost, cacheDir, machineInfo, measurementRunner, round, type Metric, type SuiteResult } from './lib/results.ts';
import { OPUS_CODEC, measure, median, opusPacketsOfWav, opusTrackRecords, writeSealedSession, type SessionTrackSpec } from './transcode.ts';

const log = (msg: string) => process.stderr.write(`[bench transcribe] ${msg}\n`);
const SR = 16000;

interface Plan {
  /** Meeting length for asr_work_ratio. */
  meetingS: number;
  /** Runs of each side for wrapper_overhead_pct. */
  wrapperRuns: number;
  /** Meeting length for end_to_end_latency_ratio. */
  e2eS: number;
  /** Afterwards, one whisper-cli run with its timing report (encoder vs decoder) on a span. */
  calibrate: boolean;
}
const FULL: Plan = { meetingS: 240, wrapperRuns: 7, e2eS: 240, calibrate: true };
const QUICK: Plan = { meetingS: 60, wrapperRuns: 3, e2eS: 20, calibrate: false };

// ---- speech ----------------------------------------------------------------------------------------

const SENTENCES = [
  'Okay, let us get started with the weekly planning meeting.',
  'The release candidate is ready, but the migration still needs a review.',
  'I talked to the customer yesterday and they want the export feature first.',
  'Can everyone see my screen? I will share the dashboard now.',
  'Latency went down by about twenty percent after the cache change.',
  'We should move the database upgrade to next Tuesday.',
  'I am not sure the budget covers a second recording server.',
  'Please remember to send the minutes after the call.',
  'The transcription queue was empty most of the afternoon.',
  'Let us park that question and come back to it at the end.',
  'I will write up the proposal and circulate it by Friday.',
  'Does anyone have concerns about the new retention policy?',
];
const VOICES = [
  { voice: 'en-us+m3', speed: 165 },
  { voice: 'en-gb+f3', speed: 175 },
  { voice: 'en-us+f2', speed: 160 },
  { voice: 'en-gb+m1', speed: 170 },
];

/** espeak-ng utterances as 16 kHz mono s16 PCM, leading/trailing silence trimmed; cached in .cache/bench/transcribe. */
function speechBank(): Int16Array[][] {
  const dir = path.join(cacheDir, 'transcribe', 'speech');
  mkdirSync(dir, { recursive: true });
  return VOICES.map((v, vi) =>
    SENTENCES.map((text, si) => {
      const file = path.join(dir, `v${vi}-s${si}-${v.voice.replace(/[^a-z0-9]/gi, '')}-${v.speed}.wav`);
      if (!existsSync(file)) {
        const raw = `${file}.${process.pid}.raw.wav`;
        execFileSync('espeak-ng', ['-v', v.voice, '-s', String(v.speed), '-w', raw, text]);
        const tmp = `${file}.${process.pid}.tmp.wav`;
        execFileSync('sox', [raw, '-r', String(SR), '-c', '1', '-b', '16', tmp, 'silence', '1', '0.01', '0.1%', 'reverse', 'silence', '1', '0.01', '0.1%', 'reverse'], { stdio: ['ignore', 'ignore', 'pipe'] });
        rmSync(raw, { force: true });
        renameSync(tmp, file);
      }
      const d = parseWav(readFileSync(file), file).data;
      return new Int16Array(d.buffer.slice(d.byteOffset, d.byteOffset + d.length));
    }),
  );
}

function lcg(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => (x = (x * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
}

export interface Meeting {
  seconds: number;
  wavs: string[];
  /** Seconds of actual speech (utterances, without pauses) per participant. */
  speechS: number[];
  utterances: number[];
}

/**
 * 4 participant WAVs of equal length: participant k talks through the k-th quarter
 * (utterances separated by 0.3–1.2 s pauses, as people pause between sentences), and
 * everyone's track carries mic hiss (about −62 dBFS) throughout.
 */
export function buildMeeting(dir: string, seconds: number, bank: Int16Array[][], seed = 1): Meeting {
  mkdirSync(dir, { recursive: true });
  const rand = lcg(seed);
  const n = Math.round(seconds * SR);
  const out: Meeting = { seconds, wavs: [], speechS: [], utterances: [] };
  bank.forEach((clips, k) => {
    const pcm = new Int16Array(n);
    for (let i = 0; i < n; i++) pcm[i] = Math.round((rand() + rand() + rand() + rand() - 2) * Math.sqrt(3) * 25);
    const from = Math.round((k * n) / bank.length);
    const to = Math.round(((k + 1) * n) / bank.length);
    let at = from + Math.round(0.2 * SR);
    let speech = 0;
    let count = 0;
    let s = k * 3;
    for (;;) {
      const clip = clips[s++ % clips.length]!;
      if (at + clip.length > to) break;
      for (let i = 0; i < clip.length; i++) pcm[at + i] = Math.max(-32768, Math.min(32767, pcm[at + i]! + clip[i]!));
      at += clip.length + Math.round((0.3 + rand() * 0.9) * SR);
      speech += clip.length / SR;
      count++;
    }
    const file = path.join(dir, `p${k + 1}.wav`);
    const bytes = Buffer.from(pcm.buffer, pcm.byteOffset, pcm.byteLength);
    writeFileSync(file, Buffer.concat([wavHeader(bytes.length, SR), bytes]));
    out.wavs.push(file);
    out.speechS.push(speech);
    out.utterances.push(count);
  });
  return out;
}

/** Writes the clip WhisperCppTranscriber would send for the first VAD span of a WAV; returns its seconds. */
async function firstSpanClip(wavPath: string, out: string): Promise<number> {
  const span = (await detectSpeechInWav(wavPath))[0];
  if (!span) throw new Error(`no speech found in ${wavPath}`);
  const data = parseWav(readFileSync(wavPath), wavPath).data;
  const from = Math.max(0, Math.floor(span.start * SR));
  const to = Math.min(data.length / 2, Math.ceil(span.end * SR));
  const clip = data.subarray(from * 2, to * 2);
  writeFileSync(out, Buffer.concat([wavHeader(clip.length, SR), clip]));
  return (to - from) / SR;
}

/** whisper-cli's own timing report (it prints one unless -np) for one run. */
async function whisperTimings(cliBin: string, model: string, wav: string, outBase: string): Promise<Record<string, { ms: number; runs?: number }>> {
  const stderr = await new Promise<string>((resolve, reject) => {
    const child = spawn(cliBin, ['-m', model, '-f', wav, '-l', 'en', '-t', '2', '-oj', '-of', outBase, '-bs', '1', '-nf'], { stdio: ['ignore', 'ignore', 'pipe'] });
    const release = onCleanup(`whisper-cli ${child.pid}`, async () => killNow(child), () => killNow(child));
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    child.once('error', reject);
    child.once('close', (code) => {
      void release();
      if (code === 0) resolve(err);
      else reject(new Error(`whisper-cli exited ${code}: ${err.slice(-2000)}`));
    });
  });
  const out: Record<string, { ms: number; runs?: number }> = {};
  for (const m of stderr.matchAll(/whisper_print_timings:\s+(\w+) time =\s+([\d.]+) ms(?: \/\s+(\d+) runs)?/g)) {
    out[m[1]!] = { ms: Number(m[2]), ...(m[3] ? { runs: Number(m[3]) } : {}) };
  }
  return out;
}

// ---- the suite -------------------------------------------------------------------------------------

export async function runTranscribeBench(opts: { quick: boolean }): Promise<SuiteResult> {
  const plan = opts.quick ? QUICK : FULL;
  const started = Date.now();
  const startedAt = new Date().toISOString();
  const machine = machineInfo();
  const work = mkdtempSync(path.join(os.tmpdir(), 'verbatim-bench-transcribe-'));
  onCleanup('transcribe work dir', async () => rmSync(work, { recursive: true, force: true }), () => rmSync(work, { recursive: true, force: true }));
  const metrics: Record<string, Metric> = {};
  const details: Record<string, unknown> = { plan, loadAvgAtStart: os.loadavg().map((x) => round(x, 2)) };
  const attempt = measurementRunner(details, log);

  const config = loadConfig({ env: {}, overrides: { DATA_DIR: work } });
  const cliBin = config.WHISPER_CLI_BIN;
  if (!cliBin) throw new Error('whisper-cli is not built (WHISPER_CLI_BIN unset): run npm run setup');
  const t = Date.now();
  const tiny = randomWeightsModelPath('tiny');
  const base = randomWeightsModelPath('base');
  const bank = speechBank();
  const meeting = buildMeeting(path.join(work, 'meeting'), plan.meetingS, bank, 1);
  log(`models + ${plan.meetingS} s meeting ready in ${round((Date.now() - t) / 1000, 1)} s`);
  details.models = { tiny, base, cliBin };

  await attempt('asr-work-ratio', async () => {
    // A stand-in whisper-cli: records the length of every clip, answers "no text".
    const shim = path.join(work, 'clip-logging-whisper-cli.sh');
    const clipLog = path.join(work, 'clips.log');
    writeFileSync(
      shim,
      [
        '#!/bin/sh',
        'while [ $# -gt 0 ]; do case "$1" in -f) f="$2"; shift;; -of) o="$2"; shift;; esac; shift; done',
        `echo "$(stat -c %s "$f")" >> '${clipLog}'`,
        'printf \'{"transcription":[]}\' > "$o.json"',
        '',
      ].join('\n'),
    );
    chmodSync(shim, 0o755);
    const transcriber = createWhisperCppTranscriber({ cliBin: shim, model: tiny, modelsDir: work, threads: 2, beamSize: 1, noFallback: true });
    const perTrack: { sentS: number; spans: number; windows: number; speechS: number; utterances: number }[] = [];
    for (const [i, wav] of meeting.wavs.entries()) {
      rmSync(clipLog, { force: true });
      await transcriber.transcribe({ wavPath: wav, language: 'en' });
      const sizes = existsSync(clipLog) ? readFileSync(clipLog, 'utf8').trim().split('\n').filter(Boolean).map(Number) : [];
      const clips = sizes.map((b) => (b - 44) / 2 / SR);
      // whisper.cpp encodes whole 30 s windows: a 4 s clip costs the encoder as much as 30 s.
      const windows = clips.reduce((s, c) => s + Math.max(1, Math.ceil(c / 30)), 0);
      perTrack.push({ sentS: clips.reduce((s, c) => s + c, 0), spans: clips.length, windows, speechS: meeting.speechS[i]!, utterances: meeting.utterances[i]! });
    }
    const sent = perTrack.reduce((s, x) => s + x.sentS, 0);
    const speech = perTrack.reduce((s, x) => s + x.speechS, 0);
    const total = meeting.wavs.length * plan.meetingS;
    details.asrWork = { perTrack: perTrack.map((x) => ({ sentS: round(x.sentS, 2), spans: x.spans, windows: x.windows, speechS: round(x.speechS, 2), utterances: x.utterances })) };
    metrics.asr_work_ratio = atMost(
      round(sent / total, 3),
      0.35,
      'ratio',
      `${round(sent, 1)} s sent to whisper-cli in ${perTrack.reduce((s, x) => s + x.spans, 0)} clips of ${meeting.wavs.length} × ${plan.meetingS} s tracks; each speaks through 25 % of it (${round(speech / total, 3)} of it is voiced); but whisper.cpp encodes every clip as a whole 30 s window, so the encoder processes ${round((perTrack.reduce((s, x) => s + x.windows, 0) * 30) / total, 2)} × the tracks' length`,
    );
  });

  await attempt('wrapper-overhead', async () => {
    // The clip the transcriber sends for participant 1's first speech span, cut as it cuts it.
    const wav = path.join(work, 'wrapper.wav');
    const clipS = await firstSpanClip(meeting.wavs[0]!, wav);
    const o: WhisperCppOptions = { cliBin, model: tiny, modelsDir: work, threads: 2, beamSize: 1, noFallback: true };
    const args = (outBase: string) => ['-m', tiny, '-f', wav, '-l', 'en', '-t', '2', '-oj', '-of', outBase, '-np', '-bs', '1', '-nf'];
    const direct = async () => {
      const dir = mkdtempSync(path.join(work, 'direct-'));
      const code = await new Promise<number | null>((resolve, reject) => {
        const child = spawn(cliBin, args(path.join(dir, 'whole')), { stdio: ['ignore', 'ignore', 'pipe'] });
        const release = onCleanup(`whisper-cli ${child.pid}`, async () => killNow(child), () => killNow(child));
        child.stderr.resume();
        child.once('error', reject);
        child.once('close', (c) => {
          void release();
          resolve(c);
        });
      });
      if (code !== 0) throw new Error(`whisper-cli exited ${code}`);
      JSON.parse(readFileSync(path.join(dir, 'whole.json'), 'utf8'));
      rmSync(dir, { recursive: true, force: true });
    };
    const ours = async () => {
      await transcribeWithoutVad(o, { wavPath: wav, language: 'en' });
    };
    await direct(); // warm-up: model and binary in the page cache
    const d: number[] = [];
    const w: number[] = [];
    const dCpu: number[] = [];
    const wCpu: number[] = [];
    const wSelf: number[] = [];
    for (let i = 0; i < plan.wrapperRuns; i++) {
      // Alternate the order so drift in the machine's load hits both sides alike.
      const pair = i % 2 === 0 ? ([['d', direct], ['w', ours]] as const) : ([['w', ours], ['d', direct]] as const);
      for (const [k, fn] of pair) {
        const { span } = await measure(fn);
        (k === 'd' ? d : w).push(span.wallS);
        (k === 'd' ? dCpu : wCpu).push(span.cpuS);
        if (k === 'w') wSelf.push(span.selfCpuS);
      }
    }
    const md = median(d);
    const mw = median(w);
    details.wrapper = { clipS: round(clipS, 3), oursSelfCpuS: wSelf.map((x) => round(x, 4)), directWallS: d.map((x) => round(x, 3)), oursWallS: w.map((x) => round(x, 3)), directCpuS: dCpu.map((x) => round(x, 2)), oursCpuS: wCpu.map((x) => round(x, 2)) };
    metrics.wrapper_overhead_pct = atMost(
      round(((mw - md) / md) * 100, 2),
      5,
      '%',
      `median wall of ${plan.wrapperRuns} interleaved runs on one ${round(clipS, 2)} s speech span (tiny, 2 threads): ours ${round(mw, 3)} s vs whisper-cli ${round(md, 3)} s; run-to-run spread ${round(((Math.max(...d) - Math.min(...d)) / md) * 100, 1)} % (direct), so differences below that are noise; the wrapper's own CPU in this process ${Math.round(median(wSelf) * 1000)} ms per call; CPU incl. whisper-cli ${round(median(wCpu), 2)} vs ${round(median(dCpu), 2)} CPU-s`,
    );
  });

  await attempt('end-to-end', async () => {
    const r = await endToEnd(work, plan, bank, base);
    details.endToEnd = r;
    metrics.end_to_end_latency_ratio = atMost(
      round(r.latencyS / r.meetingS, 3),
      0.1,
      'ratio',
      `${r.meetingS} s 4-person meeting → transcript in the database after ${round(r.latencyS, 1)} s (base, 2 threads): queue pick-up ${round(r.pickupS, 2)} s, prepare stage ${round(r.pipelineS, 1)} s, composite ∥ ASR stage ${round(r.outputsS, 1)} s wall (whisper-cli once per participant: ${r.asrPerParticipantS.join(' / ')} s, 2 at a time on 1 thread each, ${r.windows} × 30 s windows over ${round(r.asrAudioS, 1)} s of packed speech; composite ffmpeg ${round(r.ffmpegRuns.find((x) => x.output === 'composite.mp4')?.wallS ?? 0, 1)} s), register ${round(r.latencyS - r.pickupS - r.pipelineS - r.outputsS, 2)} s; the job used ${round(r.cpuS, 1)} CPU-s (${round(r.cpuS / 2 / r.meetingS, 3)} × the meeting on 2 otherwise idle cores; load average ${r.loadAvg[0]} at the end); ${r.segments} segments${calibrationNote(r.calibration)}`,
    );
  });

  details.loadAvgAtEnd = os.loadavg().map((x) => round(x, 2));
  return { suite: 'transcribe', machine, startedAt, durationS: round((Date.now() - started) / 1000, 1), quick: opts.quick, metrics, details };
}

function calibrationNote(c: EndToEnd['calibration']): string {
  if (!c) return '';
  const enc = c.timings.encode;
  const dec = c.timings.decode;
  const tot = c.timings.total;
  if (!enc || !tot) return '';
  return `; one ${c.clipS} s span alone: whisper-cli ${round(tot.ms / 1000, 2)} s, of which encoder ${round(enc.ms / 1000, 2)} s (${enc.runs ?? '?'} × 30 s window), decoder ${round((dec?.ms ?? 0) / 1000, 2)} s (${dec?.runs ?? '?'} steps)`;
}

interface EndToEnd {
  meetingS: number;
  latencyS: number;
  pickupS: number;
  pipelineS: number;
  /** Wall time of the stage where the composite and the transcriptions run. */
  outputsS: number;
  /** CPU seconds (this process + ffmpeg/whisper-cli children) the job used. */
  cpuS: number;
  loadAvg: number[];
  ffmpegS: number;
  ffmpegRuns: { output: string; wallS: number }[];
  asrS: number;
  asrPerParticipantS: number[];
  whisperRuns: number;
  /** 30 s Whisper windows over all runs. */
  windows: number;
  asrAudioS: number;
  segments: number;
  status: string;
  transcriptStatus: string | null;
  stages: Record<string, number>;
  warmupS: number;
  /** whisper-cli's timing report for one span (base), when calibrated. */
  calibration?: { clipS: number; timings: Record<string, { ms: number; runs?: number }> };
}

/** The sealed session of a meeting: one Opus track per participant, as the recorder writes it (no loss, no DTX). */
async function meetingSession(dir: string, m: Meeting, session: string, transcribe = true) {
  const t0Us = 1_760_000_000_000_000;
  const tracks: SessionTrackSpec[] = [];
  for (const [k, wav] of m.wavs.entries()) {
    const packets = await opusPacketsOfWav(wav);
    const start = t0Us + k * 7_000; // publishers join a few ms apart
    const recs = opusTrackRecords({ packets, seconds: Math.min(m.seconds, packets.length * 0.02), t0Us: start, ssrc: 0x5000 + k, seed: k + 1 });
    tracks.push({ track: `a${k + 1}`, participant: { id: `p${k + 1}`, name: `Speaker ${k + 1}` }, kind: 'audio', codec: OPUS_CODEC, ssrc: 0x5000 + k, t0Us: start, seconds: m.seconds, records: recs.records });
  }
  return writeSealedSession(path.join(dir, session), { room: 'bench-room', session, tracks, transcribe, language: 'en' });
}

async function endToEnd(work: string, plan: Plan, bank: Int16Array[][], baseModel: string): Promise<EndToEnd> {
  const dir = path.join(work, 'e2e');
  const meeting = buildMeeting(path.join(dir, 'wav'), plan.e2eS, bank, 1);
  const warm = buildMeeting(path.join(dir, 'warm-wav'), 5, [bank[0]!], 3);
  const id = randomBytes(3).toString('hex');
  const sealed = await meetingSession(path.join(dir, 'recordings'), meeting, `e2e-${id}`);
  const warmSealed = await meetingSession(path.join(dir, 'recordings'), warm, `warm-${id}`, false);

  const db: Db = await openDatabase({ pgliteDir: path.join(dir, 'pglite') });
  const closeDb = onCleanup('e2e pglite', () => db.destroy());
  const config = loadConfig({ env: {}, overrides: { DATA_DIR: dir, WHISPER_MODEL: baseModel, WHISPER_THREADS: 2, TRANSCODE_CONCURRENCY: 1 } });

  // Timing wrappers around the worker's two heavy dependencies (they change nothing else).
  const ffmpegRuns: { output: string; wallS: number }[] = [];
  const inner = new FluentFfmpegRunner();
  const ffmpegRunner: FfmpegRunner = {
    async run(job, o) {
      const t = performance.now();
      try {
        return await inner.run(job, o);
      } finally {
        ffmpegRuns.push({ output: path.basename(job.output).replace(/\.tmp$/, ''), wallS: (performance.now() - t) / 1000 });
      }
    },
  };
  const asrCalls: { wav: string; wallS: number }[] = [];
  const resolveModel = transcriberFromConfig(config);
  const transcriber = async (): Promise<Transcriber> => {
    // transcriberFromConfig resolves and verifies WHISPER_MODEL (and runs with fallback on);
    // the bench decodes greedily without temperature fallback, so the random weights'
    // meaningless text cannot multiply the decoder's work.
    await resolveModel();
    const t = createWhisperCppTranscriber({ ...whisperCppOptionsFromConfig(config), beamSize: 1, noFallback: true });
    return {
      threads: t.threads,
      async transcribe(input, o) {
        const s = performance.now();
        try {
          return await t.transcribe(input, o);
        } finally {
          asrCalls.push({ wav: input.wavPath, wallS: (performance.now() - s) / 1000 });
        }
      },
    };
  };

  const prefix = `vbt${randomBytes(4).toString('hex')}`;
  const worker = new TranscodeWorker({
    db,
    storage: new LocalArtifactStorage(path.join(dir, 'store')),
    ffmpeg: ffmpegRunner,
    workDir: path.join(dir, 'transcode-work'),
    logger: createLogger({ level: process.env.BENCH_LOG_LEVEL ?? 'warn', name: 'bench-transcode-worker' }),
    transcriber,
    redisUrl: BENCH_REDIS_URL,
    queuePrefix: prefix,
    concurrency: config.TRANSCODE_CONCURRENCY,
    lockMs: config.TRANSCODE_LOCK_MS,
  });
  const closeWorker = onCleanup('e2e transcode worker', async () => {
    await worker.close();
    await dropRedisPrefix(prefix).catch(() => {});
  });
  try {
    await worker.start();
    const store = new SessionStore(db);
    /** Meeting end as the recorder's endSession does it: register the sealed session, enqueue session.finalize. */
    const finish = async (s: typeof sealed) => {
      const t0 = performance.now();
      await store.registerSealed(s.manifest, s.manifestPath, s.sha256);
      const payload: SessionFinalizePayload = { v: 1, room: s.manifest.room, session: s.manifest.session, manifestPath: s.manifestPath, manifestSha256: s.sha256 };
      await worker.queue.add(SESSION_FINALIZE_JOB, payload, { jobId: finalizeJobId(s.manifest.session), attempts: 5, backoff: { type: 'exponential', delay: 5000 }, removeOnComplete: 1000 });
      const stages: Record<string, number> = {};
      const deadline = t0 + Math.min(600, Math.max(120, s.manifest.tracks.length * plan.e2eS)) * 1000;
      for (;;) {
        const row = await db.selectFrom('recording_sessions').select(['status', 'progress', 'transcript_status', 'error_code', 'error_message']).where('id', '=', s.manifest.session).executeTakeFirstOrThrow();
        const now = (performance.now() - t0) / 1000;
        const key = `${row.status}@${row.progress ?? 0}`;
        if (!(key in stages)) stages[key] = round(now, 3);
        if (row.status === 'done' || row.status === 'failed') {
          if (row.status !== 'done' || row.transcript_status !== (s === warmSealed ? 'skipped' : 'done')) throw new Error(`session ${s.manifest.session} ended ${row.status}/${row.transcript_status}: ${row.error_code} ${row.error_message}`);
          return { latencyS: now, stages, row };
        }
        if (performance.now() > deadline) throw new Error(`session ${s.manifest.session} not done after ${Math.round(now)} s (${key})`);
        await sleep(50);
      }
    };
    // Warm-up: a long-running worker has the model in the page cache and fluent-ffmpeg's
    // capability probe done (a short job without transcript).
    const w0 = performance.now();
    readFileSync(baseModel);
    await finish(warmSealed);
    const warmupS = (performance.now() - w0) / 1000;
    ffmpegRuns.length = 0;
    asrCalls.length = 0;

    // CPU of this process and its reaped children (ffmpeg, whisper-cli) over the job: with the
    // 2 cores to itself the job cannot take less wall time than half of it.
    const { value: r, span: cpu } = await measure(() => finish(sealed));
    const segments = await db.selectFrom('transcript_segments').select('seq').where('session_id', '=', sealed.manifest.session).execute();
    // What whisper-cli was given: the VAD spans of the pipeline's participant WAVs.
    const outDir = path.join(dir, 'transcode-work', sealed.manifest.room, sealed.manifest.session);
    let whisperRuns = 0;
    let asrAudioS = 0;
    let windows = 0;
    for (const f of readdirSync(outDir).filter((x) => x.endsWith('.16k.wav'))) {
      const file = path.join(outDir, f);
      const packing = packSpeechSpans(await detectSpeechInWav(file), parseWav(readFileSync(file), file).data.length / 2);
      if (packing.pieces.length === 0) continue;
      whisperRuns++;
      windows += packing.windows;
      asrAudioS += packing.totalSamples / SR;
    }
    const stageAt = (pct: number) => Object.entries(r.stages).find(([k]) => Number(k.split('@')[1]) >= pct)?.[1];
    const processingAt = Object.entries(r.stages).find(([k]) => k.startsWith('processing'))?.[1] ?? 0;
    const ffmpegS = ffmpegRuns.reduce((s, x) => s + x.wallS, 0);
    const asrS = asrCalls.reduce((s, x) => s + x.wallS, 0);
    const transcribeAt = stageAt(40);
    let calibration: EndToEnd['calibration'];
    if (plan.calibrate) {
      const clip = path.join(dir, 'calibration.wav');
      const clipS = await firstSpanClip(path.join(outDir, readdirSync(outDir).filter((x) => x.endsWith('.16k.wav')).sort()[0]!), clip);
      calibration = { clipS: round(clipS, 2), timings: await whisperTimings(config.WHISPER_CLI_BIN!, baseModel, clip, path.join(dir, 'calibration')) };
    }
    return {
      meetingS: plan.e2eS,
      latencyS: r.latencyS,
      pickupS: processingAt,
      pipelineS: transcribeAt !== undefined ? transcribeAt - processingAt : ffmpegS,
      outputsS: (stageAt(90) ?? r.latencyS) - (transcribeAt ?? processingAt),
      cpuS: cpu.cpuS,
      loadAvg: os.loadavg().map((x) => round(x, 2)),
      ffmpegS,
      ffmpegRuns: ffmpegRuns.map((x) => ({ output: x.output, wallS: round(x.wallS, 3) })),
      asrS,
      asrPerParticipantS: asrCalls.map((x) => round(x.wallS, 2)),
      whisperRuns,
      windows,
      asrAudioS,
      segments: segments.length,
      status: r.row.status,
      transcriptStatus: r.row.transcript_status,
      stages: r.stages,
      warmupS: round(warmupS, 2),
      ...(calibration ? { calibration } : {}),
    };
  } finally {
    await closeWorker();
    await closeDb();
  }
}
