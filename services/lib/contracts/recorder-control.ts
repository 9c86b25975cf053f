import { z, type ZodType } from 'zod';
import { SRTP_CRYPTO_SUITES } from '../rtp/srtp.ts';
import { CodecSchema, ConsentRefSchema, HeaderExtensionSchema } from './recording.ts';
import { UNSTORABLE_MESSAGE, isStorableText, storableJson, storableText } from './storable-text.ts';

/**
 * SFU ↔ recorder control contract (HTTP + JSON, v1), so a recorder can run on another
 * host. The SFU asks for a track, gets the ip/ports to send RTP and RTCP to, connects a
 * PlainTransport there and resumes its consumer once the recorder answered.
 */
export const RECORDER_CONTROL_VERSION = 1 as const;
const v = z.literal(RECORDER_CONTROL_VERSION);

/**
 * Room, session, track and participant ids: a closed pattern, because the recorder makes
 * directory and file names of them (RECORDINGS_DIR/<room>/<session>/<track>-<n>.vrtp): no `/`,
 * no `..`, no NUL or control characters, at most 128 characters.
 */
export const RECORDER_ID_RE = /^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$/;
export const RecorderIdSchema = z.string().regex(RECORDER_ID_RE, 'ids: 1-128 chars of A-Z a-z 0-9 _ . @ -, starting with a letter or digit, without ".."');
const safeId = RecorderIdSchema;

/** The path parameters of /v1/sessions/:session/... */
export const SessionParamsSchema = z.object({ session: RecorderIdSchema }).strict();
export const TrackParamsSchema = z.object({ session: RecorderIdSchema, track: RecorderIdSchema }).strict();

/** Everything a request carries ends up in a journal, a manifest and the database: every string must be storable there. */
const storableRequest = storableJson({ maxDepth: 8, maxBytes: 64 * 1024 });

export const StartTrackRequestSchema = z
  .object({
    v,
    room: safeId,
    session: safeId,
    track: safeId,
    participant: z.object({ id: safeId, name: storableText(200) }),
    kind: z.enum(['audio', 'video']),
    codec: CodecSchema,
    ssrc: z.number().int().min(0).max(0xffffffff),
    headerExtensions: z.array(HeaderExtensionSchema).max(32).default([]),
    consent: ConsentRefSchema,
    /**
     * The tap sends SRTP: mediasoup's key for it, wrapped under RECORDER_SECRET for this session/track
     * (lib/rtp/srtp.ts wrapTapKey). Absent: the tap sends clear RTP.
     */
    srtp: z.object({ cryptoSuite: z.enum(SRTP_CRYPTO_SUITES), wrappedKey: z.string().regex(/^[A-Za-z0-9+/]+={0,2}$/).max(200) }).strict().optional(),
    /** Pool: which copy of the producer this is (RECORDER_REPLICAS=2 taps a producer to two recorders). */
    copy: z.number().int().min(0).max(7).optional(),
  })
  .superRefine((req, ctx) => {
    const r = storableRequest.safeParse(req);
    if (!r.success) for (const issue of r.error.issues) ctx.addIssue({ code: 'custom', message: issue.message });
  });
export type StartTrackRequest = z.output<typeof StartTrackRequestSchema>;

export const StartTrackResponseSchema = z.object({ v, ip: z.string(), rtpPort: z.number().int(), rtcpPort: z.number().int(), segment: z.number().int() });
export type StartTrackResponse = z.output<typeof StartTrackResponseSchema>;

export const TimelineEventSchema = z.object({
  /** Stored as a timestamp when the session is sealed: anything else would make it unsealable. */
  at: z.iso.datetime({ offset: true }),
  type: z.enum([
    'session-started',
    'session-ended',
    'participant-joined',
    'participant-left',
    'producer-added',
    'producer-paused',
    'producer-resumed',
    'producer-closed',
    'consent',
    'recording-on',
    'recording-off',
    'recorder-restarted',
    'track-failed',
    /** Pool: a track was re-tapped to another recorder (failover, drain); details say from, to and why. */
    'track-moved',
  ]),
  participant: safeId.optional(),
  track: safeId.optional(),
  // Free-form, but stored with the session: storable text, bounded (a deep nesting would overflow the journal writer).
  details: storableJson({ maxDepth: 6, maxBytes: 8 * 1024 })
    .pipe(z.record(z.string(), z.unknown()))
    .default({}),
});
export type TimelineEvent = z.output<typeof TimelineEventSchema>;

