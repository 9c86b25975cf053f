import { describe, expect, it } from 'vitest';
import { sampleHeader } from '../../../../testing/recording-fixtures.ts';
import { wallClockMapper, type RtpPacket, type TrackPackets } from './rtp-stream.ts';

const opus20 = Buffer.from([0xf8, 0xff, 0xfe]); // CELT FB 20 ms, one frame
const opus60 = Buffer.from([0xfb, 0x03, 0xff, 0xfe]); // CELT FB 20 ms × 3 frames (code 3)

function track(kind: 'audio' | 'video', payload: Buffer, step: number, sr?: { wallUs: number; rtpTs: number }): TrackPackets {
  const codec = kind === 'audio' ? { mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 100, parameters: {} } : { mimeType: 'video/VP8', clockRate: 90000, payloadType: 101, parameters: {} };
  const packets: RtpPacket[] = Array.from({ length: 50 }, (_, i) => ({ seq: 1000 + i, ts: 96_000 + i * step, marker: true, payload, arrivalUs: 5_000_000 + i * 20_000 }));
  return { header: sampleHeader({ kind, codec }), packets, senderReports: sr ? [{ ...sr, arrivalUs: sr.wallUs }] : [], dropped: { duplicate: 0, late: 0, malformed: 0, offClock: 0 } };
}

describe('wallClockMapper', () => {
  it('puts an audio timestamp one packet duration before its transmission time (SR or arrival)', () => {
    const sr = { wallUs: 1_000_000_000, rtpTs: 96_000 };
    const a20 = wallClockMapper(track('audio', opus20, 960, sr));
    expect(a20.source).toBe('rtcp-sr');
    expect(a20.toWallUs(96_000)).toBeCloseTo(1_000_000_000 - 20_000, 3);
    expect(a20.toWallUs(96_000 + 48_000)).toBeCloseTo(1_001_000_000 - 20_000, 3);
    expect(wallClockMapper(track('audio', opus60, 2880, sr)).toWallUs(96_000)).toBeCloseTo(1_000_000_000 - 60_000, 3);
    const byArrival = wallClockMapper(track('audio', opus20, 960));
    expect(byArrival.source).toBe('arrival');
    expect(byArrival.toWallUs(96_000)).toBeCloseTo(5_000_000 - 20_000, 3);
  });

  it('leaves video on its transmission time (a frame is sent right after capture and encode)', () => {
    const v = wallClockMapper(track('video', Buffer.from([0x10, 0, 0, 0]), 6000, { wallUs: 1_000_000_000, rtpTs: 96_000 }));
    expect(v.captureLeadUs).toBe(0);
    expect(v.toWallUs(96_000 + 90_000)).toBeCloseTo(1_001_000_000, 3);
  });
});
