import { sql, type Kysely } from 'kysely';

/**
 * Retention and legal holds (services/audit/src/retention.ts).
 *
 * - retention_policies: how long each kind of content is kept after a session ends.
 *   media_days (artifacts: composite, per-participant A/V and WAV, tracks),
 *   transcript_days (transcript_segments rows and transcript-* artifacts), raw_days (the
 *   recorder's .vrtp files and manifest). NULL days = keep forever. scope: 'default'
 *   applies to every session, 'room' when a session/room names it, 'tag' when a session
 *   carries the tag of that name. When several apply, the longest wins.
 * - legal_holds: a hold beats every policy; released_at NULL = in force. A 'query' hold
 *   freezes the matching session ids at placement (frozen_session_ids).
 * - tombstones: what retention deleted, when and why (the rows themselves are gone).
 * - recording_sessions.retention_policy / retention_tags: the policy the session was
 *   recorded under (the room's retentionPolicy flag; NULL = the room's current flag).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('retention_policies')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('scope', 'text', (c) => c.notNull().check(sql`scope in ('default', 'room', 'tag')`))
    .addColumn('media_days', 'integer', (c) => c.check(sql`media_days >= 0`))
    .addColumn('transcript_days', 'integer', (c) => c.check(sql`transcript_days >= 0`))
    .addColumn('raw_days', 'integer', (c) => c.check(sql`raw_days >= 0`))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable('legal_holds')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('case_id', 'text', (c) => c.notNull())
    .addColumn('reason', 'text', (c) => c.notNull())
    .addColumn('scope_type', 'text', (c) => c.notNull().check(sql`scope_type in ('session', 'room', 'participant', 'query')`))
    .addColumn('scope_value', 'text', (c) => c.notNull())
    .addColumn('frozen_session_ids', 'jsonb', (c) => c.notNull().defaultTo(sql`'[]'::jsonb`))
    .addColumn('placed_by', 'text', (c) => c.notNull())
    .addColumn('placed_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('released_at', 'timestamptz')
    .addColumn('released_by', 'text')
    .execute();
  await db.schema.createIndex('legal_holds_scope_idx').on('legal_holds').columns(['scope_type', 'scope_value']).execute();
  await db.schema.createIndex('legal_holds_case_idx').on('legal_holds').column('case_id').execute();

  await db.schema
    .createTable('tombstones')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('session_id', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('media', 'transcript', 'raw')`))
    .addColumn('item', 'text', (c) => c.notNull())
    .addColumn('deleted_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('reason', 'text', (c) => c.notNull())
    .addColumn('policy', 'text')
    .execute();
  await db.schema.createIndex('tombstones_session_idx').on('tombstones').columns(['session_id', 'kind']).execute();

  await db.schema.alterTable('recording_sessions').addColumn('retention_policy', 'text').execute();
  await db.schema.alterTable('recording_sessions').addColumn('retention_tags', 'jsonb', (c) => c.notNull().defaultTo(sql`'[]'::jsonb`)).execute();
}
