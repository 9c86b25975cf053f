/** The one RTP/RTCP parser: the recorder's classifier, inspect, the depacketizers and the clock stage use it. */
export * from './rtp-packet.ts';
export * from './rtcp-packet.ts';
export * from './ntp-time.ts';
export * from './sequence-unwrap.ts';
