import { describe, expect, it } from 'vitest';
import { CODECS, DEPACKETIZERS, codecByMimeType, routerCodecCapabilities } from './codecs.ts';

describe('codec table', () => {
  it('gives the routers the codecs they always offered, in the same order', () => {
    expect(routerCodecCapabilities()).toEqual([
      { kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2 },
      { kind: 'video', mimeType: 'video/VP8', clockRate: 90000, parameters: { 'x-google-start-bitrate': 1000 } },
      { kind: 'video', mimeType: 'video/H264', clockRate: 90000, parameters: { 'packetization-mode': 1, 'profile-level-id': '42e01f', 'level-asymmetry-allowed': 1 } },
    ]);
    const a = routerCodecCapabilities();
    a[1]!.parameters!['x-google-start-bitrate'] = 1;
    expect(routerCodecCapabilities()[1]!.parameters).toEqual({ 'x-google-start-bitrate': 1000 }); // copies, not the table
  });

  it('looks codecs up case-insensitively and knows nothing else', () => {
    expect(codecByMimeType('audio/OPUS')?.depacketizer).toBe('opus-ogg');
    expect(codecByMimeType('video/vp8')?.depacketizer).toBe('vp8-ivf');
    expect(codecByMimeType('video/h264')?.depacketizer).toBe('h264-annexb');
    expect(codecByMimeType('video/AV1')).toBeUndefined();
    expect(codecByMimeType('video/VP9')).toBeUndefined();
    expect(new Set(CODECS.map((c) => c.mimeType.toLowerCase())).size).toBe(CODECS.length);
    expect(CODECS.every((c) => DEPACKETIZERS.includes(c.depacketizer))).toBe(true);
  });
});
