import { randomUUID } from 'node:crypto';
import { readdir, rm, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { sql, type Kysely, type Selectable, type Transaction } from 'kysely';
import type { Db } from '../../../db/database.ts';
import type { Database, LegalHoldsTable, RetentionKind } from '../../../db/schema.ts';
import { VerbatimError } from '../../lib/errors.ts';
import { artifactRetentionClass } from '../../lib/storage/artifact-kinds.ts';
import type { ArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { rawSegmentPrefix } from '../../lib/storage/artifact-keys.ts';
import type { AuditLog } from './audit-log.ts';

/**
 * Retention and legal holds, on the principles Microsoft Purview documents:
 *
 * 1. A legal hold beats everything: content a hold in force covers is never deleted,
 *    whatever the policies say. A hold is in force until it is released (no clock enters
 *    into it, so a clock jumping backwards cannot lift one).
 * 2. When several retention policies apply to a session, the longest retention wins, per
 *    kind of content; a policy that keeps a kind forever (NULL days) beats any duration.
 *    No policy at all = keep forever.
 * 3. Expiry = the session's ended_at + days. A session still recording or processing
 *    (or that never ended) is never deleted.
 *
 * Kinds: 'media' (artifacts other than transcripts), 'transcript' (transcript_segments
 * rows and transcript-* artifacts), 'raw' (the recorder's session directory: .vrtp files
 * and manifest, and the track_segments rows).
 *
 * Policies that apply to a session: every 'default'-scope policy; the 'room'-scope policy
 * the session was recorded under (recording_sessions.retention_policy, else the room's
 * retentionPolicy flag); every 'tag'-scope policy named in the session's retention_tags.
 *
 * Holds cover whole sessions (media is mixed: a hold on one participant keeps the session
 * they took part in). Scopes: 'session' (id), 'room' (room id), 'participant'
 * (participant id), 'query' (the session ids frozen when it was placed).
 */

export type { RetentionKind } from '../../../db/schema.ts';
export const RETENTION_KINDS: readonly RetentionKind[] = ['media', 'transcript', 'raw'];
export const DAY_MS = 86_400_000;

export interface RetentionPolicy {
  name: string;
  scope: 'default' | 'room' | 'tag';
  media_days: number | null;
  transcript_days: number | null;
  raw_days: number | null;
}

export interface RetentionSession {
  id: string;
  roomId: string;
  endedAt: Date | null;
  status?: string | undefined;
  /** The room-scope policy the session falls under (its own, else its room's flag). */
  policy?: string | null | undefined;
  tags?: readonly string[] | undefined;
  participants: readonly string[];
  /** The kinds that still have content; default all (the sweeper passes what exists). */
  kinds?: readonly RetentionKind[] | undefined;
}

export type HoldScope = 'session' | 'room' | 'participant' | 'query';

export interface RetentionHold {
  id: string;
  caseId?: string | undefined;
  scopeType: HoldScope;
  scopeValue: string;
  frozenSessionIds: readonly string[];
  releasedAt: Date | null;
}

export interface DeletionDecision {
  sessionId: string;
  kind: RetentionKind;
  reason: string;
  /** The policy whose (winning, longest) retention expired. */
  policy: string;
  expiresAt: Date;
}

const IN_FLIGHT = new Set(['recording', 'processing']);

/** Whether the hold (in force or not) covers the session, for the participant when one is named. */
export function holdCovers(hold: RetentionHold, session: Pick<RetentionSession, 'id' | 'roomId' | 'participants'>, participant?: string): boolean {
  switch (hold.scopeType) {
    case 'session':
      return hold.scopeValue === session.id;
    case 'room':
      return hold.scopeValue === session.roomId;
    case 'participant':
      // A participant's hold keeps every session they were in (the media is mixed).
      return participant === undefined ? session.participants.includes(hold.scopeValue) : participant === hold.scopeValue || session.participants.includes(hold.scopeValue);
    case 'query':
      return hold.frozenSessionIds.includes(session.id);
  }
}

export function holdsInForce(session: Pick<RetentionSession, 'id' | 'roomId' | 'participants'>, holds: readonly RetentionHold[]): RetentionHold[] {
  return holds.filter((h) => h.releasedAt === null && holdCovers(h, session));
}

export function applicablePolicies(session: RetentionSession, policies: readonly RetentionPolicy[]): RetentionPolicy[] {
  return policies.filter(
    (p) => p.scope === 'default' || (p.scope === 'room' && session.policy != null && p.name === session.policy) || (p.scope === 'tag' && (session.tags ?? []).includes(p.name)),
  );
}

function daysOf(p: RetentionPolicy, kind: RetentionKind): number | null {
  return kind === 'media' ? p.media_days : kind === 'transcript' ? p.transcript_days : p.raw_days;
}

/** The winning retention for one kind: the longest of the applicable policies, or null = keep forever. */
export function winningRetention(session: RetentionSession, kind: RetentionKind, policies: readonly RetentionPolicy[]): { policy: string; days: number } | null {
  const applicable = applicablePolicies(session, policies);
  if (applicable.length === 0) return null;
  let best: { policy: string; days: number } | null = null;
  for (const p of applicable) {
    const days = daysOf(p, kind);
    if (days === null) return null; // keep forever beats every duration
    if (!best || days > best.days || (days === best.days && p.name < best.policy)) best = { policy: p.name, days };
  }
  return best;
}

/** Pure: what retention deletes at `now`. Never returns content a hold in force covers. */
export function decideDeletions(now: Date, sessions: readonly RetentionSession[], policies: readonly RetentionPolicy[], holds: readonly RetentionHold[]): DeletionDecision[] {
  const out: DeletionDecision[] = [];
  for (const s of sessions) {
    if (s.endedAt === null || (s.status !== undefined && IN_FLIGHT.has(s.status))) continue;
    if (holdsInForce(s, holds).length > 0) continue;
    for (const kind of RETENTION_KINDS) {
      if (s.kinds && !s.kinds.includes(kind)) continue;
      const win = winningRetention(s, kind, policies);
      if (!win) continue;
      const expiresAt = new Date(s.endedAt.getTime() + win.days * DAY_MS);
      if (now.getTime() < expiresAt.getTime()) continue;
      out.push({ sessionId: s.id, kind, policy: win.policy, expiresAt, reason: `${kind} retention of ${win.days} day(s) under policy "${win.policy}" expired at ${expiresAt.toISOString()}` });
    }
  }
  return out;
}

// ---------------------------------------------------------------- database access

/** Serializes hold placement with the sweeper's per-session re-check and deletion. */
const HOLD_LOCK = 0x7665_7274; // 'vert'

type Q = Kysely<Database> | Transaction<Database>;

function toJsonArray(v: unknown): string[] {
  if (Array.isArray(v)) return v.map(String);
  if (typeof v === 'string') {
    try {
      const parsed: unknown = JSON.parse(v);
      return Array.isArray(parsed) ? parsed.map(String) : [];
    } catch {
      return [];
    }
  }
  return [];
}

async function loadHolds(db: Q, inForceOnly: boolean): Promise<RetentionHold[]> {
  let q = db.selectFrom('legal_holds').selectAll();
  if (inForceOnly) q = q.where('released_at', 'is', null);
  const rows = await q.execute();
  return rows.map((r) => ({ id: r.id, caseId: r.case_id, scopeType: r.scope_type, scopeValue: r.scope_value, frozenSessionIds: toJsonArray(r.frozen_session_ids), releasedAt: r.released_at }));
}

async function loadPolicies(db: Q): Promise<RetentionPolicy[]> {
  return db.selectFrom('retention_policies').select(['name', 'scope', 'media_days', 'transcript_days', 'raw_days']).execute();
}

interface LoadedSession extends RetentionSession {
  manifestPath: string | null;
}

async function loadSessions(db: Q, ids?: readonly string[]): Promise<LoadedSession[]> {
  if (ids && ids.length === 0) return [];
  let q = db
    .selectFrom('recording_sessions as s')
    .leftJoin('rooms as r', 'r.id', 's.room_id')
    .select(['s.id', 's.room_id', 's.ended_at', 's.status', 's.retention_policy', 's.retention_tags', 's.manifest_path', sql<string | null>`r.flags->>'retentionPolicy'`.as('room_policy')]);
  if (ids) q = q.where('s.id', 'in', ids);
  const rows = await q.execute();
  if (rows.length === 0) return [];
  const sessionIds = rows.map((r) => r.id);
  const participants = new Map<string, Set<string>>();
  const add = (sid: string, pid: string | null) => {
    if (pid === null) return;
    let set = participants.get(sid);
    if (!set) participants.set(sid, (set = new Set()));
    set.add(pid);
  };
  for (const p of await db.selectFrom('session_participants').select(['session_id', 'participant_id']).where('session_id', 'in', sessionIds).execute()) add(p.session_id, p.participant_id);
  for (const p of await db.selectFrom('tracks').select(['session_id', 'participant_id']).where('session_id', 'in', sessionIds).execute()) add(p.session_id, p.participant_id);
  for (const p of await db.selectFrom('transcript_segments').select(['session_id', 'participant_id']).distinct().where('session_id', 'in', sessionIds).execute()) add(p.session_id, p.participant_id);

  const kinds = new Map<string, Set<RetentionKind>>();
  const mark = (sid: string, k: RetentionKind) => {
    let set = kinds.get(sid);
    if (!set) kinds.set(sid, (set = new Set()));
    set.add(k);
  };
  for (const a of await db.selectFrom('artifacts').select(['session_id', 'kind']).distinct().where('session_id', 'in', sessionIds).execute()) mark(a.session_id, artifactRetentionClass(a.kind));
  for (const t of await db.selectFrom('transcript_segments').select('session_id').distinct().where('session_id', 'in', sessionIds).execute()) mark(t.session_id, 'transcript');
  for (const t of await db.selectFrom('track_segments').select('session_id').distinct().where('session_id', 'in', sessionIds).execute()) mark(t.session_id, 'raw');
  for (const r of rows) if (r.manifest_path) mark(r.id, 'raw');

  return rows.map((r) => ({
    id: r.id,
    roomId: r.room_id,
    endedAt: r.ended_at,
    status: r.status,
    policy: r.retention_policy ?? r.room_policy,
    tags: toJsonArray(r.retention_tags),
    participants: [...(participants.get(r.id) ?? [])],
    kinds: [...(kinds.get(r.id) ?? [])],
    manifestPath: r.manifest_path,
  }));
}


export interface Actor {
  type: 'user' | 'api_key' | 'service';
  id: string;
}

const SWEEPER_ACTOR: Actor = { type: 'service', id: 'retention-sweeper' };

// ---------------------------------------------------------------- legal holds

export interface PlaceHoldInput {
  caseId: string;
  reason: string;
  scopeType: HoldScope;
  /** Session id, room id, participant id, or the full-text query (websearch syntax). */
  scopeValue: string;
  placedBy: Actor;
}

export interface LegalHold {
  id: string;
  caseId: string;
  reason: string;
  scopeType: HoldScope;
  scopeValue: string;
  frozenSessionIds: string[];
  placedBy: string;
  placedAt: Date;
  releasedAt: Date | null;
  releasedBy: string | null;
}

function actorId(a: Actor): string {
  return `${a.type}:${a.id}`;
}

export class LegalHolds {
  constructor(
    private readonly db: Db,
    private readonly audit: AuditLog,
  ) {}

  /** Places a hold (audited). A 'query' hold freezes the sessions whose transcript matches now. */
  async place(input: PlaceHoldInput): Promise<LegalHold> {
    for (const [k, v] of [['caseId', input.caseId], ['reason', input.reason], ['scopeValue', input.scopeValue]] as const) {
      if (typeof v !== 'string' || v.trim() === '') throw new VerbatimError('BAD_REQUEST', `legal hold: ${k} is required`, { hint: 'A hold names its case, its reason and what it covers.' });
    }
    if (!['session', 'room', 'participant', 'query'].includes(input.scopeType)) {
      throw new VerbatimError('BAD_REQUEST', `legal hold: unknown scope "${input.scopeType}"`, { hint: "Scopes: 'session', 'room', 'participant', 'query'." });
    }
    const id = randomUUID();
    const row = await this.db.transaction().execute(async (trx) => {
      await sql`select pg_advisory_xact_lock(${sql.lit(HOLD_LOCK)})`.execute(trx);
      let frozen: string[] = [];
      if (input.scopeType === 'query') {
        const hits = await trx
          .selectFrom('transcript_segments')
          .select('session_id')
          .distinct()
          .where(sql<boolean>`tsv @@ websearch_to_tsquery('english', ${input.scopeValue})`)
          .orderBy('session_id')
          .execute();
        frozen = hits.map((h) => h.session_id);
      }
      return trx
        .insertInto('legal_holds')
        .values({ id, case_id: input.caseId, reason: input.reason, scope_type: input.scopeType, scope_value: input.scopeValue, frozen_session_ids: JSON.stringify(frozen), placed_by: actorId(input.placedBy) })
        .returningAll()
        .executeTakeFirstOrThrow();
    });
    const hold = toHold(row);
    await this.audit.append({
      action: 'legal_hold.place',
      actor: input.placedBy,
      target: { type: 'legal_hold', id },
      details: { caseId: hold.caseId, reason: hold.reason, scopeType: hold.scopeType, scopeValue: hold.scopeValue, frozenSessionIds: hold.frozenSessionIds },
    });
    return hold;
  }

  /** Releases a hold (audited); retention applies to what it covered at the next sweep. */
  async release(id: string, releasedBy: Actor, reason?: string): Promise<LegalHold> {
    const row = await this.db
      .updateTable('legal_holds')
      .set({ released_at: new Date(), released_by: actorId(releasedBy) })
      .where('id', '=', id)
      .where('released_at', 'is', null)
      .returningAll()
      .executeTakeFirst();
    if (!row) {
      const exists = await this.db.selectFrom('legal_holds').select('id').where('id', '=', id).executeTakeFirst();
      throw new VerbatimError('BAD_REQUEST', exists ? `legal hold ${id} is already released` : `no legal hold ${id}`, { hint: 'List the holds to find the one in force.' });
    }
    const hold = toHold(row);
    await this.audit.append({ action: 'legal_hold.release', actor: releasedBy, target: { type: 'legal_hold', id }, details: { caseId: hold.caseId, ...(reason ? { reason } : {}) } });
    return hold;
  }

  /**
   * Whether a hold in force covers the session (for the participant, when one is named).
   * Audited when an actor is given (a compliance user asking); internal checks pass none.
   */
  async isHeld(sessionId: string, participant?: string, actor?: Actor): Promise<{ held: boolean; holds: string[] }> {
    const [session] = await loadSessions(this.db, [sessionId]);
    const holds = await loadHolds(this.db, true);
    const covering = session ? holds.filter((h) => holdCovers(h, session, participant)) : holds.filter((h) => (h.scopeType === 'session' || h.scopeType === 'query') && holdCovers(h, { id: sessionId, roomId: '', participants: [] }));
    const result = { held: covering.length > 0, holds: covering.map((h) => h.id) };
    if (actor) {
      await this.audit.append({ action: 'legal_hold.check', actor, target: { type: 'session', id: sessionId }, details: { ...(participant ? { participant } : {}), ...result } });
    }
    return result;
  }

  async list(opts: { includeReleased?: boolean } = {}): Promise<LegalHold[]> {
    let q = this.db.selectFrom('legal_holds').selectAll().orderBy('placed_at');
    if (!opts.includeReleased) q = q.where('released_at', 'is', null);
    return (await q.execute()).map(toHold);
  }
}

function toHold(r: Selectable<LegalHoldsTable>): LegalHold {
  return {
    id: r.id,
    caseId: r.case_id,
    reason: r.reason,
    scopeType: r.scope_type,
    scopeValue: r.scope_value,
    frozenSessionIds: toJsonArray(r.frozen_session_ids),
    placedBy: r.placed_by,
    placedAt: r.placed_at,
    releasedAt: r.released_at,
    releasedBy: r.released_by,
  };
}

// ---------------------------------------------------------------- the sweeper

export interface SweeperOptions {
  db: Db;
  storage: ArtifactStorage;
  audit: AuditLog;
  /** The recorder's RECORDINGS_DIR: raw session directories are <dir>/<room>/<session>. */
  recordingsDir: string;
  now?: () => Date;
}

export interface SweepDeletion extends DeletionDecision {
  /** What was deleted: artifact keys, raw files, `transcript_segments:<n rows>`. */
  items: string[];
}

export interface SweepResult {
  dryRun: boolean;
  at: Date;
  decisions: DeletionDecision[];
  deleted: SweepDeletion[];
  /** Decisions dropped because a hold was placed after planning (the re-check under the lock). */
  skippedHeld: DeletionDecision[];
}

export class RetentionSweeper {
  private readonly db: Db;
  private readonly storage: ArtifactStorage;
  private readonly audit: AuditLog;
  private readonly recordingsDir: string;
  private readonly now: () => Date;

  constructor(opts: SweeperOptions) {
    this.db = opts.db;
    this.storage = opts.storage;
    this.audit = opts.audit;
    this.recordingsDir = path.resolve(opts.recordingsDir);
    this.now = opts.now ?? (() => new Date());
  }

  /** What a sweep at `now` would delete (reads only). */
  async plan(now: Date = this.now()): Promise<DeletionDecision[]> {
    const [sessions, policies, holds] = await Promise.all([loadSessions(this.db), loadPolicies(this.db), loadHolds(this.db, true)]);
    return decideDeletions(now, sessions, policies, holds);
  }

  async sweep(opts: { dryRun?: boolean; now?: Date } = {}): Promise<SweepResult> {
    const at = opts.now ?? this.now();
    const decisions = await this.plan(at);
    if (opts.dryRun) {
      await this.audit.append({
        action: 'retention.dry_run',
        actor: SWEEPER_ACTOR,
        details: { at: at.toISOString(), count: decisions.length, decisions: decisions.map((d) => ({ sessionId: d.sessionId, kind: d.kind, policy: d.policy, expiresAt: d.expiresAt.toISOString() })) },
      });
      return { dryRun: true, at, decisions, deleted: [], skippedHeld: [] };
    }
    const deleted: SweepDeletion[] = [];
    const skippedHeld: DeletionDecision[] = [];
    for (const d of decisions) {
      const items = await this.apply(d);
      if (items === null) {
        skippedHeld.push(d);
        continue;
      }
      await this.audit.append({
        action: 'retention.delete',
        actor: SWEEPER_ACTOR,
        target: { type: 'session', id: d.sessionId },
        details: { kind: d.kind, policy: d.policy, reason: d.reason, expiresAt: d.expiresAt.toISOString(), items },
      });
      deleted.push({ ...d, items });
    }
    return { dryRun: false, at, decisions, deleted, skippedHeld };
  }

  /** Deletes one decision's content under the hold lock; null when a hold now covers the session. */
  private async apply(d: DeletionDecision): Promise<string[] | null> {
    return this.db.transaction().execute(async (trx) => {
      await sql`select pg_advisory_xact_lock(${sql.lit(HOLD_LOCK)})`.execute(trx);
      const [session] = await loadSessions(trx, [d.sessionId]);
      if (!session) return [];
      if (holdsInForce(session, await loadHolds(trx, true)).length > 0) return null;
      const items: string[] = [];
      if (d.kind === 'media' || d.kind === 'transcript') {
        const arts = (await trx.selectFrom('artifacts').select(['key', 'kind']).where('session_id', '=', d.sessionId).execute()).filter((a) => artifactRetentionClass(a.kind) === d.kind);
        if (arts.length > 0) await trx.deleteFrom('artifacts').where('session_id', '=', d.sessionId).where('key', 'in', arts.map((a) => a.key)).execute();
        if (d.kind === 'transcript') {
          const res = await trx.deleteFrom('transcript_segments').where('session_id', '=', d.sessionId).executeTakeFirst();
          const n = Number(res.numDeletedRows);
          if (n > 0) items.push(`transcript_segments:${n}`);
        }
        // Storage last, inside the transaction: if a delete fails the rows stay and the next sweep retries.
        for (const a of arts) {
          await this.storage.delete(a.key);
          items.push(a.key);
        }
      } else {
        const dir = this.sessionDir(session);
        const segs = await trx.selectFrom('track_segments').select(['file', 'stored_key']).where('session_id', '=', d.sessionId).execute();
        await trx.deleteFrom('track_segments').where('session_id', '=', d.sessionId).execute();
        await trx.updateTable('recording_sessions').set({ manifest_path: null, updated_at: new Date() }).where('id', '=', d.sessionId).execute();
        items.push(...(await this.deleteRaw(dir, segs.map((s) => s.file))));
        // The raw copies in storage go with the local ones (RECORDER_UPLOAD_RAW).
        items.push(...(await deleteStoredRaw(this.storage, session.roomId, d.sessionId, segs.map((s) => s.stored_key))));
      }
      if (items.length > 0) {
        await trx
          .insertInto('tombstones')
          .values(items.map((item) => ({ session_id: d.sessionId, kind: d.kind, item, reason: d.reason, policy: d.policy })))
          .execute();
      }
      return items;
    });
  }

  private sessionDir(s: LoadedSession): string {
    const dir = path.resolve(s.manifestPath ? path.dirname(s.manifestPath) : path.join(this.recordingsDir, s.roomId, s.id));
    const rel = path.relative(this.recordingsDir, dir);
    if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) {
      throw new VerbatimError('INTERNAL', `retention: session ${s.id} directory ${dir} is outside RECORDINGS_DIR ${this.recordingsDir}`, {
        hint: 'Refusing to delete outside the recordings directory; check RECORDINGS_DIR and the session manifest_path.',
      });
    }
    return dir;
  }

  /** Deletes the session directory's recordings (.vrtp, leftovers), manifest and journal; the directory when empty. */
  private async deleteRaw(dir: string, listed: string[]): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const present = new Set(names);
    const targets = new Set<string>();
    for (const f of listed) if (present.has(path.basename(f))) targets.add(path.basename(f));
    for (const n of names) if (/\.vrtp(\.part)?$/.test(n) || n === 'manifest.json' || n === 'session.json' || n === '.session.json.done') targets.add(n);
    const deleted: string[] = [];
    for (const n of [...targets].sort()) {
      await rm(path.join(dir, n), { force: true });
      deleted.push(path.join(dir, n));
    }
    await rmdir(dir).catch(() => {}); // only when empty: anything else there is not ours to delete
    return deleted;
  }
}

