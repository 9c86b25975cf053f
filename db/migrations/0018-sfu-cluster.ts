import { sql, type Kysely } from 'kysely';

/**
 * The SFU cluster's room registry (services/sfu/src/room-registry.ts).
 *
 * - sfu_hosts: one row per running SFU host: where other hosts reach its host-to-host control
 *   API (control_url), where participants reach it (public_url), how many participants it takes
 *   (capacity) and has (participants), and its last heartbeat. A host whose heartbeat is stale
 *   is dead: it is never picked, and the rooms it was origin of may be claimed by another host.
 * - room_origins: the host a room's speakers and recording taps live on. Other hosts serve that
 *   room's viewers by piping its producers from the origin.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('sfu_hosts')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('control_url', 'text', (c) => c.notNull())
    .addColumn('public_url', 'text', (c) => c.notNull())
    .addColumn('capacity', 'integer', (c) => c.notNull().check(sql`capacity >= 0`))
    .addColumn('participants', 'integer', (c) => c.notNull().defaultTo(0).check(sql`participants >= 0`))
    .addColumn('started_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('heartbeat_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema
    .createTable('room_origins')
    .addColumn('room_id', 'text', (c) => c.primaryKey().references('rooms.id').onDelete('cascade'))
    .addColumn('host_id', 'text', (c) => c.notNull())
    .addColumn('claimed_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema.createIndex('room_origins_host_idx').on('room_origins').column('host_id').execute();
}
