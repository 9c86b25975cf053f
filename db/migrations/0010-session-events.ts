import { sql, type Kysely } from 'kysely';

/**
 * The session timeline (joins, leaves, pauses, consent, recording toggles) as the recorder
 * sealed it: the manifest's events, one row each, in manifest order (`ordinal`). Written
 * with the session's other rows when it is sealed (a re-seal replaces them), so the
 * compliance API reads it from here rather than from the raw recording's manifest.json.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('session_events')
    .addColumn('session_id', 'text', (c) => c.notNull().references('recording_sessions.id').onDelete('cascade'))
    .addColumn('ordinal', 'integer', (c) => c.notNull())
    .addColumn('at', 'timestamptz', (c) => c.notNull())
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('participant_id', 'text')
    .addColumn('track_id', 'text')
    .addColumn('details', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addPrimaryKeyConstraint('session_events_pk', ['session_id', 'ordinal'])
    .execute();
  await db.schema.createIndex('session_events_participant_idx').on('session_events').columns(['participant_id', 'at']).execute();
}
