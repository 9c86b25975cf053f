import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { UnrecoverableError, type Job } from 'bullmq';
import type { Db } from '../../../db/database.ts';
import { SessionFinalizePayloadSchema } from '../../lib/contracts/jobs.ts';
import { VerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import type { FfmpegRunner } from '../../lib/media/ffmpeg-runner.ts';
import { CorruptInputError, mapLimit, prepareSession, renderComposite, type PipelineResult } from './session-pipeline.ts';
import type { ArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import type { Transcriber } from './transcriber/transcriber.ts';
import { transcriptJson, transcriptText, transcriptVtt, type SpeakerSegment } from '../../lib/transcript/transcript-files.ts';

export interface FinalizeDeps {
  db: Db;
  storage: ArtifactStorage;
  ffmpeg: FfmpegRunner;
  workDir: string;
  logger: Logger;
  /** Resolves the transcriber; throws MODEL_MISSING/MODEL_INVALID when it cannot. */
  transcriber: () => Promise<Transcriber>;
}

const CONTENT_TYPES: Record<string, string> = { '.mp4': 'video/mp4', '.mkv': 'video/x-matroska', '.wav': 'audio/wav', '.ogg': 'audio/ogg', '.ivf': 'video/x-ivf', '.json': 'application/json', '.vtt': 'text/vtt', '.txt': 'text/plain' };

/**
 * The whole `session.finalize` work in one job (TranscodeWorker mode 'single', and a
 * one-call way to process a session in-process); the default is the flow of
 * session-flow.ts, which runs the same stages as child jobs. Sealed recording → artifacts in storage → rows in the
 * database. Every path is derived from the session id and every artifact row is
 * replaced as a whole, so a rerun (retry, crash, reconciler) yields the same bytes and
 * no duplicate rows. Corrupt input fails once, unretried, with its code on the session.
 */
export async function processFinalizeJob(job: Job, deps: FinalizeDeps): Promise<{ artifacts: number; segments: number }> {
  const parsed = SessionFinalizePayloadSchema.safeParse(job.data);
  if (!parsed.success) throw new UnrecoverableError(`BAD_PAYLOAD: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
  const p = parsed.data;
  const log = deps.logger.child({ job: job.id, room: p.room, session: p.session });
  const failIfCorrupt = async (err: unknown): Promise<unknown> => {
    if (!(err instanceof CorruptInputError)) return err;
    log.error({ code: err.errorCode, err: err.message }, 'corrupt recording: failing without retry');
    await setStatus({ status: 'failed', error_code: err.errorCode, error_message: err.message });
    return new UnrecoverableError(`${err.errorCode}: ${err.message}`);
  };
  const setStatus = (values: Record<string, unknown>) =>
    deps.db.updateTable('recording_sessions').set({ ...values, updated_at: new Date() }).where('id', '=', p.session).execute();
  const progress = async (pct: number, stage: string) => {
    log.info({ pct, stage }, 'finalize progress');
    await job.updateProgress({ pct, stage });
    await setStatus({ progress: pct });
  };

  await setStatus({ status: 'processing', error_code: null, error_message: null });
  const outDir = path.join(deps.workDir, p.room, p.session);
  mkdirSync(outDir, { recursive: true });
  let result: PipelineResult;
  try {
    result = await prepareSession(p.manifestPath, outDir, deps.ffmpeg, (pct, stage) => void progress(pct, stage));
  } catch (err) {
    throw await failIfCorrupt(err);
  }

  // The composite renders while the participants are transcribed: ASR only needs the WAVs.
  const recOn = result.manifest.events.find((e) => e.type === 'recording-on');
  const wantTranscript = recOn?.details.transcribe === true;
  const language = typeof recOn?.details.language === 'string' ? recOn.details.language : 'en';
  await progress(55, 'composite+transcribe');
  const composite = renderComposite(result, outDir, deps.ffmpeg).then(
    () => undefined,
    (err: unknown) => err,
  );
  let asr: ParticipantsTranscript | undefined;
  let asrError: unknown;
  try {
    asr = wantTranscript ? await transcribeParticipants(result, language, deps, log) : { segments: [], status: 'skipped' };
  } catch (err) {
    asrError = err;
  }
  // Whatever ASR did, the composite is not left running behind the job.
  const compositeError = await composite;
  if (compositeError !== undefined) throw await failIfCorrupt(compositeError);
  if (!asr) throw asrError;
  const { segments, status: transcriptStatus, modelError } = asr;
  const files = [...result.files];
  if (transcriptStatus === 'done') {
    for (const [name, body] of [
      ['transcript.json', transcriptJson(p.session, language, segments)],
      ['transcript.vtt', transcriptVtt(segments)],
      ['transcript.txt', transcriptText(segments)],
    ] as const) {
      const file = path.join(outDir, name);
      writeFileSync(file, body);
      files.push({ kind: 'composite', path: file });
    }
  }
  await progress(90, 'upload');

  const rows: { session_id: string; key: string; kind: string; participant_id: string | null; content_type: string; bytes: number; sha256: string; storage: string; duration_seconds: number | null }[] = [];
  for (const f of files) {
    const rel = path.relative(outDir, f.path).split(path.sep).join('/');
    const key = `sessions/${p.room}/${p.session}/${rel}`;
    const stored = await deps.storage.put(key, f.path, CONTENT_TYPES[path.extname(f.path)] ?? 'application/octet-stream');
    const kind = rel.startsWith('transcript.') ? `transcript-${path.extname(rel).slice(1)}` : f.kind;
    rows.push({
      session_id: p.session,
      key,
      kind,
      participant_id: f.participant ?? null,
      content_type: CONTENT_TYPES[path.extname(f.path)] ?? 'application/octet-stream',
      bytes: stored.bytes,
      sha256: stored.sha256,
      storage: deps.storage.name,
      duration_seconds: kind === 'composite' && rel === 'composite.mp4' ? result.durationSeconds : null,
    });
  }
  await deps.db.transaction().execute(async (tx) => {
    await tx.deleteFrom('artifacts').where('session_id', '=', p.session).execute();
    await tx.deleteFrom('transcript_segments').where('session_id', '=', p.session).execute();
    if (rows.length > 0) await tx.insertInto('artifacts').values(rows).execute();
    if (segments.length > 0) {
      await tx
        .insertInto('transcript_segments')
        .values(segments.map((s, i) => ({ session_id: p.session, seq: i, participant_id: s.participant, speaker: s.speaker, start_seconds: s.start, end_seconds: s.end, text: s.text, language })))
        .execute();
    }
    await tx
      .updateTable('recording_sessions')
      .set(
        modelError
          ? { status: 'failed', error_code: modelError.code, error_message: `${modelError.message} — ${modelError.hint ?? ''}`, transcript_status: transcriptStatus, progress: 100, updated_at: new Date() }
          : { status: 'done', transcript_status: transcriptStatus, progress: 100, updated_at: new Date() },
      )
      .where('id', '=', p.session)
      .execute();
  });
  await job.updateProgress({ pct: 100, stage: 'done' });
  if (modelError) {
    // Media is done and stored; the transcript waits for the model. Re-enqueue after installing it.
    throw new UnrecoverableError(`${modelError.code}: ${modelError.message}`);
  }
  log.info({ artifacts: rows.length, segments: segments.length }, 'session finalized');
  return { artifacts: rows.length, segments: segments.length };
}

interface ParticipantsTranscript {
  segments: SpeakerSegment[];
  status: string;
  modelError?: VerbatimError;
}

/**
 * One transcription per participant (speaker = participant, no diarization needed),
 * several at once within the transcriber's thread budget: with 2 threads, two
 * single-threaded whisper-cli runs get more done than one run on two threads.
 */
async function transcribeParticipants(result: PipelineResult, language: string, deps: FinalizeDeps, log: Logger): Promise<ParticipantsTranscript> {
  const names = new Map(result.manifest.participants.map((x) => [x.id, x.name]));
  let transcriber: Transcriber;
  try {
    transcriber = await deps.transcriber();
  } catch (err) {
    if (err instanceof VerbatimError && (err.code === 'MODEL_MISSING' || err.code === 'MODEL_INVALID')) return { segments: [], status: err.code, modelError: err };
    throw err;
  }
  const wavs = result.files.filter((x) => x.kind === 'participant-wav');
  const budget = Math.max(1, transcriber.threads ?? 2);
  const lanes = Math.max(1, Math.min(wavs.length, budget));
  const threads = Math.max(1, Math.floor(budget / lanes));
  const ac = new AbortController();
  const started = performance.now();
  const perWav = await mapLimit(wavs, lanes, async (f) => {
    try {
      const segs = await transcriber.transcribe({ wavPath: f.path, language, offsetSeconds: 0 }, { signal: ac.signal, threads });
      return segs.map((s) => ({ speaker: names.get(f.participant!) ?? f.participant!, participant: f.participant!, start: s.start, end: s.end, text: s.text }));
    } catch (err) {
      ac.abort(err); // one failure stops the others' whisper-cli runs
      throw err;
    }
  });
  const segments = perWav.flat().sort((a, b) => a.start - b.start || a.participant.localeCompare(b.participant));
  log.info({ participants: wavs.length, lanes, threads, seconds: Math.round(performance.now() - started) / 1000 }, 'transcribed');
  return { segments, status: 'done' };
}
