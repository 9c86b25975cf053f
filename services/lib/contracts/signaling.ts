import { z } from 'zod';

/**
 * WebSocket signaling between the meeting page and the SFU. Every frame is JSON with
 * `v` (protocol version). Client requests carry an `id` and get exactly one response
 * with the same id; the server also pushes notifications. mediasoup's own parameter
 * objects (rtpParameters, dtlsParameters...) are validated structurally here and in
 * depth by mediasoup itself.
 */
export const SIGNALING_VERSION = 1 as const;

const id = z.string().min(1).max(128);
const looseObject = z.record(z.string(), z.unknown());

export const ClientRequestSchema = z.discriminatedUnion('method', [
  z.object({ method: z.literal('join'), data: z.object({ token: z.string().min(1).max(4096), rtpCapabilities: looseObject.optional() }).strict() }),
  z.object({ method: z.literal('setRtpCapabilities'), data: z.object({ rtpCapabilities: looseObject }).strict() }),
  z.object({ method: z.literal('createWebRtcTransport'), data: z.object({ direction: z.enum(['send', 'recv']) }).strict() }),
  z.object({ method: z.literal('connectWebRtcTransport'), data: z.object({ transportId: id, dtlsParameters: looseObject }).strict() }),
  z.object({
    method: z.literal('produce'),
    data: z.object({ transportId: id, kind: z.enum(['audio', 'video']), rtpParameters: looseObject, appData: looseObject.optional() }).strict(),
  }),
  z.object({ method: z.literal('closeProducer'), data: z.object({ producerId: id }).strict() }),
  z.object({ method: z.literal('pauseProducer'), data: z.object({ producerId: id }).strict() }),
  z.object({ method: z.literal('resumeProducer'), data: z.object({ producerId: id }).strict() }),
  z.object({ method: z.literal('consume'), data: z.object({ transportId: id, producerId: id }).strict() }),
  z.object({ method: z.literal('resumeConsumer'), data: z.object({ consumerId: id }).strict() }),
  z.object({ method: z.literal('pauseConsumer'), data: z.object({ consumerId: id }).strict() }),
  z.object({ method: z.literal('consent'), data: z.object({ decision: z.enum(['granted', 'declined']), method: z.enum(['click', 'announcement', 'pre-accepted']).default('click') }).strict() }),
  z.object({ method: z.literal('setRecording'), data: z.object({ enabled: z.boolean(), roomSecret: z.string().max(256).optional() }).strict() }),
  z.object({ method: z.literal('listPeers'), data: z.object({}).strict().default({}) }),
  z.object({ method: z.literal('ping'), data: z.object({}).strict().default({}) }),
  z.object({ method: z.literal('leave'), data: z.object({}).strict().default({}) }),
]);
export type ClientRequest = z.output<typeof ClientRequestSchema>;
export type ClientMethod = ClientRequest['method'];

export const ClientFrameSchema = z
  .object({ v: z.literal(SIGNALING_VERSION), id: z.number().int().nonnegative() })
  .and(ClientRequestSchema);

export interface ResponseFrame {
  v: typeof SIGNALING_VERSION;
  id: number | null;
  ok: boolean;
  data?: unknown;
  error?: { code: string; message: string; hint?: string };
}

export type ServerNotification =
  | { notification: 'newProducer'; data: { producerId: string; peerId: string; peerName: string; kind: 'audio' | 'video' } }
  | { notification: 'producerClosed'; data: { producerId: string } }
  | { notification: 'consumerClosed'; data: { consumerId: string; producerId: string } }
  | { notification: 'consumerPaused' | 'consumerResumed'; data: { consumerId: string } }
  | { notification: 'peerJoined'; data: { peerId: string; name: string } }
  | { notification: 'peerLeft'; data: { peerId: string } }
  | { notification: 'recordingState'; data: RecordingState }
  | { notification: 'roomClosed'; data: { code: string; reason: string } }
  | { notification: 'sessionReplaced'; data: Record<string, never> };

export interface RecordingState {
  recording: boolean;
  consent: 'notify' | 'required';
  /** Whether this participant's media is being recorded (false when consent is missing/declined). */
  recordingYou: boolean;
  /** Set when recording should run but cannot (e.g. no recorder answers): never a silent gap. */
  failure?: { code: string; message: string };
}

export type NotificationFrame = { v: typeof SIGNALING_VERSION } & ServerNotification;
