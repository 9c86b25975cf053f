import { copyFileSync, existsSync, linkSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import type { SegmentEntry } from '../../lib/contracts/recording.ts';
import type { Logger } from '../../lib/logger.ts';
import { parseSegmentFileName } from '../../lib/recording/session-dir.ts';
import type { LiveSessionState } from './live-session-store.ts';
import { sealOrphan, type RecordingSession } from './recording-session.ts';

export interface PoolSealResult {
  /** Segments of other recorders brought into this session's directory (or referenced in storage). */
  imported: number;
  /** Segments listed by another recorder that neither its disk (from here) nor storage could give. */
  unavailable: { track: string; file: string; recorderId: string }[];
}

/**
 * Before a session is sealed by one recorder of a pool: everything the database holds of it from
 * every recorder that held some of its tracks (participants, tracks, timeline, sealed segments) is
 * folded into the local session, so the manifest lists all of it. A segment another recorder sealed
 * is referenced as is when it is in object storage (`stored`), else copied into this directory
 * from that recorder's (same host or a shared mount). Segment files a dead recorder left open
 * (`.part`, kill -9) are sealed as after a crash, when its directory is reachable from here.
 * What cannot be reached is listed in `unavailable` and logged: the sealed manifest does not list it.
 */
export function foldPoolState(s: RecordingSession, live: LiveSessionState, self: { recorderId: string; liveRecorders: ReadonlySet<string>; storedKey?: (file: string, bytes: number) => string | undefined }, logger: Logger): PoolSealResult {
  const out: PoolSealResult = { imported: 0, unavailable: [] };
  for (const p of live.participants) if (!s.participants.has(p.id)) s.participants.set(p.id, p);
  for (const t of live.tracks) if (!s.tracks.has(t.track)) s.tracks.set(t.track, { ...t, segments: [] });
  // Events every recorder journaled: the union, once each, in time order (consent replayed below).
  const seen = new Set(s.events.map((e) => eventKey(e)));
  const fresh = live.events.filter((e) => {
    const k = eventKey(e);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
  s.events.push(...fresh);
  for (const e of [...s.events].sort((a, b) => a.at.localeCompare(b.at))) {
    if (e.type !== 'consent' || !e.participant) continue;
    const p = s.participants.get(e.participant);
    const method = e.details.method as 'click' | 'announcement' | 'pre-accepted' | undefined;
    if (p) p.consent = { decision: e.details.decision === 'granted' ? 'granted' : 'declined', ...(method ? { method } : {}), at: e.at };
  }
  const has = (track: string, segment: number) => s.tracks.get(track)?.segments.some((x) => x.segment === segment) ?? false;
  for (const seg of live.segments) {
    if (seg.recorderId === self.recorderId || has(seg.track, seg.entry.segment)) continue;
    const key = seg.entry.stored ? undefined : self.storedKey?.(seg.entry.file, seg.entry.bytes);
    const entry = importSegment(s.dir, seg.sessionDir, key ? { ...seg.entry, stored: { key, at: new Date().toISOString() } } : seg.entry);
    if (!entry) {
      out.unavailable.push({ track: seg.track, file: seg.entry.file, recorderId: seg.recorderId });
      continue;
    }
    s.addSegment(seg.track, entry, true);
    out.imported++;
  }
  // A recorder that died with tracks open left .part files: seal them like its own restart would.
  const deadDirs = new Map<string, { recorderId: string; copy: number }>();
  for (const p of live.placements) if (p.recorderId !== self.recorderId && !self.liveRecorders.has(p.recorderId)) deadDirs.set(p.sessionDir, { recorderId: p.recorderId, copy: p.copy });
  for (const [dir, who] of deadDirs) {
    let files: string[];
    try {
      files = readdirSync(dir);
    } catch {
      continue; // that host's disk is not reachable from here
    }
    for (const f of files) {
      const parsed = parseSegmentFileName(f);
      if (!parsed || !s.tracks.has(parsed.track) || has(parsed.track, parsed.segment)) continue;
      const sealed = sealOrphan(path.join(dir, f), parsed.segment, parsed.part);
      if (!sealed) continue;
      const entry = importSegment(s.dir, dir, { ...sealed, recorder: who.recorderId, copy: who.copy });
      if (entry) {
        s.addSegment(parsed.track, entry, true);
        out.imported++;
      }
    }
  }
  for (const u of out.unavailable) logger.error({ session: s.id, ...u }, 'a segment another recorder sealed is neither in storage nor reachable from this recorder: the manifest has a gap there');
  return out;
}

/** The entry as this session's directory will list it: its file copied (hard-linked when it can) here, or `stored`. */
function importSegment(dir: string, fromDir: string, entry: SegmentEntry): SegmentEntry | undefined {
  if ((entry as { stored?: unknown }).stored) return entry;
  const src = path.join(fromDir, entry.file);
  const dst = path.join(dir, entry.file);
  if (existsSync(dst)) return statSync(dst).size === entry.bytes ? entry : undefined;
  try {
    if (statSync(src).size !== entry.bytes) return undefined;
  } catch {
    return undefined;
  }
  try {
    linkSync(src, dst);
  } catch {
    copyFileSync(src, dst);
  }
  return entry;
}

/** One event's identity, whatever order its keys came back in (jsonb reorders them). */
function eventKey(e: { at: string; type: string; participant?: string | undefined; track?: string | undefined; details: Record<string, unknown> }): string {
  return JSON.stringify([Date.parse(e.at), e.type, e.participant ?? null, e.track ?? null, canonical(e.details)]);
}

function canonical(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(canonical);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonical((v as Record<string, unknown>)[k])]));
  return v;
}
