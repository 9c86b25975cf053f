import { sql, type Kysely } from 'kysely';

/** Transcode results: stored artifacts (with SHA-256) and transcript segments (searchable). */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('artifacts')
    .addColumn('session_id', 'text', (c) => c.notNull().references('recording_sessions.id').onDelete('cascade'))
    .addColumn('key', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('participant_id', 'text')
    .addColumn('content_type', 'text', (c) => c.notNull())
    .addColumn('bytes', 'bigint', (c) => c.notNull())
    .addColumn('sha256', 'text', (c) => c.notNull())
    .addColumn('storage', 'text', (c) => c.notNull())
    .addColumn('duration_seconds', 'double precision')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('artifacts_pk', ['session_id', 'key'])
    .execute();

  await db.schema
    .createTable('transcript_segments')
    .addColumn('session_id', 'text', (c) => c.notNull().references('recording_sessions.id').onDelete('cascade'))
    .addColumn('seq', 'integer', (c) => c.notNull())
    .addColumn('participant_id', 'text', (c) => c.notNull())
    .addColumn('speaker', 'text', (c) => c.notNull())
    .addColumn('start_seconds', 'double precision', (c) => c.notNull())
    .addColumn('end_seconds', 'double precision', (c) => c.notNull())
    .addColumn('text', 'text', (c) => c.notNull())
    .addColumn('language', 'text', (c) => c.notNull())
    .addColumn('tsv', sql`tsvector`, (c) => c.generatedAlwaysAs(sql`to_tsvector('english', text)`).stored())
    .addPrimaryKeyConstraint('transcript_segments_pk', ['session_id', 'seq'])
    .execute();
  await sql`create index transcript_segments_tsv_idx on transcript_segments using gin (tsv)`.execute(db);

  await db.schema.alterTable('recording_sessions').addColumn('progress', 'integer', (c) => c.notNull().defaultTo(0)).execute();
  await db.schema.alterTable('recording_sessions').addColumn('transcript_status', 'text').execute();
}
