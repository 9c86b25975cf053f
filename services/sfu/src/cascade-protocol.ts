import type { RawData } from 'ws';
import { z } from 'zod';

/**
 * The host-to-host link of a cascaded room (cascade-hub.ts on the origin, cascade-link.ts on the
 * host serving viewers): one WebSocket per room and host at /cluster/v1/rooms/:id/link,
 * authenticated with SFU_CLUSTER_SECRET, one JSON frame per message. Media goes over a mediasoup
 * PipeTransport pair (SRTP) the two sides set up with `open` / `opened`; each origin producer is
 * asked for with `consume` and recreated on the other side with the same id. No client sees it.
 */
export const CASCADE_PROTOCOL_VERSION = 1;
export const CASCADE_PATH = /^\/cluster\/v1\/rooms\/([A-Za-z0-9_-]{1,64})\/link$/;

const Srtp = z.object({ cryptoSuite: z.enum(['AEAD_AES_256_GCM', 'AEAD_AES_128_GCM', 'AES_CM_128_HMAC_SHA1_80', 'AES_CM_128_HMAC_SHA1_32']), keyBase64: z.string().min(1).max(200) });
const Endpoint = z.object({ ip: z.string().min(1).max(100), port: z.number().int().min(1).max(65535), srtp: Srtp });
const Kind = z.enum(['audio', 'video']);
const ProducerInfo = z.object({ producerId: z.string().min(1).max(100), peerId: z.string().min(1).max(200), peerName: z.string().max(200), kind: Kind });

export const EdgeFrameSchema = z.discriminatedUnion('t', [
  z.object({ t: z.literal('open'), v: z.literal(CASCADE_PROTOCOL_VERSION), host: z.string().min(1).max(200) }).extend(Endpoint.shape),
  z.object({ t: z.literal('consume'), producerId: z.string().min(1).max(100) }),
]);

export const OriginFrameSchema = z.discriminatedUnion('t', [
  z.object({ t: z.literal('opened'), recording: z.boolean(), activeSpeaker: z.string().nullable(), producers: z.array(ProducerInfo) }).extend(Endpoint.shape),
  z.object({ t: z.literal('producer') }).extend(ProducerInfo.shape),
  // rtpParameters as mediasoup's pipe consumer gives them: passed through to produce() on the other side.
  z.object({ t: z.literal('consumed'), producerId: z.string(), kind: Kind, rtpParameters: z.record(z.string(), z.unknown()), paused: z.boolean() }),
  z.object({ t: z.literal('consumeFailed'), producerId: z.string(), code: z.string(), message: z.string() }),
  z.object({ t: z.literal('closed'), producerId: z.string() }),
  z.object({ t: z.literal('paused'), producerId: z.string() }),
  z.object({ t: z.literal('resumed'), producerId: z.string() }),
  z.object({ t: z.literal('speaker'), peerId: z.string() }),
  z.object({ t: z.literal('recording'), recording: z.boolean() }),
]);

export type EdgeFrame = z.infer<typeof EdgeFrameSchema>;
export type OriginFrame = z.infer<typeof OriginFrameSchema>;
export type CascadeProducer = z.infer<typeof ProducerInfo>;

/** WebSocket close codes of the link. */
export const LINK_CLOSE = { roomClosed: 4000, notOrigin: 4009, protocol: 4400, shutdown: 4001 } as const;

/** A WebSocket message as text (ws hands a Buffer, an ArrayBuffer or fragments). */
export function rawText(data: RawData): string {
  return Array.isArray(data) ? Buffer.concat(data).toString('utf8') : Buffer.from(data as ArrayBuffer).toString('utf8');
}
