import type { Kysely } from 'kysely';

/**
 * Each recorder's raw-upload backlog in its registry row, refreshed with every heartbeat, so the
 * console (another service, maybe another host) shows what waits on which recorder's disk for
 * object storage. Null where the recorder does not upload raw segments (RECORDER_UPLOAD_RAW off).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable('recorders')
    .addColumn('upload_backlog_segments', 'integer')
    .addColumn('upload_backlog_bytes', 'bigint')
    .addColumn('upload_oldest_at', 'timestamptz')
    .addColumn('upload_failed_attempts', 'integer')
    .addColumn('upload_last_error', 'text')
    .execute();
}
