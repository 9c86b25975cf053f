import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { Kysely, PostgresDialect } from 'kysely';
import { Migrator } from 'kysely/migration';
import pg from 'pg';
import { runningEmbeddedPostgres, startEmbeddedPostgres } from '../services/lib/embedded-postgres.ts';
import { VerbatimError } from '../services/lib/errors.ts';
import { migrationProvider } from './migrations/index.ts';
import { PGliteDialect } from './pglite-dialect.ts';
import type { Database } from './schema.ts';

export type { Database } from './schema.ts';
export type Db = Kysely<Database>;

export interface DatabaseOptions {
  /** Postgres URL; when absent PGlite (pgliteDir) is used. */
  url?: string | undefined;
  /** PGlite data directory ('memory://' for an in-memory one). */
  pgliteDir?: string;
  /** Postgres schema to use (tests isolate themselves in a schema of their own). */
  schema?: string;
}

// timestamptz / bigint parsing: keep Postgres and PGlite returning the same JS types.
pg.types.setTypeParser(20, (v) => Number(v));

export async function openDatabase(opts: DatabaseOptions): Promise<Db> {
  let db: Db;
  if (opts.url) {
    const pool = new pg.Pool({
      connectionString: opts.url,
      max: 10,
      ...(opts.schema ? { options: `-c search_path=${opts.schema}` } : {}),
    });
    // An idle connection the server closed (a restart, a shutdown under us) is an 'error'
    // event on the pool: unhandled, it would end the process. The pool drops that client;
    // queries in flight fail on their own.
    pool.on('error', () => {});
    db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    try {
      if (opts.schema) await pool.query(`create schema if not exists "${opts.schema}"`);
      await pool.query('select 1');
    } catch (err) {
      await db.destroy();
      throw new VerbatimError('CONFIG_INVALID', `cannot connect to DATABASE_URL: ${(err as Error).message}`, {
        hint: 'Check that Postgres runs and DATABASE_URL is right, or unset DATABASE_URL to use the embedded PostgreSQL in DATA_DIR.',
      });
    }
  } else {
    const dir = opts.pgliteDir ?? 'memory://';
    if (!dir.startsWith('memory://')) mkdirSync(dir, { recursive: true });
    // Loaded only here: the processes on PostgreSQL never pay for PGlite's module.
    const { PGlite } = await import('@electric-sql/pglite');
    const lite = await PGlite.create(dir);
    db = new Kysely<Database>({ dialect: new PGliteDialect(lite) });
  }
  // Kysely finds its migration tables by introspecting every schema: name ours, or a
  // database with several Verbatim schemas (tests, staging) would confuse them.
  await migrate(db, opts.url ? (opts.schema ?? 'public') : undefined);
  return db;
}

export async function migrate<DB>(db: Kysely<DB>, schema?: string): Promise<void> {
  const migrator = new Migrator({ db, provider: migrationProvider, ...(schema ? { migrationTableSchema: schema } : {}) });
  let { error, results } = await migrator.migrateToLatest();
  // Kysely's introspection lists every schema's tables: another schema dropped at that moment (a
  // test or staging schema going away) fails it with "schema … does not exist". Nothing was applied
  // then; a second look finds a consistent catalog.
  for (let i = 0; i < 3 && error && /schema "[^"]+" does not exist/.test((error as Error).message) && !results?.some((r) => r.status === 'Error'); i++) {
    await new Promise((r) => setTimeout(r, 100 * (i + 1)));
    ({ error, results } = await migrator.migrateToLatest());
  }
  if (error) {
    const failed = results?.find((r) => r.status === 'Error');
    throw new VerbatimError('INTERNAL', `database migration ${failed?.migrationName ?? ''} failed: ${(error as Error).message}`, {
      hint: 'Migrations are forward-only; restore the database from backup or fix the failing migration.',
      cause: error,
    });
  }
}

/**
 * The database the configuration names: Postgres (DATABASE_URL, DATABASE_SCHEMA) or the
 * embedded PostgreSQL of DATA_DIR (services/lib/embedded-postgres.ts). `npm start` runs that
 * server and hands its URL to every stage as DATABASE_URL; a command run on its own (an
 * operator CLI, a standalone stage) connects to it while it runs, else starts it for as
 * long as this database stays open. PGlite remains a backend of `openDatabase` (tests,
 * benchmarks, and the one-time import of a data dir that still holds DATA_DIR/pglite).
 */
export async function openConfiguredDatabase(config: { DATABASE_URL?: string | undefined; DATABASE_SCHEMA?: string | undefined; DATA_DIR: string }): Promise<Db> {
  const schema = config.DATABASE_SCHEMA ? { schema: config.DATABASE_SCHEMA } : {};
  if (config.DATABASE_URL) return openDatabase({ url: config.DATABASE_URL, ...schema });
  const running = runningEmbeddedPostgres(config.DATA_DIR);
  if (running) return openDatabase({ url: running.url, ...schema });
  if (existsSync(path.join(config.DATA_DIR, 'pglite'))) {
    throw new VerbatimError('DATABASE_UNAVAILABLE', `${config.DATA_DIR} still holds the embedded PGlite database of an earlier version`, {
      hint: 'Run `npm start` once with this DATA_DIR: it moves the data into the embedded PostgreSQL (keeping the PGlite directory as a backup).',
    });
  }
  const server = await startEmbeddedPostgres(config.DATA_DIR);
  let db: Db;
  try {
    db = await openDatabase({ url: server.url, ...schema });
  } catch (err) {
    await server.stop();
    throw err;
  }
  // The server lives as long as this handle: destroying the database stops it.
  const destroy = db.destroy.bind(db);
  db.destroy = async () => {
    await destroy();
    await server.stop();
  };
  return db;
}
