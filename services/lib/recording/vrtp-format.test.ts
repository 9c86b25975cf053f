import { describe, expect, it } from 'vitest';
import { RecordType, encodeFileHeader, encodeRecord, parseRecording } from './vrtp-format.ts';
import { sampleHeader } from '../../../testing/recording-fixtures.ts';

describe('recording format', () => {
  it('round-trips header and records, including large arrival times', () => {
    const now = Date.now() * 1000 + 123;
    const buf = Buffer.concat([
      encodeFileHeader(sampleHeader()),
      encodeRecord(RecordType.RTP, now, Buffer.from([0x80, 100, 0, 1])),
      encodeRecord(RecordType.RTCP, now + 5, Buffer.from([0x80, 200, 0, 6])),
    ]);
    const parsed = parseRecording(buf);
    expect(parsed.header.codec.mimeType).toBe('audio/opus');
    expect(parsed.records.map((r) => [r.type, r.arrivalUs, [...r.data]])).toEqual([
      [1, now, [0x80, 100, 0, 1]],
      [2, now + 5, [0x80, 200, 0, 6]],
    ]);
    expect(parsed.tornBytes).toBe(0);
    expect(parsed.stopReason).toBeUndefined();
  });

  it('stops cleanly at a torn tail and at a corrupted record', () => {
    const recs = Array.from({ length: 10 }, (_, i) => encodeRecord(RecordType.RTP, 1000 + i, Buffer.alloc(50, i)));
    const full = Buffer.concat([encodeFileHeader(sampleHeader()), ...recs]);
    for (let cut = 1; cut < recs[9]!.length; cut += 7) {
      const torn = parseRecording(full.subarray(0, full.length - cut));
      expect(torn.records).toHaveLength(9);
      expect(torn.stopReason).toBe('truncated-record');
    }
    const flipped = Buffer.from(full);
    flipped[full.length - recs[9]!.length - 20]! ^= 0xff; // inside record 8's payload
    const bad = parseRecording(flipped);
    expect(bad.records).toHaveLength(8);
    expect(bad.stopReason).toBe('crc-mismatch');
  });

  it('refuses foreign files, unknown versions and damaged headers', () => {
    expect(() => parseRecording(Buffer.from('RIFF....WAVEfmt '))).toThrow(/bad magic/);
    const h = encodeFileHeader(sampleHeader());
    const v2 = Buffer.from(h);
    v2.writeUInt16BE(2, 8);
    expect(() => parseRecording(v2)).toThrow(expect.objectContaining({ code: 'UNSUPPORTED_VERSION' }));
    const dmg = Buffer.from(h);
    dmg[20]! ^= 1;
    expect(() => parseRecording(dmg)).toThrow(/damaged header/);
  });
});