// ---------------------------------------------------------------- scheduling

/** What scheduleSweeper needs of a BullMQ Queue (kept structural so tests need no Redis). */
export interface RepeatableQueue {
  upsertJobScheduler(id: string, repeat: { every: number }, template: { name: string; data: Record<string, unknown> }): Promise<unknown>;
}

export const RETENTION_JOB = 'retention.sweep';

/** Registers the repeatable sweep (idempotent: one scheduler id); the worker calls `sweeper.sweep()` for RETENTION_JOB. */
export async function scheduleSweeper(queue: RepeatableQueue, everyMs: number): Promise<void> {
  if (!Number.isInteger(everyMs) || everyMs < 1000) throw new VerbatimError('BAD_REQUEST', `retention sweep interval ${everyMs} ms is too short`, { hint: 'Sweep at most once a second; hourly or daily is usual.' });
  await queue.upsertJobScheduler('retention-sweeper', { every: everyMs }, { name: RETENTION_JOB, data: {} });
}

/**
 * Deletes a session's raw segments from artifact storage: the keys its rows record and whatever is
 * under its raw prefix (an upload whose record had not reached the database). `files` limits it to
 * those segment files (an erasure of one participant); returns the deleted keys, sorted.
 */
export async function deleteStoredRaw(storage: ArtifactStorage, roomId: string, sessionId: string, recorded: readonly (string | null)[], files?: ReadonlySet<string>): Promise<string[]> {
  const prefix = rawSegmentPrefix(roomId, sessionId);
  const listed = await storage.list(prefix);
  const keys = new Set([...recorded.filter((k): k is string => k !== null), ...listed.filter((k) => !files || files.has(k.slice(prefix.length)))]);
  const deleted: string[] = [];
  for (const key of [...keys].sort()) {
    await storage.delete(key);
    deleted.push(key);
  }
  return deleted;
}
