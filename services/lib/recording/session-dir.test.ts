import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { JOURNAL_FILE, MANIFEST_FILE, findUnsealedSessionDirs, parseSegmentFileName, segmentFileName, segmentName, sessionDirOf } from './session-dir.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-sessdir-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('session directory layout', () => {
  it('names segments <track>-<n>.vrtp and reads the names back, track ids with dashes and digits included', () => {
    expect(segmentName('alice-audio', 0)).toBe('alice-audio-0');
    expect(segmentFileName('alice-audio', 12)).toBe('alice-audio-12.vrtp');
    for (const [track, n] of [['a', 0], ['alice-audio', 3], ['x-5', 0], ['p.1@room_2-7', 41]] as const) {
      expect(parseSegmentFileName(segmentFileName(track, n))).toEqual({ track, segment: n, part: false });
      expect(parseSegmentFileName(`${segmentFileName(track, n)}.part`)).toEqual({ track, segment: n, part: true });
    }
    for (const other of [MANIFEST_FILE, JOURNAL_FILE, 'a-0.vrtp.tmp', 'a.vrtp', '-0.vrtp', 'a-x.vrtp']) expect(parseSegmentFileName(other)).toBeNull();
  });

  it('finds the sessions that have a journal and no manifest', () => {
    const rec = path.join(tmp, 'recordings');
    const open = sessionDirOf(rec, 'room1', 'open');
    const sealed = sessionDirOf(rec, 'room1', 'sealed');
    const empty = sessionDirOf(rec, 'room2', 'empty');
    for (const d of [open, sealed, empty]) mkdirSync(d, { recursive: true });
    writeFileSync(path.join(open, JOURNAL_FILE), '{}');
    writeFileSync(path.join(sealed, JOURNAL_FILE), '{}');
    writeFileSync(path.join(sealed, MANIFEST_FILE), '{}');
    writeFileSync(path.join(rec, 'stray-file'), '');
    expect(open).toBe(path.join(rec, 'room1', 'open'));
    expect(findUnsealedSessionDirs(rec)).toEqual([open]);
    expect(findUnsealedSessionDirs(path.join(tmp, 'nothing-here'))).toEqual([]);
  });
});
