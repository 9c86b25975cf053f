import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, describe, expect, it } from 'vitest';
import { openConfiguredDatabase, openDatabase, type Db } from '../../db/database.ts';
import { removeDataDir, tempDataDir } from '../../testing/data-dirs.ts';
import { descendantProcesses, processAlive } from '../../testing/processes.ts';
import { AuditLog, createUserWithKey } from '../audit/index.ts';
import { startEmbeddedPostgres } from '../lib/embedded-postgres.ts';
import { createLogger } from '../lib/logger.ts';
import { importPgliteDataDir } from './pglite-import.ts';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) removeDataDir(d);
});

/** A data dir as an earlier version left it: the embedded database in DATA_DIR/pglite. */
async function oldDataDir(): Promise<{ dir: string; adminKey: string; auditorKey: string; head: { seq: number; hash: string } }> {
  const dir = tempDataDir('verbatim-pglite-import-');
  dirs.push(dir);
  const db = await openDatabase({ pgliteDir: path.join(dir, 'pglite') });
  try {
    const admin = await createUserWithKey(db, { name: 'admin', role: 'admin' });
    const auditor = await createUserWithKey(db, { name: 'Aud', role: 'auditor' });
    await db.insertInto('rooms').values({ id: 'r1', name: 'Room "one" ✓', flags: JSON.stringify({ record: true, consent: 'required' }), secret_hash: 'x' }).execute();
    for (const [i, decision] of (['granted', 'declined', 'granted'] as const).entries()) {
      await db.insertInto('consent_events').values({ room_id: 'r1', session_id: 's1', participant_id: `p${i}`, participant_name: `P ${i}`, policy: 'required', decision, method: 'click', client_info: JSON.stringify({ ua: 'x', n: i }) }).execute();
    }
    await db.insertInto('recording_sessions').values({ id: 's1', room_id: 'r1', started_at: '2025-01-02T03:04:05.123Z', ended_at: '2025-01-02T03:14:05Z', status: 'done', retention_tags: JSON.stringify(['legal', 'q1']) }).execute();
    await db
      .insertInto('transcript_segments')
      .values([
        { session_id: 's1', seq: 0, participant_id: 'p0', speaker: 'P 0', start_seconds: 1.5, end_seconds: 3, text: 'The quarterly budget review is approved.', language: 'en' },
        { session_id: 's1', seq: 1, participant_id: 'p2', speaker: 'P 2', start_seconds: 4, end_seconds: 6.25, text: 'Send the shipping contract to legal.', language: 'en' },
      ])
      .execute();
    const log = new AuditLog(db);
    await log.append({ action: 'room.create', actor: { type: 'service', id: 'sfu' }, target: { type: 'room', id: 'r1' }, details: { name: 'Room "one" ✓', nested: { a: [1, 2, null] } } });
    await log.append({ action: 'consent.event', actor: { type: 'user', id: 'participant:p1' }, target: { type: 'participant', id: 'p1' }, details: { decision: 'declined' } });
    const head = (await log.head())!;
    return { dir, adminKey: admin.apiKey, auditorKey: auditor.apiKey, head: { seq: head.seq, hash: head.hash } };
  } finally {
    await db.destroy();
  }
}

