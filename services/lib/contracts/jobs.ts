import { z } from 'zod';

/** BullMQ queue and job contracts between the recorder and the transcoder (v1). */
export const TRANSCODE_QUEUE = 'transcode';
export const SESSION_FINALIZE_JOB = 'session.finalize';

export const SessionFinalizePayloadSchema = z.object({
  v: z.literal(1),
  room: z.string(),
  session: z.string(),
  /** Absolute path of the sealed session's manifest.json on the recorder host. */
  manifestPath: z.string(),
  manifestSha256: z.string().regex(/^[0-9a-f]{64}$/),
});
export type SessionFinalizePayload = z.output<typeof SessionFinalizePayloadSchema>;

/** Deterministic job id: enqueueing the same session twice is a no-op. */
export const finalizeJobId = (session: string): string => `finalize.${session}`;

/**
 * The per-session flow (v1). `session.finalize` is the flow's root: it adds its stages as
 * child jobs and waits for them (BullMQ parent/child), then registers the results:
 *
 *   session.finalize ─┬─ session.clock                        every track's wall-clock mapping (SRs, arrivals)
 *                     ├─ track.depacketize × tracks            one track's codec files          (after the clock)
 *                     ├─ participant.mux × participants        A/V file + 16 kHz ASR WAV     (after the tracks)
 *                     ├─ session.composite                     room composite MP4        ┐ after the muxes,
 *                     └─ participant.transcribe × participants (ASR queue)               ┘ at the same time
 *
 * Stage outputs go to artifact storage under deterministic keys, so a stage can run on any
 * host; the results travel back as the children's return values. `session.rerender` (below)
 * is a second root over the same stages: clock, depacketize, composite.
 */
export const TRANSCODE_ASR_QUEUE = 'transcode-asr';
export const SESSION_CLOCK_JOB = 'session.clock';
export const TRACK_DEPACKETIZE_JOB = 'track.depacketize';
export const SESSION_COMPOSITE_JOB = 'session.composite';
export const PARTICIPANT_MUX_JOB = 'participant.mux';
export const PARTICIPANT_TRANSCRIBE_JOB = 'participant.transcribe';

/**
 * Where the root is: its stages are added once each, in this order. 'prepare' (the start:
 * adds session.clock) keeps its v1 name so roots already stored in Redis still parse.
 */
export const FlowStepSchema = z.enum(['prepare', 'tracks', 'mux', 'outputs', 'register']);
export type FlowStep = z.output<typeof FlowStepSchema>;
export const SessionFlowRootSchema = SessionFinalizePayloadSchema.extend({
  flowStep: FlowStepSchema.optional(),
  /** Bumped when the flow fails for good, so a manual retry runs fresh stages (new child ids). */
  flowRun: z.number().int().nonnegative().optional(),
});

/** Deterministic child ids of a flow root (no ':' — BullMQ reserves it). */
export const flowStageJobId = (rootJobId: string, stage: string, run = 0): string => `${rootJobId}${run > 0 ? `.${run}` : ''}.${stage}`;
export const stageJobId = (session: string, stage: string, run = 0): string => flowStageJobId(finalizeJobId(session), stage, run);

/**
 * `session.rerender` (v1): the composite of a session rendered again from its (rewritten)
 * manifest by the flow's own stages — session.clock, track.depacketize × tracks,
 * session.composite — and nothing else: no mux, no transcription, no rows. Queued on
 * `transcode` by the compliance service's erasure job, which waits for it and replaces the
 * stored composite's row itself. The new composite is stored under the session's composite key.
 */
export const SESSION_RERENDER_JOB = 'session.rerender';
export const SessionRerenderPayloadSchema = SessionFinalizePayloadSchema.extend({
  /** Who asks for it: an erasure request (its id is part of the job id and of every log line). */
  requestedBy: z.object({ type: z.literal('erasure'), id: z.string() }),
  /**
   * Keep the session's original timeline (transcript times, search hits and play links point
   * into it): every remaining piece starts `leadSeconds` later than on the rewritten manifest's
   * own clock (the erased participant may have opened the session), and the composite lasts
   * `durationSeconds` (they may have closed it). null: the rewritten manifest's own timeline.
   */
  timeline: z.object({ leadSeconds: z.number().nonnegative(), durationSeconds: z.number().positive() }).nullable(),
});
export type SessionRerenderPayload = z.output<typeof SessionRerenderPayloadSchema>;
export const SessionRerenderRootSchema = SessionRerenderPayloadSchema.extend({ flowStep: FlowStepSchema.optional(), flowRun: z.number().int().nonnegative().optional() });
export const rerenderJobId = (requestId: string, session: string): string => `rerender.${requestId}.${session}`;

