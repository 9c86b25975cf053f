import { sql, type Kysely } from 'kysely';

/**
 * Capture assurance, word timing and redaction (issue 13 items 4-5).
 * - regulated_subjects: identities (or groups of identities, identity_groups of migration 0016)
 *   recorded in every room they join. The SFU reads them (and group members) at each join.
 * - regulated_attendance: the SFU's own record of when a regulated identity was in a room and
 *   when it first published, written whether or not anything was recorded, so reconciliation
 *   can find a meeting that left no recording session at all.
 * - reconciliation_runs / reconciliation_exceptions: each run's window, summary and gaps found.
 * - transcript_segments.words: whisper.cpp's token timestamps (session seconds) per segment.
 * - redaction_spans: character and time spans of a segment shown as a label to roles without
 *   redaction.reveal; they go with their segment (an erased segment takes its spans with it).
 * - pseudonym_keys / pseudonym_reveals (issue 13 item 6): the HMAC key pseudonyms are made with
 *   (made once, kept here so pseudonyms are stable across restarts and processes), and which
 *   reviewer revealed which speaker of which policy.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('regulated_subjects')
    .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('identity', 'group')`))
    .addColumn('value', 'text', (c) => c.notNull())
    .addColumn('reason', 'text', (c) => c.notNull())
    .addColumn('added_by', 'text', (c) => c.notNull())
    .addColumn('added_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('regulated_subjects_pk', ['kind', 'value'])
    .execute();
  await db.schema
    .createTable('regulated_attendance')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('room_id', 'text', (c) => c.notNull())
    .addColumn('participant_id', 'text', (c) => c.notNull())
    .addColumn('participant_name', 'text', (c) => c.notNull())
    .addColumn('joined_at', 'timestamptz', (c) => c.notNull())
    .addColumn('left_at', 'timestamptz')
    .addColumn('first_produced_at', 'timestamptz')
    .execute();
  await db.schema.createIndex('regulated_attendance_joined_idx').on('regulated_attendance').columns(['joined_at']).execute();

  await db.schema
    .createTable('reconciliation_runs')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('window_from', 'timestamptz', (c) => c.notNull())
    .addColumn('window_to', 'timestamptz', (c) => c.notNull())
    .addColumn('requested_by', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull().check(sql`status in ('running', 'done', 'failed')`))
    .addColumn('summary', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn('error_message', 'text')
    .addColumn('started_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('finished_at', 'timestamptz')
    .execute();
  await db.schema.createIndex('reconciliation_runs_started_idx').on('reconciliation_runs').column('started_at').execute();
  await db.schema
    .createTable('reconciliation_exceptions')
    .addColumn('run_id', 'text', (c) => c.notNull().references('reconciliation_runs.id').onDelete('cascade'))
    .addColumn('ordinal', 'integer', (c) => c.notNull())
    .addColumn('kind', 'text', (c) =>
      c.notNull().check(sql`kind in ('joined_not_recorded', 'recorder_gap', 'not_transcribed', 'hash_mismatch', 'artifact_missing')`),
    )
    .addColumn('room_id', 'text')
    .addColumn('session_id', 'text')
    .addColumn('participant_id', 'text')
    .addColumn('track_id', 'text')
    .addColumn('artifact_key', 'text')
    .addColumn('from_at', 'timestamptz')
    .addColumn('to_at', 'timestamptz')
    .addColumn('details', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addPrimaryKeyConstraint('reconciliation_exceptions_pk', ['run_id', 'ordinal'])
    .execute();

  await db.schema.alterTable('transcript_segments').addColumn('words', 'jsonb').execute();

  await db.schema
    .createTable('redaction_spans')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('session_id', 'text', (c) => c.notNull())
    .addColumn('seq', 'integer', (c) => c.notNull())
    .addColumn('char_start', 'integer', (c) => c.notNull())
    .addColumn('char_end', 'integer', (c) => c.notNull())
    .addColumn('start_seconds', 'double precision', (c) => c.notNull())
    .addColumn('end_seconds', 'double precision', (c) => c.notNull())
    .addColumn('label', 'text', (c) => c.notNull())
    .addColumn('source', 'text', (c) => c.notNull().check(sql`source in ('detector', 'officer')`))
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addForeignKeyConstraint('redaction_spans_segment_fk', ['session_id', 'seq'], 'transcript_segments', ['session_id', 'seq'], (fk) => fk.onDelete('cascade'))
    .execute();
  await db.schema.createIndex('redaction_spans_segment_idx').on('redaction_spans').columns(['session_id', 'seq']).execute();
  // A detector finds the same span again on a re-run: one row per span and label.
  await db.schema.createIndex('redaction_spans_unique_idx').on('redaction_spans').columns(['session_id', 'seq', 'char_start', 'char_end', 'label']).unique().execute();

  await db.schema
    .createTable('pseudonym_keys')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('key', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema
    .createTable('pseudonym_reveals')
    .addColumn('policy_id', 'text', (c) => c.notNull())
    .addColumn('participant_id', 'text', (c) => c.notNull())
    .addColumn('revealed_to', 'text', (c) => c.notNull())
    .addColumn('revealed_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('pseudonym_reveals_pk', ['policy_id', 'participant_id', 'revealed_to'])
    .execute();
}
