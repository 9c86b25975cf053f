import { sql, type Kysely } from 'kysely';

/**
 * Encryption at rest (services/lib/crypto): one data key per participant per session (participant_id
 * null: the session-wide key of the composite and transcripts), stored only wrapped by the master key
 * (master_key_id names which). Crypto-shredding: GDPR erasure sets wrapped_key to null and destroyed_at,
 * so media under that key can no longer be decrypted even where storage cannot delete it (WORM).
 * A scope has at most one live key; a destroyed one is replaced by a new key on the next write.
 * artifacts.key_id / track_segments.key_id: the key an artifact or stored raw segment is encrypted
 * with (null: stored in clear).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('data_keys')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('session_id', 'text', (c) => c.notNull())
    .addColumn('participant_id', 'text')
    .addColumn('wrapped_key', 'bytea')
    .addColumn('master_key_id', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('destroyed_at', 'timestamptz')
    .execute();
  await sql`create unique index data_keys_live_scope on data_keys (session_id, coalesce(participant_id, '')) where destroyed_at is null`.execute(db);
  await db.schema.createIndex('data_keys_master_idx').on('data_keys').column('master_key_id').execute();
  await db.schema.alterTable('artifacts').addColumn('key_id', 'text').execute();
  await db.schema.alterTable('track_segments').addColumn('key_id', 'text').execute();
}
