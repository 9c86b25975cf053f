import type { Kysely } from 'kysely';

/**
 * Key and user lifecycle (services/audit/src/key-lifecycle.ts).
 *
 * - api_keys.rotated_from: the key a rotation replaced (the new key points at the old one).
 * - api_keys.revoked_at may now lie in the future: a rotated key stays valid until then (the
 *   grace period) and is refused from that moment on, like a key revoked at once.
 * - console_sessions_key_idx / _user_idx: revoking a key or disabling a user ends its console
 *   sessions in the same transaction.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('api_keys').addColumn('rotated_from', 'text').execute();
  await db.schema.createIndex('console_sessions_key_idx').on('console_sessions').column('key_id').execute();
  await db.schema.createIndex('console_sessions_user_idx').on('console_sessions').column('user_id').execute();
}
