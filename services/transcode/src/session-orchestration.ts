import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { UnrecoverableError } from 'bullmq';
import {
  PARTICIPANT_MUX_JOB,
  PARTICIPANT_TRANSCRIBE_JOB,
  SESSION_CLOCK_JOB,
  SESSION_COMPOSITE_JOB,
  TRACK_DEPACKETIZE_JOB,
  type FlowStep,
  type ParticipantMuxPayload,
  type ParticipantMuxResult,
  type ParticipantTranscribePayload,
  type ParticipantTranscribeResult,
  type SessionClockResult,
  type SessionCompositePayload,
  type SessionCompositeResult,
  type SessionFinalizePayload,
  type SessionRerenderPayload,
  type SessionRerenderResult,
  type StageArtifact,
  type StagePayload,
  type TrackDepacketizePayload,
  type TrackDepacketizeResult,
} from '../../lib/contracts/jobs.ts';
import type { Logger } from '../../lib/logger.ts';
import { transcriptFiles, type SpeakerSegment } from '../../lib/transcript/transcript-files.ts';
import { outDirOf, sessionStatus, upload, type StageName, type TranscodeDeps } from './session-stages.ts';

/**
 * The one orchestration of a session's stages (session-stages.ts), written once and run by
 * two drivers: the BullMQ flow (session-flow.ts: each step's stages are child jobs, the root
 * parks until they are done and replays this code to read their results) and the in-process
 * driver (in-process-driver.ts: the same steps called in order in one job). Two plans:
 *
 *   finalize:  clock → depacketize × tracks → mux × participants → composite ∥ transcribe × participants → register
 *   rerender:  clock → depacketize × tracks → composite (on the original timeline)             → the new composite
 */

export interface StageCall {
  name: StageName;
  /** Its id within the run (the flow's child job id ends with it). */
  id: string;
  payload: object;
}

export interface StepSpec {
  step: FlowStep;
  pct: number;
  stage: string;
  /** Side effects of starting the step (status, progress rows); run once, when its stages are started. */
  onStart?: () => Promise<void>;
}

export interface StageDriver {
  /** Runs one step's stages (at the same time where it can) and returns their results, each checked against its contract, in call order. */
  step(spec: StepSpec, calls: StageCall[]): Promise<unknown[]>;
  /** The root's own progress, for whoever watches the job. */
  report(pct: number, stage: string): Promise<void>;
  /** The run failed for good (e.g. no Whisper model yet): a manual retry must start fresh stages. */
  failedForGood(): Promise<void>;
}

export interface FinalizeOutcome {
  artifacts: number;
  segments: number;
  /** The session's warning (tracks cut to their arrival), if any: also on the session row. */
  warning?: { code: string; message: string };
}

/** The code a session carries when its RTP clock disagreed with arrival but usable media remained. */
export const CLOCK_WARNING_CODE = 'RTP_CLOCK_MISMATCH';

/**
 * A session processed despite tracks whose RTP clock disagreed with arrival: the warning it
 * carries in its error fields (status 'done': the remaining media is there), or undefined.
 */
export function clockWarning(anomalies: SessionClockResult['anomalies']): { code: string; message: string } | undefined {
  if (anomalies.length === 0) return undefined;
  const parts = anomalies.map((a) => {
    const what = [
      a.offClockPackets > 0 ? `${a.offClockPackets} packet(s) with RTP timestamps that disagree with their arrival` : '',
      a.outsideArrivalPackets > 0 ? `${a.outsideArrivalPackets} packet(s) placed outside their arrival window` : '',
      a.rejectedSenderReports > 0 ? `${a.rejectedSenderReports} sender report(s) far from arrival` : '',
    ].filter(Boolean);
    return `track ${a.track} (participant ${a.participant}): ${what.join(', ')} dropped${a.dropped ? '; no packet was usable, the track is left out' : ''}`;
  });
  return { code: CLOCK_WARNING_CODE, message: `warning: processed on the arrival clock; ${parts.join('; ')}` };
}

/**
 * A finalize that failed for good, whatever failed it (a stage out of retries, a stall
 * limit, a bug): the session leaves 'processing' with a code, the failure's own
 * ("CODE: message") or TRANSCODE_FAILED. A session a stage already marked keeps its code.
 */
export async function failSessionForGood(deps: Pick<TranscodeDeps, 'db'>, session: string, reason: string): Promise<void> {
  const code = /^([A-Z][A-Z0-9_]{2,}): /.exec(reason)?.[1] ?? 'TRANSCODE_FAILED';
  await deps.db
    .updateTable('recording_sessions')
    .set({ status: 'failed', error_code: code, error_message: reason.slice(0, 2000), updated_at: new Date() })
    .where('id', '=', session)
    .where('status', 'in', ['sealed', 'processing'])
    .execute();
}

