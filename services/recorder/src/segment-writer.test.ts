import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { RecordType, parseRecording } from '../../lib/recording/vrtp-format.ts';
import { sampleHeader } from '../../../testing/recording-fixtures.ts';
import { SegmentWriter } from './segment-writer.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-seg-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const rtp = (seq: number, size = 160) => {
  const b = Buffer.alloc(size, seq & 0xff);
  b[0] = 0x80;
  b[1] = 100;
  b.writeUInt16BE(seq & 0xffff, 2);
  return b;
};

describe('segment writer', () => {
  it('writes .part, renames on seal, and the summary matches the file', () => {
    const dir = path.join(tmp, 'a');
    const w = new SegmentWriter(dir, 'track1-0', sampleHeader(), { fsyncIntervalMs: 50, bufferBytes: 4096 });
    expect(existsSync(w.partPath)).toBe(true);
    for (let i = 0; i < 500; i++) w.append(RecordType.RTP, 1_000_000 + i * 20_000, rtp(i));
    w.append(RecordType.RTCP, 2_000_000, Buffer.from([0x80, 200, 0, 6, 0, 0, 0, 1]));
    const s = w.seal();
    expect(w.seal()).toBe(s); // idempotent
    expect(existsSync(w.partPath)).toBe(false);
    const bytes = readFileSync(w.finalPath);
    expect(s).toMatchObject({ file: 'track1-0.vrtp', bytes: bytes.length, rtpPackets: 500, rtcpPackets: 1, truncated: false, firstArrivalUs: 1_000_000 });
    expect(s.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    const parsed = parseRecording(bytes);
    expect(parsed.records).toHaveLength(501);
    expect(parsed.records[499]!.data.readUInt16BE(2)).toBe(499);
    expect(w.append(RecordType.RTP, 1, rtp(1))).toBe(false);
  });

  it('a crashed writer leaves a .part readable up to its last flush', () => {
    const dir = path.join(tmp, 'b');
    const w = new SegmentWriter(dir, 'track2-0', sampleHeader(), { fsyncIntervalMs: 1000, bufferBytes: 4096 });
    for (let i = 0; i < 100; i++) w.append(RecordType.RTP, i, rtp(i));
    w.flush();
    for (let i = 100; i < 110; i++) w.append(RecordType.RTP, i, rtp(i)); // staged only: lost in a crash
    const parsed = parseRecording(readFileSync(w.partPath));
    expect(parsed.records).toHaveLength(100);
    expect(parsed.tornBytes).toBe(0);
    w.seal();
  });

  // A real full filesystem: a 256 KiB tmpfs (needs root to mount, as on CI and dev machines).
  const canMount = process.getuid?.() === 0;
  it.skipIf(!canMount)('ENOSPC mid-write closes the segment cleanly at its last complete record, marked truncated', () => {
    const mnt = path.join(tmp, 'full');
    mkdirSync(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mnt]);
    try {
      const errors: string[] = [];
      const w = new SegmentWriter(mnt, 'track3-0', sampleHeader(), { fsyncIntervalMs: 1000, bufferBytes: 16 * 1024, onError: (e) => errors.push(e.code ?? '') });
      let accepted = 0;
      for (let i = 0; i < 5000 && w.append(RecordType.RTP, i, rtp(i, 1000)); i++) accepted++;
      expect(errors).toEqual(['ENOSPC']);
      expect(w.isOpen).toBe(false);
      const s = w.seal();
      expect(s.truncated).toBe(true);
      expect(s.truncatedReason).toBe('ENOSPC');
      const bytes = readFileSync(w.finalPath);
      expect(bytes.length).toBe(s.bytes);
      const parsed = parseRecording(bytes);
      expect(parsed.tornBytes).toBe(0);
      expect(parsed.records.length).toBe(s.rtpPackets);
      expect(s.rtpPackets + w.lostPackets).toBe(accepted);
      expect(s.rtpPackets).toBeGreaterThan(200);
      expect(s.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    } finally {
      execFileSync('umount', ['-l', mnt]);
    }
  });
});
