import { z } from 'zod';
import { StartTrackRequestSchema } from './recorder-control.ts';
import { SegmentEntrySchema } from './recording.ts';

/**
 * Messages between the recorder supervisor and its worker processes (process.send IPC),
 * validated on receipt. A worker owns sockets and open files; the supervisor owns
 * sessions, manifests, the database and the queue.
 */
export const IPC_VERSION = 1 as const;

export const ToWorkerSchema = z.discriminatedUnion('t', [
  z.object({
    t: z.literal('start'),
    v: z.literal(IPC_VERSION),
    req: StartTrackRequestSchema,
    dir: z.string(),
    segment: z.number().int().nonnegative(),
    /** The tap's SRTP master key and salt (base64), unwrapped by the supervisor; absent for clear RTP. */
    srtpKey: z.string().optional(),
  }),
  z.object({ t: z.literal('stop'), v: z.literal(IPC_VERSION), track: z.string(), session: z.string(), reason: z.string() }),
  /** resetLag: start a new event-loop lag window after answering (GET /v1/stats?resetLag=1). */
  z.object({ t: z.literal('stats'), v: z.literal(IPC_VERSION), resetLag: z.boolean().optional() }),
]);
export type ToWorker = z.output<typeof ToWorkerSchema>;

export const ToSupervisorSchema = z.discriminatedUnion('t', [
  z.object({ t: z.literal('ready'), v: z.literal(IPC_VERSION) }),
  z.object({ t: z.literal('started'), v: z.literal(IPC_VERSION), session: z.string(), track: z.string(), segment: z.number().int(), rtpPort: z.number().int(), rtcpPort: z.number().int() }),
  z.object({ t: z.literal('startFailed'), v: z.literal(IPC_VERSION), session: z.string(), track: z.string(), code: z.string(), message: z.string() }),
  /** A segment was sealed: track stopped, SSRC changed, or a write failed (truncated). */
  z.object({ t: z.literal('sealed'), v: z.literal(IPC_VERSION), session: z.string(), track: z.string(), entry: SegmentEntrySchema, trackOpen: z.boolean() }),
  z.object({
    t: z.literal('stats'),
    v: z.literal(IPC_VERSION),
    tracks: z.number().int(),
    received: z.number().int(),
    stored: z.number().int(),
    dropped: z.record(z.string(), z.number().int()),
    perTrackDropped: z.record(z.string(), z.record(z.string(), z.number().int())),
    /** Worker process resources: CPU time since it started (process.cpuUsage) and RSS. */
    cpu: z.object({ userUs: z.number(), systemUs: z.number() }).optional(),
    rssBytes: z.number().optional(),
    /**
     * Worker event-loop delay (perf_hooks.monitorEventLoopDelay) since the worker
     * started or the last resetLag, in ms: how late packets get handled.
     */
    lag: z.object({ p50Ms: z.number(), p99Ms: z.number(), maxMs: z.number(), meanMs: z.number(), windowMs: z.number() }).optional(),
    /**
     * The worker's recorder-rx process (RECORDER_RX=native): its CPU time and RSS (not in
     * cpu/rssBytes above), drain rounds, recvmmsg batches and datagrams, and how often
     * the worker had to restart it.
     */
    rx: z
      .object({ pid: z.number().int(), cpu: z.object({ userUs: z.number(), systemUs: z.number() }), rssBytes: z.number(), rounds: z.number().int(), batches: z.number().int(), datagrams: z.number().int(), restarts: z.number().int() })
      .optional(),
  }),
]);
export type ToSupervisor = z.output<typeof ToSupervisorSchema>;
