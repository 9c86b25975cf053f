import { describe, expect, it } from 'vitest';
import { Verdict, classifyRtcpPort, classifyRtpPort } from './packet-classifier.ts';

const SSRC = 0x1234abcd;
const PT = 100;
const MTU = 1500;

function rtp(ssrc = SSRC, pt = PT, size = 120): Buffer {
  const b = Buffer.alloc(size);
  b[0] = 0x80;
  b[1] = pt | 0x80;
  b.writeUInt32BE(ssrc >>> 0, 8);
  return b;
}
function rtcp(type: number, ssrc = SSRC, size = 28): Buffer {
  const b = Buffer.alloc(size);
  b[0] = 0x80;
  b[1] = type;
  b.writeUInt16BE(size / 4 - 1, 2);
  b.writeUInt32BE(ssrc >>> 0, 4);
  return b;
}

describe('packet classifier', () => {
  it('RTP port: keeps this track’s RTP and muxed RTCP, names every drop', () => {
    expect(classifyRtpPort(rtp(), MTU, SSRC, PT)).toBe(Verdict.RTP);
    expect(classifyRtpPort(rtcp(200), MTU, SSRC, PT)).toBe(Verdict.RTCP); // RFC 5761 muxing
    expect(classifyRtpPort(rtcp(202, 99, 8), MTU, SSRC, PT)).toBe(Verdict.RTCP); // short, not an SR: kept
    expect(classifyRtpPort(rtcp(200, 99), MTU, SSRC, PT)).toBe('unknown_ssrc'); // someone else's SR
    expect(classifyRtpPort(Buffer.alloc(11, 0x80), MTU, SSRC, PT)).toBe('too_short');
    expect(classifyRtpPort(rtp(SSRC, PT, MTU + 1), MTU, SSRC, PT)).toBe('over_mtu');
    const v1 = rtp();
    v1[0] = 0x40;
    expect(classifyRtpPort(v1, MTU, SSRC, PT)).toBe('bad_version');
    expect(classifyRtpPort(rtp(SSRC + 1), MTU, SSRC, PT)).toBe('unknown_ssrc');
    expect(classifyRtpPort(rtp(SSRC, PT + 1), MTU, SSRC, PT)).toBe('unknown_payload_type');
  });

  it('RTCP port: RTCP only, SRs only from this track', () => {
    expect(classifyRtcpPort(rtcp(200), MTU, SSRC)).toBe(Verdict.RTCP);
    expect(classifyRtcpPort(rtcp(203, 77, 8), MTU, SSRC)).toBe(Verdict.RTCP);
    expect(classifyRtcpPort(rtcp(200, 77), MTU, SSRC)).toBe('unknown_ssrc');
    expect(classifyRtcpPort(rtcp(191), MTU, SSRC)).toBe('not_rtcp');
    expect(classifyRtcpPort(rtcp(224), MTU, SSRC)).toBe('not_rtcp');
    expect(classifyRtcpPort(Buffer.alloc(7, 0x80), MTU, SSRC)).toBe('too_short');
    expect(classifyRtcpPort(rtcp(200, SSRC, 1504), MTU, SSRC)).toBe('over_mtu');
    const v0 = rtcp(200);
    v0[0] = 0x00;
    expect(classifyRtcpPort(v0, MTU, SSRC)).toBe('bad_version');
  });
});
