import { sql, type Kysely } from 'kysely';
import { VerbatimError } from '../services/lib/errors.ts';

const IDENT = /^[a-z_][a-z0-9_]*$/;
const BATCH = 1000;

async function tablesOf<T>(db: Kysely<T>): Promise<string[]> {
  const { rows } = await sql<{ name: string }>`
    select table_name as name from information_schema.tables
    where table_schema = current_schema() and table_type = 'BASE TABLE' and table_name not like 'kysely\\_%'
    order by table_name`.execute(db);
  return rows.map((r) => r.name);
}

function ident(name: string): ReturnType<typeof sql.raw> {
  if (!IDENT.test(name)) throw new VerbatimError('INTERNAL', `unexpected table or column name ${JSON.stringify(name)}`);
  return sql.raw(`"${name}"`);
}

/**
 * Copies every row of every table from one database into another migrated to the same
 * version (the one-time move of an embedded PGlite database into PostgreSQL). The target
 * must be empty. Rows travel as each table's own JSON (row_to_json → json_populate_recordset),
 * so every type round-trips exactly; generated columns are recomputed; triggers are off for
 * the copy (session_replication_role = replica: rows are copied as they are, the append-only
 * audit trail included, and foreign keys need no order); serial sequences continue after the
 * highest copied id. One transaction: an interrupted copy leaves the target empty.
 * Returns the rows copied per table.
 */
export async function copyAllRows<A, B>(from: Kysely<A>, to: Kysely<B>): Promise<Record<string, number>> {
  const tables = await tablesOf(to);
  const sourceTables = await tablesOf(from);
  if (tables.join() !== sourceTables.join()) {
    throw new VerbatimError('INTERNAL', `source and target tables differ: ${sourceTables.join(', ')} vs ${tables.join(', ')}`, { hint: 'Both databases must be migrated to the same version first.' });
  }
  for (const t of tables) {
    const { rows } = await sql<{ n: string | number }>`select count(*) as n from ${ident(t)}`.execute(to);
    if (Number(rows[0]!.n) > 0) {
      throw new VerbatimError('CONFLICT', `the target database already has rows in ${t}`, { hint: 'The copy goes only into an empty database; move one of the two databases away.' });
    }
  }
  const copied: Record<string, number> = {};
  await to.transaction().execute(async (trx) => {
    await sql`set local session_replication_role = replica`.execute(trx);
    for (const t of tables) {
      const { rows: cols } = await sql<{ name: string }>`
        select column_name as name from information_schema.columns
        where table_schema = current_schema() and table_name = ${t} and is_generated = 'NEVER'
        order by ordinal_position`.execute(trx);
      const list = sql.join(cols.map((c) => ident(c.name)));
      let after = '(0,0)';
      let n = 0;
      for (;;) {
        // ctid ranges: each page is a TID range scan, not a rescan from the start.
        const { rows } = await sql<{ c: string; j: string }>`
          select ctid::text as c, row_to_json(t)::text as j from ${ident(t)} t
          where ctid > ${after}::tid order by ctid limit ${BATCH}`.execute(from);
        if (rows.length === 0) break;
        await sql`insert into ${ident(t)} (${list}) select ${list} from json_populate_recordset(null::${ident(t)}, ${`[${rows.map((r) => r.j).join(',')}]`}::json)`.execute(trx);
        n += rows.length;
        after = rows.at(-1)!.c;
      }
      copied[t] = n;
    }
    const { rows: serials } = await sql<{ t: string; c: string; seq: string }>`
      select table_name as t, column_name as c, pg_get_serial_sequence(quote_ident(table_name), column_name) as seq
      from information_schema.columns
      where table_schema = current_schema() and column_default like 'nextval(%'`.execute(trx);
    for (const s of serials) {
      await sql`select setval(${s.seq}::regclass, coalesce((select max(${ident(s.c)}) from ${ident(s.t)}), 0) + 1, false)`.execute(trx);
    }
  });
  return copied;
}

/** Rows per table, for checking a copy. */
export async function rowCounts<T>(db: Kysely<T>): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const t of await tablesOf(db)) {
    const { rows } = await sql<{ n: string | number }>`select count(*) as n from ${ident(t)}`.execute(db);
    out[t] = Number(rows[0]!.n);
  }
  return out;
}
