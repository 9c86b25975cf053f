import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { SegmentEntry } from '../../lib/contracts/recording.ts';
import { createLogger } from '../../lib/logger.ts';
import type { LiveSessionState } from './live-session-store.ts';
import { foldPoolState } from './pool-seal.ts';
import { RecordingSession } from './recording-session.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-pool-seal-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const logger = createLogger({ level: 'silent' });

const entry = (segment: number, startS: number, endS: number, extra: Partial<SegmentEntry> = {}): SegmentEntry => ({
  segment,
  file: `a-${segment}.vrtp`,
  ssrc: 1,
  startedAt: new Date(startS * 1000).toISOString(),
  startedAtUs: startS * 1e6,
  endedAt: new Date(endS * 1000).toISOString(),
  endReason: 'stopped',
  bytes: 5,
  sha256: '0'.repeat(64),
  rtpPackets: 1,
  rtcpPackets: 0,
  firstArrivalUs: startS * 1e6 + 1000,
  lastArrivalUs: endS * 1e6,
  truncated: false,
  ...extra,
});

function state(segments: LiveSessionState['segments']): LiveSessionState {
  return {
    participants: [{ id: 'p', name: 'P', consent: { decision: 'granted', method: 'click' } }],
    tracks: [{ track: 'a', participant: 'p', kind: 'audio', codec: { mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 111, parameters: {} }, headerExtensions: [] }],
    segments,
    placements: [],
    events: [{ at: new Date(0).toISOString(), type: 'recording-on', details: { by: 'admin' } }],
  };
}

describe('sealing from the pool state', () => {
  it("brings other recorders' segments in: copied from a reachable directory, referenced when stored, a gap where neither", () => {
    const mine = path.join(tmp, 'mine');
    const theirs = path.join(tmp, 'theirs');
    mkdirSync(mine);
    mkdirSync(theirs);
    writeFileSync(path.join(theirs, 'a-0.vrtp'), 'bytes');
    const s = new RecordingSession(mine, 'r', 's', new Date(0).toISOString());
    s.addEvents([{ at: new Date(0).toISOString(), type: 'recording-on', details: { by: 'admin' } }]);
    const r = foldPoolState(
      s,
      state([
        { track: 'a', recorderId: 'other', sessionDir: theirs, entry: entry(0, 0, 10, { recorder: 'other' }) },
        // In object storage: no disk needed (the field R-A's upload sets on the entry).
        { track: 'a', recorderId: 'gone', sessionDir: '/nonexistent', entry: { ...entry(100_000, 10, 20, { recorder: 'gone' }), stored: { key: 'raw/x', at: '2026-12-07T00:00:00.000Z' } } },
        { track: 'a', recorderId: 'gone', sessionDir: '/nonexistent', entry: entry(100_001, 20, 30, { recorder: 'gone' }) },
      ]),
      { recorderId: 'me', liveRecorders: new Set(['me', 'other']) },
      logger,
    );
    expect(r.imported).toBe(2);
    expect(r.unavailable).toEqual([{ track: 'a', file: 'a-100001.vrtp', recorderId: 'gone' }]);
    expect(readFileSync(path.join(mine, 'a-0.vrtp'), 'utf8')).toBe('bytes');
    const m = s.manifest();
    expect(m.tracks[0]!.segments.map((x) => x.segment)).toEqual([0, 100_000]);
    expect(m.participants.map((p) => p.id)).toEqual(['p']);
    // The same event from this recorder's journal and the database, once.
    expect(m.events.filter((e) => e.type === 'recording-on')).toHaveLength(1);
  });
});
