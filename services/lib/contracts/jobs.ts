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
