import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { sql, type Transaction } from 'kysely';
import type { Db } from '../../../db/database.ts';
import type { Database, ErasureStatus } from '../../../db/schema.ts';
import type { SessionRerenderPayload, SessionRerenderResult } from '../../lib/contracts/jobs.ts';
import { SessionManifestSchema, type SessionManifest } from '../../lib/contracts/recording.ts';
import { destroyDataKeys, isDestroyed } from '../../lib/crypto/data-keys.ts';
import { VerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import type { ArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { rawSegmentKey } from '../../lib/storage/artifact-keys.ts';
import { transcriptFiles, transcriptFromRows } from '../../lib/transcript/transcript-files.ts';
import type { AuditLog } from './audit-log.ts';
import { holdsInForce, type Actor, type RetentionHold } from './retention.ts';

/**
 * GDPR Art. 17 erasure of one participant, from one session or from all of theirs: the steps of
 * one session, each idempotent and recorded in the request's row (`sessions`) together with its
 * own effects, so the background job (erasure-jobs.ts) resumes a request where it was.
 *
 * Per affected session:
 * - erase, under the same advisory lock as hold placement and the retention sweeper (so a hold
 *   placed concurrently is either seen here or placed after the erasure): a legal hold in force
 *   covers the session → nothing is deleted; the session is recorded as restricted, naming the
 *   hold(s) (Art. 17(3)(e): establishment or defence of legal claims). Otherwise their transcript
 *   segments (and so their search hits), their per-participant artifacts (rows and storage) and
 *   their track rows go, in one transaction.
 * - raw: their raw RTP files go and the session manifest is rewritten without their tracks, with
 *   an `erasure` event.
 * - transcripts: the transcript files are rebuilt from the remaining segments.
 * - composite: re-rendered from the remaining raw tracks on the session's original timeline by a
 *   transcode `session.rerender` job (the caller runs it) and replaced (new SHA-256). When the raw
 *   recording is already gone (retention) the composite cannot be re-rendered and is deleted
 *   instead; the outcome says so.
 * - audit: one audit entry per session.
 * Every deletion leaves a tombstone linked to the request. Consent records and audit entries are
 * kept: they are the controller's evidence of lawful processing and of the erasure itself.
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
  /** Scratch space for rebuilt transcript files. */
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
  /** Why a failed session failed (OBJECT_RETAINED: S3 Object Lock kept the media). */
  code?: string;
  holds?: { id: string; caseId: string | undefined }[];
  deleted?: {
    transcriptSegments: number;
    artifacts: string[];
    rawFiles: string[];
    tracks: string[];
    /** Data keys destroyed (crypto-shredding): theirs in the session, and the session-wide key. */
    keysDestroyed?: string[];
    /** Stored objects the storage keeps (S3 Object Lock) that are unreadable now: their key was destroyed. */
    shredded?: string[];
  };
  composite?: CompositeOutcome;
  compositeSha256?: string;
  durationSeconds?: number;
  note?: string;
}

export interface ErasureProgress {
  pct: number;
  /** What runs now ("sess-1: re-rendering the composite"), null once finished. */
  stage: string | null;
  sessionsDone: number;
  sessionsTotal: number;
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
  /** The sessions it covers (fixed when it was accepted). */
  sessions: string[];
  progress: ErasureProgress;
  /** Set when the request failed for good as a whole (its job), not one session of it. */
  error: { code: string; message: string } | null;
}

/** The next step of one session: erase → raw → transcripts → composite → audit → done. */
export type ErasureStep = 'erase' | 'raw' | 'transcripts' | 'composite' | 'audit' | 'done';

/** One session's progress through a request, kept in erasure_requests.sessions. */
export interface SessionWork {
  session: string;
  step: ErasureStep;
  /** What the erase step did and left for the later steps. */
  erased?: {
    room: string;
    deleted: NonNullable<SessionOutcome['deleted']>;
    /** The manifest to rewrite and the raw files (that existed) to delete; null when the raw recording is gone. */
    manifestPath: string | null;
    manifestSha256: string | null;
    tracksRemoved: string[];
    remainingTracks: number;
    /** How much later the remaining media starts than the session did (s). */
    startShift: number;
    /** Their raw segments' keys in artifact storage, deleted with the raw files (absent in work saved before raw upload existed). */
    rawKeys?: string[];
    /** The composite as it was: the composite step replaces or deletes it. */
    composite: { key: string; sha256: string; contentType: string; durationSeconds: number | null } | null;
  };
  /** Once known: restricted or failed after the erase step; erased after the composite step. */
  outcome?: SessionOutcome;
}

/** The request as the steps need it. */
export interface ErasureJobContext {
  id: string;
  participant: string;
  reason: string;
  actor: Actor;
}

export type CompositePlan =
  | { kind: 'none' }
  | { kind: 'drop'; why: CompositeOutcome; note: string }
  | { kind: 'rerender'; payload: Omit<SessionRerenderPayload, 'requestedBy'> };

export const FINAL_STATUSES: readonly ErasureStatus[] = ['completed', 'restricted', 'partial', 'failed'];

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
  readonly now: () => Date;
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

  /** The sessions a new request covers; an unknown session, or one without their data, is refused. */
  async scope(input: Pick<ErasureInput, 'participant' | 'session'>): Promise<string[]> {
    if (input.session !== undefined) {
      const s = await this.opts.db.selectFrom('recording_sessions').select('id').where('id', '=', input.session).executeTakeFirst();
      if (!s) throw new VerbatimError('SESSION_NOT_FOUND', `no recording session ${input.session}`, { hint: 'Leave out the session to erase the participant from every session.' });
    }
    const sessions = await this.sessionsOf(input.participant, input.session);
    if (input.session !== undefined && sessions.length === 0) {
      throw new VerbatimError('NOT_FOUND', `session ${input.session} holds no data of participant ${input.participant}`, {
        hint: 'Check the participant id (GET /api/v1/sessions/:id lists them), or leave out the session.',
      });
    }
    return sessions;
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

  reasonOf(req: ErasureJobContext): string {
    return `GDPR Art. 17 erasure of participant ${req.participant} (request ${req.id}): ${req.reason}`;
  }

  /** Step erase: the hold check and every deletion of the participant's rows and stored files, in one transaction with its record. */
  async erase(req: ErasureJobContext, works: SessionWork[], i: number): Promise<void> {
    const { db } = this.opts;
    const w = works[i]!;
    const sessionId = w.session;
    const who = req.participant;
    const reason = this.reasonOf(req);
    await db.transaction().execute(async (trx) => {
      await sql`select pg_advisory_xact_lock(${sql.lit(HOLD_LOCK)})`.execute(trx);
      const s = await trx.selectFrom('recording_sessions').select(['id', 'room_id', 'status', 'manifest_path']).where('id', '=', sessionId).executeTakeFirstOrThrow();
      const participants = await participantsOf(trx, sessionId);
      const holds = holdsInForce({ id: s.id, roomId: s.room_id, participants }, await loadHoldsInForce(trx));
      if (holds.length > 0) {
        works[i] = { session: sessionId, step: 'audit', outcome: { session: sessionId, room: s.room_id, state: 'restricted', holds: holds.map((h) => ({ id: h.id, caseId: h.caseId })) } };
        await saveWork(trx, req.id, works);
        return;
      }
      if (IN_FLIGHT.has(s.status)) {
        throw new VerbatimError('CONFLICT', `session ${sessionId} is ${s.status}: erase it once processing is done`, { hint: 'Retry the erasure request when the session is done or failed.' });
      }
      // Crypto-shredding first, in the same transaction: what the storage cannot delete (WORM) becomes unreadable.
      // The session-wide key goes too: the composite and transcripts hold them and are re-made under a new one.
      const keysDestroyed = await destroyDataKeys(trx, sessionId, who, { sessionWide: true, at: this.now() });
      const tracks = await trx.selectFrom('tracks').select('track_id').where('session_id', '=', sessionId).where('participant_id', '=', who).execute();
      const trackIds = tracks.map((t) => t.track_id);
      const segFiles = trackIds.length > 0 ? await trx.selectFrom('track_segments').select(['file', 'stored_key']).where('session_id', '=', sessionId).where('track_id', 'in', trackIds).execute() : [];
      const arts = await trx.selectFrom('artifacts').select('key').where('session_id', '=', sessionId).where('participant_id', '=', who).execute();
      const composite = await trx.selectFrom('artifacts').select(['key', 'sha256', 'content_type', 'duration_seconds']).where('session_id', '=', sessionId).where('kind', '=', 'composite').executeTakeFirst();
      const seg = await trx.deleteFrom('transcript_segments').where('session_id', '=', sessionId).where('participant_id', '=', who).executeTakeFirst();
      const transcriptSegments = Number(seg.numDeletedRows);
      if (arts.length > 0) await trx.deleteFrom('artifacts').where('session_id', '=', sessionId).where('key', 'in', arts.map((a) => a.key)).execute();
      if (trackIds.length > 0) {
        await trx.deleteFrom('track_segments').where('session_id', '=', sessionId).where('track_id', 'in', trackIds).execute();
        await trx.deleteFrom('tracks').where('session_id', '=', sessionId).where('track_id', 'in', trackIds).execute();
      }
      await trx.deleteFrom('session_participants').where('session_id', '=', sessionId).where('participant_id', '=', who).execute();

      // The raw files and the manifest change in the next step (recorded here, so a resumed job finds them).
      const manifestPath = s.manifest_path && existsSync(s.manifest_path) ? this.checkedPath(s.manifest_path) : null;
      const rawFiles: string[] = [];
      let tracksRemoved: string[] = [];
      let remainingTracks = 0;
      let startShift = 0;
      // Their segments' stored copies (RECORDER_UPLOAD_RAW): as recorded, and under the raw key of each of their files.
      const rawKeys = new Set(segFiles.flatMap((f) => (f.stored_key ? [f.stored_key] : [])));
      for (const f of segFiles) rawKeys.add(rawSegmentKey(s.room_id, sessionId, path.basename(f.file)));
      if (manifestPath) {
        const dir = path.dirname(manifestPath);
        const manifest = SessionManifestSchema.parse(JSON.parse(await readFile(manifestPath, 'utf8')));
        const theirs = new Set(manifest.tracks.filter((t) => t.participant === who).map((t) => t.track));
        tracksRemoved = [...theirs];
        const files = new Set([...segFiles.map((f) => path.basename(f.file)), ...manifest.tracks.filter((t) => theirs.has(t.track)).flatMap((t) => t.segments.map((g) => path.basename(g.file)))]);
        for (const f of files) rawKeys.add(rawSegmentKey(s.room_id, sessionId, f));
        for (const t of manifest.tracks) if (theirs.has(t.track)) for (const g of t.segments) if (g.stored) rawKeys.add(g.stored.key);
        for (const f of [...files].sort()) {
          for (const name of [f, `${f}.part`]) if (existsSync(path.join(dir, name))) rawFiles.push(path.join(dir, name));
        }
        // The recorder's retired journal lists every participant; the manifest supersedes it.
        if (existsSync(path.join(dir, '.session.json.done'))) rawFiles.push(path.join(dir, '.session.json.done'));
        const remaining = manifest.tracks.filter((t) => !theirs.has(t.track));
        remainingTracks = remaining.length;
        const before = firstMediaUs(manifest.tracks);
        const after = firstMediaUs(remaining);
        startShift = before !== null && after !== null ? Math.max(0, (after - before) / 1e6) : 0;
      }
      // Their part of the session's timeline (joins, leaves, consent, their tracks' pauses), as the manifest loses it next.
      const theirTracks = [...new Set([...trackIds, ...tracksRemoved])];
      await trx
        .deleteFrom('session_events')
        .where('session_id', '=', sessionId)
        .where((eb) => eb.or([eb('participant_id', '=', who), ...(theirTracks.length > 0 ? [eb('track_id', 'in', theirTracks)] : [])]))
        .execute();
      // Files last, inside the transaction: if one cannot be deleted the rows stay and the request can be retried.
      const shredded: string[] = [];
      for (const a of arts) if (await this.deleteOrShred(trx, a.key)) shredded.push(a.key);
      const tomb = (kind: 'media' | 'transcript', item: string) => ({ session_id: sessionId, kind, item, reason, policy: null, erasure_request: req.id, deleted_at: this.now() });
      const tombs = [...(transcriptSegments > 0 ? [tomb('transcript', `transcript_segments:${transcriptSegments}`)] : []), ...arts.map((a) => tomb('media', a.key))];
      if (tombs.length > 0) await trx.insertInto('tombstones').values(tombs).execute();
      works[i] = {
        session: sessionId,
        step: 'raw',
        erased: {
          room: s.room_id,
          deleted: { transcriptSegments, artifacts: arts.map((a) => a.key), rawFiles, tracks: trackIds, ...(keysDestroyed.length > 0 ? { keysDestroyed } : {}), ...(shredded.length > 0 ? { shredded } : {}) },
          manifestPath,
          manifestSha256: null,
          tracksRemoved,
          remainingTracks,
          startShift,
          rawKeys: [...rawKeys].sort(),
          composite: composite ? { key: composite.key, sha256: composite.sha256, contentType: composite.content_type, durationSeconds: composite.duration_seconds === null ? null : Number(composite.duration_seconds) } : null,
        },
      };
      await saveWork(trx, req.id, works);
    });
  }

  /** Step raw: their raw files go and the manifest is rewritten without them (once: a rerun finds this request's erasure event). */
  async eraseRaw(req: ErasureJobContext, works: SessionWork[], i: number): Promise<void> {
    const w = works[i]!;
    const e = w.erased!;
    for (const f of e.deleted.rawFiles) await rm(this.checkedPath(f), { force: true });
    // Their stored raw copies go too; only those that were there are tombstoned (a rerun finds none left).
    const rawKeysDeleted: string[] = [];
    const rawShredded: string[] = [];
    for (const key of e.rawKeys ?? []) {
      if (!(await this.opts.storage.exists(key))) continue;
      if (await this.deleteOrShred(this.opts.db, key)) rawShredded.push(key);
      rawKeysDeleted.push(key);
    }
    const shredded = [...new Set([...(e.deleted.shredded ?? []), ...rawShredded])];
    const deleted = shredded.length > 0 ? { ...e.deleted, shredded } : e.deleted;
    let manifestSha256: string | null = null;
    let event: SessionManifest['events'][number] | undefined;
    if (e.manifestPath) {
      const manifestPath = this.checkedPath(e.manifestPath);
      const current = await readFile(manifestPath, 'utf8');
      const manifest = SessionManifestSchema.parse(JSON.parse(current));
      event = manifest.events.find((x) => x.type === 'erasure' && x.details.request === req.id);
      if (event) {
        manifestSha256 = createHash('sha256').update(current).digest('hex');
      } else {
        event = { at: this.now().toISOString(), type: 'erasure', details: { request: req.id, tracksRemoved: e.tracksRemoved.length, basis: 'GDPR Art. 17' } };
        const theirs = new Set(e.tracksRemoved);
        const rewritten: SessionManifest = {
          ...manifest,
          participants: manifest.participants.filter((p) => p.id !== req.participant),
          tracks: manifest.tracks.filter((t) => !theirs.has(t.track)),
          gaps: manifest.gaps.filter((g) => !theirs.has(g.track)),
          events: [...manifest.events.filter((x) => x.participant !== req.participant && !(x.track !== undefined && theirs.has(x.track))), event],
        };
        const body = `${JSON.stringify(rewritten, null, 2)}\n`;
        await writeFile(`${manifestPath}.tmp`, body);
        await rename(`${manifestPath}.tmp`, manifestPath);
        manifestSha256 = createHash('sha256').update(body).digest('hex');
      }
    }
    await this.opts.db.transaction().execute(async (trx) => {
      if (manifestSha256) await trx.updateTable('recording_sessions').set({ manifest_sha256: manifestSha256, updated_at: this.now() }).where('id', '=', w.session).execute();
      // The stored timeline follows the manifest: its erasure event, once.
      const recorded = await trx.selectFrom('session_events').select('ordinal').where('session_id', '=', w.session).where('type', '=', 'erasure').where(sql<boolean>`details->>'request' = ${req.id}`).executeTakeFirst();
      if (event && !recorded) {
        const last = await trx.selectFrom('session_events').select((eb) => eb.fn.max('ordinal').as('n')).where('session_id', '=', w.session).executeTakeFirst();
        const ordinal = last?.n === null || last?.n === undefined ? 0 : Number(last.n) + 1;
        await trx.insertInto('session_events').values({ session_id: w.session, ordinal, at: event.at, type: 'erasure', participant_id: null, track_id: null, details: JSON.stringify(event.details) }).execute();
      }
      const tombs = [...e.deleted.rawFiles, ...rawKeysDeleted].map((f) => ({ session_id: w.session, kind: 'raw' as const, item: f, reason: this.reasonOf(req), policy: null, erasure_request: req.id, deleted_at: this.now() }));
      if (tombs.length > 0) await trx.insertInto('tombstones').values(tombs).execute();
      works[i] = { ...w, step: 'transcripts', erased: { ...e, deleted, manifestSha256 } };
      await saveWork(trx, req.id, works);
    });
  }

  /** Step transcripts: transcript.json/.vtt/.txt hold everyone's words: rebuilt from the segments that remain (deleted when none do). */
  async rebuildTranscripts(req: ErasureJobContext, works: SessionWork[], i: number): Promise<void> {
    const { db, storage } = this.opts;
    const sessionId = works[i]!.session;
    const reason = this.reasonOf(req);
    const arts = (await db.selectFrom('artifacts').selectAll().where('session_id', '=', sessionId).execute()).filter((a) => a.kind.startsWith('transcript-'));
    const rows = await db.selectFrom('transcript_segments').selectAll().where('session_id', '=', sessionId).orderBy('seq').execute();
    const { segments, language } = transcriptFromRows(rows, 'en');
    const files = new Map(transcriptFiles(sessionId, language, segments).map((f) => [f.kind as string, f]));
    await mkdir(this.opts.workDir, { recursive: true });
    const tmp = await mkdtemp(path.join(this.opts.workDir, 'erasure-transcript-'));
    try {
      for (const a of arts) {
        const f = files.get(a.kind);
        if (!f || segments.length === 0) {
          await this.deleteOrShred(db, a.key);
          await db.transaction().execute(async (trx) => {
            await trx.deleteFrom('artifacts').where('session_id', '=', sessionId).where('key', '=', a.key).execute();
            await trx.insertInto('tombstones').values({ session_id: sessionId, kind: 'transcript', item: a.key, reason, policy: null, erasure_request: req.id, deleted_at: this.now() }).execute();
          });
          continue;
        }
        const file = path.join(tmp, f.name);
        await writeFile(file, f.body);
        // Under the session's new key: the old one was destroyed with the participant's (erase step).
        const stored = await storage.put(a.key, file, a.content_type, { encryptFor: { session: sessionId, participant: null } });
        await db.updateTable('artifacts').set({ bytes: stored.bytes, sha256: stored.sha256, key_id: stored.keyId ?? null, created_at: this.now() }).where('session_id', '=', sessionId).where('key', '=', a.key).execute();
      }
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
    works[i] = { ...works[i]!, step: 'composite' };
    await saveWork(db, req.id, works);
  }

  /** What the composite step has to do: nothing, delete the composite, or have it re-rendered. */
  compositePlan(w: SessionWork): CompositePlan {
    const e = w.erased!;
    if (!e.composite) return { kind: 'none' };
    if (!e.manifestPath || !e.manifestSha256) {
      return { kind: 'drop', why: 'deleted: raw recording already deleted', note: 'the raw recording was already deleted (retention), so the composite could not be re-rendered without the participant and was deleted instead' };
    }
    if (e.remainingTracks === 0) return { kind: 'drop', why: 'deleted: no other media remains', note: "no other participant's media remains in the session" };
    // Keep the original timeline (transcript offsets, search hits and play links point into it): when the
    // erased participant opened the session, the remaining media starts later; when they closed it, it ends sooner.
    const previous = e.composite.durationSeconds;
    const lead = previous !== null && e.startShift > 0.05 ? Math.min(e.startShift, previous) : 0;
    return {
      kind: 'rerender',
      payload: {
        v: 1,
        room: e.room,
        session: w.session,
        manifestPath: e.manifestPath,
        manifestSha256: e.manifestSha256,
        timeline: previous !== null && previous > 0 ? { leadSeconds: lead, durationSeconds: previous } : null,
      },
    };
  }

  /** The re-rendered composite (already in storage under its key) replaces the old one's row; the old bytes get a tombstone. */
  async replaceComposite(req: ErasureJobContext, works: SessionWork[], i: number, result: SessionRerenderResult): Promise<void> {
    const w = works[i]!;
    const old = w.erased!.composite!;
    if (result.composite.key !== old.key) throw new Error(`the re-render stored ${result.composite.key}, not the session's composite ${old.key}`);
    const c = result.composite;
    await this.opts.db.transaction().execute(async (trx) => {
      await trx.updateTable('artifacts').set({ bytes: c.bytes, sha256: c.sha256, duration_seconds: c.durationSeconds, key_id: c.keyId ?? null, created_at: this.now() }).where('session_id', '=', w.session).where('key', '=', old.key).execute();
      await trx
        .insertInto('tombstones')
        .values({ session_id: w.session, kind: 'media', item: `${old.key}@sha256:${old.sha256}`, reason: `${this.reasonOf(req)}; replaced by a re-render without the participant`, policy: null, erasure_request: req.id, deleted_at: this.now() })
        .execute();
      works[i] = { ...w, step: 'audit', outcome: { ...erasedOutcome(w), composite: 're-rendered', compositeSha256: c.sha256, ...(c.durationSeconds !== null ? { durationSeconds: c.durationSeconds } : {}) } };
      await saveWork(trx, req.id, works);
    });
  }

  /** The composite cannot be made without the participant: it is deleted rather than kept with them in it. */
  async dropComposite(req: ErasureJobContext, works: SessionWork[], i: number, why: CompositeOutcome, note: string): Promise<void> {
    const w = works[i]!;
    const old = w.erased!.composite!;
    await this.deleteOrShred(this.opts.db, old.key);
    await this.opts.db.transaction().execute(async (trx) => {
      await trx.deleteFrom('artifacts').where('session_id', '=', w.session).where('key', '=', old.key).execute();
      await trx.insertInto('tombstones').values({ session_id: w.session, kind: 'media', item: old.key, reason: `${this.reasonOf(req)}; ${note}`, policy: null, erasure_request: req.id, deleted_at: this.now() }).execute();
      works[i] = { ...w, step: 'audit', outcome: { ...erasedOutcome(w), composite: why, note } };
      await saveWork(trx, req.id, works);
    });
  }

  /** No composite was stored: nothing to re-render. */
  async noComposite(req: ErasureJobContext, works: SessionWork[], i: number): Promise<void> {
    works[i] = { ...works[i]!, step: 'audit', outcome: { ...erasedOutcome(works[i]!), composite: 'none' } };
    await saveWork(this.opts.db, req.id, works);
  }

  /** The erase step failed (nothing of it was committed): recorded as a failed session. */
  async failed(req: ErasureJobContext, works: SessionWork[], i: number, err: unknown): Promise<void> {
    this.opts.logger?.error({ err, session: works[i]!.session, request: req.id }, 'erasure of a session failed');
    const code = err instanceof VerbatimError ? err.code : 'ERASURE_FAILED';
    works[i] = { session: works[i]!.session, step: 'audit', outcome: { session: works[i]!.session, room: '', state: 'failed', code, note: (err as Error).message.slice(0, 500) } };
    await saveWork(this.opts.db, req.id, works);
  }

  /** Step audit: the session's audit entry, once (a resumed job finds the one it wrote). */
  async auditSession(req: ErasureJobContext, works: SessionWork[], i: number): Promise<void> {
    const { db } = this.opts;
    const o = works[i]!.outcome!;
    const action = o.state === 'restricted' ? 'erasure.restricted' : o.state === 'failed' ? 'erasure.failed' : 'erasure.delete';
    const written = await db
      .selectFrom('audit_log')
      .select('seq')
      .where('action', '=', action)
      .where('target_type', '=', 'session')
      .where('target_id', '=', o.session)
      .where(sql<boolean>`details->>'request' = ${req.id}`)
      .executeTakeFirst();
    if (!written) await this.opts.audit.append({ action, actor: req.actor, target: { type: 'session', id: o.session }, details: { request: req.id, participant: req.participant, ...o } });
    works[i] = { ...works[i]!, step: 'done' };
    await saveWork(db, req.id, works);
  }

  /**
   * Deletes a stored object; one the storage must keep (OBJECT_RETAINED: S3 Object Lock) counts as
   * erased only when it is encrypted under a destroyed data key (true: kept but shredded). A retained
   * object in clear, or under a live key, still fails the step.
   */
  private async deleteOrShred(q: Q, key: string): Promise<boolean> {
    try {
      await this.opts.storage.delete(key);
      return false;
    } catch (err) {
      if (!(err instanceof VerbatimError && err.code === 'OBJECT_RETAINED')) throw err;
      const keyId = await (this.opts.storage as Partial<{ keyIdOf(k: string): Promise<string | undefined> }>).keyIdOf?.(key);
      if (keyId === undefined || !(await isDestroyed(q, keyId))) throw err;
      this.opts.logger?.info({ key, keyId }, 'stored object retained by Object Lock; crypto-shredded (its data key is destroyed)');
      return true;
    }
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
}

function erasedOutcome(w: SessionWork): SessionOutcome {
  return { session: w.session, room: w.erased!.room, state: 'erased', deleted: w.erased!.deleted };
}

/** The request's sessions with their steps, and the outcomes of those finished. */
async function saveWork(q: Q, id: string, works: SessionWork[]): Promise<void> {
  const outcome = works.filter((w) => w.step === 'done' || w.step === 'audit').map((w) => w.outcome!);
  await q.updateTable('erasure_requests').set({ sessions: JSON.stringify(works), outcome: JSON.stringify(outcome) }).where('id', '=', id).execute();
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

/** Wall clock (µs) of the first media packet any of these tracks holds. */
function firstMediaUs(tracks: SessionManifest['tracks']): number | null {
  const firsts = tracks.flatMap((t) => t.segments.map((g) => g.firstArrivalUs ?? g.startedAtUs));
  return firsts.length > 0 ? Math.min(...firsts) : null;
}

export function toRecord(r: {
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
  sessions: unknown;
  progress: number;
  stage: string | null;
  error_code: string | null;
  error_message: string | null;
}): ErasureRecord {
  const works = parseJson<SessionWork[]>(r.sessions, []);
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
    sessions: works.map((w) => w.session),
    progress: { pct: Number(r.progress), stage: r.stage, sessionsDone: works.filter((w) => w.step === 'done').length, sessionsTotal: works.length },
    error: r.error_code ? { code: r.error_code, message: r.error_message ?? '' } : null,
  };
}
