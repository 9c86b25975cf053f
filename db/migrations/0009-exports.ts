import { sql, type Kysely } from 'kysely';

/**
 * E-discovery exports requested through the compliance API (services/audit/src/export-jobs.ts).
 * The archive is built in the background; the row carries its progress so a client can poll,
 * and the final archive's manifest SHA-256 ties it to its `export.create` audit entry.
 * status: running → done | failed ('running' rows found at start-up were interrupted → failed).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('exports')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('selection', 'jsonb', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull().check(sql`status in ('running', 'done', 'failed')`))
    .addColumn('requested_by', 'text', (c) => c.notNull())
    .addColumn('files_done', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('files_total', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('bytes_done', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('bytes_total', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('file', 'text')
    .addColumn('bytes', 'bigint')
    .addColumn('manifest_sha256', 'text')
    .addColumn('session_ids', 'jsonb', (c) => c.notNull().defaultTo(sql`'[]'::jsonb`))
    .addColumn('error_code', 'text')
    .addColumn('error_message', 'text')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('finished_at', 'timestamptz')
    .execute();
  await db.schema.createIndex('exports_created_idx').on('exports').column('created_at').execute();
}