/** One stored artifact, as the artifacts table wants it. */
export const StageArtifactSchema = z.object({
  key: z.string(),
  kind: z.string(),
  participant: z.string().nullable(),
  contentType: z.string(),
  bytes: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  storage: z.string(),
  durationSeconds: z.number().nullable(),
  /** The data key it is stored encrypted with (ENCRYPTION_AT_REST); absent: stored in clear. */
  keyId: z.string().optional(),
});
export type StageArtifact = z.output<typeof StageArtifactSchema>;

/** A depacketized track piece, placed on the session timeline. */
export const StagePieceSchema = z.object({
  participant: z.string(),
  kind: z.enum(['audio', 'video']),
  key: z.string(),
  sha256: z.string(),
  offset: z.number(),
  duration: z.number(),
});

/**
 * A track whose RTP clock disagreed with the arrival of its packets (junk RTP, a sender
 * clock that jumped, a sender report far from arrival): what was dropped for it. The media
 * that remains is placed by arrival; the session is processed with a warning.
 */
export const ClockAnomalySchema = z.object({
  track: z.string(),
  participant: z.string(),
  /** RTP packets whose timestamp disagreed with their arrival: dropped. */
  offClockPackets: z.number().int().nonnegative(),
  /** Packets whose place on the session clock fell outside their track's arrival window: dropped. */
  outsideArrivalPackets: z.number().int().nonnegative(),
  /** Sender reports that would have moved the track away from its arrival: not used. */
  rejectedSenderReports: z.number().int().nonnegative(),
  /** No packet of the track was on the arrival clock: the track was left out. */
  dropped: z.boolean(),
});
export type ClockAnomaly = z.output<typeof ClockAnomalySchema>;

/** session.clock: the common clock, and what the later stages need from the manifest. */
export const SessionClockResultSchema = z.object({
  v: z.literal(1),
  /** Senders' NTP clock → wall clock, µs. */
  ntpOffsetUs: z.number(),
  /** Wall clock (µs) of the session timeline's t = 0. */
  originUs: z.number(),
  durationSeconds: z.number().nonnegative(),
  /** The tracks with media (indexes into the manifest's tracks), one track.depacketize each. */
  tracks: z.array(z.object({ index: z.number().int().nonnegative(), track: z.string(), participant: z.string(), kind: z.enum(['audio', 'video']) })),
  /** Sorted ids of the participants with media, and their display names. */
  participants: z.array(z.object({ id: z.string(), name: z.string() })),
  transcribe: z.boolean(),
  language: z.string(),
  /** Tracks cut to their arrival (absent in results stored before it existed: none). */
  anomalies: z.array(ClockAnomalySchema).default([]),
});
export type SessionClockResult = z.output<typeof SessionClockResultSchema>;

/**
 * What every media stage's payload carries: the session, and which flow it is part of. A
 * stage of a `session.rerender` leaves the session's status alone (corrupt input fails only
 * the re-render). Absent = finalize (payloads queued before this field existed).
 */
export const StagePayloadSchema = SessionFinalizePayloadSchema.extend({ purpose: z.enum(['finalize', 'rerender']).optional() });
export type StagePayload = z.output<typeof StagePayloadSchema>;
/** session.clock's payload: the session itself. */
export const SessionClockPayloadSchema = StagePayloadSchema;

export const TrackDepacketizePayloadSchema = StagePayloadSchema.extend({
  /** Index into the manifest's tracks, and its id (checked against the manifest). */
  track: z.number().int().nonnegative(),
  trackId: z.string(),
  ntpOffsetUs: z.number(),
  originUs: z.number(),
});
export type TrackDepacketizePayload = z.output<typeof TrackDepacketizePayloadSchema>;
export const TrackDepacketizeResultSchema = z.object({
  v: z.literal(1),
  track: z.string(),
  /** One piece per segment with media, on the session timeline. */
  pieces: z.array(StagePieceSchema),
  artifacts: z.array(StageArtifactSchema),
});
export type TrackDepacketizeResult = z.output<typeof TrackDepacketizeResultSchema>;