describe('the one-time import of an earlier PGlite data dir', () => {
  it('copies every row into the embedded PostgreSQL, verifies the audit chain, continues the sequences and keeps PGlite as a backup', async () => {
    const old = await oldDataDir();
    // Until the import, a command run on its own refuses the data dir rather than starting an empty database.
    await expect(openConfiguredDatabase({ DATA_DIR: old.dir })).rejects.toMatchObject({ code: 'DATABASE_UNAVAILABLE' });
    const server = await startEmbeddedPostgres(old.dir);
    let db: Db | undefined;
    try {
      const result = await importPgliteDataDir(old.dir, server.url, createLogger({ level: 'silent' }));
      expect(result).toBeDefined();
      expect(result!.rows).toMatchObject({ rooms: 1, consent_events: 3, recording_sessions: 1, transcript_segments: 2, users: 2, api_keys: 2, audit_log: 2 });
      expect(result!.auditEntries).toBe(2);
      expect(existsSync(path.join(old.dir, 'pglite'))).toBe(false);
      expect(existsSync(result!.backup)).toBe(true);
      expect(path.basename(result!.backup)).toMatch(/^pglite\.imported-/);
      // A second start finds nothing more to import.
      expect(await importPgliteDataDir(old.dir, server.url, createLogger({ level: 'silent' }))).toBeUndefined();

      db = await openDatabase({ url: server.url });
      const verified = await new AuditLog(db).verify();
      expect(verified).toMatchObject({ ok: true, checked: 2, head: { seq: old.head.seq, hash: old.head.hash } });
      // Types round-trip: JSON, arrays, timestamps with microseconds, unicode text.
      const room = await db.selectFrom('rooms').selectAll().executeTakeFirstOrThrow();
      expect(room).toMatchObject({ name: 'Room "one" ✓', flags: { record: true, consent: 'required' } });
      const session = await db.selectFrom('recording_sessions').selectAll().executeTakeFirstOrThrow();
      expect(session.started_at.toISOString()).toBe('2025-01-02T03:04:05.123Z');
      expect(session.retention_tags).toEqual(['legal', 'q1']);
      // Generated columns are recomputed: the full-text index finds the copied transcript.
      const hits = await sql<{ seq: number }>`select seq from transcript_segments where tsv @@ websearch_to_tsquery('english', 'contract')`.execute(db);
      expect(hits.rows.map((r) => Number(r.seq))).toEqual([1]);
      // Serial ids continue after the copied ones.
      const next = await db.insertInto('consent_events').values({ room_id: 'r1', session_id: null, participant_id: 'p9', participant_name: 'P 9', policy: 'notify', decision: 'granted', method: 'click', client_info: '{}' }).returning('id').executeTakeFirstOrThrow();
      expect(Number(next.id)).toBe(4);
      // The audit trail is still append-only after the copy (its triggers were only off for it).
      await expect(sql`delete from audit_log`.execute(db)).rejects.toThrow();
      await new AuditLog(db).append({ action: 'test.after-import', actor: { type: 'service', id: 'test' } });
      expect(await new AuditLog(db).verify()).toMatchObject({ ok: true, checked: 3 });
    } finally {
      await db?.destroy();
      await server.stop();
    }
  });

  it('npm start on such a data dir imports it: the keys made under PGlite still open the compliance API', { timeout: 240_000 }, async () => {
    const old = await oldDataDir();
    const child = spawn(process.execPath, ['--import', 'tsx', 'services/cli/main.ts', 'start'], {
      env: { ...process.env, DATA_DIR: old.dir, SFU_PORT: '0', RECORDER_PORT: '0', AUDIT_PORT: '0', RECORDER_MIN_FREE_MB: '1', SFU_WORKERS: '1', LOG_LEVEL: 'warn', REDIS_URL: '', DATABASE_URL: '' },
      stdio: ['ignore', 'pipe', 'inherit'],
      detached: true,
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    let procs: number[] = [];
    try {
      await expect.poll(() => out.includes('Press Ctrl-C') || child.exitCode !== null, { timeout: 180_000, interval: 250 }).toBe(true);
      expect(out).toContain('Press Ctrl-C');
      // The admin of the PGlite database still exists: no new key is printed.
      expect(out).toContain('Admin key    : printed at the first start');
      const compliance = /Compliance {3}: (\S+)\/api\/v1/.exec(out)![1]!;
      const me = await fetch(`${compliance}/api/v1/me`, { headers: { authorization: `Bearer ${old.adminKey}` } });
      expect(me.status).toBe(200);
      expect(((await me.json()) as { role: string }).role).toBe('admin');
      const verify = await fetch(`${compliance}/api/v1/audit/verify`, { method: 'POST', headers: { authorization: `Bearer ${old.auditorKey}`, 'content-type': 'application/json' }, body: '{}' });
      expect(verify.status).toBe(200);
      // The two entries made under PGlite, then npm start's own: its look-up of the demo room (an
      // audited 404 of the SFU admin API), the room, the meeting link's token; and GET /me. The
      // capture reconciliation's first scheduled run (at start, then daily) is an entry too, at
      // whatever point it finishes.
      const verified = (await verify.json()) as { ok: boolean; checked: number };
      expect(verified.ok).toBe(true);
      expect([6, 7]).toContain(verified.checked);
      const trail = await fetch(`${compliance}/api/v1/audit`, { headers: { authorization: `Bearer ${old.auditorKey}` } });
      const actions = ((await trail.json()) as { entries: { action: string }[] }).entries.map((e) => e.action);
      expect(actions.filter((a) => a === 'reconciliation.run').length).toBeLessThanOrEqual(1);
      expect(actions.filter((a) => a !== 'reconciliation.run').slice(0, 6)).toEqual(['room.create', 'consent.event', 'request.rejected', 'room.create', 'token.mint', 'me.view']);
      procs = [...descendantProcesses(child.pid!).keys()];
    } finally {
      process.kill(-child.pid!, 'SIGINT');
    }
    expect(await exited).toBe(0);
    await expect.poll(() => procs.filter(processAlive), { timeout: 15_000 }).toEqual([]);
    expect(readdirSync(old.dir).filter((f) => f.startsWith('pglite'))).toEqual([expect.stringMatching(/^pglite\.imported-/)]);
  });
});
