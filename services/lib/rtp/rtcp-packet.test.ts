import { describe, expect, it } from 'vitest';
import { NTP_UNIX_OFFSET } from './ntp-time.ts';
import { RtcpType, isRtcpPacketType, parseRtcp, peekRtcpSsrc, peekRtcpType, senderReportsOf } from './rtcp-packet.ts';

/** An RTCP SR (RFC 3550 §6.4.1) with no report blocks. */
function senderReport(ssrc: number, ntpSeconds: number, ntpFraction: number, rtpTimestamp: number, packets = 5, octets = 800): Buffer {
  const sr = Buffer.alloc(28);
  sr[0] = 0x80;
  sr[1] = RtcpType.SR;
  sr.writeUInt16BE(6, 2);
  sr.writeUInt32BE(ssrc, 4);
  sr.writeUInt32BE(ntpSeconds, 8);
  sr.writeUInt32BE(ntpFraction, 12);
  sr.writeUInt32BE(rtpTimestamp, 16);
  sr.writeUInt32BE(packets, 20);
  sr.writeUInt32BE(octets, 24);
  return sr;
}

/** SDES with one CNAME chunk. */
function sdes(ssrc: number): Buffer {
  const b = Buffer.alloc(16);
  b[0] = 0x81;
  b[1] = RtcpType.SDES;
  b.writeUInt16BE(3, 2);
  b.writeUInt32BE(ssrc, 4);
  b[8] = 1;
  b[9] = 4;
  b.write('abcd', 10, 'latin1');
  return b;
}

describe('parseRtcp', () => {
  it('walks a compound SR + SDES and reads the sender report fields', () => {
    const r = parseRtcp(Buffer.concat([senderReport(1234, NTP_UNIX_OFFSET + 1_700_000_000, 0x8000_0000, 4_294_965_376), sdes(1234)]));
    expect(r.malformed).toBe(false);
    expect(r.packets.map((p) => [p.name, p.packetType, p.count, p.length, p.ssrc])).toEqual([
      ['SR', 200, 0, 28, 1234],
      ['SDES', 202, 1, 16, 1234],
    ]);
    expect(r.packets[0]!.sr).toEqual({ ntpSeconds: NTP_UNIX_OFFSET + 1_700_000_000, ntpFraction: 0x8000_0000, ntpTime: '2023-11-14T22:13:20.500Z', rtpTimestamp: 4_294_965_376, packetCount: 5, octetCount: 800 });
    expect(r.packets[1]!.sr).toBeUndefined();
  });

  it('keeps what precedes a malformed sub-packet and says so', () => {
    const good = senderReport(1, NTP_UNIX_OFFSET, 0, 0);
    const cut = Buffer.concat([good, sdes(1)]).subarray(0, 28 + 10); // SDES length runs past the end
    expect(parseRtcp(cut)).toMatchObject({ malformed: true, packets: [{ name: 'SR' }] });
    const badVersion = Buffer.concat([good, sdes(1)]);
    badVersion[28] = 0x41;
    expect(parseRtcp(badVersion)).toMatchObject({ malformed: true, packets: [{ name: 'SR' }] });
    expect(parseRtcp(Buffer.from([0x80, 200, 0]))).toEqual({ packets: [], malformed: true });
    // A sender report too short for its fields is listed without them.
    const short = Buffer.from([0x80, 200, 0, 1, 0, 0, 0, 9]);
    expect(parseRtcp(short)).toEqual({ packets: [{ packetType: 200, name: 'SR', count: 0, length: 8, ssrc: 9 }], malformed: false });
    expect(parseRtcp(senderReport(1, 0, 0, 0)).packets[0]!.sr!.ntpTime).toBe(''); // before 1970
  });

  it('senderReportsOf keeps the SRs of one stream, in order', () => {
    const b = Buffer.concat([senderReport(7, NTP_UNIX_OFFSET + 10, 0, 100), sdes(7), senderReport(8, NTP_UNIX_OFFSET + 11, 0, 200), senderReport(7, NTP_UNIX_OFFSET + 12, 0, 300)]);
    expect(senderReportsOf(b, 7).map((s) => s.rtpTimestamp)).toEqual([100, 300]);
    expect(senderReportsOf(b, 8).map((s) => s.ntpSeconds)).toEqual([NTP_UNIX_OFFSET + 11]);
    expect(senderReportsOf(b, 9)).toEqual([]);
  });
});

describe('RTCP peeks', () => {
  it('isRtcpPacketType is exactly 192–223 (RFC 5761 muxing)', () => {
    const rtcp = Array.from({ length: 256 }, (_, i) => i).filter(isRtcpPacketType);
    expect(rtcp[0]).toBe(192);
    expect(rtcp.at(-1)).toBe(223);
    expect(rtcp).toHaveLength(32);
  });

  it('read the first packet type and sender SSRC in place', () => {
    const b = Buffer.concat([senderReport(0xcafe_f00d, 0, 0, 0), sdes(1)]);
    expect(peekRtcpType(b)).toBe(RtcpType.SR);
    expect(peekRtcpSsrc(b)).toBe(0xcafe_f00d);
  });
});
