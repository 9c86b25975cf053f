import { createWriteStream, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { UnrecoverableError } from 'bullmq';
import type { z } from 'zod';
import type { Db } from '../../../db/database.ts';
import {
  PARTICIPANT_MUX_JOB,
  PARTICIPANT_TRANSCRIBE_JOB,
  ParticipantMuxPayloadSchema,
  ParticipantMuxResultSchema,
  ParticipantTranscribePayloadSchema,
  ParticipantTranscribeResultSchema,
  SESSION_CLOCK_JOB,
  SESSION_COMPOSITE_JOB,
  SessionClockPayloadSchema,
  SessionClockResultSchema,
  SessionCompositePayloadSchema,
  SessionCompositeResultSchema,
  TRACK_DEPACKETIZE_JOB,
  TrackDepacketizePayloadSchema,
  TrackDepacketizeResultSchema,
  type ParticipantMuxPayload,
  type ParticipantMuxResult,
  type ParticipantTranscribePayload,
  type ParticipantTranscribeResult,
  type SessionClockResult,
  type SessionCompositePayload,
  type SessionCompositeResult,
  type StageArtifact,
  type StagePayload,
  type TrackDepacketizePayload,
  type TrackDepacketizeResult,
} from '../../lib/contracts/jobs.ts';
import { VerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { abortableRunner, type FfmpegRunner } from '../../lib/media/ffmpeg-runner.ts';
import { artifactKey, parseArtifactKey } from '../../lib/storage/artifact-keys.ts';
import { artifactContentType, type ArtifactKind } from '../../lib/storage/artifact-kinds.ts';
import { sha256File, type ArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { CorruptInputError, depacketizeTrack, muxParticipant, renderComposite, sessionClock, type MediaPiece } from './session-pipeline.ts';
import type { SessionLimits } from './session-limits.ts';
import type { Transcriber } from './transcriber/transcriber.ts';

/**
 * The stages of a session's processing, one function each, independent of how they are run:
 * the flow (session-flow.ts) runs each as its own BullMQ job, possibly on another host; the
 * in-process driver (in-process-driver.ts) calls them in order in one job. Each reads its
 * inputs from its payload (and from artifact storage when another host made them), writes to
 * deterministic paths and keys, and returns its result contract (services/lib/contracts/jobs.ts).
 */

export interface TranscodeDeps {
  db: Db;
  storage: ArtifactStorage;
  ffmpeg: FfmpegRunner;
  workDir: string;
  logger: Logger;
  /** Resolves the transcriber; throws MODEL_MISSING/MODEL_INVALID when it cannot. */
  transcriber: () => Promise<Transcriber>;
  /** What one session may cost (TRANSCODE_MAX_SESSION_*); default: the configuration's defaults. */
  limits?: SessionLimits;
  /**
   * Called once a session's transcript is registered (committed): the compliance service's
   * supervision runs its policies over it. A rejection fails the job, which retries the
   * finalize (registration and evaluation are both idempotent).
   */
  onTranscriptRegistered?: (session: string) => Promise<void>;
}

export interface StageContext {
  deps: TranscodeDeps;
  log: Logger;
  /** This stage's own progress (0-100), for whoever watches the job. */
  progress(pct: number): Promise<void>;
  /** Transcriptions running at once on this worker: each gets threads = budget / lanes. */
  asrLanes: number;
  /** Aborted when the job must stop (shutdown, lock lost, cancelled): its ffmpeg and whisper-cli children are killed. */
  signal?: AbortSignal;
}

type Session = { room: string; session: string };

export const outDirOf = (deps: TranscodeDeps, p: Session): string => path.join(deps.workDir, p.room, p.session);
/** A work file's artifact key: its path below the session's work dir is its name in the session. */
const keyOf = (p: Session, outDir: string, file: string) => artifactKey(p.room, p.session, path.relative(outDir, file).split(path.sep).join('/'));
/** The work file of a stored artifact: the inverse of keyOf. */
const fileOf = (outDir: string, key: string) => path.join(outDir, parseArtifactKey(key)!.name);

export function sessionStatus(deps: TranscodeDeps, session: string) {
  return (values: Record<string, unknown>) => deps.db.updateTable('recording_sessions').set({ ...values, updated_at: new Date() }).where('id', '=', session).execute();
}

/** Stores a work file under its deterministic key. */
export async function upload(deps: TranscodeDeps, p: Session, outDir: string, file: string, kind: ArtifactKind, participant: string | null, durationSeconds: number | null = null): Promise<StageArtifact> {
  const key = keyOf(p, outDir, file);
  const contentType = artifactContentType(kind, file);
  // Per-participant files under that participant's data key, session-wide ones (composite, transcripts) under the session's.
  const stored = await deps.storage.put(key, file, contentType, { encryptFor: { session: p.session, participant } });
  return { key, kind, participant, contentType, bytes: stored.bytes, sha256: stored.sha256, storage: deps.storage.name, durationSeconds, ...(stored.keyId ? { keyId: stored.keyId } : {}) };
}

/** The local copy of a stored artifact: kept when its hash matches, else fetched (another host made it). */
async function ensureLocal(deps: TranscodeDeps, key: string, sha256: string, file: string): Promise<void> {
  if (existsSync(file) && (await sha256File(file)).sha256 === sha256) return;
  mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.fetch.tmp`;
  await pipeline(await deps.storage.getStream(key), createWriteStream(tmp));
  const got = await sha256File(tmp);
  if (got.sha256 !== sha256) {
    rmSync(tmp, { force: true });
    throw new VerbatimError('INTERNAL', `stored artifact ${key} does not match the SHA-256 its stage recorded`, { hint: 'A later stage read a partial or replaced artifact; the job is retried.' });
  }
  renameSync(tmp, file);
}

/** A stage's pieces in this host's work dir (fetched from storage when another host made them). */
async function localPieces(deps: TranscodeDeps, p: Session, outDir: string, pieces: SessionCompositePayload['pieces']): Promise<MediaPiece[]> {
  const out: MediaPiece[] = [];
  for (const x of pieces) {
    const file = fileOf(outDir, x.key);
    await ensureLocal(deps, x.key, x.sha256, file);
    out.push({ participant: x.participant, kind: x.kind, file, offset: x.offset, duration: x.duration });
  }
  return out;
}

// ---- session.clock: one clock for every track ---------------------------------------------------

async function clockStage(p: StagePayload, ctx: StageContext): Promise<SessionClockResult> {
  const clock = await sessionClock(p.manifestPath, ctx.deps.limits, ctx.deps.storage);
  if (clock.anomalies.length > 0) ctx.log.warn({ anomalies: clock.anomalies }, 'RTP clock disagrees with arrival: packets dropped, tracks cut to their arrival');
  const m = clock.manifest;
  const names = new Map(m.participants.map((x) => [x.id, x.name]));
  const recOn = m.events.find((e) => e.type === 'recording-on');
  await ctx.progress(100);
  return {
    v: 1,
    ntpOffsetUs: clock.ntpOffsetUs,
    originUs: clock.originUs,
    durationSeconds: clock.durationSeconds,
    tracks: clock.tracks.map((index) => ({ index, track: m.tracks[index]!.track, participant: m.tracks[index]!.participant, kind: m.tracks[index]!.kind })),
    participants: [...new Set(clock.tracks.map((i) => m.tracks[i]!.participant))].sort().map((id) => ({ id, name: names.get(id) ?? id })),
    transcribe: recOn?.details.transcribe === true,
    language: typeof recOn?.details.language === 'string' ? recOn.details.language : 'en',
    anomalies: clock.anomalies,
  };
}

// ---- track.depacketize: one track's codec files ------------------------------------------------

async function trackStage(p: TrackDepacketizePayload, ctx: StageContext): Promise<TrackDepacketizeResult> {
  const { deps } = ctx;
  const outDir = outDirOf(deps, p);
  mkdirSync(outDir, { recursive: true });
  const r = await depacketizeTrack(p.manifestPath, p.track, p, outDir, deps.ffmpeg, undefined, p.trackId, deps.storage);
  const artifacts: StageArtifact[] = [];
  for (const f of r.files) artifacts.push(await upload(deps, p, outDir, f.path, f.kind, f.participant ?? null));
  const byPath = new Map(r.files.map((f, i) => [f.path, artifacts[i]!]));
  await ctx.progress(100);
  return {
    v: 1,
    track: p.trackId,
    pieces: r.pieces.map((x) => ({ participant: x.participant, kind: x.kind, key: byPath.get(x.file)!.key, sha256: byPath.get(x.file)!.sha256, offset: x.offset, duration: x.duration })),
    artifacts,
  };
}

// ---- participant.mux: one participant's A/V file and ASR WAV ----------------------------------

async function muxStage(p: ParticipantMuxPayload, ctx: StageContext): Promise<ParticipantMuxResult> {
  const { deps } = ctx;
  const outDir = outDirOf(deps, p);
  const pieces = await localPieces(deps, p, outDir, p.pieces);
  await ctx.progress(10);
  const files = await muxParticipant(p.participant, pieces, p.durationSeconds, outDir, deps.ffmpeg);
  const artifacts: StageArtifact[] = [];
  for (const f of files) artifacts.push(await upload(deps, p, outDir, f.path, f.kind, f.participant ?? null));
  const wav = artifacts.find((a) => a.kind === 'participant-wav');
  await ctx.progress(100);
  return { v: 1, participant: p.participant, artifacts, wav: wav ? { key: wav.key, sha256: wav.sha256 } : null };
}

// ---- session.composite: the room composite ------------------------------------------------------

async function compositeStage(p: SessionCompositePayload, ctx: StageContext): Promise<SessionCompositeResult> {
  const { deps } = ctx;
  const outDir = outDirOf(deps, p);
  const pieces = await localPieces(deps, p, outDir, p.pieces);
  await ctx.progress(10);
  const file = await renderComposite({ pieces, durationSeconds: p.durationSeconds, files: [] }, outDir, deps.ffmpeg);
  const artifact = await upload(deps, p, outDir, file, 'composite', null, p.durationSeconds);
  await ctx.progress(100);
  return { v: 1, artifacts: [artifact] };
}

// ---- participant.transcribe: one participant's transcript ---------------------------------------

async function transcribeStage(p: ParticipantTranscribePayload, ctx: StageContext): Promise<ParticipantTranscribeResult> {
  const { deps } = ctx;
  let transcriber;
  try {
    transcriber = await deps.transcriber();
  } catch (err) {
    // Not a failure of this stage: the media is fine, the transcript waits for the model.
    if (err instanceof VerbatimError && (err.code === 'MODEL_MISSING' || err.code === 'MODEL_INVALID')) {
      return { v: 1, participant: p.participant, status: err.code, error: { code: err.code, message: err.message, ...(err.hint ? { hint: err.hint } : {}) }, segments: [] };
    }
    throw err;
  }
  const outDir = outDirOf(deps, p);
  const wav = fileOf(outDir, p.wav.key);
  await ensureLocal(deps, p.wav.key, p.wav.sha256, wav);
  await ctx.progress(10);
  // The thread budget (WHISPER_THREADS) is shared by the transcriptions this worker runs at once.
  const threads = Math.max(1, Math.floor((transcriber.threads ?? 2) / Math.max(1, ctx.asrLanes)));
  const segs = await transcriber.transcribe({ wavPath: wav, language: p.language, offsetSeconds: 0 }, { threads, ...(ctx.signal ? { signal: ctx.signal } : {}) });
  await ctx.progress(100);
  return { v: 1, participant: p.participant, status: 'done', segments: segs.map((s) => ({ speaker: p.speaker, participant: p.participant, start: s.start, end: s.end, text: s.text, ...(s.words ? { words: s.words } : {}) })) };
}

// ---- the registry ---------------------------------------------------------------------------------

interface StageDef<P, R> {
  payload: z.ZodType<P>;
  result: z.ZodType<R>;
  /** 'asr': the transcode-asr queue (its own worker and concurrency); 'media': transcode. */
  queue: 'media' | 'asr';
  run(p: P, ctx: StageContext): Promise<R>;
}
// run() is a method (bivariant in its payload), so a stage of any contract fits the table's type.
const stage = <P, R>(d: StageDef<P, R>): StageDef<unknown, unknown> => d;

/** Every stage by its job name. */
export const STAGES = {
  [SESSION_CLOCK_JOB]: stage({ payload: SessionClockPayloadSchema, result: SessionClockResultSchema, queue: 'media', run: clockStage }),
  [TRACK_DEPACKETIZE_JOB]: stage({ payload: TrackDepacketizePayloadSchema, result: TrackDepacketizeResultSchema, queue: 'media', run: trackStage }),
  [PARTICIPANT_MUX_JOB]: stage({ payload: ParticipantMuxPayloadSchema, result: ParticipantMuxResultSchema, queue: 'media', run: muxStage }),
  [SESSION_COMPOSITE_JOB]: stage({ payload: SessionCompositePayloadSchema, result: SessionCompositeResultSchema, queue: 'media', run: compositeStage }),
  [PARTICIPANT_TRANSCRIBE_JOB]: stage({ payload: ParticipantTranscribePayloadSchema, result: ParticipantTranscribeResultSchema, queue: 'asr', run: transcribeStage }),
} as const;
export type StageName = keyof typeof STAGES;

export function isStageName(name: string): name is StageName {
  return Object.hasOwn(STAGES, name);
}

/**
 * Runs one stage on a payload checked against its contract. Input no retry can fix (a bad
 * payload, a corrupt recording, a session over its limits, a result outside its contract)
 * fails with an UnrecoverableError carrying its code first ("CORRUPT_RECORDING: ..."); for
 * a finalize, the session is marked failed with that code (a re-render leaves the session's
 * status alone: only the re-render failed). Every ffmpeg the stage runs dies with ctx.signal.
 */
export async function runStage(name: StageName, data: unknown, ctx: StageContext): Promise<unknown> {
  const def = STAGES[name];
  const parsed = def.payload.safeParse(data);
  if (!parsed.success) throw new UnrecoverableError(`BAD_PAYLOAD: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
  const run = ctx.signal ? { ...ctx, deps: { ...ctx.deps, ffmpeg: abortableRunner(ctx.deps.ffmpeg, ctx.signal) } } : ctx;
  try {
    const result = def.result.safeParse(await def.run(parsed.data, run));
    // The same input gives the same result: a retry cannot mend it.
    if (!result.success) throw new CorruptInputError(`${name} produced a result outside its contract: ${result.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    return result.data;
  } catch (err) {
    if (!(err instanceof CorruptInputError)) throw err;
    const p = parsed.data as Partial<StagePayload>;
    ctx.log.error({ code: err.errorCode, err: err.message, stage: name }, 'corrupt recording: failing without retry');
    if (p.session !== undefined && (p.purpose ?? 'finalize') === 'finalize') await sessionStatus(ctx.deps, p.session)({ status: 'failed', error_code: err.errorCode, error_message: err.message });
    throw new UnrecoverableError(`${err.errorCode}: ${err.message}`);
  }
}