const stageBase = (p: SessionFinalizePayload, purpose?: 'rerender'): StagePayload => ({ v: 1, room: p.room, session: p.session, manifestPath: p.manifestPath, manifestSha256: p.manifestSha256, ...(purpose ? { purpose } : {}) });

function trackCalls(base: StagePayload, clock: SessionClockResult): StageCall[] {
  return clock.tracks.map((t) => {
    const payload: TrackDepacketizePayload = { ...base, track: t.index, trackId: t.track, ntpOffsetUs: clock.ntpOffsetUs, originUs: clock.originUs };
    return { name: TRACK_DEPACKETIZE_JOB, id: `track${t.index}`, payload };
  });
}

/** Sealed recording → artifacts in storage → rows in the database (session.finalize). */
export async function finalizeSession(p: SessionFinalizePayload, deps: TranscodeDeps, driver: StageDriver, log: Logger): Promise<FinalizeOutcome> {
  const setStatus = sessionStatus(deps, p.session);
  const at = (step: FlowStep, pct: number, stage: string, status: Record<string, unknown> = {}): StepSpec => ({
    step,
    pct,
    stage,
    onStart: async () => {
      log.info({ pct, stage }, 'finalize progress');
      await setStatus({ ...status, progress: pct });
    },
  });
  const base = stageBase(p);
  const [clock] = (await driver.step(at('prepare', 5, 'clock', { status: 'processing', error_code: null, error_message: null }), [{ name: SESSION_CLOCK_JOB, id: 'clock', payload: base }])) as [SessionClockResult];
  const tracks = (await driver.step(at('tracks', 10, 'depacketize'), trackCalls(base, clock))) as TrackDepacketizeResult[];
  // Pieces in manifest track order, so artifacts keep one order however the stages ran.
  const pieces = tracks.flatMap((t) => t.pieces);
  const muxes = (await driver.step(
    at('mux', 25, 'mux'),
    clock.participants.map((who, i) => {
      const payload: ParticipantMuxPayload = { ...base, participant: who.id, durationSeconds: clock.durationSeconds, pieces: pieces.filter((x) => x.participant === who.id) };
      return { name: PARTICIPANT_MUX_JOB, id: `mux${i}`, payload };
    }),
  )) as ParticipantMuxResult[];
  // The composite renders while the participants are transcribed: ASR only needs the WAVs.
  const composite: SessionCompositePayload = { ...base, durationSeconds: clock.durationSeconds, pieces };
  const outputs: StageCall[] = [{ name: SESSION_COMPOSITE_JOB, id: 'composite', payload: composite }];
  if (clock.transcribe) {
    clock.participants.forEach((who, i) => {
      const wav = muxes[i]!.wav;
      if (!wav) return;
      const payload: ParticipantTranscribePayload = { v: 1, room: p.room, session: p.session, participant: who.id, speaker: who.name, language: clock.language, wav };
      outputs.push({ name: PARTICIPANT_TRANSCRIBE_JOB, id: `asr${i}`, payload });
    });
  }
  const [comp, ...asr] = (await driver.step(at('outputs', 40, 'composite+transcribe'), outputs)) as [SessionCompositeResult, ...ParticipantTranscribeResult[]];
  await driver.report(90, 'register');
  await setStatus({ progress: 90 });
  return register(p, deps, driver, log, { clock, tracks, muxes, comp, asr });
}

