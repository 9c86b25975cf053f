import { z } from 'zod';
import { ParticipantIdSchema } from './room.ts';

/**
 * WebSocket signaling between the meeting page and the SFU. Every frame is JSON with
 * `v` (protocol version). Client requests carry an `id` and get exactly one response
 * with the same id; the server also pushes notifications.
 *
 * Nothing a client sends reaches mediasoup unchecked: rtpParameters, rtpCapabilities and
 * dtlsParameters are closed schemas modelled on mediasoup's own types (node_modules/mediasoup/
 * node/lib/rtpParametersTypes.d.ts, WebRtcTransportTypes.d.ts) plus the fields mediasoup-client
 * adds, with every number ranged to what mediasoup serializes (uint8/uint32...) and every
 * string and list bounded. mediasoup's Node side serializes into one FlatBuffers builder per
 * worker: a value it cannot convert half-way through an object leaves that builder broken for
 * every later request of the worker, so wrong types must never get that far.
 */
export const SIGNALING_VERSION = 1 as const;

/** Deepest JSON nesting a frame may have; checked before any schema so none recurses deeply. */
export const MAX_FRAME_DEPTH = 12;

/** mediasoup ids (UUIDs) and our own: a closed alphabet, no "/", "..", NUL or control characters. */
export const MediaIdSchema = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, 'id: 1-64 chars of A-Z a-z 0-9 _ -');
const id = MediaIdSchema;

const kind = z.enum(['audio', 'video']);
const ssrc = z.number().int().min(1).max(0xffffffff);
const payloadType = z.number().int().min(0).max(127);
const clockRate = z.number().int().min(1).max(1_000_000);
const channels = z.number().int().min(1).max(8);
/** Printable ASCII without spaces: SDP tokens, cnames. */
const printable = (max: number) => z.string().regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces').max(max);
const mimeType = z.string().regex(/^(audio|video)\/[A-Za-z0-9][A-Za-z0-9._+-]{0,31}$/i, 'a MIME type such as audio/opus');

/** fmtp-style codec parameters: what mediasoup accepts (string or number; it refuses the rest). */
const codecParameters = z
  .record(
    z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'parameter name'),
    z.union([z.string().regex(/^[\x20-\x7e]*$/, 'printable ASCII').max(256), z.number().min(-2_147_483_648).max(2_147_483_647)]),
  )
  .refine((r) => Object.keys(r).length <= 32, 'at most 32 parameters');

const rtcpFeedback = z
  .array(z.object({ type: z.string().regex(/^[A-Za-z0-9-]{1,32}$/), parameter: z.string().regex(/^[A-Za-z0-9 -]{0,32}$/).optional() }).strict())
  .max(16);

/** The header extensions mediasoup knows (RtpHeaderExtensionUri); it throws mid-serialization on any other. */
export const HEADER_EXTENSION_URIS = [
  'urn:ietf:params:rtp-hdrext:sdes:mid',
  'urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id',
  'urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id',
  'http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time',
  'http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01',
  'urn:ietf:params:rtp-hdrext:ssrc-audio-level',
  'https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension',
  'urn:3gpp:video-orientation',
  'http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time',
  'urn:ietf:params:rtp-hdrext:toffset',
  'http://www.webrtc.org/experiments/rtp-hdrext/playout-delay',
  'urn:mediasoup:params:rtp-hdrext:packet-id',
] as const;
const headerExtensionUri = z.enum(HEADER_EXTENSION_URIS);
const headerExtensionId = z.number().int().min(1).max(255);

const priority = z.enum(['very-low', 'low', 'medium', 'high']);

/** One encoding (simulcast layer or the single stream): mediasoup's fields and mediasoup-client's. */
export const RtpEncodingParametersSchema = z
  .object({
    ssrc: ssrc.optional(),
    rid: z.string().regex(/^[A-Za-z0-9_-]{1,16}$/, 'rid: 1-16 chars of A-Z a-z 0-9 _ -').optional(),
    codecPayloadType: payloadType.optional(),
    rtx: z.object({ ssrc }).strict().optional(),
    dtx: z.boolean().optional(),
    scalabilityMode: z.string().regex(/^[LS][1-3]T[1-3](h|_KEY|_KEY_SHIFT)?$/, 'a scalability mode such as L1T3').optional(),
    maxBitrate: z.number().int().min(1).max(0xffffffff).optional(),
    // mediasoup-client's own fields (sent along, ignored by mediasoup).
    active: z.boolean().optional(),
    scaleResolutionDownBy: z.number().min(1).max(256).optional(),
    maxFramerate: z.number().min(0).max(1000).optional(),
    adaptivePtime: z.boolean().optional(),
    priority: priority.optional(),
    networkPriority: priority.optional(),
  })
  .strict();

