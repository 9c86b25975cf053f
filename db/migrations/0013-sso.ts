import { sql, type Kysely } from 'kysely';

/**
 * Console sign-in through the organisation's OpenID Connect provider (services/audit/src/sso.ts).
 *
 * - users.external_issuer / external_subject: the IdP identity (`iss`, `sub`) a user signed in
 *   with; unique together, so a first SSO sign-in provisions one user and later ones find it.
 * - console_sessions.key_id becomes nullable: an SSO session has no API key. method says how the
 *   session was opened ('key' | 'sso'); an SSO session keeps the IdP's issuer, subject, session id
 *   (`sid`) and ID token, so the IdP's back-channel logout can end it and the console's sign-out
 *   can send the browser to the IdP's end_session_endpoint with id_token_hint.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('users').addColumn('external_issuer', 'text').execute();
  await db.schema.alterTable('users').addColumn('external_subject', 'text').execute();
  await db.schema.createIndex('users_external_identity_idx').on('users').columns(['external_issuer', 'external_subject']).unique().execute();

  await db.schema.alterTable('console_sessions').alterColumn('key_id', (c) => c.dropNotNull()).execute();
  await db.schema
    .alterTable('console_sessions')
    .addColumn('method', 'text', (c) => c.notNull().defaultTo('key').check(sql`method in ('key', 'sso')`))
    .execute();
  await db.schema.alterTable('console_sessions').addColumn('idp_issuer', 'text').execute();
  await db.schema.alterTable('console_sessions').addColumn('idp_subject', 'text').execute();
  await db.schema.alterTable('console_sessions').addColumn('idp_sid', 'text').execute();
  await db.schema.alterTable('console_sessions').addColumn('id_token', 'text').execute();
  await db.schema
    .alterTable('console_sessions')
    .addCheckConstraint('console_sessions_identity_check', sql`(method = 'key' and key_id is not null) or (method = 'sso' and idp_issuer is not null and idp_subject is not null)`)
    .execute();
  // Back-channel logout finds the sessions of an IdP session (sid) or of a subject.
  await db.schema.createIndex('console_sessions_idp_idx').on('console_sessions').columns(['idp_issuer', 'idp_subject']).execute();
}