async function register(
  p: SessionFinalizePayload,
  deps: TranscodeDeps,
  driver: StageDriver,
  log: Logger,
  r: { clock: SessionClockResult; tracks: TrackDepacketizeResult[]; muxes: ParticipantMuxResult[]; comp: SessionCompositeResult; asr: ParticipantTranscribeResult[] },
): Promise<FinalizeOutcome> {
  const { clock } = r;
  const warning = clockWarning(clock.anomalies);
  if (warning) log.warn({ code: warning.code }, warning.message);
  // Tracks, participant files, composite, transcripts: one order, whichever driver ran the stages.
  const artifacts: StageArtifact[] = [...r.tracks.flatMap((t) => t.artifacts), ...r.muxes.flatMap((m) => m.artifacts), ...r.comp.artifacts];
  const modelError = r.asr.find((x) => x.status !== 'done');
  const transcriptStatus = !clock.transcribe ? 'skipped' : modelError ? modelError.status : 'done';
  const segments: SpeakerSegment[] = transcriptStatus === 'done' ? r.asr.flatMap((x) => x.segments).sort((a, b) => a.start - b.start || a.participant.localeCompare(b.participant)) : [];
  if (transcriptStatus === 'done') {
    const outDir = outDirOf(deps, p);
    mkdirSync(outDir, { recursive: true });
    for (const t of transcriptFiles(p.session, clock.language, segments)) {
      const file = path.join(outDir, t.name);
      writeFileSync(file, t.body);
      artifacts.push(await upload(deps, p, outDir, file, t.kind, null));
    }
  }
  await deps.db.transaction().execute(async (tx) => {
    await tx.deleteFrom('artifacts').where('session_id', '=', p.session).execute();
    await tx.deleteFrom('transcript_segments').where('session_id', '=', p.session).execute();
    if (artifacts.length > 0) {
      await tx
        .insertInto('artifacts')
        .values(artifacts.map((a) => ({ session_id: p.session, key: a.key, kind: a.kind, participant_id: a.participant, content_type: a.contentType, bytes: a.bytes, sha256: a.sha256, storage: a.storage, duration_seconds: a.durationSeconds, key_id: a.keyId ?? null })))
        .execute();
    }
    if (segments.length > 0) {
      await tx
        .insertInto('transcript_segments')
        .values(segments.map((s, i) => ({ session_id: p.session, seq: i, participant_id: s.participant, speaker: s.speaker, start_seconds: s.start, end_seconds: s.end, text: s.text, language: clock.language, words: s.words ? JSON.stringify(s.words) : null })))
        .execute();
    }
    await tx
      .updateTable('recording_sessions')
      .set(
        modelError
          ? { status: 'failed', error_code: modelError.error?.code ?? modelError.status, error_message: `${modelError.error?.message ?? ''} — ${modelError.error?.hint ?? ''}${warning ? ` (${warning.message})` : ''}`, transcript_status: transcriptStatus, progress: 100, updated_at: new Date() }
          : { status: 'done', error_code: warning?.code ?? null, error_message: warning?.message ?? null, transcript_status: transcriptStatus, progress: 100, updated_at: new Date() },
      )
      .where('id', '=', p.session)
      .execute();
  });
  if (transcriptStatus === 'done' && segments.length > 0 && deps.onTranscriptRegistered) await deps.onTranscriptRegistered(p.session);
  await driver.report(100, 'done');
  if (modelError) {
    // Media is done and stored; the transcript waits for the model. Retry the job after installing it.
    await driver.failedForGood();
    throw new UnrecoverableError(`${modelError.status}: ${modelError.error?.message ?? ''}`);
  }
  log.info({ artifacts: artifacts.length, segments: segments.length }, 'session finalized');
  return { artifacts: artifacts.length, segments: segments.length, ...(warning ? { warning } : {}) };
}

/**
 * The composite alone, from a (rewritten) manifest, on the session's original timeline
 * (session.rerender): the same stages as a finalize, in one encode with the composite
 * profile. It replaces the stored composite's bytes; its row is the caller's to update.
 */
export async function rerenderSession(p: SessionRerenderPayload, deps: TranscodeDeps, driver: StageDriver, log: Logger): Promise<SessionRerenderResult> {
  const base = stageBase(p, 'rerender');
  const [clock] = (await driver.step({ step: 'prepare', pct: 5, stage: 'clock' }, [{ name: SESSION_CLOCK_JOB, id: 'clock', payload: base }])) as [SessionClockResult];
  const tracks = (await driver.step({ step: 'tracks', pct: 15, stage: 'depacketize' }, trackCalls(base, clock))) as TrackDepacketizeResult[];
  const lead = p.timeline?.leadSeconds ?? 0;
  const durationSeconds = p.timeline?.durationSeconds ?? clock.durationSeconds;
  // Whole milliseconds, as every offset on the timeline is.
  const pieces = tracks.flatMap((t) => t.pieces).map((x) => ({ ...x, offset: Math.round((x.offset + lead) * 1000) / 1000 }));
  const payload: SessionCompositePayload = { ...base, durationSeconds, pieces };
  const [comp] = (await driver.step({ step: 'outputs', pct: 40, stage: 'composite' }, [{ name: SESSION_COMPOSITE_JOB, id: 'composite', payload }])) as [SessionCompositeResult];
  const composite = comp.artifacts.find((a) => a.kind === 'composite');
  if (!composite) throw new Error(`the composite stage of ${p.session} stored no composite`);
  await driver.report(100, 'done');
  log.info({ sha256: composite.sha256, durationSeconds, leadSeconds: lead }, 'composite re-rendered');
  return { v: 1, composite };
}
