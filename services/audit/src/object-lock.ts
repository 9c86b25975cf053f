import { sql } from 'kysely';
import type { Db } from '../../../db/database.ts';
import type { Logger } from '../../lib/logger.ts';
import { RAW_NAME_PREFIX, parseArtifactKey } from '../../lib/storage/artifact-keys.ts';
import type { ArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { DAY_MS, holdsInForce, winningRetention, type RetentionHold, type RetentionPolicy } from './retention.ts';

/**
 * S3 Object Lock from retention and legal holds (S3_OBJECT_LOCK). Uploads carry the retention
 * end of their session's winning policy (ended_at + the longest applicable days for the kind),
 * so the bucket refuses to delete them earlier; a session with no expiring policy (keep forever,
 * or not ended) gets no retention date. Legal holds set the S3 legal-hold flag on every stored
 * artifact of the sessions they cover, and releasing a hold clears it where no other hold in
 * force covers the session. Tested against Ceph radosgw, which enforces it (worm.test.ts).
 */

/** What the audit service needs of a storage with Object Lock (S3ArtifactStorage). */
export interface LegalHoldStorage {
  readonly objectLockEnabled: boolean;
  setLegalHold(key: string, on: boolean): Promise<void>;
}

export function legalHoldStorage(storage: ArtifactStorage | undefined): LegalHoldStorage | undefined {
  const s: (ArtifactStorage & Partial<LegalHoldStorage>) | undefined = storage;
  return s && s.objectLockEnabled === true && typeof s.setLegalHold === 'function' ? (s as unknown as LegalHoldStorage) : undefined;
}

/** retainUntil for S3ArtifactStorage: the retention end of the artifact under `key` (finalize-job's sessions/<room>/<session>/<file> keys). */
export function objectLockRetention(db: Db): (key: string) => Promise<Date | undefined> {
  return async (key) => {
    const parts = parseArtifactKey(key);
    if (!parts) return undefined;
    const { session: sessionId } = parts;
    const s = await db
      .selectFrom('recording_sessions as s')
      .leftJoin('rooms as r', 'r.id', 's.room_id')
      .select(['s.id', 's.room_id', 's.ended_at', 's.retention_policy', 's.retention_tags', sql<string | null>`r.flags->>'retentionPolicy'`.as('room_policy')])
      .where('s.id', '=', sessionId)
      .executeTakeFirst();
    if (!s?.ended_at) return undefined;
    const policies: RetentionPolicy[] = await db.selectFrom('retention_policies').select(['name', 'scope', 'media_days', 'transcript_days', 'raw_days']).execute();
    const tags = typeof s.retention_tags === 'string' ? (JSON.parse(s.retention_tags) as string[]) : s.retention_tags;
    // Raw segments (the recorder's uploads) are kept as long as the raw recording is.
    const kind = parts.name.startsWith(RAW_NAME_PREFIX) ? 'raw' : parts.name.startsWith('transcript.') ? 'transcript' : 'media';
    const win = winningRetention({ id: s.id, roomId: s.room_id, endedAt: s.ended_at, policy: s.retention_policy ?? s.room_policy, tags, participants: [] }, kind, policies);
    return win ? new Date(new Date(s.ended_at).getTime() + win.days * DAY_MS) : undefined;
  };
}

/** Sessions a hold's scope names (whether or not it is still in force). */
export async function sessionsInScope(db: Db, hold: { scopeType: RetentionHold['scopeType']; scopeValue: string; frozenSessionIds: readonly string[] }): Promise<string[]> {
  switch (hold.scopeType) {
    case 'session':
      return [hold.scopeValue];
    case 'query':
      return [...hold.frozenSessionIds];
    case 'room':
      return (await db.selectFrom('recording_sessions').select('id').where('room_id', '=', hold.scopeValue).execute()).map((r) => r.id);
    case 'participant': {
      const rows = await Promise.all([
        db.selectFrom('session_participants').select('session_id').where('participant_id', '=', hold.scopeValue).execute(),
        db.selectFrom('tracks').select('session_id').where('participant_id', '=', hold.scopeValue).execute(),
      ]);
      return [...new Set(rows.flat().map((r) => r.session_id))];
    }
  }
}

/** Sets each stored artifact's legal-hold flag of the sessions to whether a hold in force covers the session. */
export async function syncLegalHolds(db: Db, storage: LegalHoldStorage, sessionIds: readonly string[], logger?: Logger): Promise<{ set: string[]; cleared: string[]; failed: string[] }> {
  const out = { set: [] as string[], cleared: [] as string[], failed: [] as string[] };
  if (sessionIds.length === 0) return out;
  const holdRows = await db.selectFrom('legal_holds').selectAll().where('released_at', 'is', null).execute();
  const holds: RetentionHold[] = holdRows.map((r) => ({
    id: r.id,
    scopeType: r.scope_type,
    scopeValue: r.scope_value,
    frozenSessionIds: typeof r.frozen_session_ids === 'string' ? (JSON.parse(r.frozen_session_ids) as string[]) : r.frozen_session_ids,
    releasedAt: null,
  }));
  for (const id of [...new Set(sessionIds)].sort()) {
    const s = await db.selectFrom('recording_sessions').select(['id', 'room_id']).where('id', '=', id).executeTakeFirst();
    if (!s) continue;
    const parts = await Promise.all([
      db.selectFrom('session_participants').select('participant_id').where('session_id', '=', id).execute(),
      db.selectFrom('tracks').select('participant_id').where('session_id', '=', id).execute(),
    ]);
    const held = holdsInForce({ id, roomId: s.room_id, participants: [...new Set(parts.flat().map((p) => p.participant_id))] }, holds).length > 0;
    const keys = (await db.selectFrom('artifacts').select('key').where('session_id', '=', id).orderBy('key').execute()).map((a) => a.key);
    // The session's raw segments in storage are held as its artifacts are.
    keys.push(...(await storedRawKeys(db, id)));
    for (const key of keys) {
      try {
        await storage.setLegalHold(key, held);
        (held ? out.set : out.cleared).push(key);
      } catch (err) {
        logger?.error({ err, key }, 'could not update the S3 legal hold flag');
        out.failed.push(key);
      }
    }
  }
  return out;
}

/** The keys of a session's raw segments that the recorder uploaded (track_segments.stored_key). */
export async function storedRawKeys(db: Db, sessionId: string): Promise<string[]> {
  const rows = await db.selectFrom('track_segments').select('stored_key').where('session_id', '=', sessionId).where('stored_key', 'is not', null).orderBy('stored_key').execute();
  return rows.map((r) => r.stored_key!);
}
