import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, renameSync, truncateSync } from 'node:fs';
import path from 'node:path';
import type { StartTrackRequest, TimelineEvent } from '../../lib/contracts/recorder-control.ts';
import { SESSION_MANIFEST_VERSION, SessionManifestSchema, type SegmentEntry, type SessionManifest } from '../../lib/contracts/recording.ts';
import { readManifest, writeManifestFile, writeSessionManifest } from '../../lib/recording/manifest-file.ts';
import { PART_SUFFIX, RETIRED_JOURNAL_FILE, journalPathOf, parseSegmentFileName } from '../../lib/recording/session-dir.ts';
import { RecordType, parseRecording } from '../../lib/recording/vrtp-format.ts';

type Participant = SessionManifest['participants'][number];
type Track = SessionManifest['tracks'][number];

/**
 * One recording session on disk (lib/recording/session-dir.ts). Its state is
 * journaled to session.json on every change (never on the packet path), so a recorder
 * killed with -9 restarts, recovers the session, seals the orphaned segment files and
 * carries on. When the session ends, manifest.json replaces the journal.
 */
export class RecordingSession {
  readonly participants = new Map<string, Participant>();
  readonly tracks = new Map<string, Track>();
  readonly events: SessionManifest['events'] = [];
  /** Tracks that currently have a worker recording them. */
  readonly openTracks = new Set<string>();
  endedAt: string | null = null;
  endReason: string | null = null;

  constructor(
    readonly dir: string,
    readonly room: string,
    readonly id: string,
    readonly startedAt: string,
  ) {}

  static journalPath(dir: string): string {
    return journalPathOf(dir);
  }

  addTrack(req: StartTrackRequest): number {
    const p = this.participants.get(req.participant.id);
    this.participants.set(req.participant.id, {
      id: req.participant.id,
      name: req.participant.name,
      consent: p?.consent.decision === 'granted' ? p.consent : { ...req.consent, at: new Date().toISOString() },
    });
    let t = this.tracks.get(req.track);
    if (!t) {
      t = { track: req.track, participant: req.participant.id, kind: req.kind, codec: req.codec, headerExtensions: req.headerExtensions, segments: [] };
      this.tracks.set(req.track, t);
    }
    this.openTracks.add(req.track);
    return this.nextSegment(req.track);
  }

  nextSegment(track: string): number {
    const t = this.tracks.get(track);
    const used = t ? t.segments.map((s) => s.segment) : [];
    // Files on disk count too: a segment being written has no entry yet.
    for (const f of safeReaddir(this.dir)) {
      const seg = parseSegmentFileName(f);
      if (seg?.track === track) used.push(seg.segment);
    }
    return used.length === 0 ? 0 : Math.max(...used) + 1;
  }

  addSegment(track: string, entry: SegmentEntry, trackOpen: boolean): void {
    const t = this.tracks.get(track);
    if (!t) return;
    if (!t.segments.some((s) => s.segment === entry.segment)) t.segments.push(entry);
    t.segments.sort(segmentOrder);
    if (!trackOpen) this.openTracks.delete(track);
  }

  /** Records a segment's uploaded copy (segment-uploader.ts); false when the session has no such segment. */
  markStored(track: string, segment: number, stored: NonNullable<SegmentEntry['stored']>): boolean {
    const entry = this.tracks.get(track)?.segments.find((s) => s.segment === segment);
    if (!entry) return false;
    entry.stored = stored;
    return true;
  }

  addEvents(events: TimelineEvent[]): void {
    for (const e of events) {
      this.events.push(e);
      if (e.type === 'participant-joined' && e.participant && !this.participants.has(e.participant)) {
        const name = typeof e.details.name === 'string' ? e.details.name : e.participant;
        this.participants.set(e.participant, { id: e.participant, name, consent: { decision: 'not-required' } });
      }
      if (e.type === 'consent' && e.participant) {
        const p = this.participants.get(e.participant);
        const decision = e.details.decision === 'granted' ? 'granted' : 'declined';
        const method = e.details.method as 'click' | 'announcement' | 'pre-accepted' | undefined;
        if (p) p.consent = { decision, ...(method ? { method } : {}), at: e.at };
      }
    }
  }

