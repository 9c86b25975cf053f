import { z } from 'zod';

/**
 * The recorder's on-disk track segment header (JSON inside the binary file) and the
 * per-session manifest. Both carry a version; readers refuse versions they don't know.
 */
export const RECORDING_FORMAT_VERSION = 1 as const;

export const CodecSchema = z.object({
  mimeType: z.string().regex(/^(audio|video)\/[A-Za-z0-9.-]+$/),
  clockRate: z.number().int().positive(),
  channels: z.number().int().positive().optional(),
  payloadType: z.number().int().min(0).max(127),
  parameters: z.record(z.string(), z.union([z.string(), z.number()])).default({}),
});
export type Codec = z.output<typeof CodecSchema>;

export const HeaderExtensionSchema = z.object({ uri: z.string(), id: z.number().int().min(1).max(255) });

export const ConsentRefSchema = z.object({
  decision: z.enum(['granted', 'declined', 'not-required']),
  method: z.enum(['click', 'announcement', 'pre-accepted']).optional(),
  /** consent_events.id, or the time of the decision, so the file names its legal basis. */
  ref: z.string().optional(),
});

export const TrackHeaderSchema = z.object({
  format: z.literal('verbatim-rtp'),
  version: z.literal(RECORDING_FORMAT_VERSION),
  room: z.string(),
  session: z.string(),
  track: z.string(),
  segment: z.number().int().nonnegative(),
  participant: z.object({ id: z.string(), name: z.string() }),
  kind: z.enum(['audio', 'video']),
  codec: CodecSchema,
  ssrc: z.number().int().min(0).max(0xffffffff),
  headerExtensions: z.array(HeaderExtensionSchema).default([]),
  /** Wall clock when the segment was opened (ISO 8601) and the same in µs since the epoch. */
  startedAt: z.string(),
  startedAtUs: z.number().int(),
  consent: ConsentRefSchema,
});
export type TrackHeader = z.output<typeof TrackHeaderSchema>;
