/**
 * The codecs Verbatim carries, in one table: the SFU's routers offer exactly these (in
 * this order, which sets their payload type preference), and transcode depacketizes a
 * recorded track with the depacketizer its codec names here. A codec that is not here
 * is never negotiated, and a recording that carries one fails with CODEC_UNSUPPORTED.
 */
export const DEPACKETIZERS = ['opus-ogg', 'vp8-ivf', 'h264-annexb'] as const;
export type DepacketizerId = (typeof DEPACKETIZERS)[number];

export interface RtcpFeedback {
  type: string;
  parameter?: string;
}

export interface CodecSpec {
  kind: 'audio' | 'video';
  mimeType: string;
  clockRate: number;
  channels?: number;
  /** fmtp parameters the router offers. */
  parameters?: Record<string, string | number>;
  /** RTCP feedback the router offers; absent: mediasoup's defaults for the codec. */
  rtcpFeedback?: RtcpFeedback[];
  /** Which of transcode's depacketizers turns its RTP into a file. */
  depacketizer: DepacketizerId;
}

export const CODECS: readonly CodecSpec[] = [
  { kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2, depacketizer: 'opus-ogg' },
  { kind: 'video', mimeType: 'video/VP8', clockRate: 90000, parameters: { 'x-google-start-bitrate': 1000 }, depacketizer: 'vp8-ivf' },
  {
    kind: 'video',
    mimeType: 'video/H264',
    clockRate: 90000,
    // Packetization mode 1 (FU-A/STAP-A) is what h264-annexb reads; constrained baseline 3.1.
    parameters: { 'packetization-mode': 1, 'profile-level-id': '42e01f', 'level-asymmetry-allowed': 1 },
    depacketizer: 'h264-annexb',
  },
];

/** The table's entry for a MIME type (compared case-insensitively, as SDP does). */
export function codecByMimeType(mimeType: string): CodecSpec | undefined {
  const m = mimeType.toLowerCase();
  return CODECS.find((c) => c.mimeType.toLowerCase() === m);
}

/** The table as router codec capabilities (mediasoup's RouterRtpCodecCapability shape), fresh objects each call. */
export function routerCodecCapabilities(): Omit<CodecSpec, 'depacketizer'>[] {
  return CODECS.map(({ depacketizer: _, ...c }) => structuredClone(c));
}
