import { describe, expect, it } from 'vitest';
import { RecordType, encodeFileHeader, encodeRecord } from '../../../lib/recording/vrtp-format.ts';
import { sampleHeader } from '../../../../testing/recording-fixtures.ts';
import { ntpToWallOffsetUs, readTrackPackets, wallClockMapper, type RtpPacket, type TrackPackets } from './rtp-stream.ts';

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

/** A recorder segment: `packets` as (sequence, RTP timestamp, arrival µs), plus sender reports (NTP µs, RTP ts, arrival µs). */
function segment(packets: [number, number, number][], srs: [number, number, number][] = []): Buffer {
  const rtp = (seq: number, ts: number) => {
    const h = Buffer.alloc(12);
    h[0] = 0x80;
    h[1] = 100;
    h.writeUInt16BE(seq & 0xffff, 2);
    h.writeUInt32BE(((ts % 2 ** 32) + 2 ** 32) % 2 ** 32, 4);
    h.writeUInt32BE(1234, 8);
    return Buffer.concat([h, opus20]);
  };
  const sr = (wallUs: number, ts: number) => {
    const b = Buffer.alloc(28);
    b[0] = 0x80;
    b[1] = 200;
    b.writeUInt16BE(6, 2);
    b.writeUInt32BE(1234, 4);
    const ntp = wallUs / 1e6 + 2_208_988_800;
    b.writeUInt32BE(Math.floor(ntp), 8);
    b.writeUInt32BE(Math.floor((ntp % 1) * 2 ** 32), 12);
    b.writeUInt32BE(((ts % 2 ** 32) + 2 ** 32) % 2 ** 32, 16);
    return b;
  };
  const records = [...packets.map(([seq, ts, at]) => ({ at, b: encodeRecord(RecordType.RTP, at, rtp(seq, ts)) })), ...srs.map(([wall, ts, at]) => ({ at, b: encodeRecord(RecordType.RTCP, at, sr(wall, ts)) }))].sort((a, b) => a.at - b.at);
  return Buffer.concat([encodeFileHeader(sampleHeader({ ssrc: 1234 })), ...records.map((r) => r.b)]);
}

const T0 = 1_700_000_000_000_000;
/** A real stream: 20 ms packets from RTP 0xffff_0000 (it wraps after ~1.4 s), arriving 20 ms apart. */
const real = (n: number, from = 0): [number, number, number][] => Array.from({ length: n }, (_, k) => [100 + from + k, 0xffff_0000 + (from + k) * 960, T0 + (from + k) * 20_000]);

describe('readTrackPackets: the RTP clock is checked against arrival', () => {
  it('drops packets whose timestamp disagrees with their arrival (hours ahead, minutes back, random) before unwrapping; every real packet keeps its place', () => {
    const good = real(200);
    const junk: [number, number, number][] = [
      [1000, 0xffff_0000 + 19 * 3600 * 48_000, T0 + 5_000],
      [1001, 0xffff_0000 - 600 * 48_000, T0 + 1_000_005],
      [1002, 123_456_789, T0 + 2_000_005],
      [1003, 0xffff_0000 + 3 * 48_000 + 40 * 960, T0 + 40 * 20_000 + 5], // 3 s early: beyond the tolerance
    ];
    const t = readTrackPackets(segment([...good, ...junk]), 'junk.vrtp');
    expect(t.dropped.offClock).toBe(4);
    expect(t.packets).toHaveLength(200);
    // One timeline across the 32-bit wrap: 960 ticks apart throughout, the junk changed no cycle.
    expect(t.packets.every((p, i) => i === 0 || p.ts - t.packets[i - 1]!.ts === 960)).toBe(true);
    expect(t.packets[0]!.ts).toBe(0xffff_0000 + 2 ** 32);
  });

  it('keeps jitter, a late burst and DTX (timestamps and arrival jump together)', () => {
    const pkts = real(300).map(([seq, ts, at], k): [number, number, number] => [seq, ts, at + (k % 7) * 3_000 + (k >= 100 && k < 150 ? (150 - k) * 20_000 : 0)]);
    const dtx = pkts.filter((_, k) => k < 200 || k > 260);
    const t = readTrackPackets(segment(dtx), 'jitter.vrtp');
    expect(t.dropped.offClock).toBe(0);
    expect(t.packets).toHaveLength(dtx.length);
  });

  it('a stream with no believable clock keeps nothing: every timestamp 10 s behind the last, or a clock running backwards', () => {
    const far = Array.from({ length: 60 }, (_, k): [number, number, number] => [k, 3_000_000_000 - k * 480_000, T0 + k * 20_000]);
    expect(readTrackPackets(segment(far), 'far.vrtp')).toMatchObject({ packets: [], dropped: { offClock: 60 } });
    // Consistent within the tolerance, but RTP time runs backwards while the packets arrive over 2 s.
    const backwards = Array.from({ length: 100 }, (_, k): [number, number, number] => [k, 3_000_000_000 - k * 480, T0 + k * 20_000]);
    expect(readTrackPackets(segment(backwards), 'back.vrtp')).toMatchObject({ packets: [], dropped: { offClock: 100 } });
  });

  it('a sender report far from arrival does not move the track: rejected, and the track is placed by its other reports or by arrival', () => {
    // mediasoup-style NTP: its own clock, here 1000 s behind the wall clock, the same for every report.
    const ntp = (at: number) => at - 1_000_000_000;
    const good = real(250);
    const tsAt = (k: number) => 0xffff_0000 + k * 960;
    const srs: [number, number, number][] = [
      [ntp(T0 + 1_000_000), tsAt(50), T0 + 1_000_000],
      [ntp(T0 + 3_000_000), tsAt(150), T0 + 3_000_000],
      [ntp(T0 + 4_000_000) + 3600e6, tsAt(200), T0 + 4_000_000], // junk: an hour off
    ];
    const t = readTrackPackets(segment(good, srs), 'sr.vrtp');
    const offset = ntpToWallOffsetUs([t]);
    expect(offset).toBe(1_000_000_000);
    const m = wallClockMapper(t, offset);
    expect(m.source).toBe('rtcp-sr');
    expect(m.rejectedSenderReports).toBe(1);
    expect(m.toWallUs(t.packets[100]!.ts)).toBeCloseTo(T0 + 100 * 20_000 - 20_000, -1);
    // A second track of the session whose only report is junk: the session's clock comes from the reports that agree, this track from its arrival.
    const lone = readTrackPackets(segment(good, [[ntp(T0) + 7200e6, tsAt(10), T0 + 200_000]]), 'sr2.vrtp');
    expect(ntpToWallOffsetUs([t, lone])).toBe(1_000_000_000);
    const byArrival = wallClockMapper(lone, ntpToWallOffsetUs([t, lone]));
    expect(byArrival).toMatchObject({ source: 'arrival', rejectedSenderReports: 1 });
    expect(byArrival.toWallUs(lone.packets[0]!.ts)).toBeCloseTo(T0 - 20_000, -1);
  });
});
