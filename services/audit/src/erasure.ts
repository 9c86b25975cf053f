import { createHash, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { sql, type Transaction } from 'kysely';
import type { Db } from '../../../db/database.ts';
import type { Database, ErasureStatus } from '../../../db/schema.ts';
import { SessionManifestSchema, type SessionManifest } from '../../lib/contracts/recording.ts';
import { VerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { BITEXACT, type FfmpegRunner } from '../../lib/media/ffmpeg-runner.ts';
import { runSessionPipeline } from '../../transcode/index.ts';
import type { ArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { transcriptJson, transcriptText, transcriptVtt, type SpeakerSegment } from '../../lib/transcript/transcript-files.ts';
import type { AuditLog } from './audit-log.ts';
import { holdsInForce, type Actor, type RetentionHold } from './retention.ts';

/**
 * GDPR Art. 17 erasure of one participant, from one session or from all of theirs.
 *
 * Per affected session, under the same advisory lock as hold placement and the retention
 * sweeper (so a hold placed concurrently is either seen here or placed after the erasure):
 * - a legal hold in force covers the session → nothing is deleted; the session is recorded
 *   as restricted, naming the hold(s) (Art. 17(3)(e): establishment or defence of legal claims);
 * - otherwise their transcript segments (and so their search hits), their per-participant
 *   artifacts (rows and storage), their raw RTP files and track rows go; the session manifest is
 *   rewritten without their tracks, with an `erasure` event. Then, outside the lock, the composite
 *   is re-rendered from the remaining raw tracks by the transcode pipeline itself and replaces the
 *   stored one (new SHA-256); the transcript files are rebuilt from the remaining segments.
 *   When the raw recording is already gone (retention), the composite cannot be re-rendered and
 *   is deleted instead; the outcome says so.
 * Every deletion leaves a tombstone (linked to the request) and each session an audit entry.
 * Consent records and audit entries are kept: they are the controller's evidence of lawful
 * processing and of the erasure itself.
 */

type Q = Db | Transaction<Database>;

/** Same key as retention.ts: serializes erasure with hold placement and the sweeper. */
const HOLD_LOCK = 0x7665_7274;
const IN_FLIGHT = new Set(['recording', 'sealed', 'processing']);

export interface ErasureOptions {
  db: Db;
  storage: ArtifactStorage;
  audit: AuditLog;
  /** RECORDINGS_DIR: raw session directories must lie inside it. */
  recordingsDir: string;
  ffmpeg: FfmpegRunner;
  /** Scratch space for re-renders. */
  workDir: string;
  logger?: Logger;
  now?: () => Date;
}

export interface ErasureInput {
  participant: string;
  /** One session; unset = every session the participant is in. */
  session?: string | undefined;
  reason: string;
  requestedBy: Actor;
}

export type CompositeOutcome = 're-rendered' | 'deleted: raw recording already deleted' | 'deleted: no other media remains' | 'deleted: re-render failed' | 'none';

export interface SessionOutcome {
  session: string;
  room: string;
  state: 'erased' | 'restricted' | 'failed';
  holds?: { id: string; caseId: string | undefined }[];
  deleted?: { transcriptSegments: number; artifacts: string[]; rawFiles: string[]; tracks: string[] };
  composite?: CompositeOutcome;
  compositeSha256?: string;
  durationSeconds?: number;
  note?: string;
}

export interface ErasureRecord {
  id: string;
  participant: string;
  session: string | null;
  reason: string;
  status: ErasureStatus;
  holds: string[];
  outcome: SessionOutcome[];
  requestedBy: string;
  requestedAt: string;
  completedAt: string | null;
}

function parseJson<T>(v: unknown, fallback: T): T {
  if (typeof v === 'string') {
    try {
      return JSON.parse(v) as T;
    } catch {
      return fallback;
    }
  }
  return (v as T) ?? fallback;
}

export class ErasureService {
  private readonly recordingsDir: string;
  private readonly now: () => Date;
  constructor(private readonly opts: ErasureOptions) {
    this.recordingsDir = path.resolve(opts.recordingsDir);
    this.now = opts.now ?? (() => new Date());
  }

  /** Sessions holding any data of the participant. */
  async sessionsOf(participant: string, session?: string): Promise<string[]> {
    const { db } = this.opts;
    const sets = await Promise.all([
      db.selectFrom('session_participants').select('session_id').where('participant_id', '=', participant).execute(),
      db.selectFrom('tracks').select('session_id').where('participant_id', '=', participant).execute(),
      db.selectFrom('transcript_segments').select('session_id').distinct().where('participant_id', '=', participant).execute(),
      db.selectFrom('artifacts').select('session_id').where('participant_id', '=', participant).execute(),
    ]);
    const ids = [...new Set(sets.flat().map((r) => r.session_id))].sort();
    return session === undefined ? ids : ids.filter((id) => id === session);
  }

  /** Runs the request to the end (re-renders included) and returns its record. */
  async erase(input: ErasureInput): Promise<ErasureRecord> {
    const { db } = this.opts;
    if (input.session !== undefined) {
      const s = await db.selectFrom('recording_sessions').select('id').where('id', '=', input.session).executeTakeFirst();
      if (!s) throw new VerbatimError('SESSION_NOT_FOUND', `no recording session ${input.session}`, { hint: 'Leave out the session to erase the participant from every session.' });
    }
    const sessions = await this.sessionsOf(input.participant, input.session);
    if (input.session !== undefined && sessions.length === 0) {
      throw new VerbatimError('NOT_FOUND', `session ${input.session} holds no data of participant ${input.participant}`, {
        hint: 'Check the participant id (GET /api/v1/sessions/:id lists them), or leave out the session.',
      });
    }
    const id = randomUUID();
    const requestedBy = `${input.requestedBy.type}:${input.requestedBy.id}`;
    await db
      .insertInto('erasure_requests')
      .values({ id, participant_id: input.participant, session_id: input.session ?? null, reason: input.reason, status: 'pending', requested_by: requestedBy, requested_at: this.now() })
      .execute();
    const outcome: SessionOutcome[] = [];
    for (const sessionId of sessions) {
      let o: SessionOutcome;
      try {
        o = await this.eraseSession(id, sessionId, input);
      } catch (err) {
        this.opts.logger?.error({ err, session: sessionId, request: id }, 'erasure of a session failed');
        o = { session: sessionId, room: '', state: 'failed', note: (err as Error).message.slice(0, 500) };
      }
      outcome.push(o);
      await this.opts.audit.append({
        action: o.state === 'restricted' ? 'erasure.restricted' : o.state === 'failed' ? 'erasure.failed' : 'erasure.delete',
        actor: input.requestedBy,
        target: { type: 'session', id: sessionId },
        details: { request: id, participant: input.participant, ...o },
      });
    }
    const states = new Set(outcome.map((o) => o.state));
    const status: ErasureStatus = states.has('failed') ? 'failed' : states.has('restricted') ? (states.has('erased') ? 'partial' : 'restricted') : 'completed';
    const holds = [...new Set(outcome.flatMap((o) => (o.holds ?? []).map((h) => h.id)))];
    await db
      .updateTable('erasure_requests')
      .set({ status, holds: JSON.stringify(holds), outcome: JSON.stringify(outcome), completed_at: this.now() })
      .where('id', '=', id)
      .execute();
    return (await this.get(id))!;
  }

  async get(id: string): Promise<ErasureRecord | undefined> {
    const r = await this.opts.db.selectFrom('erasure_requests').selectAll().where('id', '=', id).executeTakeFirst();
    return r ? toRecord(r) : undefined;
  }

  async list(opts: { participant?: string | undefined } = {}): Promise<ErasureRecord[]> {
    let q = this.opts.db.selectFrom('erasure_requests').selectAll().orderBy('requested_at').orderBy('id');
    if (opts.participant) q = q.where('participant_id', '=', opts.participant);
    return (await q.execute()).map(toRecord);
  }

  private async eraseSession(request: string, sessionId: string, input: ErasureInput): Promise<SessionOutcome> {
    const { db, storage } = this.opts;
    const who = input.participant;
    const reason = `GDPR Art. 17 erasure of participant ${who} (request ${request}): ${input.reason}`;
    // Phase 1, under the hold lock: the hold check and every deletion of the participant's own data.
    const phase1 = await db.transaction().execute(async (trx) => {
      await sql`select pg_advisory_xact_lock(${sql.lit(HOLD_LOCK)})`.execute(trx);
      const s = await trx.selectFrom('recording_sessions').select(['id', 'room_id', 'status', 'manifest_path']).where('id', '=', sessionId).executeTakeFirstOrThrow();
      const participants = await participantsOf(trx, sessionId);
      const holds = holdsInForce({ id: s.id, roomId: s.room_id, participants }, await loadHoldsInForce(trx));
      if (holds.length > 0) return { kind: 'restricted' as const, room: s.room_id, holds };
      if (IN_FLIGHT.has(s.status)) {
        throw new VerbatimError('CONFLICT', `session ${sessionId} is ${s.status}: erase it once processing is done`, { hint: 'Retry the erasure request when the session is done or failed.' });
      }
      const tracks = await trx.selectFrom('tracks').select('track_id').where('session_id', '=', sessionId).where('participant_id', '=', who).execute();
      const trackIds = tracks.map((t) => t.track_id);
      const segFiles = trackIds.length > 0 ? await trx.selectFrom('track_segments').select('file').where('session_id', '=', sessionId).where('track_id', 'in', trackIds).execute() : [];
      const arts = await trx.selectFrom('artifacts').select('key').where('session_id', '=', sessionId).where('participant_id', '=', who).execute();
      const seg = await trx.deleteFrom('transcript_segments').where('session_id', '=', sessionId).where('participant_id', '=', who).executeTakeFirst();
      const transcriptSegments = Number(seg.numDeletedRows);
      if (arts.length > 0) await trx.deleteFrom('artifacts').where('session_id', '=', sessionId).where('key', 'in', arts.map((a) => a.key)).execute();
      if (trackIds.length > 0) {
        await trx.deleteFrom('track_segments').where('session_id', '=', sessionId).where('track_id', 'in', trackIds).execute();
        await trx.deleteFrom('tracks').where('session_id', '=', sessionId).where('track_id', 'in', trackIds).execute();
      }
      await trx.deleteFrom('session_participants').where('session_id', '=', sessionId).where('participant_id', '=', who).execute();

      // Files last, inside the transaction: if one cannot be deleted the rows stay and the request can be retried.
      for (const a of arts) await storage.delete(a.key);
      const manifestPath = s.manifest_path && existsSync(s.manifest_path) ? this.checkedPath(s.manifest_path) : null;
      const rawFiles: string[] = [];
      let remainingTracks = 0;
      let startShift = 0;
      if (manifestPath) {
        const dir = path.dirname(manifestPath);
        const manifest = SessionManifestSchema.parse(JSON.parse(await readFile(manifestPath, 'utf8')));
        const theirs = new Set(manifest.tracks.filter((t) => t.participant === who).map((t) => t.track));
        const files = new Set([...segFiles.map((f) => path.basename(f.file)), ...manifest.tracks.filter((t) => theirs.has(t.track)).flatMap((t) => t.segments.map((g) => path.basename(g.file)))]);
        for (const f of [...files].sort()) {
          for (const name of [f, `${f}.part`]) {
            const file = path.join(dir, name);
            if (existsSync(file)) {
              await rm(file, { force: true });
              rawFiles.push(file);
            }
          }
        }
        // The recorder's retired journal lists every participant; the manifest supersedes it.
        const journal = path.join(dir, '.session.json.done');
        if (existsSync(journal)) {
          await rm(journal, { force: true });
          rawFiles.push(journal);
        }
        const rewritten: SessionManifest = {
          ...manifest,
          participants: manifest.participants.filter((p) => p.id !== who),
          tracks: manifest.tracks.filter((t) => !theirs.has(t.track)),
          gaps: manifest.gaps.filter((g) => !theirs.has(g.track)),
          events: [
            ...manifest.events.filter((e) => e.participant !== who && !(e.track !== undefined && theirs.has(e.track))),
            { at: this.now().toISOString(), type: 'erasure', details: { request, tracksRemoved: theirs.size, basis: 'GDPR Art. 17' } },
          ],
        };
        remainingTracks = rewritten.tracks.length;
        startShift = firstMediaUs(rewritten) !== null && firstMediaUs(manifest) !== null ? Math.max(0, (firstMediaUs(rewritten)! - firstMediaUs(manifest)!) / 1e6) : 0;
        const body = `${JSON.stringify(rewritten, null, 2)}\n`;
        await writeFile(`${manifestPath}.tmp`, body);
        await rename(`${manifestPath}.tmp`, manifestPath);
        await trx.updateTable('recording_sessions').set({ manifest_sha256: createHash('sha256').update(body).digest('hex'), updated_at: this.now() }).where('id', '=', sessionId).execute();
      }
      const tomb = (kind: 'media' | 'transcript' | 'raw', item: string) => ({ session_id: sessionId, kind, item, reason, policy: null, erasure_request: request, deleted_at: this.now() });
      const tombs = [
        ...(transcriptSegments > 0 ? [tomb('transcript', `transcript_segments:${transcriptSegments}`)] : []),
        ...arts.map((a) => tomb('media', a.key)),
        ...rawFiles.map((f) => tomb('raw', f)),
      ];
      if (tombs.length > 0) await trx.insertInto('tombstones').values(tombs).execute();
      return { kind: 'erased' as const, room: s.room_id, manifestPath, remainingTracks, startShift, deleted: { transcriptSegments, artifacts: arts.map((a) => a.key), rawFiles, tracks: trackIds } };
    });
    if (phase1.kind === 'restricted') {
      return { session: sessionId, room: phase1.room, state: 'restricted', holds: phase1.holds.map((h) => ({ id: h.id, caseId: h.caseId })) };
    }
    // Phase 2: what mixed everyone together is rebuilt from what remains.
    const out: SessionOutcome = { session: sessionId, room: phase1.room, state: 'erased', deleted: phase1.deleted };
    await this.rebuildTranscripts(sessionId, request, reason);
    Object.assign(out, await this.rebuildComposite(sessionId, request, reason, phase1.manifestPath, phase1.remainingTracks, phase1.startShift));
    return out;
  }

  /** A session directory path, refused outside RECORDINGS_DIR. */
  private checkedPath(file: string): string {
    const abs = path.resolve(file);
    const rel = path.relative(this.recordingsDir, abs);
    if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) {
      throw new VerbatimError('INTERNAL', `erasure: ${abs} is outside RECORDINGS_DIR ${this.recordingsDir}`, { hint: 'Refusing to touch files outside the recordings directory; check RECORDINGS_DIR.' });
    }
    return abs;
  }

  private async rebuildComposite(sessionId: string, request: string, reason: string, manifestPath: string | null, remainingTracks: number, startShift: number): Promise<Partial<SessionOutcome>> {
    const { db, storage } = this.opts;
    const composite = await db.selectFrom('artifacts').selectAll().where('session_id', '=', sessionId).where('kind', '=', 'composite').executeTakeFirst();
    if (!composite) return { composite: 'none' };
    const dropComposite = async (why: CompositeOutcome, note: string): Promise<Partial<SessionOutcome>> => {
      await storage.delete(composite.key);
      await db.transaction().execute(async (trx) => {
        await trx.deleteFrom('artifacts').where('session_id', '=', sessionId).where('key', '=', composite.key).execute();
        await trx.insertInto('tombstones').values({ session_id: sessionId, kind: 'media', item: composite.key, reason: `${reason}; ${note}`, policy: null, erasure_request: request, deleted_at: this.now() }).execute();
      });
      return { composite: why, note };
    };
    if (!manifestPath) return dropComposite('deleted: raw recording already deleted', 'the raw recording was already deleted (retention), so the composite could not be re-rendered without the participant and was deleted instead');
    if (remainingTracks === 0) return dropComposite('deleted: no other media remains', 'no other participant\'s media remains in the session');
    await mkdir(this.opts.workDir, { recursive: true });
    const tmp = await mkdtemp(path.join(this.opts.workDir, `erasure-${sessionId.replace(/[^A-Za-z0-9_-]/g, '_')}-`));
    try {
      const result = await runSessionPipeline(manifestPath, tmp, this.opts.ffmpeg);
      let file = path.join(tmp, 'composite.mp4');
      let duration = result.durationSeconds;
      const previous = composite.duration_seconds;
      // Keep the original timeline (transcript offsets, search hits and play links point into it): the pipeline
      // starts the composite at the first remaining packet and ends it at the last, so when the erased participant
      // began or ended the session, pad it back: by how much later the remaining media starts (from the manifest's
      // first arrivals), and at the end to the old length.
      const lead = previous !== null && startShift > 0.05 ? Math.min(startShift, previous) : 0;
      const trail = previous !== null ? Math.max(0, previous - duration - lead) : 0;
      if (previous !== null && (lead > 0 || trail > 0.05)) {
        const padded = path.join(tmp, 'composite-padded.mp4');
        await this.opts.ffmpeg.run({
          inputs: [{ path: file }],
          filterComplex: `[0:v]tpad=start_mode=add:start_duration=${lead.toFixed(3)}:stop_mode=add:stop_duration=${trail.toFixed(3)}:color=black[v];[0:a]adelay=${Math.round(lead * 1000)}:all=1,apad[a]`,
          outputOptions: ['-map', '[v]', '-map', '[a]', '-c:v', 'libx264', '-preset', 'veryfast', '-crf', '28', '-threads', '1', '-c:a', 'aac', '-b:a', '96k', '-t', String(previous), '-movflags', '+faststart', ...BITEXACT, '-f', 'mp4'],
          output: padded,
        });
        file = padded;
        duration = previous;
      }
      const stored = await storage.put(composite.key, file, composite.content_type);
      await db.transaction().execute(async (trx) => {
        await trx.updateTable('artifacts').set({ bytes: stored.bytes, sha256: stored.sha256, duration_seconds: duration, created_at: this.now() }).where('session_id', '=', sessionId).where('key', '=', composite.key).execute();
        await trx
          .insertInto('tombstones')
          .values({ session_id: sessionId, kind: 'media', item: `${composite.key}@sha256:${composite.sha256}`, reason: `${reason}; replaced by a re-render without the participant`, policy: null, erasure_request: request, deleted_at: this.now() })
          .execute();
      });
      return { composite: 're-rendered', compositeSha256: stored.sha256, durationSeconds: duration };
    } catch (err) {
      this.opts.logger?.error({ err, session: sessionId }, 'erasure: composite re-render failed; deleting the composite');
      return dropComposite('deleted: re-render failed', `re-rendering the composite failed (${(err as Error).message.slice(0, 200)}), so it was deleted rather than kept with the participant in it`);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }

  /** transcript.json/.vtt/.txt hold everyone's words: rebuilt from the segments that remain (deleted when none do). */
  private async rebuildTranscripts(sessionId: string, request: string, reason: string): Promise<void> {
    const { db, storage } = this.opts;
    const arts = (await db.selectFrom('artifacts').selectAll().where('session_id', '=', sessionId).execute()).filter((a) => a.kind.startsWith('transcript-'));
    if (arts.length === 0) return;
    const rows = await db.selectFrom('transcript_segments').selectAll().where('session_id', '=', sessionId).orderBy('seq').execute();
    const segments: SpeakerSegment[] = rows.map((r) => ({ speaker: r.speaker, participant: r.participant_id, start: r.start_seconds, end: r.end_seconds, text: r.text }));
    const language = rows[0]?.language ?? 'en';
    await mkdir(this.opts.workDir, { recursive: true });
    const tmp = await mkdtemp(path.join(this.opts.workDir, 'erasure-transcript-'));
    try {
      for (const a of arts) {
        const ext = a.kind.slice('transcript-'.length);
        const body = ext === 'json' ? transcriptJson(sessionId, language, segments) : ext === 'vtt' ? transcriptVtt(segments) : ext === 'txt' ? transcriptText(segments) : null;
        if (body === null || segments.length === 0) {
          await storage.delete(a.key);
          await db.deleteFrom('artifacts').where('session_id', '=', sessionId).where('key', '=', a.key).execute();
          await db.insertInto('tombstones').values({ session_id: sessionId, kind: 'transcript', item: a.key, reason, policy: null, erasure_request: request, deleted_at: this.now() }).execute();
          continue;
        }
        const file = path.join(tmp, `transcript.${ext}`);
        await writeFile(file, body);
        const stored = await storage.put(a.key, file, a.content_type);
        await db.updateTable('artifacts').set({ bytes: stored.bytes, sha256: stored.sha256, created_at: this.now() }).where('session_id', '=', sessionId).where('key', '=', a.key).execute();
      }
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }
}

async function participantsOf(db: Q, sessionId: string): Promise<string[]> {
  const rows = await Promise.all([
    db.selectFrom('session_participants').select('participant_id').where('session_id', '=', sessionId).execute(),
    db.selectFrom('tracks').select('participant_id').where('session_id', '=', sessionId).execute(),
    db.selectFrom('transcript_segments').select('participant_id').distinct().where('session_id', '=', sessionId).execute(),
  ]);
  return [...new Set(rows.flat().map((r) => r.participant_id))];
}

async function loadHoldsInForce(db: Q): Promise<RetentionHold[]> {
  const rows = await db.selectFrom('legal_holds').selectAll().where('released_at', 'is', null).execute();
  return rows.map((r) => ({ id: r.id, caseId: r.case_id, scopeType: r.scope_type, scopeValue: r.scope_value, frozenSessionIds: parseJson<string[]>(r.frozen_session_ids, []), releasedAt: r.released_at }));
}

/** Wall clock (µs) of the first media packet any track of the manifest holds. */
function firstMediaUs(m: SessionManifest): number | null {
  const firsts = m.tracks.flatMap((t) => t.segments.map((g) => g.firstArrivalUs ?? g.startedAtUs));
  return firsts.length > 0 ? Math.min(...firsts) : null;
}

function toRecord(r: {
  id: string;
  participant_id: string;
  session_id: string | null;
  reason: string;
  status: ErasureStatus;
  holds: unknown;
  outcome: unknown;
  requested_by: string;
  requested_at: Date | string;
  completed_at: Date | string | null;
}): ErasureRecord {
  return {
    id: r.id,
    participant: r.participant_id,
    session: r.session_id,
    reason: r.reason,
    status: r.status,
    holds: parseJson<string[]>(r.holds, []),
    outcome: parseJson<SessionOutcome[]>(r.outcome, []),
    requestedBy: r.requested_by,
    requestedAt: new Date(r.requested_at).toISOString(),
    completedAt: r.completed_at ? new Date(r.completed_at).toISOString() : null,
  };
}
