import dgram from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { SegmentEntry } from '../../lib/contracts/recording.ts';
import { parseRecording } from '../../lib/recording/vrtp-format.ts';
import { TrackRecorder, bindPortPair } from './track-recorder.ts';

/** The dgram receive path (RECORDER_RX=node): time-based rotation of open segments. */
const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-track-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const SSRC = 0xcafe;
const PT = 111;
const rtp = (seq: number) => {
  const b = Buffer.alloc(100, 7);
  b[0] = 0x80;
  b[1] = PT;
  b.writeUInt16BE(seq, 2);
  b.writeUInt32BE(SSRC, 8);
  return b;
};

describe('track recorder (dgram path)', () => {
  it('rotates an open segment after RECORDER_SEGMENT_SECONDS, and leaves an empty one open', async () => {
    const pair = await bindPortPair('127.0.0.1', 32_000 + (process.pid % 500) * 4, 34_999, new Set());
    const sealed: { entry: SegmentEntry; trackOpen: boolean }[] = [];
    const rec = new TrackRecorder(
      {
        v: 1,
        room: 'r',
        session: 's',
        track: 'a',
        participant: { id: 'p', name: 'P' },
        kind: 'audio',
        codec: { mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: PT, parameters: {} },
        ssrc: SSRC,
        headerExtensions: [],
        consent: { decision: 'granted', method: 'click' },
      },
      pair.rtp,
      pair.rtcp,
      { dir: tmp, segment: 0, maxPacketBytes: 1500, fsyncIntervalMs: 100, segmentSeconds: 1, onDrop: () => {}, onSealed: (entry, trackOpen) => sealed.push({ entry, trackOpen }) },
    );
    const sock = dgram.createSocket('udp4');
    for (let i = 0; i < 3; i++) await new Promise<void>((r) => sock.send(rtp(i), pair.rtpPort, '127.0.0.1', () => r()));
    await expect.poll(() => sealed.length, { timeout: 5000, interval: 100 }).toBe(1);
    expect(sealed[0]).toMatchObject({ trackOpen: true, entry: { segment: 0, ssrc: SSRC, endReason: 'rotation', rtpPackets: 3 } });
    // Segment 1 has no packets: it stays open past its time.
    await new Promise((r) => setTimeout(r, 2200));
    expect(sealed).toHaveLength(1);
    const last = rec.stop('stopped')!;
    expect(last).toMatchObject({ segment: 1, endReason: 'stopped', rtpPackets: 0 });
    expect(parseRecording(readFileSync(path.join(tmp, 'a-1.vrtp'))).header).toMatchObject({ segment: 1, ssrc: SSRC });
    sock.close();
  });
});
