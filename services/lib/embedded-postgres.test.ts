import { spawn } from 'node:child_process';
import { chmodSync, existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { openConfiguredDatabase } from '../../db/database.ts';
import { removeDataDir, tempDataDir } from '../../testing/data-dirs.ts';
import { processAlive } from '../../testing/processes.ts';
import { embeddedPostgresDir, runningEmbeddedPostgres, startEmbeddedPostgres } from './embedded-postgres.ts';

const dirs: string[] = [];
const newDir = () => {
  const d = tempDataDir('verbatim-embedded-pg-');
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) removeDataDir(d);
});

async function query<T extends pg.QueryResultRow>(url: string, text: string): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<T>(text)).rows;
  } finally {
    await c.end();
  }
}

const asRoot = process.getuid?.() === 0;

describe('the embedded PostgreSQL', () => {
  it('creates a cluster on first use, serves on a unix socket only, refuses a second owner and stops cleanly', async () => {
    const dir = newDir();
    const first = await startEmbeddedPostgres(dir);
    try {
      expect(first.created).toBe(true);
      if (asRoot) {
        // mkdtemp makes DATA_DIR 0700: out of the postgres user's reach, so the cluster lives in its home and DATA_DIR says where.
        expect(first.clusterDir.startsWith(path.join('/var/lib/postgresql', 'verbatim-clusters'))).toBe(true);
        expect(JSON.parse(readFileSync(path.join(dir, 'postgres-location.json'), 'utf8'))).toMatchObject({ v: 1, clusterDir: first.clusterDir });
      } else {
        expect(first.clusterDir).toBe(path.join(dir, 'postgres'));
      }
      expect(embeddedPostgresDir(dir)).toBe(first.clusterDir);
      const [row] = await query<{ listen: string; db: string; user: string }>(first.url, "select current_setting('listen_addresses') as listen, current_database() as db, current_user as user");
      expect(row).toEqual({ listen: '', db: 'verbatim', user: 'verbatim' });
      const running = runningEmbeddedPostgres(dir);
      expect(running?.url).toBe(first.url);
      await expect(startEmbeddedPostgres(dir)).rejects.toMatchObject({ code: 'DATABASE_UNAVAILABLE' });
      await first.stop();
      expect(processAlive(running!.pid)).toBe(false);
      expect(runningEmbeddedPostgres(dir)).toBeUndefined();
      // Warm: the same cluster, data kept.
      const again = await startEmbeddedPostgres(dir);
      expect(again.created).toBe(false);
      expect(again.clusterDir).toBe(first.clusterDir);
      await again.stop();
    } finally {
      await first.stop();
    }
  });

  it.skipIf(!asRoot)('as root, keeps the cluster inside DATA_DIR when the postgres user can reach it', async () => {
    const dir = newDir();
    chmodSync(dir, 0o755);
    const server = await startEmbeddedPostgres(dir);
    try {
      expect(server.clusterDir).toBe(path.join(dir, 'postgres'));
      expect(existsSync(path.join(dir, 'postgres-location.json'))).toBe(false);
      expect(await query<{ one: number }>(server.url, 'select 1 as one')).toEqual([{ one: 1 }]);
    } finally {
      await server.stop();
    }
  });

  it('dies with its owner, even on kill -9: no orphan postgres', async () => {
    const dir = newDir();
    const owner = spawn(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', `import { startEmbeddedPostgres } from ${JSON.stringify(path.resolve('services/lib/embedded-postgres.ts'))}; await startEmbeddedPostgres(${JSON.stringify(dir)}); console.log('up'); setInterval(() => {}, 1000);`],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await new Promise<void>((resolve, reject) => {
      owner.stdout.on('data', (d) => String(d).includes('up') && resolve());
      owner.once('exit', (code) => reject(new Error(`owner exited ${code}`)));
    });
    const running = runningEmbeddedPostgres(dir)!;
    expect(processAlive(running.pid)).toBe(true);
    owner.kill('SIGKILL');
    await expect.poll(() => processAlive(running.pid), { timeout: 20_000 }).toBe(false);
    expect(runningEmbeddedPostgres(dir)).toBeUndefined();
  });

  it('a command run on its own (no DATABASE_URL) starts it for as long as its database is open, or attaches to a running one', async () => {
    const dir = newDir();
    const db = await openConfiguredDatabase({ DATA_DIR: dir });
    const running = runningEmbeddedPostgres(dir)!;
    expect(running).toBeDefined();
    // Migrated.
    expect(await db.selectFrom('rooms').select('id').execute()).toEqual([]);
    // A second handle attaches; closing it leaves the server to its owner.
    const second = await openConfiguredDatabase({ DATA_DIR: dir });
    await second.destroy();
    expect(processAlive(running.pid)).toBe(true);
    await db.destroy();
    expect(processAlive(running.pid)).toBe(false);
  });
  it('an interruption right after the postmaster was spawned stops it by fast shutdown, not by the 15 s QUIT fallback', { timeout: 120_000 }, async () => {
    const dir = newDir();
    await (await startEmbeddedPostgres(dir)).stop();
    // Aborted 0-2 ms after the spawn: the postmaster may not have its SIGINT handler yet (bash
    // starts it with SIGINT ignored); one lost signal used to cost 15 s on a loaded machine.
    for (let i = 0; i < 6; i++) {
      const ac = new AbortController();
      setTimeout(() => ac.abort(), i % 3);
      const t = Date.now();
      await expect(startEmbeddedPostgres(dir, { signal: ac.signal })).rejects.toMatchObject({ code: 'INTERRUPTED' });
      expect(Date.now() - t).toBeLessThan(12_000);
      expect(runningEmbeddedPostgres(dir)).toBeUndefined();
    }
  });
});
