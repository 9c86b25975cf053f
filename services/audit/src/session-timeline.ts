import type { Db } from '../../../db/database.ts';
import type { SessionManifest } from '../../lib/contracts/recording.ts';

/** One timeline event as GET /api/v1/sessions/:id shows it: the manifest's event shape. */
export type SessionTimelineEvent = SessionManifest['events'][number];

/**
 * A sealed session's timeline (joins, leaves, pauses, consent, toggles) from the database,
 * in manifest order, shaped exactly as the sealed manifest's `events`. It outlives the raw
 * recording (retention may delete manifest.json); an unknown or unsealed session has none.
 */
export async function sessionTimeline(db: Db, sessionId: string): Promise<SessionTimelineEvent[]> {
  const rows = await db.selectFrom('session_events').selectAll().where('session_id', '=', sessionId).orderBy('ordinal').execute();
  return rows.map((r) => ({
    at: new Date(r.at).toISOString(),
    type: r.type,
    ...(r.participant_id !== null ? { participant: r.participant_id } : {}),
    ...(r.track_id !== null ? { track: r.track_id } : {}),
    // jsonb comes back parsed from pg and PGlite alike; a string means a driver that did not.
    details: typeof r.details === 'string' ? (JSON.parse(r.details) as Record<string, unknown>) : r.details,
  }));
}
