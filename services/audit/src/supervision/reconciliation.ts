import { createHash, randomUUID } from 'node:crypto';
import type { Db } from '../../../../db/database.ts';
import type { ReconciliationExceptionKind } from '../../../../db/schema.ts';
import { toVerbatimError, VerbatimError } from '../../../lib/errors.ts';
import type { Logger } from '../../../lib/logger.ts';
import type { ArtifactStorage } from '../../../lib/storage/artifact-storage.ts';
import type { AuditEntryInput } from '../audit-log.ts';

/**
 * Capture assurance (issue 13 item 4): proves that what should have been captured was. For a
 * window of time it compares the SFU's attendance of regulated identities with the recorded
 * tracks and their sealed segments, checks each ended session was transcribed, and re-hashes
 * every stored artifact against the hash registered when it was made. Each gap is an exception
 * row of the run; the run's summary is an audit-chain entry.
 */

export interface ReconcileOptions {
  db: Db;
  storage: ArtifactStorage | undefined;
  audit: { append(e: AuditEntryInput): Promise<unknown> };
  logger: Logger;
  /** A pause in a track's segments, or unrecorded presence, longer than this is an exception (RECONCILE_GAP_SECONDS). */
  gapSeconds: number;
  now?: () => Date;
}

export interface ReconciliationException {
  kind: ReconciliationExceptionKind;
  room: string | null;
  session: string | null;
  participant: string | null;
  track: string | null;
  artifact: string | null;
  from: string | null;
  to: string | null;
  details: Record<string, unknown>;
}

export interface ReconciliationSummary {
  window: { from: string; to: string };
  attendanceChecked: number;
  sessionsChecked: number;
  tracksChecked: number;
  artifactsChecked: number;
  /** Sessions ended less than PROCESSING_GRACE_MS ago and not yet processed: judged by a later run. */
  sessionsPending: number;
  /** Attendance in a room whose session is still being recorded (its tracks are known once it is sealed): judged by a later run. */
  attendancePending: number;
  exceptions: Record<ReconciliationExceptionKind, number>;
}

export interface ReconciliationRun {
  id: string;
  status: 'running' | 'done' | 'failed';
  window: { from: string; to: string };
  requestedBy: string;
  summary: ReconciliationSummary | Record<string, never>;
  error: string | null;
  startedAt: string;
  finishedAt: string | null;
}

/** A session is given this long after it ended to be transcoded and transcribed before a missing transcript counts. */
export const PROCESSING_GRACE_MS = 3_600_000;

const KINDS: readonly ReconciliationExceptionKind[] = ['joined_not_recorded', 'recorder_gap', 'not_transcribed', 'hash_mismatch', 'artifact_missing'];

export class Reconciler {
  constructor(private readonly opts: ReconcileOptions) {}

  private now(): Date {
    return this.opts.now?.() ?? new Date();
  }

  /** Creates the run row; `execute` then fills it. Split so an API request can answer with the id at once. */
  async start(window: { from: Date; to: Date }, requestedBy: string): Promise<string> {
    if (!(window.from < window.to)) {
      throw new VerbatimError('BAD_REQUEST', `reconciliation window is empty: from ${window.from.toISOString()} is not before to ${window.to.toISOString()}`, { hint: 'Give from < to (ISO 8601).', details: { field: 'from' } });
    }
    const id = randomUUID();
    await this.opts.db.insertInto('reconciliation_runs').values({ id, window_from: window.from, window_to: window.to, requested_by: requestedBy, status: 'running' }).execute();
    return id;
  }

