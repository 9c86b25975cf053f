import { sql, type Kysely } from 'kysely';

/**
 * The recorder pool (issue 15): recorders register here with a heartbeat, and the state a
 * session needs to be sealed lives here while it records (participants, tracks, segments,
 * timeline, which recorder holds which track), so any recorder can seal a session whose
 * first recorder is gone. The live_* rows are removed when the session is sealed: the
 * sealed session's rows are the 0002/0010 tables, as before.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('recorders')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('url', 'text', (c) => c.notNull())
    .addColumn('instance_id', 'text', (c) => c.notNull())
    .addColumn('host', 'text', (c) => c.notNull())
    .addColumn('capacity', 'integer', (c) => c.notNull())
    .addColumn('load', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('state', 'text', (c) => c.notNull().defaultTo('active').check(sql`state in ('active', 'draining')`))
    .addColumn('recordings_dir', 'text', (c) => c.notNull())
    .addColumn('heartbeat_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('started_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema
    .createTable('live_session_participants')
    .addColumn('session_id', 'text', (c) => c.notNull())
    .addColumn('participant_id', 'text', (c) => c.notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('consent', 'jsonb', (c) => c.notNull())
    .addPrimaryKeyConstraint('live_session_participants_pk', ['session_id', 'participant_id'])
    .execute();
  await db.schema
    .createTable('live_session_tracks')
    .addColumn('session_id', 'text', (c) => c.notNull())
    .addColumn('track_id', 'text', (c) => c.notNull())
    .addColumn('participant_id', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('codec', 'jsonb', (c) => c.notNull())
    .addColumn('header_extensions', 'jsonb', (c) => c.notNull())
    .addPrimaryKeyConstraint('live_session_tracks_pk', ['session_id', 'track_id'])
    .execute();
  // One row per placement of a track on a recorder: its segments are numbered from `epoch` × span,
  // so two recorders holding one track (failover, drain, replicas) never write the same segment.
  await db.schema
    .createTable('live_track_placements')
    .addColumn('session_id', 'text', (c) => c.notNull())
    .addColumn('track_id', 'text', (c) => c.notNull())
    .addColumn('epoch', 'integer', (c) => c.notNull())
    .addColumn('recorder_id', 'text', (c) => c.notNull())
    .addColumn('copy', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('session_dir', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('live_track_placements_pk', ['session_id', 'track_id', 'epoch'])
    .execute();
  await db.schema
    .createTable('live_segments')
    .addColumn('session_id', 'text', (c) => c.notNull())
    .addColumn('track_id', 'text', (c) => c.notNull())
    .addColumn('segment', 'integer', (c) => c.notNull())
    .addColumn('recorder_id', 'text', (c) => c.notNull())
    .addColumn('session_dir', 'text', (c) => c.notNull())
    .addColumn('entry', 'jsonb', (c) => c.notNull())
    .addPrimaryKeyConstraint('live_segments_pk', ['session_id', 'track_id', 'segment'])
    .execute();
  await db.schema
    .createTable('live_session_events')
    .addColumn('session_id', 'text', (c) => c.notNull())
    .addColumn('seq', 'bigserial', (c) => c.notNull())
    .addColumn('event', 'jsonb', (c) => c.notNull())
    .addPrimaryKeyConstraint('live_session_events_pk', ['session_id', 'seq'])
    .execute();
}