export const RtpCodecParametersSchema = z
  .object({
    mimeType,
    payloadType,
    clockRate,
    channels: channels.optional(),
    parameters: codecParameters.optional(),
    rtcpFeedback: rtcpFeedback.optional(),
  })
  .strict();

/** What a client sends to produce (mediasoup RtpParameters). */
export const RtpParametersSchema = z
  .object({
    mid: z.string().regex(/^[A-Za-z0-9_-]{1,16}$/, 'mid: 1-16 chars of A-Z a-z 0-9 _ -').optional(),
    codecs: z.array(RtpCodecParametersSchema).min(1).max(16),
    headerExtensions: z
      .array(z.object({ uri: headerExtensionUri, id: headerExtensionId, encrypt: z.boolean().optional(), parameters: codecParameters.optional() }).strict())
      .max(16)
      .optional(),
    encodings: z.array(RtpEncodingParametersSchema).min(1).max(8).optional(),
    // Empty from Chrome when it sends simulcast by RID (its SDP has no a=ssrc cname line for mediasoup-client to read).
    rtcp: z.object({ cname: z.union([z.literal(''), printable(255)]).optional(), reducedSize: z.boolean().optional(), mux: z.boolean().optional() }).strict().optional(),
    msid: z.string().regex(/^[\x21-\x7e]{1,100}( [\x21-\x7e]{1,100})?$/, 'msid: "<stream id> <track id>"').optional(),
  })
  .strict();
export type RtpParametersInput = z.output<typeof RtpParametersSchema>;

/** What a client can receive (mediasoup RtpCapabilities; mediasoup-client device.rtpCapabilities). */
export const RtpCapabilitiesSchema = z
  .object({
    codecs: z
      .array(
        z
          .object({
            kind,
            mimeType,
            preferredPayloadType: payloadType,
            clockRate,
            channels: channels.optional(),
            parameters: codecParameters.optional(),
            rtcpFeedback: rtcpFeedback.optional(),
          })
          .strict(),
      )
      .max(64)
      .optional(),
    headerExtensions: z
      .array(
        z
          .object({
            kind,
            uri: headerExtensionUri,
            preferredId: headerExtensionId,
            preferredEncrypt: z.boolean().optional(),
            direction: z.enum(['sendrecv', 'sendonly', 'recvonly', 'inactive']).optional(),
          })
          .strict(),
      )
      .max(32)
      .optional(),
  })
  .strict();
export type RtpCapabilitiesInput = z.output<typeof RtpCapabilitiesSchema>;

/** Fingerprint length in bytes per algorithm (RFC 4572 "hash function textual names"). */
const FINGERPRINT_BYTES = { 'sha-1': 20, 'sha-224': 28, 'sha-256': 32, 'sha-384': 48, 'sha-512': 64 } as const;

/** The client's DTLS role and certificate fingerprints (mediasoup DtlsParameters). */
export const DtlsParametersSchema = z
  .object({
    role: z.enum(['auto', 'client', 'server']).optional(),
    fingerprints: z
      .array(
        z
          .object({
            algorithm: z.enum(['sha-1', 'sha-224', 'sha-256', 'sha-384', 'sha-512']),
            value: z.string().regex(/^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){19,63}$/, 'colon-separated hex bytes'),
          })
          .strict()
          .refine((f) => (f.value.length + 1) / 3 === FINGERPRINT_BYTES[f.algorithm], 'fingerprint length does not match its algorithm'),
      )
      .min(1)
      .max(8),
  })
  .strict();
export type DtlsParametersInput = z.output<typeof DtlsParametersSchema>;

type Json = string | number | boolean | null | Json[] | { [k: string]: Json };
const jsonValue: z.ZodType<Json> = z.lazy(() =>
  z.union([z.string().max(256), z.number(), z.boolean(), z.null(), z.array(jsonValue).max(16), z.record(appDataKey, jsonValue).refine((r) => Object.keys(r).length <= 16, 'at most 16 keys')]),
);
const appDataKey = z.string().regex(/^[A-Za-z][A-Za-z0-9_-]{0,31}$/, 'key: a letter, then up to 31 of A-Z a-z 0-9 _ -');
/** A producer's appData: small JSON (the SFU adds its own keys over it). */
export const AppDataSchema = z
  .record(appDataKey, jsonValue)
  .refine((r) => Object.keys(r).length <= 16, 'at most 16 keys')
  .refine((r) => JSON.stringify(r).length <= 1024, 'at most 1 KiB of JSON');