  /** Runs a started reconciliation to the end; the run row says how it ended (a failure is stored, then rethrown). */
  async execute(id: string): Promise<ReconciliationRun> {
    const { db, logger } = this.opts;
    const row = await db.selectFrom('reconciliation_runs').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
    const window = { from: new Date(row.window_from), to: new Date(row.window_to) };
    try {
      const { exceptions, summary } = await this.compare(window);
      await db.transaction().execute(async (tx) => {
        for (let i = 0; i < exceptions.length; i += 500) {
          await tx
            .insertInto('reconciliation_exceptions')
            .values(
              exceptions.slice(i, i + 500).map((e, j) => ({
                run_id: id,
                ordinal: i + j,
                kind: e.kind,
                room_id: e.room,
                session_id: e.session,
                participant_id: e.participant,
                track_id: e.track,
                artifact_key: e.artifact,
                from_at: e.from,
                to_at: e.to,
                details: JSON.stringify(e.details),
              })),
            )
            .execute();
        }
        await tx.updateTable('reconciliation_runs').set({ status: 'done', summary: JSON.stringify(summary), finished_at: this.now() }).where('id', '=', id).execute();
      });
      // The evidence: one chain entry per run with its summary and a hash of its exception list.
      const digest = createHash('sha256').update(JSON.stringify(exceptions)).digest('hex');
      await this.opts.audit.append({ action: 'reconciliation.run', actor: actorOf(row.requested_by), target: { type: 'reconciliation', id }, details: { ...summary, exceptionsSha256: digest } });
      logger.info({ run: id, ...summary.exceptions }, 'capture reconciliation done');
    } catch (err) {
      const e = toVerbatimError(err);
      logger.error({ err: e, run: id }, 'capture reconciliation failed');
      await db.updateTable('reconciliation_runs').set({ status: 'failed', error_message: e.message, finished_at: this.now() }).where('id', '=', id).execute();
      throw e;
    }
    return (await this.get(id))!;
  }

  async run(window: { from: Date; to: Date }, requestedBy: string): Promise<ReconciliationRun> {
    return this.execute(await this.start(window, requestedBy));
  }

  async get(id: string): Promise<ReconciliationRun | undefined> {
    const r = await this.opts.db.selectFrom('reconciliation_runs').selectAll().where('id', '=', id).executeTakeFirst();
    return r ? runJson(r) : undefined;
  }

  async list(limit = 50): Promise<ReconciliationRun[]> {
    const rows = await this.opts.db.selectFrom('reconciliation_runs').selectAll().orderBy('started_at', 'desc').limit(limit).execute();
    return rows.map(runJson);
  }

  async exceptions(id: string): Promise<ReconciliationException[]> {
    const rows = await this.opts.db.selectFrom('reconciliation_exceptions').selectAll().where('run_id', '=', id).orderBy('ordinal').execute();
    const iso = (d: Date | string | null) => (d === null ? null : new Date(d).toISOString());
    return rows.map((r) => ({
      kind: r.kind,
      room: r.room_id,
      session: r.session_id,
      participant: r.participant_id,
      track: r.track_id,
      artifact: r.artifact_key,
      from: iso(r.from_at),
      to: iso(r.to_at),
      details: typeof r.details === 'string' ? (JSON.parse(r.details) as Record<string, unknown>) : r.details,
    }));
  }

