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

export const SegmentEntrySchema = z.object({
  segment: z.number().int().nonnegative(),
  file: z.string().regex(/^[A-Za-z0-9_.@-]+\.vrtp$/),
  ssrc: z.number().int().min(0).max(0xffffffff),
  startedAt: z.string(),
  startedAtUs: z.number().int(),
  endedAt: z.string(),
  /** Why the segment ended: track stopped, SSRC change, recorder restart, disk full... */
  endReason: z.string(),
  bytes: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  rtpPackets: z.number().int().nonnegative(),
  rtcpPackets: z.number().int().nonnegative(),
  firstArrivalUs: z.number().int().nullable(),
  lastArrivalUs: z.number().int().nullable(),
  truncated: z.boolean(),
  truncatedReason: z.string().optional(),
  /**
   * The segment's copy in artifact storage (services/lib/storage/artifact-keys.ts rawSegmentKey), once
   * it was uploaded and read back with this entry's SHA-256; the local file may then be gone. Absent in
   * manifests written before raw upload existed, or while the upload is pending. keyId: the data key
   * the stored copy is encrypted with (ENCRYPTION_AT_REST, services/lib/crypto); absent: stored in clear.
   */
  stored: z.object({ key: z.string(), at: z.string(), keyId: z.string().optional() }).optional(),
  /** The pool recorder that wrote it (RECORDER_ID), when the session spans several recorders. */
  recorder: z.string().optional(),
  /** Which copy of a replicated track (RECORDER_REPLICAS=2): copies overlap in time and are merged by RTP sequence number. */
  copy: z.number().int().min(0).max(7).optional(),
});
export type SegmentEntry = z.output<typeof SegmentEntrySchema>;

export const SESSION_MANIFEST_VERSION = 1 as const;

export const SessionManifestSchema = z.object({
  format: z.literal('verbatim-session'),
  version: z.literal(SESSION_MANIFEST_VERSION),
  room: z.string(),
  session: z.string(),
  startedAt: z.string(),
  endedAt: z.string().nullable(),
  endReason: z.string().nullable(),
  participants: z.array(
    z.object({
      id: z.string(),
      name: z.string(),
      consent: ConsentRefSchema.extend({ at: z.string().optional() }),
    }),
  ),
  tracks: z.array(
    z.object({
      track: z.string(),
      participant: z.string(),
      kind: z.enum(['audio', 'video']),
      codec: CodecSchema,
      headerExtensions: z.array(HeaderExtensionSchema).default([]),
      segments: z.array(SegmentEntrySchema),
    }),
  ),
  /** Spans in which a track was being recorded but nothing could be captured (recorder down...). */
  gaps: z.array(z.object({ track: z.string(), from: z.string(), to: z.string(), reason: z.string() })),
  events: z.array(
    z.object({
      at: z.string(),
      type: z.string(),
      participant: z.string().optional(),
      track: z.string().optional(),
      details: z.record(z.string(), z.unknown()).default({}),
    }),
  ),
  /** Datagrams dropped at the recorder's ports, by reason. */
  dropped: z.record(z.string(), z.number().int().nonnegative()).default({}),
});
export type SessionManifest = z.output<typeof SessionManifestSchema>;
