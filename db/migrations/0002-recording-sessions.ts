import { sql, type Kysely } from 'kysely';

/** Recording sessions as the recorder sealed them: participants, tracks and their segment files. */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('recording_sessions')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('room_id', 'text', (c) => c.notNull())
    .addColumn('started_at', 'timestamptz', (c) => c.notNull())
    .addColumn('ended_at', 'timestamptz')
    .addColumn('end_reason', 'text')
    // recording → sealed (files + manifest final, job queued) → processing → done | failed
    .addColumn('status', 'text', (c) => c.notNull().check(sql`status in ('recording', 'sealed', 'processing', 'done', 'failed')`))
    .addColumn('manifest_path', 'text')
    .addColumn('manifest_sha256', 'text')
    .addColumn('error_code', 'text')
    .addColumn('error_message', 'text')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema.createIndex('recording_sessions_room_idx').on('recording_sessions').columns(['room_id', 'started_at']).execute();
  await db.schema.createIndex('recording_sessions_status_idx').on('recording_sessions').column('status').execute();

  await db.schema
    .createTable('session_participants')
    .addColumn('session_id', 'text', (c) => c.notNull().references('recording_sessions.id').onDelete('cascade'))
    .addColumn('participant_id', 'text', (c) => c.notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('consent_decision', 'text', (c) => c.notNull())
    .addColumn('consent_method', 'text')
    .addPrimaryKeyConstraint('session_participants_pk', ['session_id', 'participant_id'])
    .execute();

  await db.schema
    .createTable('tracks')
    .addColumn('session_id', 'text', (c) => c.notNull().references('recording_sessions.id').onDelete('cascade'))
    .addColumn('track_id', 'text', (c) => c.notNull())
    .addColumn('participant_id', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('audio', 'video')`))
    .addColumn('codec', 'jsonb', (c) => c.notNull())
    .addPrimaryKeyConstraint('tracks_pk', ['session_id', 'track_id'])
    .execute();

  await db.schema
    .createTable('track_segments')
    .addColumn('session_id', 'text', (c) => c.notNull())
    .addColumn('track_id', 'text', (c) => c.notNull())
    .addColumn('segment', 'integer', (c) => c.notNull())
    .addColumn('file', 'text', (c) => c.notNull())
    .addColumn('ssrc', 'bigint', (c) => c.notNull())
    .addColumn('bytes', 'bigint', (c) => c.notNull())
    .addColumn('sha256', 'text', (c) => c.notNull())
    .addColumn('rtp_packets', 'integer', (c) => c.notNull())
    .addColumn('rtcp_packets', 'integer', (c) => c.notNull())
    .addColumn('started_at', 'timestamptz', (c) => c.notNull())
    .addColumn('ended_at', 'timestamptz', (c) => c.notNull())
    .addColumn('end_reason', 'text', (c) => c.notNull())
    .addColumn('truncated', 'boolean', (c) => c.notNull())
    .addPrimaryKeyConstraint('track_segments_pk', ['session_id', 'track_id', 'segment'])
    .addForeignKeyConstraint('track_segments_track_fk', ['session_id', 'track_id'], 'tracks', ['session_id', 'track_id'], (fk) => fk.onDelete('cascade'))
    .execute();
}