  /** The comparison itself: reads only, writes nothing. */
  async compare(window: { from: Date; to: Date }): Promise<{ exceptions: ReconciliationException[]; summary: ReconciliationSummary }> {
    const { db } = this.opts;
    const gapMs = this.opts.gapSeconds * 1000;
    const out: ReconciliationException[] = [];
    const none = { room: null, session: null, participant: null, track: null, artifact: null, from: null, to: null };

    // 1. Attendance of regulated identities that ended in the window, against their recorded tracks.
    const attendance = await db
      .selectFrom('regulated_attendance')
      .selectAll()
      .where('left_at', 'is not', null)
      .where('left_at', '>=', window.from)
      .where('joined_at', '<', window.to)
      .orderBy('joined_at')
      .execute();
    let attendancePending = 0;
    for (const a of attendance) {
      // Present but never published: nothing to record.
      if (!a.first_produced_at) continue;
      const from = new Date(a.first_produced_at).getTime();
      const to = new Date(a.left_at!).getTime();
      const open = await db.selectFrom('recording_sessions').select('id').where('room_id', '=', a.room_id).where('status', '=', 'recording').where('started_at', '<', new Date(to)).executeTakeFirst();
      if (open) {
        attendancePending++;
        continue;
      }
      // Each track covers its first segment's start to its last segment's end; pauses inside a track are recorder gaps (below).
      const spans = await db
        .selectFrom('track_segments as s')
        .innerJoin('tracks as t', (j) => j.onRef('t.session_id', '=', 's.session_id').onRef('t.track_id', '=', 's.track_id'))
        .innerJoin('recording_sessions as r', 'r.id', 's.session_id')
        .select(['s.session_id', 's.track_id'])
        .select((eb) => [eb.fn.min('s.started_at').as('first'), eb.fn.max('s.ended_at').as('last')])
        .where('r.room_id', '=', a.room_id)
        .where('t.participant_id', '=', a.participant_id)
        .where('s.ended_at', '>', new Date(from))
        .where('s.started_at', '<', new Date(to))
        .groupBy(['s.session_id', 's.track_id'])
        .execute();
      const covered = spans.map((s) => [new Date(s.first).getTime(), new Date(s.last).getTime()] as [number, number]);
      for (const [gFrom, gTo] of uncovered(from, to, covered)) {
        if (gTo - gFrom <= gapMs) continue;
        out.push({
          ...none,
          kind: 'joined_not_recorded',
          room: a.room_id,
          participant: a.participant_id,
          from: new Date(gFrom).toISOString(),
          to: new Date(gTo).toISOString(),
          details: { name: a.participant_name, seconds: round1((gTo - gFrom) / 1000), recordedTracks: spans.length, attendance: Number(a.id) },
        });
      }
    }

    // 2. Sessions that ended in the window: their tracks' segments, their transcript, their artifacts.
    const sessions = await db
      .selectFrom('recording_sessions')
      .select(['id', 'room_id', 'status', 'ended_at', 'transcript_status'])
      .where('ended_at', '>=', window.from)
      .where('ended_at', '<', window.to)
      .orderBy('ended_at')
      .execute();
    const nowMs = this.now().getTime();
    let tracksChecked = 0;
    let artifactsChecked = 0;
    let pending = 0;
    for (const s of sessions) {
      const segs = await db.selectFrom('track_segments').select(['track_id', 'segment', 'started_at', 'ended_at', 'end_reason']).where('session_id', '=', s.id).orderBy('track_id').orderBy('segment').execute();
      const tracks = await db.selectFrom('tracks').select(['track_id', 'participant_id', 'kind']).where('session_id', '=', s.id).execute();
      tracksChecked += tracks.length;
      const owner = new Map(tracks.map((t) => [t.track_id, t.participant_id]));
      for (let i = 1; i < segs.length; i++) {
        const prev = segs[i - 1]!;
        const next = segs[i]!;
        if (prev.track_id !== next.track_id) continue;
        const gFrom = new Date(prev.ended_at).getTime();
        const gTo = new Date(next.started_at).getTime();
        if (gTo - gFrom <= gapMs) continue;
        out.push({
          ...none,
          kind: 'recorder_gap',
          room: s.room_id,
          session: s.id,
          participant: owner.get(next.track_id) ?? null,
          track: next.track_id,
          from: new Date(gFrom).toISOString(),
          to: new Date(gTo).toISOString(),
          details: { seconds: round1((gTo - gFrom) / 1000), reason: prev.end_reason, afterSegment: prev.segment },
        });
      }

      const hasAudio = tracks.some((t) => t.kind === 'audio');
      if (hasAudio && s.transcript_status !== 'done') {
        const wanted = await transcriptionWanted(db, s.id);
        const processing = s.status === 'sealed' || s.status === 'processing' || s.status === 'recording';
        if (wanted && processing && nowMs - new Date(s.ended_at!).getTime() < PROCESSING_GRACE_MS) pending++;
        else if (wanted) {
          out.push({ ...none, kind: 'not_transcribed', room: s.room_id, session: s.id, details: { status: s.status, transcriptStatus: s.transcript_status, reason: wantedReason(wanted) } });
        }
      }

      const artifacts = await db.selectFrom('artifacts').select(['key', 'sha256', 'bytes', 'participant_id', 'kind']).where('session_id', '=', s.id).orderBy('key').execute();
      for (const art of artifacts) {
        artifactsChecked++;
        const base = { ...none, room: s.room_id, session: s.id, participant: art.participant_id, artifact: art.key };
        if (!this.opts.storage) throw new VerbatimError('CONFIG_INVALID', 'reconciliation needs artifact storage to re-hash artifacts', { hint: 'Run it in the compliance service (STORAGE_* settings).' });
        const actual = await rehash(this.opts.storage, art.key);
        if (!actual) out.push({ ...base, kind: 'artifact_missing', details: { kind: art.kind, expectedSha256: art.sha256, expectedBytes: Number(art.bytes) } });
        else if (actual.sha256 !== art.sha256) {
          out.push({ ...base, kind: 'hash_mismatch', details: { kind: art.kind, expectedSha256: art.sha256, actualSha256: actual.sha256, expectedBytes: Number(art.bytes), actualBytes: actual.bytes } });
        }
      }
    }
    const counts = Object.fromEntries(KINDS.map((k) => [k, out.filter((e) => e.kind === k).length])) as Record<ReconciliationExceptionKind, number>;
    return {
      exceptions: out,
      summary: {
        window: { from: window.from.toISOString(), to: window.to.toISOString() },
        attendanceChecked: attendance.length,
        sessionsChecked: sessions.length,
        tracksChecked,
        artifactsChecked,
        sessionsPending: pending,
        attendancePending,
        exceptions: counts,
      },
    };
  }
}