export const SessionEventsRequestSchema = z.object({ v, room: safeId, events: z.array(TimelineEventSchema).min(1).max(1000) });
export const EndSessionRequestSchema = z.object({ v, room: safeId, reason: z.string().max(200).refine(isStorableText, UNSTORABLE_MESSAGE).default('ended') });

export const RecorderHealthSchema = z.object({
  v,
  ok: z.boolean(),
  /** Changes on every recorder start: the SFU re-attaches its taps when it changes. */
  instanceId: z.string(),
  acceptingTracks: z.boolean(),
  freeBytes: z.number(),
  tracks: z.number().int(),
  /** Pool (additive): the recorder's registry id, its state, and its answer to the caller's nonce. */
  recorderId: z.string().optional(),
  state: z.enum(['active', 'draining']).optional(),
  /** HMAC-SHA256(RECORDER_SECRET, helloMessage(nonce, recorderId, instanceId)), hex: proves the recorder holds the secret. */
  proof: z.string().optional(),
});
export type RecorderHealth = z.output<typeof RecorderHealthSchema>;

/** GET /v1/health?nonce=<hex>: the recorder answers with `proof` (a forged registry row or a wrong secret cannot). */
export const HealthQuerySchema = z.object({ nonce: z.string().regex(/^[0-9a-f]{32,128}$/).optional() });

/** What the recorder's proof signs: bound to the caller's nonce, the recorder id and its instance. */
export function helloMessage(nonce: string, recorderId: string, instanceId: string): string {
  return `verbatim-recorder-hello:v${RECORDER_CONTROL_VERSION}:${nonce}:${recorderId}:${instanceId}`;
}

/**
 * POST /v1/sessions/:session/release: a pool recorder that held some of a session's tracks lets go of
 * the session without sealing it (its segments are in the database; another recorder seals).
 */
export const ReleaseSessionRequestSchema = z.object({ v, room: safeId });

/** POST /v1/drain: state=draining asks SFUs to move this recorder's tracks off it (make-before-break). */
export const DrainRequestSchema = z.object({ v, state: z.enum(['active', 'draining']).default('draining') });

/** GET /v1/stats?resetLag=1: restart the worker lag percentiles. */
export const StatsQuerySchema = z.object({ resetLag: z.enum(['1', 'true', '0', 'false']).optional() });

/**
 * Every route of the control API with the schemas of its input: the recorder registers exactly
 * these (each must have a handler) and parses each input with them before it touches the
 * filesystem or the database; the fuzz suite sends hostile input to each.
 */
export const RECORDER_CONTROL_ROUTES = {
  'GET /v1/health': { auth: false, query: HealthQuerySchema },
  'GET /metrics': { auth: false },
  'POST /v1/tracks': { auth: true, body: StartTrackRequestSchema },
  'DELETE /v1/sessions/:session/tracks/:track': { auth: true, params: TrackParamsSchema },
  'POST /v1/sessions/:session/events': { auth: true, params: SessionParamsSchema, body: SessionEventsRequestSchema },
  'POST /v1/sessions/:session/end': { auth: true, params: SessionParamsSchema, body: EndSessionRequestSchema },
  'POST /v1/sessions/:session/release': { auth: true, params: SessionParamsSchema, body: ReleaseSessionRequestSchema },
  'POST /v1/drain': { auth: true, body: DrainRequestSchema },
  'GET /v1/dropped': { auth: true },
  'GET /v1/stats': { auth: true, query: StatsQuerySchema },
} as const satisfies Record<string, { auth: boolean; params?: ZodType; body?: ZodType; query?: ZodType }>;
export type RecorderControlRoute = keyof typeof RECORDER_CONTROL_ROUTES;
