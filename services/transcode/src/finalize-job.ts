import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { UnrecoverableError, type Job } from 'bullmq';
import type { Db } from '../../../db/database.ts';
import { SessionFinalizePayloadSchema } from '../../lib/contracts/jobs.ts';
import { VerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import type { FfmpegRunner } from './media/ffmpeg-runner.ts';
import { CorruptInputError, runSessionPipeline, type PipelineResult } from './session-pipeline.ts';
import type { ArtifactStorage } from './storage/artifact-storage.ts';
import type { Transcriber } from './transcriber/transcriber.ts';
import { transcriptJson, transcriptText, transcriptVtt, type SpeakerSegment } from './transcript-formats.ts';

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
 * The `session.finalize` job: sealed recording → artifacts in storage → rows in the
 * database. Every path is derived from the session id and every artifact row is
 * replaced as a whole, so a rerun (retry, crash, reconciler) yields the same bytes and
 * no duplicate rows. Corrupt input fails once, unretried, with its code on the session.
 */
export async function processFinalizeJob(job: Job, deps: FinalizeDeps): Promise<{ artifacts: number; segments: number }> {
  const parsed = SessionFinalizePayloadSchema.safeParse(job.data);
  if (!parsed.success) throw new UnrecoverableError(`BAD_PAYLOAD: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
  const p = parsed.data;
  const log = deps.logger.child({ job: job.id, room: p.room, session: p.session });
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
    result = await runSessionPipeline(p.manifestPath, outDir, deps.ffmpeg, (pct, stage) => void progress(pct, stage));
  } catch (err) {
    if (err instanceof CorruptInputError) {
      log.error({ code: err.errorCode, err: err.message }, 'corrupt recording: failing without retry');
      await setStatus({ status: 'failed', error_code: err.errorCode, error_message: err.message });
      throw new UnrecoverableError(`${err.errorCode}: ${err.message}`);
    }
    throw err;
  }

  // Transcription: one per participant (speaker = participant, no diarization needed).
  const recOn = result.manifest.events.find((e) => e.type === 'recording-on');
  const wantTranscript = recOn?.details.transcribe === true;
  const language = typeof recOn?.details.language === 'string' ? recOn.details.language : 'en';
  const names = new Map(result.manifest.participants.map((x) => [x.id, x.name]));
  const segments: SpeakerSegment[] = [];
  let transcriptStatus = 'skipped';
  let modelError: VerbatimError | undefined;
  if (wantTranscript) {
    try {
      const transcriber = await deps.transcriber();
      for (const f of result.files.filter((x) => x.kind === 'participant-wav')) {
        const segs = await transcriber.transcribe({ wavPath: f.path, language, offsetSeconds: 0 });
        for (const s of segs) segments.push({ speaker: names.get(f.participant!) ?? f.participant!, participant: f.participant!, start: s.start, end: s.end, text: s.text });
      }
      segments.sort((a, b) => a.start - b.start || a.participant.localeCompare(b.participant));
      transcriptStatus = 'done';
    } catch (err) {
      if (err instanceof VerbatimError && (err.code === 'MODEL_MISSING' || err.code === 'MODEL_INVALID')) {
        modelError = err;
        transcriptStatus = err.code;
      } else throw err;
    }
  }
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
