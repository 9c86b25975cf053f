import { createWriteStream, existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { FlowProducer, UnrecoverableError, WaitingChildrenError, type FlowJob, type Job, type JobsOptions } from 'bullmq';
import {
  PARTICIPANT_MUX_JOB,
  PARTICIPANT_TRANSCRIBE_JOB,
  ParticipantMuxPayloadSchema,
  ParticipantMuxResultSchema,
  ParticipantTranscribePayloadSchema,
  ParticipantTranscribeResultSchema,
  SESSION_CLOCK_JOB,
  SESSION_COMPOSITE_JOB,
  SessionClockResultSchema,
  SessionCompositePayloadSchema,
  SessionCompositeResultSchema,
  SessionFlowRootSchema,
  TRACK_DEPACKETIZE_JOB,
  TrackDepacketizePayloadSchema,
  TrackDepacketizeResultSchema,
  finalizeJobId,
  stageJobId,
  type FlowStep,
  type ParticipantMuxPayload,
  type ParticipantMuxResult,
  type ParticipantTranscribePayload,
  type ParticipantTranscribeResult,
  type SessionCompositePayload,
  type SessionClockResult,
  type SessionFinalizePayload,
  type StageArtifact,
  type TrackDepacketizePayload,
  type TrackDepacketizeResult,
} from '../../lib/contracts/jobs.ts';
import { VerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import type { FinalizeDeps } from './finalize-job.ts';
import { CorruptInputError, depacketizeTrack, muxParticipant, renderComposite, sessionClock, type MediaPiece } from './session-pipeline.ts';
import { artifactKey, parseArtifactKey } from '../../lib/storage/artifact-keys.ts';
import { artifactContentType, transcriptKind, type ArtifactKind } from '../../lib/storage/artifact-kinds.ts';
import { sha256File } from '../../lib/storage/artifact-storage.ts';
import { transcriptJson, transcriptText, transcriptVtt, type SpeakerSegment } from '../../lib/transcript/transcript-files.ts';

/**
 * The `session.finalize` flow (contract in services/lib/contracts/jobs.ts). The root job
 * is a small state machine kept in its own data (`flowStep`): it adds the next stage's
 * children with a FlowProducer, parks itself in BullMQ's waiting-children state, and is
 * processed again once they are done. Children have retries with exponential backoff; a
 * child that fails for good (corrupt input: UnrecoverableError) wakes the root
 * (continueParentOnFailure), which fails with that child's code. Every stage writes to
 * deterministic paths and keys, so any rerun — retry, stalled job taken over after a
 * crash, reconciler — gives byte-identical artifacts and replaces the rows as a whole.
 */

export interface FlowContext {
  flows: FlowProducer;
  /** Qualified names (prefix:name) are built by BullMQ; these are the plain queue names. */
  mediaQueue: string;
  asrQueue: string;
  /** ASR jobs one worker runs at once: each gets threads = budget / this. */
  asrConcurrency: number;
}


export const STAGE_JOB_OPTIONS: JobsOptions = { attempts: 5, backoff: { type: 'exponential', delay: 2000 }, continueParentOnFailure: true, removeOnComplete: { age: 7 * 24 * 3600 }, removeOnFail: { age: 30 * 24 * 3600 } };

const outDirOf = (deps: FinalizeDeps, p: { room: string; session: string }) => path.join(deps.workDir, p.room, p.session);
/** A work file's artifact key: its path below the session's work dir is its name in the session. */
const keyOf = (p: { room: string; session: string }, outDir: string, file: string) => artifactKey(p.room, p.session, path.relative(outDir, file).split(path.sep).join('/'));
/** The work file of a stored artifact: the inverse of keyOf. */
const fileOf = (outDir: string, key: string) => path.join(outDir, parseArtifactKey(key)!.name);

function sessionStatus(deps: FinalizeDeps, session: string) {
  return (values: Record<string, unknown>) => deps.db.updateTable('recording_sessions').set({ ...values, updated_at: new Date() }).where('id', '=', session).execute();
}

async function upload(deps: FinalizeDeps, p: { room: string; session: string }, outDir: string, file: string, kind: ArtifactKind, participant: string | null, durationSeconds: number | null = null): Promise<StageArtifact> {
  const key = keyOf(p, outDir, file);
  const contentType = artifactContentType(kind, file);
  const stored = await deps.storage.put(key, file, contentType);
  return { key, kind, participant, contentType, bytes: stored.bytes, sha256: stored.sha256, storage: deps.storage.name, durationSeconds };
}

/** The local copy of a stored artifact: kept when its hash matches, else fetched (another host made it). */
async function ensureLocal(deps: FinalizeDeps, key: string, sha256: string, file: string): Promise<void> {
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

function corruptToUnrecoverable(deps: FinalizeDeps, session: string, log: Logger) {
  return async (err: unknown): Promise<unknown> => {
    if (!(err instanceof CorruptInputError)) return err;
    log.error({ code: err.errorCode, err: err.message }, 'corrupt recording: failing without retry');
    await sessionStatus(deps, session)({ status: 'failed', error_code: err.errorCode, error_message: err.message });
    return new UnrecoverableError(`${err.errorCode}: ${err.message}`);
  };
}

// ---- stage 1: one clock for every track ---------------------------------------------------------

export async function processClockJob(job: Job, deps: FinalizeDeps): Promise<SessionClockResult> {
  const parsed = SessionFlowRootSchema.safeParse(job.data);
  if (!parsed.success) throw new UnrecoverableError(`BAD_PAYLOAD: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
  const p = parsed.data;
  const log = deps.logger.child({ job: job.id, session: p.session, stage: 'clock' });
  let clock;
  try {
    clock = sessionClock(p.manifestPath);
  } catch (err) {
    throw await corruptToUnrecoverable(deps, p.session, log)(err);
  }
  const m = clock.manifest;
  const names = new Map(m.participants.map((x) => [x.id, x.name]));
  const recOn = m.events.find((e) => e.type === 'recording-on');
  await job.updateProgress({ pct: 100, stage: 'clock' });
  return {
    v: 1,
    ntpOffsetUs: clock.ntpOffsetUs,
    originUs: clock.originUs,
    durationSeconds: clock.durationSeconds,
    tracks: clock.tracks.map((index) => ({ index, track: m.tracks[index]!.track, participant: m.tracks[index]!.participant, kind: m.tracks[index]!.kind })),
    participants: [...new Set(clock.tracks.map((i) => m.tracks[i]!.participant))].sort().map((id) => ({ id, name: names.get(id) ?? id })),
    transcribe: recOn?.details.transcribe === true,
    language: typeof recOn?.details.language === 'string' ? recOn.details.language : 'en',
  };
}

// ---- stage 2: one track's codec files --------------------------------------------------------------

export async function processTrackJob(job: Job, deps: FinalizeDeps): Promise<TrackDepacketizeResult> {
  const parsed = TrackDepacketizePayloadSchema.safeParse(job.data);
  if (!parsed.success) throw new UnrecoverableError(`BAD_PAYLOAD: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
  const p = parsed.data;
  const log = deps.logger.child({ job: job.id, session: p.session, stage: 'track', track: p.trackId });
  const outDir = outDirOf(deps, p);
  mkdirSync(outDir, { recursive: true });
  const r = await depacketizeTrack(p.manifestPath, p.track, p, outDir, deps.ffmpeg, undefined, p.trackId).catch(async (err: unknown) => {
    throw await corruptToUnrecoverable(deps, p.session, log)(err);
  });
  const artifacts: StageArtifact[] = [];
  for (const f of r.files) artifacts.push(await upload(deps, p, outDir, f.path, f.kind, f.participant ?? null));
  const byPath = new Map(r.files.map((f, i) => [f.path, artifacts[i]!]));
  await job.updateProgress({ pct: 100, stage: 'track' });
  return {
    v: 1,
    track: p.trackId,
    pieces: r.pieces.map((x) => ({ participant: x.participant, kind: x.kind, key: byPath.get(x.file)!.key, sha256: byPath.get(x.file)!.sha256, offset: x.offset, duration: x.duration })),
    artifacts,
  };
}

/** A stage's pieces in this host's work dir (fetched from storage when another host made them). */
async function localPieces(deps: FinalizeDeps, p: { room: string; session: string }, outDir: string, pieces: SessionCompositePayload['pieces']): Promise<MediaPiece[]> {
  const out: MediaPiece[] = [];
  for (const x of pieces) {
    const file = fileOf(outDir, x.key);
    await ensureLocal(deps, x.key, x.sha256, file);
    out.push({ participant: x.participant, kind: x.kind, file, offset: x.offset, duration: x.duration });
  }
  return out;
}

// ---- stage 3: one participant's A/V file and ASR WAV -----------------------------------------------

export async function processMuxJob(job: Job, deps: FinalizeDeps): Promise<ParticipantMuxResult> {
  const parsed = ParticipantMuxPayloadSchema.safeParse(job.data);
  if (!parsed.success) throw new UnrecoverableError(`BAD_PAYLOAD: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
  const p = parsed.data;
  const outDir = outDirOf(deps, p);
  const pieces = await localPieces(deps, p, outDir, p.pieces);
  await job.updateProgress({ pct: 10, stage: 'mux' });
  const files = await muxParticipant(p.participant, pieces, p.durationSeconds, outDir, deps.ffmpeg);
  const artifacts: StageArtifact[] = [];
  for (const f of files) artifacts.push(await upload(deps, p, outDir, f.path, f.kind, f.participant ?? null));
  const wav = artifacts.find((a) => a.kind === 'participant-wav');
  await job.updateProgress({ pct: 100, stage: 'mux' });
  return { v: 1, participant: p.participant, artifacts, wav: wav ? { key: wav.key, sha256: wav.sha256 } : null };
}

// ---- stage 4a: the composite ------------------------------------------------------------------

export async function processCompositeJob(job: Job, deps: FinalizeDeps): Promise<{ v: 1; artifacts: StageArtifact[] }> {
  const parsed = SessionCompositePayloadSchema.safeParse(job.data);
  if (!parsed.success) throw new UnrecoverableError(`BAD_PAYLOAD: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
  const p = parsed.data;
  const outDir = outDirOf(deps, p);
  const pieces = await localPieces(deps, p, outDir, p.pieces);
  await job.updateProgress({ pct: 10, stage: 'composite' });
  const file = await renderComposite({ pieces, durationSeconds: p.durationSeconds, files: [] }, outDir, deps.ffmpeg);
  const artifact = await upload(deps, p, outDir, file, 'composite', null, p.durationSeconds);
  await job.updateProgress({ pct: 100, stage: 'composite' });
  return { v: 1, artifacts: [artifact] };
}

// ---- stage 4b: one participant's transcript -----------------------------------------------------

export async function processTranscribeJob(job: Job, deps: FinalizeDeps, asrConcurrency: number): Promise<ParticipantTranscribeResult> {
  const parsed = ParticipantTranscribePayloadSchema.safeParse(job.data);
  if (!parsed.success) throw new UnrecoverableError(`BAD_PAYLOAD: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
  const p = parsed.data;
  let transcriber;
  try {
    transcriber = await deps.transcriber();
  } catch (err) {
    // Not a failure of this job: the media is fine, the transcript waits for the model.
    if (err instanceof VerbatimError && (err.code === 'MODEL_MISSING' || err.code === 'MODEL_INVALID')) {
      return { v: 1, participant: p.participant, status: err.code, error: { code: err.code, message: err.message, ...(err.hint ? { hint: err.hint } : {}) }, segments: [] };
    }
    throw err;
  }
  const outDir = outDirOf(deps, p);
  const wav = fileOf(outDir, p.wav.key);
  await ensureLocal(deps, p.wav.key, p.wav.sha256, wav);
  await job.updateProgress({ pct: 10, stage: 'transcribe' });
  // The thread budget (WHISPER_THREADS) is shared by the ASR jobs this worker runs at once.
  const threads = Math.max(1, Math.floor((transcriber.threads ?? 2) / Math.max(1, asrConcurrency)));
  const segs = await transcriber.transcribe({ wavPath: wav, language: p.language, offsetSeconds: 0 }, { threads });
  await job.updateProgress({ pct: 100, stage: 'transcribe' });
  return { v: 1, participant: p.participant, status: 'done', segments: segs.map((s) => ({ speaker: p.speaker, participant: p.participant, start: s.start, end: s.end, text: s.text })) };
}

// ---- the root ---------------------------------------------------------------------------------

function childValue<T>(values: Record<string, unknown>, childId: string, schema: { parse(x: unknown): T }): T | undefined {
  const hit = Object.entries(values).find(([k]) => k.endsWith(`:${childId}`));
  return hit ? schema.parse(hit[1]) : undefined;
}

export async function processFinalizeFlow(job: Job, token: string | undefined, deps: FinalizeDeps, ctx: FlowContext): Promise<{ artifacts: number; segments: number }> {
  const parsed = SessionFlowRootSchema.safeParse(job.data);
  if (!parsed.success) throw new UnrecoverableError(`BAD_PAYLOAD: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
  const data = parsed.data;
  const p: SessionFinalizePayload = { v: 1, room: data.room, session: data.session, manifestPath: data.manifestPath, manifestSha256: data.manifestSha256 };
  const log = deps.logger.child({ job: job.id, room: p.room, session: p.session });
  const setStatus = sessionStatus(deps, p.session);
  const parent = { id: job.id!, queue: job.queueQualifiedName };
  const progress = async (pct: number, stage: string) => {
    log.info({ pct, stage }, 'finalize progress');
    await job.updateProgress({ pct, stage });
    await setStatus({ progress: pct });
  };
  const child = (name: string, queueName: string, jobId: string, childData: object): FlowJob => ({ name, queueName, data: childData, opts: { ...STAGE_JOB_OPTIONS, jobId, parent } });
  /** Parks the root until its children are done (returns when they already are); fails it when one failed for good. */
  const waitForChildren = async (): Promise<void> => {
    // Only this run's stages count: a retried root keeps its earlier runs' children.
    const failed = Object.entries(await job.getFailedChildrenValues()).filter(([k]) => runOf(k.slice(k.lastIndexOf(':') + 1)) === run);
    const reason = failed[0]?.[1];
    if (reason !== undefined) {
      // A stage failed for good (its own code first: "CORRUPT_RECORDING: ..."). Nothing to retry here.
      await failForGood();
      throw new UnrecoverableError(String(reason));
    }
    if (token && (await job.moveToWaitingChildren(token))) throw new WaitingChildrenError();
  };
  const run = data.flowRun ?? 0;
  const id = (stage: string) => stageJobId(p.session, stage, run);
  const runOf = (childId: string) => Number(/^(\d+)\./.exec(childId.slice(finalizeJobId(p.session).length + 1))?.[1] ?? 0);
  /** A manual retry of a failed root starts over with new stage jobs (e.g. once the Whisper model is installed). */
  const failForGood = () => job.updateData({ ...data, flowStep: 'prepare', flowRun: run + 1 });
  const goTo = async (step: FlowStep) => {
    await job.updateData({ ...data, flowStep: step });
    data.flowStep = step;
  };

  let step: FlowStep = data.flowStep ?? 'prepare';
  for (;;) {
    if (step === 'prepare') {
      await setStatus({ status: 'processing', error_code: null, error_message: null });
      await progress(5, 'clock');
      await ctx.flows.add(child(SESSION_CLOCK_JOB, ctx.mediaQueue, id('clock'), p));
      await goTo('tracks');
      await waitForChildren();
      step = 'tracks';
    } else if (step === 'tracks') {
      await waitForChildren();
      const clock = childValue(await job.getChildrenValues(), id('clock'), SessionClockResultSchema);
      if (!clock) throw new Error(`the clock stage of ${p.session} left no result`);
      await progress(10, 'depacketize');
      await ctx.flows.addBulk(
        clock.tracks.map((t) => {
          const payload: TrackDepacketizePayload = { ...p, track: t.index, trackId: t.track, ntpOffsetUs: clock.ntpOffsetUs, originUs: clock.originUs };
          return child(TRACK_DEPACKETIZE_JOB, ctx.mediaQueue, id(`track${t.index}`), payload);
        }),
      );
      await goTo('mux');
      await waitForChildren();
      step = 'mux';
    } else if (step === 'mux') {
      await waitForChildren();
      const { clock, pieces } = stageResults(await job.getChildrenValues(), p.session, id);
      await progress(25, 'mux');
      await ctx.flows.addBulk(
        clock.participants.map((who, i) => {
          const payload: ParticipantMuxPayload = { ...p, participant: who.id, durationSeconds: clock.durationSeconds, pieces: pieces.filter((x) => x.participant === who.id) };
          return child(PARTICIPANT_MUX_JOB, ctx.mediaQueue, id(`mux${i}`), payload);
        }),
      );
      await goTo('outputs');
      await waitForChildren();
      step = 'outputs';
    } else if (step === 'outputs') {
      await waitForChildren();
      const values = await job.getChildrenValues();
      const { clock, pieces } = stageResults(values, p.session, id);
      await progress(40, 'composite+transcribe');
      const composite: SessionCompositePayload = { ...p, durationSeconds: clock.durationSeconds, pieces };
      const children: FlowJob[] = [child(SESSION_COMPOSITE_JOB, ctx.mediaQueue, id('composite'), composite)];
      if (clock.transcribe) {
        clock.participants.forEach((who, i) => {
          const mux = childValue(values, id(`mux${i}`), ParticipantMuxResultSchema);
          if (!mux?.wav) return;
          const payload: ParticipantTranscribePayload = { v: 1, room: p.room, session: p.session, participant: who.id, speaker: who.name, language: clock.language, wav: mux.wav };
          children.push(child(PARTICIPANT_TRANSCRIBE_JOB, ctx.asrQueue, id(`asr${i}`), payload));
        });
      }
      await ctx.flows.addBulk(children);
      await goTo('register');
      await waitForChildren();
      step = 'register';
    } else {
      await waitForChildren();
      return register(job, deps, p, log, progress, id, failForGood);
    }
  }
}

/** The clock and every track's result, in manifest track order (so pieces and artifacts keep the single-process order). */
function stageResults(values: Record<string, unknown>, session: string, id: (stage: string) => string): { clock: SessionClockResult; tracks: TrackDepacketizeResult[]; pieces: TrackDepacketizeResult['pieces'] } {
  const clock = childValue(values, id('clock'), SessionClockResultSchema);
  if (!clock) throw new Error(`the clock stage of ${session} left no result`);
  const tracks = clock.tracks.map((t) => {
    const r = childValue(values, id(`track${t.index}`), TrackDepacketizeResultSchema);
    if (!r) throw new Error(`the depacketize stage of track ${t.track} of ${session} left no result`);
    return r;
  });
  return { clock, tracks, pieces: tracks.flatMap((t) => t.pieces) };
}

async function register(
  job: Job,
  deps: FinalizeDeps,
  p: SessionFinalizePayload,
  log: Logger,
  progress: (pct: number, stage: string) => Promise<void>,
  id: (stage: string) => string,
  failForGood: () => Promise<void>,
): Promise<{ artifacts: number; segments: number }> {
  const values = await job.getChildrenValues();
  const { clock, tracks } = stageResults(values, p.session, id);
  const comp = childValue(values, id('composite'), SessionCompositeResultSchema);
  if (!comp) throw new Error(`the composite result of ${p.session} is missing`);
  const muxes = clock.participants.map((_, i) => childValue(values, id(`mux${i}`), ParticipantMuxResultSchema));
  if (muxes.some((x) => !x)) throw new Error(`a participant mux result of ${p.session} is missing`);
  const asrIds = clock.transcribe ? clock.participants.flatMap((_, i) => (muxes[i]!.wav ? [id(`asr${i}`)] : [])) : [];
  const asr = asrIds.map((x) => childValue(values, x, ParticipantTranscribeResultSchema));
  if (asr.some((x) => !x)) throw new Error(`a transcription result of ${p.session} is missing`);
  await progress(90, 'register');

  // Same order as the single-process pipeline: tracks, participant files, composite, transcripts.
  const artifacts = [...tracks.flatMap((t) => t.artifacts), ...muxes.flatMap((m) => m!.artifacts), ...comp.artifacts];
  const modelError = asr.find((x) => x!.status !== 'done');
  const transcriptStatus = !clock.transcribe ? 'skipped' : modelError ? modelError.status : 'done';
  const segments: SpeakerSegment[] = transcriptStatus === 'done' ? asr.flatMap((x) => x!.segments).sort((a, b) => a.start - b.start || a.participant.localeCompare(b.participant)) : [];
  if (transcriptStatus === 'done') {
    const outDir = outDirOf(deps, p);
    mkdirSync(outDir, { recursive: true });
    for (const [name, body] of [
      ['transcript.json', transcriptJson(p.session, clock.language, segments)],
      ['transcript.vtt', transcriptVtt(segments)],
      ['transcript.txt', transcriptText(segments)],
    ] as const) {
      const file = path.join(outDir, name);
      writeFileSync(file, body);
      artifacts.push(await upload(deps, p, outDir, file, transcriptKind(name), null));
    }
  }
  await deps.db.transaction().execute(async (tx) => {
    await tx.deleteFrom('artifacts').where('session_id', '=', p.session).execute();
    await tx.deleteFrom('transcript_segments').where('session_id', '=', p.session).execute();
    if (artifacts.length > 0) {
      await tx
        .insertInto('artifacts')
        .values(artifacts.map((a) => ({ session_id: p.session, key: a.key, kind: a.kind, participant_id: a.participant, content_type: a.contentType, bytes: a.bytes, sha256: a.sha256, storage: a.storage, duration_seconds: a.durationSeconds })))
        .execute();
    }
    if (segments.length > 0) {
      await tx
        .insertInto('transcript_segments')
        .values(segments.map((s, i) => ({ session_id: p.session, seq: i, participant_id: s.participant, speaker: s.speaker, start_seconds: s.start, end_seconds: s.end, text: s.text, language: clock.language })))
        .execute();
    }
    await tx
      .updateTable('recording_sessions')
      .set(
        modelError
          ? { status: 'failed', error_code: modelError.error?.code ?? modelError.status, error_message: `${modelError.error?.message ?? ''} — ${modelError.error?.hint ?? ''}`, transcript_status: transcriptStatus, progress: 100, updated_at: new Date() }
          : { status: 'done', transcript_status: transcriptStatus, progress: 100, updated_at: new Date() },
      )
      .where('id', '=', p.session)
      .execute();
  });
  await job.updateProgress({ pct: 100, stage: 'done' });
  if (modelError) {
    // Media is done and stored; the transcript waits for the model. Retry the job after installing it.
    await failForGood();
    throw new UnrecoverableError(`${modelError.status}: ${modelError.error?.message ?? ''}`);
  }
  log.info({ artifacts: artifacts.length, segments: segments.length }, 'session finalized');
  return { artifacts: artifacts.length, segments: segments.length };
}
