import { sql, type Kysely } from 'kysely';

/**
 * The hash-chained audit trail (services/audit). Append-only: a trigger refuses every
 * UPDATE, DELETE and TRUNCATE of audit_log and audit_checkpoints, for every role. Whoever
 * can bypass it (a superuser disabling triggers or using session_replication_role) is
 * caught by the hash chain and the signed, exported checkpoints instead.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('audit_log')
    .addColumn('seq', 'bigint', (c) => c.primaryKey())
    .addColumn('at', 'timestamptz', (c) => c.notNull())
    .addColumn('actor_type', 'text', (c) => c.check(sql`actor_type in ('user', 'api_key', 'service', 'anonymous')`))
    .addColumn('actor_id', 'text')
    .addColumn('action', 'text', (c) => c.notNull())
    .addColumn('target_type', 'text')
    .addColumn('target_id', 'text')
    .addColumn('details', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn('client_address', 'text')
    .addColumn('prev_hash', 'text', (c) => c.notNull())
    .addColumn('hash', 'text', (c) => c.notNull().unique())
    .execute();
  await db.schema.createIndex('audit_log_target_idx').on('audit_log').columns(['target_type', 'target_id', 'seq']).execute();
  await db.schema.createIndex('audit_log_actor_idx').on('audit_log').columns(['actor_type', 'actor_id', 'seq']).execute();

  await db.schema
    .createTable('audit_checkpoints')
    .addColumn('seq', 'bigint', (c) => c.primaryKey())
    .addColumn('head_hash', 'text')
    .addColumn('at', 'timestamptz')
    .addColumn('signature', 'text')
    .addColumn('storage_key', 'text')
    .execute();

  await sql`
    create function audit_append_only() returns trigger language plpgsql as $$
    begin
      raise exception '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        using errcode = 'insufficient_privilege',
              hint = 'The audit trail is hash-chained and immutable; record a correcting entry instead.';
    end
    $$`.execute(db);
  for (const table of ['audit_log', 'audit_checkpoints']) {
    await sql`create trigger ${sql.id(`${table}_no_update_delete`)} before update or delete on ${sql.table(table)} for each row execute function audit_append_only()`.execute(db);
    await sql`create trigger ${sql.id(`${table}_no_truncate`)} before truncate on ${sql.table(table)} for each statement execute function audit_append_only()`.execute(db);
  }
}
