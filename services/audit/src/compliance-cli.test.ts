import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../lib/config.ts';
import { testBackends, type TestBackend } from '../../../testing/databases.ts';
import { LocalArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { TEST_REDIS_URL } from '../../../testing/transcode-worker.ts';
import { AuditLog } from './audit-log.ts';
import { runComplianceCommand } from './compliance-cli.ts';

const backends = await testBackends();
afterAll(async () => {
  for (const b of backends) await b.cleanup();
});

describe.each(backends)('verbatim retention / holds / erasure CLI ($name)', (backend: TestBackend) => {
  it.skipIf(!backend.available)('dry-run lists without deleting; a hold placed from the CLI stops the sweep and erasure; release lets them run; all audited', async () => {
    const db = await backend.open();
    const root = mkdtempSync(path.join(os.tmpdir(), 'verbatim-ccli-'));
    try {
      // Erasure requests run as jobs on the erasure queue (this test's own prefix); the CLI runs them itself when no compliance service does.
      const config = loadConfig({ env: {}, overrides: { DATA_DIR: root, REDIS_URL: TEST_REDIS_URL } });
      const storage = new LocalArtifactStorage(path.join(root, 'artifacts'));
      const deps = { db, storage, config, env: { VERBATIM_QUEUE_PREFIX: `c${randomBytes(4).toString('hex')}` }, err: (s: string) => errs.push(s) };
      const errs: string[] = [];
      let text = '';
      const out = (s: string) => (text += s);
      const run = async (group: string, args: string[]) => {
        text = '';
        return runComplianceCommand(group, args, out, deps);
      };
      await db.insertInto('rooms').values({ id: 'r', name: 'r', flags: JSON.stringify({}), secret_hash: 'x' }).execute();
      await db.insertInto('retention_policies').values({ name: 'short', scope: 'default', media_days: 1, transcript_days: 1, raw_days: 1 }).execute();
      await db.insertInto('recording_sessions').values({ id: 's1', room_id: 'r', started_at: '2020-01-01T00:00:00Z', ended_at: '2020-01-01T01:00:00Z', status: 'done' }).execute();
      await db.insertInto('session_participants').values({ session_id: 's1', participant_id: 'p1', name: 'P', consent_decision: 'granted', consent_method: 'click' }).execute();
      await db.insertInto('transcript_segments').values({ session_id: 's1', seq: 0, participant_id: 'p1', speaker: 'P', start_seconds: 0, end_seconds: 1, text: 'hello there', language: 'en' }).execute();
      writeFileSync(path.join(root, 'f'), 'x');
      const stored = await storage.put('sessions/r/s1/participant-p1.16k.wav', path.join(root, 'f'));
      await db.insertInto('artifacts').values({ session_id: 's1', key: stored.key, kind: 'participant-wav', participant_id: 'p1', content_type: 'audio/wav', bytes: 1, sha256: stored.sha256, storage: 'local', duration_seconds: null }).execute();

      expect(await run('retention', ['sweep', '--dry-run'])).toBe(0);
      expect(text).toMatch(/^would delete 2 item group\(s\)/);
      expect(text).toContain('s1 media (policy short');
      expect(await storage.exists(stored.key)).toBe(true);

      expect(await run('holds', ['place', '--case', 'C-9', '--reason', 'subpoena', '--scope', 'participant', '--value', 'p1', '--json'])).toBe(0);
      const hold = JSON.parse(text) as { id: string };
      expect(await run('erasure', ['request', '--participant', 'p1', '--reason', 'DSR-7'])).toBe(0);
      expect(text).toContain(`s1: restricted by hold(s) ${hold.id} (case C-9)`);
      expect(await run('retention', ['sweep', '--json'])).toBe(0);
      expect(JSON.parse(text).deleted).toEqual([]);
      expect(await storage.exists(stored.key)).toBe(true);

      expect(await run('holds', ['release', hold.id, '--reason', 'done'])).toBe(0);
      expect(await run('holds', ['release', hold.id])).toBe(1);
      expect(errs.at(-1)).toContain('already released');
      expect(await run('erasure', ['request', '--participant', 'p1', '--reason', 'DSR-7', '--json'])).toBe(0);
      expect(JSON.parse(text)).toMatchObject({ status: 'completed', outcome: [{ session: 's1', state: 'erased', composite: 'none' }] });
      expect(await storage.exists(stored.key)).toBe(false);
      expect(await db.selectFrom('transcript_segments').selectAll().execute()).toEqual([]);
      expect(await run('erasure', ['list'])).toBe(0);
      expect(text.match(/participant p1/g)).toHaveLength(2);

      const actions = (await db.selectFrom('audit_log').select(['action', 'actor_type']).orderBy('seq').execute()).map((a) => `${a.actor_type}:${a.action}`);
      expect(actions).toEqual(
        expect.arrayContaining(['service:retention.dry_run', 'service:legal_hold.place', 'service:erasure.restricted', 'service:erasure.request', 'service:legal_hold.release', 'service:erasure.delete', 'service:erasure.list']),
      );
      expect((await new AuditLog(db).verify()).ok).toBe(true);

      expect(await run('erasure', ['request', '--participant', 'p1'])).toBe(2);
      expect(await run('holds', ['place', '--case', 'C', '--reason', 'r', '--scope', 'planet', '--value', 'x'])).toBe(2);
      expect(await run('retention', ['purge'])).toBe(2);
      expect(await run('retention', ['sweep', '--bogus'])).toBe(2);
    } finally {
      await db.destroy();
      rmSync(root, { recursive: true, force: true });
    }
  });

  it.skipIf(!backend.available)('consent list: per participant / session as text, JSON or CSV (formula cells neutralised), audited', async () => {
    const db = await backend.open();
    try {
      let text = '';
      const run = async (args: string[]) => {
        text = '';
        return runComplianceCommand('consent', args, (s) => (text += s), { db, config: loadConfig({ env: {} }), err: () => {} });
      };
      await db.insertInto('rooms').values({ id: 'rc', name: 'rc', flags: JSON.stringify({}), secret_hash: 'x' }).execute();
      await db
        .insertInto('consent_events')
        .values([
          { room_id: 'rc', session_id: 'cs1', participant_id: 'p1', participant_name: '=HYPERLINK("x")', policy: 'required', decision: 'granted', method: 'click', client_info: JSON.stringify({ ua: 'a, b' }) },
          { room_id: 'rc', session_id: 'cs1', participant_id: 'p2', participant_name: 'Bo', policy: 'required', decision: 'declined', method: 'click', client_info: JSON.stringify({}) },
          { room_id: 'rc', session_id: 'cs2', participant_id: 'p1', participant_name: 'Al', policy: 'notify', decision: 'granted', method: 'announcement', client_info: JSON.stringify({}) },
        ])
        .execute();
      expect(await run(['list', '--participant', 'p1', '--json'])).toBe(0);
      expect((JSON.parse(text) as { session: string }[]).map((e) => e.session)).toEqual(['cs1', 'cs2']);
      expect(await run(['list', '--session', 'cs1', '--csv'])).toBe(0);
      const lines = text.trimEnd().split('\r\n');
      expect(lines).toHaveLength(3);
      // A name that a spreadsheet would evaluate is quoted and prefixed; commas inside JSON stay in one cell.
      expect(lines[1]).toContain(`,"'=HYPERLINK(""x"")",`);
      expect(lines[1]).toMatch(/,"\{""ua"":""a, b""\}"$/);
      expect(await run(['list', '--session', 'cs1'])).toBe(0);
      expect(text).toContain('p2 (Bo)  declined  click  policy required');
      const audited = await db.selectFrom('audit_log').select(['action']).execute();
      expect(audited.filter((a) => a.action === 'consent.view')).toHaveLength(3);
      expect(await run(['purge'])).toBe(2);
    } finally {
      await db.destroy();
    }
  });
});
