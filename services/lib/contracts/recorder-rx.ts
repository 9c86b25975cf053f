import { z } from 'zod';
import { SegmentEntrySchema } from './recording.ts';

/**
 * The pipe between a recorder worker and its recorder-rx process (services/recorder/native):
 * one JSON object per line, worker → native on stdin, native → worker on stdout, each with
 * the protocol version `v`. Worker → native messages stay flat (string, number and boolean
 * values only) so the native side needs no general JSON parser; its answers are checked
 * here before anything reaches the supervisor.
 */
export const RX_PROTOCOL_VERSION = 1 as const;

const v = z.literal(RX_PROTOCOL_VERSION);
/** `<session>/<track>`: the worker's key of a track. */
const id = z.string().min(1);

export const ToRxSchema = z.discriminatedUnion('type', [
  z.object({
    v,
    type: z.literal('start'),
    id,
    /** The session directory; the segment file is `<dir>/<track>-<segment>.vrtp(.part)`. */
    dir: z.string().min(1),
    track: z.string().min(1),
    segment: z.number().int().nonnegative(),
    ssrc: z.number().int().min(0).max(0xffff_ffff),
    payloadType: z.number().int().min(0).max(127),
    /**
     * The track header as JSON without segment, ssrc, startedAt and startedAtUs, which
     * recorder-rx puts first for each segment it opens (rotation, SSRC change).
     */
    header: z.string().startsWith('{'),
    /** SRTP (AES_CM_128_HMAC_SHA1_80) master key and salt, base64: recorder-rx decrypts with libsrtp and stores clear RTP. */
    srtpKey: z.string().optional(),
  }),
  z.object({ v, type: z.literal('stop'), id, reason: z.string().min(1) }),
  z.object({ v, type: z.literal('stats'), seq: z.number().int().nonnegative() }),
  /** Seal every open segment with `reason` and exit (end of input does the same with "recorder-restart"). */
  z.object({ v, type: z.literal('shutdown'), reason: z.string().min(1) }),
]);
export type ToRx = z.output<typeof ToRxSchema>;

const counts = z.record(z.string(), z.number().int().nonnegative());

export const FromRxSchema = z.discriminatedUnion('type', [
  z.object({ v, type: z.literal('ready'), pid: z.number().int() }),
  z.object({ v, type: z.literal('started'), id, segment: z.number().int(), rtpPort: z.number().int(), rtcpPort: z.number().int() }),
  z.object({ v, type: z.literal('startFailed'), id, code: z.string(), message: z.string() }),
  /** A segment was sealed: stop, SSRC change, rotation, or a failed write (truncated). */
  z.object({ v, type: z.literal('sealed'), id, trackOpen: z.boolean(), entry: SegmentEntrySchema }),
  /** The next segment after a rotation could not be opened: the track has ended. */
  z.object({ v, type: z.literal('trackFailed'), id, code: z.string() }),
  z.object({
    v,
    type: z.literal('stats'),
    seq: z.number().int(),
    tracks: z.number().int(),
    received: z.number().int(),
    stored: z.number().int(),
    dropped: counts,
    perTrack: z.record(z.string(), counts),
    /** recorder-rx's own CPU time (getrusage) and RSS. */
    cpu: z.object({ userUs: z.number(), systemUs: z.number() }),
    rssBytes: z.number(),
    /** Drain rounds, recvmmsg calls that returned datagrams, and datagrams: the batching achieved. */
    rounds: z.number().int(),
    batches: z.number().int(),
    datagrams: z.number().int(),
  }),
  z.object({ v, type: z.literal('error'), code: z.string(), message: z.string() }),
]);
export type FromRx = z.output<typeof FromRxSchema>;