export const ParticipantMuxPayloadSchema = StagePayloadSchema.extend({
  participant: z.string(),
  durationSeconds: z.number().nonnegative(),
  /** This participant's pieces. */
  pieces: z.array(StagePieceSchema),
});
export type ParticipantMuxPayload = z.output<typeof ParticipantMuxPayloadSchema>;
export const ParticipantMuxResultSchema = z.object({
  v: z.literal(1),
  participant: z.string(),
  artifacts: z.array(StageArtifactSchema),
  /** The ASR WAV, when the participant has audio. */
  wav: z.object({ key: z.string(), sha256: z.string() }).nullable(),
});
export type ParticipantMuxResult = z.output<typeof ParticipantMuxResultSchema>;

export const SessionCompositePayloadSchema = StagePayloadSchema.extend({
  durationSeconds: z.number().nonnegative(),
  pieces: z.array(StagePieceSchema),
});
export type SessionCompositePayload = z.output<typeof SessionCompositePayloadSchema>;
export const SessionCompositeResultSchema = z.object({ v: z.literal(1), artifacts: z.array(StageArtifactSchema) });
export type SessionCompositeResult = z.output<typeof SessionCompositeResultSchema>;
export const SessionRerenderResultSchema = z.object({ v: z.literal(1), composite: StageArtifactSchema });
export type SessionRerenderResult = z.output<typeof SessionRerenderResultSchema>;

export const ParticipantTranscribePayloadSchema = z.object({
  v: z.literal(1),
  room: z.string(),
  session: z.string(),
  participant: z.string(),
  speaker: z.string(),
  language: z.string(),
  wav: z.object({ key: z.string(), sha256: z.string() }),
});
export type ParticipantTranscribePayload = z.output<typeof ParticipantTranscribePayloadSchema>;
export const ParticipantTranscribeResultSchema = z.object({
  v: z.literal(1),
  participant: z.string(),
  /** 'done', or the model problem that kept the transcript from being made. */
  status: z.enum(['done', 'MODEL_MISSING', 'MODEL_INVALID']),
  error: z.object({ code: z.string(), message: z.string(), hint: z.string().optional() }).optional(),
  segments: z.array(
    z.object({
      speaker: z.string(),
      participant: z.string(),
      start: z.number(),
      end: z.number(),
      text: z.string(),
      /** whisper.cpp's word timing (session seconds); absent from older results. */
      words: z.array(z.object({ text: z.string(), start: z.number(), end: z.number() })).optional(),
    }),
  ),
});
export type ParticipantTranscribeResult = z.output<typeof ParticipantTranscribeResultSchema>;

/**
 * `segment.upload` (v1), on the recorder's own queue: one sealed raw segment copied to artifact
 * storage under its raw key, read back and checked against the manifest's SHA-256, recorded in the
 * session's journal or manifest (and track_segments when the session is sealed), then removed from
 * the recorder's disk. Retried until storage takes it (RECORDER_UPLOAD_RETRY_MS, capped backoff).
 */
export const RECORDER_UPLOAD_QUEUE = 'recorder-upload';
export const SEGMENT_UPLOAD_JOB = 'segment.upload';
export const SegmentUploadPayloadSchema = z.object({
  v: z.literal(1),
  room: z.string(),
  session: z.string(),
  track: z.string(),
  segment: z.number().int().nonnegative(),
  /** The segment's file name in the session directory (<track>-<n>.vrtp). */
  file: z.string().regex(/^[A-Za-z0-9_.@-]+\.vrtp$/),
  /** The recorder's session directory (absolute, on the host that recorded it). */
  dir: z.string(),
  bytes: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});
export type SegmentUploadPayload = z.output<typeof SegmentUploadPayloadSchema>;
export const SegmentUploadResultSchema = z.object({ v: z.literal(1), key: z.string(), at: z.string(), bytes: z.number().int().nonnegative() });
export type SegmentUploadResult = z.output<typeof SegmentUploadResultSchema>;
/** One job per segment: a segment sealed again after a recorder restart is not uploaded twice. */
export const segmentUploadJobId = (session: string, file: string): string => `upload.${session}.${file}`;
