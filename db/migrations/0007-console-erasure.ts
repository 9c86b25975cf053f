import { sql, type Kysely } from 'kysely';

/**
 * Browser sign-in and GDPR erasure (services/audit).
 *
 * - console_sessions: a signed-in browser (POST /api/v1/login). The cookie carries the id and an
 *   HMAC; the row ties it to the API key it was opened with (so revoking the key, expiring it or
 *   disabling the user ends the session too) and records sign-out (ended_at).
 * - erasure_requests: GDPR Art. 17 requests for one participant, over one session or all of theirs.
 *   status: 'completed' (everything erased), 'restricted' (a legal hold covers every affected
 *   session: nothing erased), 'partial' (some sessions held, the rest erased), 'failed'.
 *   outcome: per session, what was erased or which holds restricted it.
 * - tombstones.kind gains nothing: erasure deletes media/transcript/raw like retention and says so
 *   in `reason`; tombstones.erasure_request links a tombstone to its request.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('console_sessions')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('key_id', 'text', (c) => c.notNull().references('api_keys.id').onDelete('cascade'))
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .addColumn('ended_at', 'timestamptz')
    .addColumn('client_address', 'text')
    .execute();

  await db.schema
    .createTable('erasure_requests')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('participant_id', 'text', (c) => c.notNull())
    .addColumn('session_id', 'text')
    .addColumn('reason', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull().check(sql`status in ('pending', 'completed', 'restricted', 'partial', 'failed')`))
    .addColumn('holds', 'jsonb', (c) => c.notNull().defaultTo(sql`'[]'::jsonb`))
    .addColumn('outcome', 'jsonb', (c) => c.notNull().defaultTo(sql`'[]'::jsonb`))
    .addColumn('requested_by', 'text', (c) => c.notNull())
    .addColumn('requested_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('completed_at', 'timestamptz')
    .execute();
  await db.schema.createIndex('erasure_requests_participant_idx').on('erasure_requests').column('participant_id').execute();

  await db.schema.alterTable('tombstones').addColumn('erasure_request', 'text').execute();
}