export const ClientRequestSchema = z.discriminatedUnion('method', [
  z.object({ method: z.literal('join'), data: z.object({ token: z.string().min(1).max(4096), rtpCapabilities: RtpCapabilitiesSchema.optional() }).strict() }),
  z.object({ method: z.literal('setRtpCapabilities'), data: z.object({ rtpCapabilities: RtpCapabilitiesSchema }).strict() }),
  z.object({ method: z.literal('createWebRtcTransport'), data: z.object({ direction: z.enum(['send', 'recv']) }).strict() }),
  z.object({ method: z.literal('connectWebRtcTransport'), data: z.object({ transportId: id, dtlsParameters: DtlsParametersSchema }).strict() }),
  z.object({
    method: z.literal('produce'),
    data: z.object({ transportId: id, kind, rtpParameters: RtpParametersSchema, appData: AppDataSchema.optional() }).strict(),
  }),
  z.object({ method: z.literal('closeProducer'), data: z.object({ producerId: id }).strict() }),
  z.object({ method: z.literal('pauseProducer'), data: z.object({ producerId: id }).strict() }),
  z.object({ method: z.literal('resumeProducer'), data: z.object({ producerId: id }).strict() }),
  z.object({ method: z.literal('consume'), data: z.object({ transportId: id, producerId: id }).strict() }),
  z.object({ method: z.literal('resumeConsumer'), data: z.object({ consumerId: id }).strict() }),
  z.object({ method: z.literal('pauseConsumer'), data: z.object({ consumerId: id }).strict() }),
  z.object({ method: z.literal('consent'), data: z.object({ decision: z.enum(['granted', 'declined']), method: z.enum(['click', 'announcement', 'pre-accepted']).default('click') }).strict() }),
  z.object({ method: z.literal('setRecording'), data: z.object({ enabled: z.boolean(), roomSecret: z.string().max(256).optional() }).strict() }),
  z.object({
    method: z.literal('setPreferredLayers'),
    data: z.object({ consumerId: id, spatialLayer: z.number().int().min(0).max(15), temporalLayer: z.number().int().min(0).max(15).optional() }).strict(),
  }),
  z.object({ method: z.literal('raiseHand'), data: z.object({ raised: z.boolean().default(true) }).strict().default({ raised: true }) }),
  z.object({ method: z.literal('promote'), data: z.object({ peerId: ParticipantIdSchema }).strict() }),
  z.object({ method: z.literal('listPeers'), data: z.object({}).strict().default({}) }),
  z.object({ method: z.literal('ping'), data: z.object({}).strict().default({}) }),
  z.object({ method: z.literal('leave'), data: z.object({}).strict().default({}) }),
]);
export type ClientRequest = z.output<typeof ClientRequestSchema>;
export type ClientMethod = ClientRequest['method'];

export const ClientFrameSchema = z
  .object({ v: z.literal(SIGNALING_VERSION), id: z.number().int().nonnegative() })
  .and(ClientRequestSchema);

/** Nesting depth of parsed JSON, iteratively (a deep frame must not overflow the stack anywhere). */
export function jsonDepth(value: unknown, limit = MAX_FRAME_DEPTH): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    deepest = Math.max(deepest, d);
    if (deepest > limit) return deepest;
    for (const child of Object.values(v)) stack.push([child, d + 1]);
  }
  return deepest;
}

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
  | { notification: 'sessionReplaced'; data: Record<string, never> }
  /** The dominant speaker (mediasoup's active speaker observer) changed. */
  | { notification: 'activeSpeaker'; data: { peerId: string } }
  /** Whose video is forwarded under the room's last-N policy (every publisher's when lastN is 0). */
  | { notification: 'videoSet'; data: { peerIds: string[] } }
  /** The spatial/temporal layer a simulcast consumer now forwards (null: none, e.g. too little bandwidth). */
  | { notification: 'consumerLayers'; data: { consumerId: string; spatialLayer: number | null; temporalLayer: number | null } }
  /** To hosts: a viewer raised or lowered a hand. */
  | { notification: 'handRaised'; data: { peerId: string; name: string; raised: boolean } }
  /** To the participant: its role changed (a host promoted it). */
  | { notification: 'roleChanged'; data: { role: ParticipantRole } };

/** host: may promote; speaker: may publish in an allhands room; viewer: receive-only; participant: a meeting room's. */
export type ParticipantRole = 'host' | 'speaker' | 'viewer' | 'participant';

export interface RecordingState {
  recording: boolean;
  consent: 'notify' | 'required';
  /** Whether this participant's media is being recorded (false when consent is missing/declined). */
  recordingYou: boolean;
  /** Set when recording should run but cannot (e.g. no recorder answers): never a silent gap. */
  failure?: { code: string; message: string };
}

export type NotificationFrame = { v: typeof SIGNALING_VERSION } & ServerNotification;
