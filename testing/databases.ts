import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { openDatabase, type Db } from '../db/database.ts';

/**
 * The database backends every persistence test runs against: embedded PGlite and a
 * real Postgres (TEST_DATABASE_URL, default the local test database). Postgres is
 * required in CI; on a machine without it those cases are skipped with a reason.
 */
export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

export interface TestBackend {
  name: 'pglite' | 'postgres';
  available: boolean;
  /** Options that reopen the same database (a restart). */
  open(): Promise<Db>;
  dbOptions: { url?: string; pgliteDir?: string; schema?: string };
  cleanup(): Promise<void>;
}

let postgresReachable: boolean | undefined;
export async function postgresAvailable(): Promise<boolean> {
  if (postgresReachable !== undefined) return postgresReachable;
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    await client.query('select 1');
    postgresReachable = true;
  } catch {
    postgresReachable = false;
    if (process.env.CI) throw new Error(`CI requires Postgres at ${TEST_DATABASE_URL} for the Postgres test backend`);
  } finally {
    await client.end().catch(() => {});
  }
  return postgresReachable;
}

export async function testBackends(): Promise<TestBackend[]> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'verbatim-pglite-'));
  const lite: TestBackend = {
    name: 'pglite',
    available: true,
    dbOptions: { pgliteDir: path.join(dir, 'db') },
    open: () => openDatabase(lite.dbOptions),
    async cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
  const schema = `t_${randomBytes(6).toString('hex')}`;
  const available = await postgresAvailable();
  const pgBackend: TestBackend = {
    name: 'postgres',
    available,
    dbOptions: { url: TEST_DATABASE_URL, schema },
    open: () => openDatabase(pgBackend.dbOptions),
    async cleanup() {
      if (!available) return;
      const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
      await client.connect();
      await client.query(`drop schema if exists "${schema}" cascade`);
      await client.end();
    },
  };
  return [lite, pgBackend];
}
