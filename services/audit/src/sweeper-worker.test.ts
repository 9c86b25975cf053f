import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../lib/logger.ts';
import { testBackends, type TestBackend } from '../../../testing/databases.ts';
import { LocalArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { AuditLog } from './audit-log.ts';
import { SweeperWorker } from './sweeper-worker.ts';

const REDIS = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const backends = await testBackends();
afterAll(async () => {
  for (const b of backends) await b.cleanup();
});

describe.each(backends)('retention sweeper worker ($name)', (backend: TestBackend) => {
  it.skipIf(!backend.available)('sweeps on its BullMQ schedule: expired unheld content goes (tombstone + audit), held content stays; two workers share one schedule', async () => {
    const db = await backend.open();
    const root = mkdtempSync(path.join(os.tmpdir(), 'verbatim-sweeper-'));
    const storage = new LocalArtifactStorage(path.join(root, 'artifacts'));
    const prefix = `vbt-sweep-${randomBytes(4).toString('hex')}`;
    const workers: SweeperWorker[] = [];
    try {
      await db.insertInto('rooms').values({ id: 'r', name: 'r', flags: JSON.stringify({}), secret_hash: 'scrypt$x$y' }).execute();
      await db.insertInto('retention_policies').values({ name: 'transcripts-30d', scope: 'default', media_days: null, transcript_days: 30, raw_days: null }).execute();
      const txt = path.join(root, 't.txt');
      writeFileSync(txt, 'words\n');
      for (const id of ['old', 'held']) {
        await db.insertInto('recording_sessions').values({ id, room_id: 'r', started_at: '2020-01-01T00:00:00Z', ended_at: '2020-01-01T01:00:00Z', status: 'done' }).execute();
        await db.insertInto('transcript_segments').values({ session_id: id, seq: 0, participant_id: 'p', speaker: 'P', start_seconds: 0, end_seconds: 1, text: 'expired words', language: 'en' }).execute();
        const stored = await storage.put(`sessions/r/${id}/transcript.txt`, txt);
        await db.insertInto('artifacts').values({ session_id: id, key: stored.key, kind: 'transcript-txt', participant_id: null, content_type: 'text/plain', bytes: stored.bytes, sha256: stored.sha256, storage: 'local', duration_seconds: null }).execute();
      }
      await db.insertInto('legal_holds').values({ id: '00000000-0000-4000-8000-0000000000aa', case_id: 'C-1', reason: 'r', scope_type: 'session', scope_value: 'held', placed_by: 'user:x' }).execute();

      for (let i = 0; i < 2; i++) {
        const w = new SweeperWorker({ db, storage, recordingsDir: path.join(root, 'recordings'), redisUrl: REDIS, queuePrefix: prefix, everyMs: 1000, logger: createLogger({ level: 'silent' }) });
        workers.push(w);
        await w.start();
      }
      expect(await workers[0]!.queue.getJobSchedulersCount()).toBe(1);

      const deadline = Date.now() + 15_000;
      const remaining = async () => (await db.selectFrom('transcript_segments').select('session_id').execute()).map((r) => r.session_id).sort();
      while ((await remaining()).includes('old') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
      expect(await remaining()).toEqual(['held']);
      expect(await storage.exists('sessions/r/old/transcript.txt')).toBe(false);
      expect(await storage.exists('sessions/r/held/transcript.txt')).toBe(true);
      const tombs = await db.selectFrom('tombstones').select(['session_id', 'kind', 'item', 'policy']).orderBy('item').execute();
      expect(tombs).toEqual([
        { session_id: 'old', kind: 'transcript', item: 'sessions/r/old/transcript.txt', policy: 'transcripts-30d' },
        { session_id: 'old', kind: 'transcript', item: 'transcript_segments:1', policy: 'transcripts-30d' },
      ]);
      const audit = await db.selectFrom('audit_log').select(['action', 'actor_id', 'target_id']).where('action', '=', 'retention.delete').execute();
      expect(audit).toEqual([{ action: 'retention.delete', actor_id: 'retention-sweeper', target_id: 'old' }]);
      expect((await new AuditLog(db).verify()).ok).toBe(true);
      // The schedule keeps running: later sweeps find nothing more to delete.
      await new Promise((r) => setTimeout(r, 1500));
      expect(await remaining()).toEqual(['held']);
      const done = await workers[0]!.queue.getCompleted();
      expect(done.length).toBeGreaterThanOrEqual(2);
      expect(done.every((j) => j.returnvalue && typeof j.returnvalue.deleted === 'number')).toBe(true);
    } finally {
      await workers[0]?.unschedule();
      await workers[0]?.queue.obliterate({ force: true });
      for (const w of workers) await w.close();
      await db.destroy();
      rmSync(root, { recursive: true, force: true });
    }
  }, 60_000);
});
