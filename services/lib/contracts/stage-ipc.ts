import { z } from 'zod';

/**
 * Messages between the launcher (`npm start`) and each stage process it supervises, over
 * the Node IPC channel (process.send), validated on receipt on both sides. Configuration
 * does not travel here: a stage reads it from its environment, like any standalone start.
 */
export const STAGE_IPC_VERSION = 1 as const;

export const StageNameSchema = z.enum(['recorder', 'sfu', 'transcode', 'audit']);
export type StageName = z.output<typeof StageNameSchema>;

/** Launcher → stage. */
export const ToStageSchema = z.discriminatedUnion('t', [
  /** Stop gracefully (finish what is in flight, release ports and files), then exit 0. */
  z.object({ t: z.literal('stop'), v: z.literal(STAGE_IPC_VERSION), reason: z.string().max(200) }),
]);
export type ToStage = z.output<typeof ToStageSchema>;

/** Stage → launcher. */
export const FromStageSchema = z.discriminatedUnion('t', [
  /**
   * Serving. `url`: where its HTTP server listens (absent for a queue consumer); `notes`:
   * what the operator should know (the launcher prints them), e.g. a missing Whisper model.
   */
  z.object({
    t: z.literal('ready'),
    v: z.literal(STAGE_IPC_VERSION),
    stage: StageNameSchema,
    pid: z.number().int().positive(),
    url: z.string().url().optional(),
    notes: z.array(z.string().max(1000)).max(10).optional(),
  }),
  /** Shutting down on request (a `stop` message, a signal, or the launcher gone). */
  z.object({ t: z.literal('stopping'), v: z.literal(STAGE_IPC_VERSION), stage: StageNameSchema, reason: z.string() }),
  /** It cannot go on: start-up failed or an exception escaped; the process exits next. */
  z.object({ t: z.literal('fatal'), v: z.literal(STAGE_IPC_VERSION), stage: StageNameSchema, code: z.string(), message: z.string(), hint: z.string().optional() }),
]);
export type FromStage = z.output<typeof FromStageSchema>;
