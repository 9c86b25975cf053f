import { z } from 'zod';
import { CodecSchema, ConsentRefSchema, HeaderExtensionSchema } from './recording.ts';

/**
 * SFU ↔ recorder control contract (HTTP + JSON, v1), so a recorder can run on another
 * host. The SFU asks for a track, gets the ip/ports to send RTP and RTCP to, connects a
 * PlainTransport there and resumes its consumer once the recorder answered.
 */
export const RECORDER_CONTROL_VERSION = 1 as const;
const v = z.literal(RECORDER_CONTROL_VERSION);
const safeId = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$/, 'ids: 1-128 chars of A-Z a-z 0-9 _ . @ -');

export const StartTrackRequestSchema = z.object({
  v,
  room: safeId,
  session: safeId,
  track: safeId,
  participant: z.object({ id: safeId, name: z.string().min(1).max(200) }),
  kind: z.enum(['audio', 'video']),
  codec: CodecSchema,
  ssrc: z.number().int().min(0).max(0xffffffff),
  headerExtensions: z.array(HeaderExtensionSchema).default([]),
  consent: ConsentRefSchema,
});
export type StartTrackRequest = z.output<typeof StartTrackRequestSchema>;

export const StartTrackResponseSchema = z.object({ v, ip: z.string(), rtpPort: z.number().int(), rtcpPort: z.number().int(), segment: z.number().int() });
export type StartTrackResponse = z.output<typeof StartTrackResponseSchema>;

export const TimelineEventSchema = z.object({
  at: z.string(),
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
  ]),
  participant: z.string().optional(),
  track: z.string().optional(),
  details: z.record(z.string(), z.unknown()).default({}),
});
export type TimelineEvent = z.output<typeof TimelineEventSchema>;

export const SessionEventsRequestSchema = z.object({ v, room: safeId, events: z.array(TimelineEventSchema).min(1).max(1000) });
export const EndSessionRequestSchema = z.object({ v, room: safeId, reason: z.string().max(200).default('ended') });

export const RecorderHealthSchema = z.object({
  v,
  ok: z.boolean(),
  /** Changes on every recorder start: the SFU re-attaches its taps when it changes. */
  instanceId: z.string(),
  acceptingTracks: z.boolean(),
  freeBytes: z.number(),
  tracks: z.number().int(),
});
export type RecorderHealth = z.output<typeof RecorderHealthSchema>;
