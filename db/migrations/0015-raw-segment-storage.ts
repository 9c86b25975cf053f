import type { Kysely } from 'kysely';

/**
 * Raw media in object storage (RECORDER_UPLOAD_RAW): a sealed segment's copy in artifact storage,
 * recorded when the recorder has uploaded it and read it back with the segment's SHA-256. Retention,
 * erasure and legal holds find the stored raw copy here (and under the session's raw key prefix).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('track_segments').addColumn('stored_key', 'text').addColumn('stored_at', 'timestamptz').execute();
}
