import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { SegmentEntry } from '../../lib/contracts/recording.ts';
import { RecordingSession } from './recording-session.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-session-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const entry = (segment: number, endReason: string): SegmentEntry => ({
  segment,
  file: `a-${segment}.vrtp`,
  ssrc: 1,
  startedAt: new Date(segment * 60_000).toISOString(),
  startedAtUs: segment * 60_000_000,
  endedAt: new Date((segment + 1) * 60_000).toISOString(),
  endReason,
  bytes: 100,
  sha256: '0'.repeat(64),
  rtpPackets: 1,
  rtcpPackets: 0,
  firstArrivalUs: segment * 60_000_000,
  lastArrivalUs: (segment + 1) * 60_000_000 - 1,
  truncated: false,
});

describe('recording session manifest', () => {
  it('a timed rotation or an SSRC change continues a track; a restart is a gap', () => {
    const s = new RecordingSession(tmp, 'r', 's', new Date(0).toISOString());
    s.addTrack({
      v: 1,
      room: 'r',
      session: 's',
      track: 'a',
      participant: { id: 'p', name: 'P' },
      kind: 'audio',
      codec: { mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 111, parameters: {} },
      ssrc: 1,
      headerExtensions: [],
      consent: { decision: 'granted', method: 'click' },
    });
    for (const [i, reason] of ['rotation', 'ssrc-change', 'recorder-crash', 'stopped'].entries()) s.addSegment('a', entry(i, reason), i < 3);
    expect(s.manifest().gaps).toEqual([{ track: 'a', from: new Date(3 * 60_000 - 0.001).toISOString(), to: new Date(3 * 60_000).toISOString(), reason: 'recorder-crash' }]);
  });
});
