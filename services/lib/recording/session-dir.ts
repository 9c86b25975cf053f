import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';

/**
 * One recording session on disk, `<RECORDINGS_DIR>/<room>/<session>/`:
 *
 *   <track>-<n>.vrtp        a sealed track segment (verbatim-rtp, vrtp-format.ts)
 *   <track>-<n>.vrtp.part   the segment being written
 *   session.json            the recorder's journal while recording (manifest-shaped)
 *   manifest.json           the sealed session (verbatim-session), written once at the end
 *   .session.json.done      the journal, retired when manifest.json replaced it
 */
export const MANIFEST_FILE = 'manifest.json';
export const JOURNAL_FILE = 'session.json';
export const RETIRED_JOURNAL_FILE = '.session.json.done';
export const SEGMENT_EXTENSION = '.vrtp';
export const PART_SUFFIX = '.part';

export function sessionDirOf(recordingsDir: string, room: string, session: string): string {
  return path.join(recordingsDir, room, session);
}

export function journalPathOf(dir: string): string {
  return path.join(dir, JOURNAL_FILE);
}

/** `<track>-<n>`: a segment's name without extension (also the stem of what transcode makes of it). */
export function segmentName(track: string, segment: number): string {
  return `${track}-${segment}`;
}

export function segmentFileName(track: string, segment: number): string {
  return `${segmentName(track, segment)}${SEGMENT_EXTENSION}`;
}

/**
 * Reads a segment file name back: track ids may contain '-', the segment number is the
 * last '-<digits>' before `.vrtp` (or `.vrtp.part` while it is open).
 */
export function parseSegmentFileName(name: string): { track: string; segment: number; part: boolean } | null {
  const m = /^(.+)-(\d+)\.vrtp(\.part)?$/.exec(name);
  return m ? { track: m[1]!, segment: Number(m[2]), part: m[3] !== undefined } : null;
}

/** Sessions with a journal but no manifest: still recording, or interrupted by a crash. */
export function findUnsealedSessionDirs(recordingsDir: string): string[] {
  const out: string[] = [];
  for (const room of safeReaddir(recordingsDir)) {
    for (const session of safeReaddir(path.join(recordingsDir, room))) {
      const dir = sessionDirOf(recordingsDir, room, session);
      if (existsSync(journalPathOf(dir)) && !existsSync(path.join(dir, MANIFEST_FILE))) out.push(dir);
    }
  }
  return out;
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
