import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openConfiguredDatabase } from '../../../db/database.ts';
import { removeDataDir, tempDataDir } from '../../../testing/data-dirs.ts';
import { testBackends } from '../../../testing/databases.ts';
import { createLogger } from '../../lib/logger.ts';
import { AuditLog } from './audit-log.ts';
import { startAuditServer } from './http/server.ts';
import { createUserWithKey } from './key-lifecycle.ts';

/**
 * `verbatim keys …` as an operator runs it on the host: a real process (tsx services/cli/main.ts)
 * against the configured PostgreSQL, and against the embedded PostgreSQL of a DATA_DIR.
 */

const ROOT = path.resolve(import.meta.dirname, '../../..');
const backends = await testBackends();
const postgres = backends.find((b) => b.name === 'postgres')!;
const dataDirs: string[] = [];
afterAll(async () => {
  for (const b of backends) await b.cleanup();
  for (const d of dataDirs) removeDataDir(d);
});

function verbatim(args: string[], env: Record<string, string>): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(path.join(ROOT, 'node_modules/.bin/tsx'), ['services/cli/main.ts', ...args], {
      cwd: ROOT,
      env: { ...process.env, LOG_LEVEL: 'silent', DATABASE_URL: '', DATABASE_SCHEMA: '', REDIS_URL: '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, out, err }));
  });
}

describe('verbatim keys (real process)', () => {
  it.skipIf(!postgres.available)('against the configured PostgreSQL: a lost admin key is replaced with create-admin, the old one revoked (401 at once), the last admin key kept; all audited', async () => {
    const db = await postgres.open();
    const server = await startAuditServer({ db, logger: createLogger({ level: 'silent' }), failedAuthPerMinute: 0 });
    const env = { DATABASE_URL: postgres.dbOptions.url!, DATABASE_SCHEMA: postgres.dbOptions.schema!, DATA_DIR: tempDataDir('verbatim-keys-cli-') };
    dataDirs.push(env.DATA_DIR);
    const get = async (p: string, key: string) => (await fetch(`${server.url}/api/v1${p}`, { headers: { authorization: `Bearer ${key}` } })).status;
    try {
      const lost = await createUserWithKey(db, { name: 'Original admin', role: 'admin' });
      const officer = await createUserWithKey(db, { name: 'Olga Officer', role: 'compliance_officer', expiresAt: new Date(Date.now() + 86_400_000) });
      expect(await get('/users', lost.apiKey)).toBe(200);

      const created = await verbatim(['keys', 'create-admin', '--name', 'Recovery admin', '--json'], env);
      expect(created.code, created.err).toBe(0);
      const recovery = JSON.parse(created.out) as { apiKey: string; key: { id: string; prefix: string }; user: { id: string; role: string } };
      expect(recovery.user.role).toBe('admin');
      expect(await get('/users', recovery.apiKey)).toBe(200);

      const listed = await verbatim(['keys', 'list'], env);
      expect(listed.code, listed.err).toBe(0);
      expect(listed.out).toContain('Original admin  admin  enabled');
      expect(listed.out).toMatch(new RegExp(`${officer.key.prefix}  active +created \\S+ \\S+  last used -  expires \\d{4}-`));
      expect(listed.out).toContain(recovery.key.prefix);
      expect(listed.out).not.toContain(recovery.apiKey.slice(12));
      const json = JSON.parse((await verbatim(['keys', 'list', '--json'], env)).out) as { users: { name: string }[] };
      expect(json.users.map((u) => u.name)).toEqual(['Original admin', 'Olga Officer', 'Recovery admin']);

      const revoked = await verbatim(['keys', 'revoke', lost.key.prefix, '--reason', 'key lost'], env);
      expect(revoked.code, revoked.err).toBe(0);
      expect(revoked.out).toContain(`revoked key ${lost.key.prefix}`);
      expect(await get('/users', lost.apiKey)).toBe(401);
      expect(await get('/users', recovery.apiKey)).toBe(200);

      // The recovery key is now the last admin key: the CLI keeps it too.
      const last = await verbatim(['keys', 'revoke', recovery.key.id], env);
      expect(last.code).toBe(1);
      expect(last.err).toContain('error LAST_ADMIN');
      expect(last.err).toContain('fix: ');
      expect(await get('/users', recovery.apiKey)).toBe(200);
      expect((await verbatim(['keys', 'revoke', 'deadbeef'], env)).err).toContain('error NOT_FOUND');
      expect((await verbatim(['keys', 'revoke'], env)).code).toBe(2);
      expect((await verbatim(['keys', 'rotate-all'], env)).code).toBe(2);

      const entries = await db.selectFrom('audit_log').select(['action', 'actor_type', 'actor_id', 'target_id']).where('actor_type', '=', 'service').orderBy('seq').execute();
      const actor = `cli:${os.userInfo().username}`;
      expect(entries.map((e) => [e.action, e.actor_id])).toEqual([
        ['key.create', actor],
        ['user.list', actor],
        ['user.list', actor],
        ['key.revoke', actor],
      ]);
      expect(entries[3]!.target_id).toBe(lost.key.id);
      expect((await new AuditLog(db).verify()).ok).toBe(true);
    } finally {
      await server.close();
      await db.destroy();
    }
  });

  it('against the embedded PostgreSQL of DATA_DIR (no database configured): create-admin, then list', async () => {
    const dir = tempDataDir('verbatim-keys-embedded-');
    dataDirs.push(dir);
    const created = await verbatim(['keys', 'create-admin'], { DATA_DIR: dir });
    expect(created.code, created.err).toBe(0);
    const key = /API key: (vb_[0-9a-f]{8}_[A-Za-z0-9_-]{43})/.exec(created.out)?.[1];
    expect(key).toBeDefined();
    const listed = await verbatim(['keys', 'list'], { DATA_DIR: dir });
    expect(listed.code, listed.err).toBe(0);
    expect(listed.out).toContain(`admin  admin  enabled`);
    expect(listed.out).toContain(key!.slice(3, 11));
    const db = await openConfiguredDatabase({ DATA_DIR: dir });
    try {
      expect(await db.selectFrom('api_keys').select('prefix').execute()).toEqual([{ prefix: key!.slice(3, 11) }]);
    } finally {
      await db.destroy();
    }
  }, 120_000);
});