/** Why a transcript was due: the room asked for one at recording-on, or a regulated participant was recorded. */
async function transcriptionWanted(db: Db, session: string): Promise<{ transcribe: boolean; regulated: boolean } | undefined> {
  const events = await db.selectFrom('session_events').select(['type', 'details']).where('session_id', '=', session).where('type', 'in', ['recording-on', 'participant-joined']).execute();
  const d = (e: { details: unknown }) => (typeof e.details === 'string' ? JSON.parse(e.details) : e.details) as Record<string, unknown>;
  const transcribe = events.some((e) => e.type === 'recording-on' && d(e).transcribe === true);
  const regulated = events.some((e) => e.type === 'participant-joined' && d(e).regulated === true);
  return transcribe || regulated ? { transcribe, regulated } : undefined;
}

function wantedReason(w: { transcribe: boolean; regulated: boolean }): string {
  return w.transcribe ? 'the room asked for a transcript' : 'a regulated participant was recorded';
}

async function rehash(storage: ArtifactStorage, key: string): Promise<{ sha256: string; bytes: number } | undefined> {
  if (!(await storage.exists(key))) return undefined;
  const h = createHash('sha256');
  let bytes = 0;
  for await (const chunk of await storage.getStream(key)) {
    h.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { sha256: h.digest('hex'), bytes };
}

/** The parts of [from, to) that no interval covers. */
export function uncovered(from: number, to: number, intervals: [number, number][]): [number, number][] {
  const out: [number, number][] = [];
  let cursor = from;
  for (const [a, b] of [...intervals].sort((x, y) => x[0] - y[0])) {
    if (b <= cursor) continue;
    if (a > cursor) out.push([cursor, Math.min(a, to)]);
    cursor = Math.max(cursor, b);
    if (cursor >= to) break;
  }
  if (cursor < to) out.push([cursor, to]);
  return out.filter(([a, b]) => b > a);
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

function actorOf(requestedBy: string): NonNullable<AuditEntryInput['actor']> {
  return requestedBy.startsWith('user:') ? { type: 'user', id: requestedBy.slice(5) } : { type: 'service', id: requestedBy };
}

function runJson(r: { id: string; status: 'running' | 'done' | 'failed'; window_from: Date; window_to: Date; requested_by: string; summary: unknown; error_message: string | null; started_at: Date; finished_at: Date | null }): ReconciliationRun {
  return {
    id: r.id,
    status: r.status,
    window: { from: new Date(r.window_from).toISOString(), to: new Date(r.window_to).toISOString() },
    requestedBy: r.requested_by,
    summary: (typeof r.summary === 'string' ? JSON.parse(r.summary) : r.summary) as ReconciliationRun['summary'],
    error: r.error_message,
    startedAt: new Date(r.started_at).toISOString(),
    finishedAt: r.finished_at ? new Date(r.finished_at).toISOString() : null,
  };
}

/** The exceptions of a run as CSV (one row each; details as JSON in the last column). */
export function exceptionsCsv(rows: readonly ReconciliationException[]): string {
  const cell = (v: unknown) => {
    const s = v === null || v === undefined ? '' : typeof v === 'string' ? v : JSON.stringify(v);
    // A leading = + - @ would be read as a formula by a spreadsheet.
    const safe = /^[=+\-@]/.test(s) ? `'${s}` : s;
    return /[",\n\r]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
  };
  const head = ['kind', 'room', 'session', 'participant', 'track', 'artifact', 'from', 'to', 'details'];
  return [head.join(','), ...rows.map((r) => [r.kind, r.room, r.session, r.participant, r.track, r.artifact, r.from, r.to, r.details].map(cell).join(','))].join('\r\n') + '\r\n';
}