  /** The manifest as of now; gaps are where a track's recording broke off and resumed. */
  manifest(dropped: Record<string, number> = {}): SessionManifest {
    const gaps: SessionManifest['gaps'] = [];
    for (const t of this.tracks.values()) {
      // Each copy of a replicated track (pool, RECORDER_REPLICAS=2) on its own; a break in one copy
      // that another copy covers is no gap. Segments of one copy follow each other in time, also
      // across recorders (a failover, a drain).
      const copies = new Map<number, SegmentEntry[]>();
      for (const seg of t.segments) copies.set(seg.copy ?? 0, [...(copies.get(seg.copy ?? 0) ?? []), seg]);
      for (const [copy, segs] of copies) {
        for (let i = 1; i < segs.length; i++) {
          const prev = segs[i - 1]!;
          const next = segs[i]!;
          // A new SSRC or a timed rotation continues the track without a break: when the next segment is
          // the very next one on the same recorder. A segment lost in between (the open one of a
          // recorder that died with its disk) or a move to another recorder is a break.
          if ((prev.endReason === 'ssrc-change' || prev.endReason === 'rotation') && next.recorder === prev.recorder && next.segment === prev.segment + 1) continue;
          const from = prev.lastArrivalUs !== null ? new Date(prev.lastArrivalUs / 1000).toISOString() : prev.endedAt;
          const fromUs = Date.parse(from) * 1000;
          const toUs = Date.parse(next.startedAt) * 1000;
          // Make-before-break (a drain): the next recorder listened before this one stopped.
          if (toUs <= fromUs) continue;
          const covered = [...copies].some(([c, other]) => c !== copy && other.some((o) => o.firstArrivalUs !== null && o.lastArrivalUs !== null && o.firstArrivalUs <= fromUs && o.lastArrivalUs >= toUs));
          if (!covered) gaps.push({ track: t.track, from, to: next.startedAt, reason: prev.endReason });
        }
      }
    }
    return SessionManifestSchema.parse({
      format: 'verbatim-session',
      version: SESSION_MANIFEST_VERSION,
      room: this.room,
      session: this.id,
      startedAt: this.startedAt,
      endedAt: this.endedAt,
      endReason: this.endReason,
      participants: [...this.participants.values()],
      tracks: [...this.tracks.values()],
      gaps,
      events: [...this.events].sort((a, b) => a.at.localeCompare(b.at)),
      dropped,
    });
  }

  saveJournal(): void {
    writeManifestFile(RecordingSession.journalPath(this.dir), this.manifest());
  }

  /** The session is no longer this recorder's to seal (pool): its journal is kept, renamed, not recovered. */
  retireJournal(): void {
    try {
      renameSync(RecordingSession.journalPath(this.dir), path.join(this.dir, RETIRED_JOURNAL_FILE));
    } catch {
      // no journal
    }
  }

  /** Writes manifest.json (final) and retires the journal; returns path and SHA-256. */
  writeManifest(dropped: Record<string, number>): { path: string; sha256: string } {
    const written = writeSessionManifest(this.dir, this.manifest(dropped));
    try {
      renameSync(RecordingSession.journalPath(this.dir), path.join(this.dir, RETIRED_JOURNAL_FILE));
    } catch {
      // no journal
    }
    return written;
  }

  /**
   * Reloads a session from its journal after a crash. Segment files the journal does
   * not know (sealed by a worker as it died, or still .part) are checked, cut back to
   * their last complete record, sealed and added with end reason "recorder-crash".
   */
  static recover(dir: string): RecordingSession {
    const m = readManifest(RecordingSession.journalPath(dir));
    const s = new RecordingSession(dir, m.room, m.session, m.startedAt);
    for (const p of m.participants) s.participants.set(p.id, p);
    for (const t of m.tracks) s.tracks.set(t.track, t);
    s.events.push(...m.events);
    for (const f of safeReaddir(dir)) {
      const seg = parseSegmentFileName(f);
      if (!seg) continue;
      const t = s.tracks.get(seg.track);
      if (!t || t.segments.some((x) => x.segment === seg.segment)) continue;
      const entry = sealOrphan(path.join(dir, f), seg.segment, seg.part);
      if (entry) t.segments.push(entry);
      t.segments.sort(segmentOrder);
    }
    s.events.push({ at: new Date().toISOString(), type: 'recorder-restarted', details: {} });
    s.saveJournal();
    return s;
  }
}

/**
 * Seals a segment file its writer left behind (recorder kill -9, recorder-rx crash): cut back
 * to the last complete record, renamed from .part, described with end reason "recorder-crash".
 */
export function sealOrphan(file: string, segment: number, isPart: boolean): SegmentEntry | undefined {
  const buf = readFileSync(file);
  let parsed;
  try {
    parsed = parseRecording(buf, file);
  } catch {
    return undefined; // header never made it to disk: nothing recorded in it
  }
  const validBytes = buf.length - parsed.tornBytes;
  if (parsed.tornBytes > 0) truncateSync(file, validBytes);
  const finalPath = isPart ? file.slice(0, -PART_SUFFIX.length) : file;
  if (isPart) renameSync(file, finalPath);
  const rtp = parsed.records.filter((r) => r.type === RecordType.RTP);
  const last = parsed.records.at(-1);
  return {
    segment,
    file: path.basename(finalPath),
    ssrc: parsed.header.ssrc,
    startedAt: parsed.header.startedAt,
    startedAtUs: parsed.header.startedAtUs,
    endedAt: last ? new Date(last.arrivalUs / 1000).toISOString() : parsed.header.startedAt,
    endReason: 'recorder-crash',
    bytes: validBytes,
    sha256: createHash('sha256').update(buf.subarray(0, validBytes)).digest('hex'),
    rtpPackets: rtp.length,
    rtcpPackets: parsed.records.length - rtp.length,
    firstArrivalUs: parsed.records[0]?.arrivalUs ?? null,
    lastArrivalUs: last?.arrivalUs ?? null,
    truncated: parsed.tornBytes > 0,
    ...(parsed.tornBytes > 0 ? { truncatedReason: `torn tail of ${parsed.tornBytes} bytes after a crash` } : {}),
  };
}

/** A track's segments: by copy, then in time (a pool's placements number segments by epoch, not by time). */
function segmentOrder(a: SegmentEntry, b: SegmentEntry): number {
  return (a.copy ?? 0) - (b.copy ?? 0) || a.startedAtUs - b.startedAtUs || a.segment - b.segment;
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
