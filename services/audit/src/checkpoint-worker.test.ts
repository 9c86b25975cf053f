import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { testBackends, type TestBackend } from '../../../testing/databases.ts';
import { createLogger } from '../../lib/logger.ts';
import { loadOrCreateCheckpointKey } from '../../lib/secrets.ts';
import { CheckpointStore, Ed25519CheckpointSigner, Ed25519CheckpointVerifier } from './audit-checkpoints.ts';
import { AuditLog } from './audit-log.ts';
import { verifyAuditTrail } from './audit-verify.ts';
import { CheckpointWorker } from './checkpoint-worker.ts';

const REDIS = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const backends = await testBackends();
afterAll(async () => {
  for (const b of backends) await b.cleanup();
});

describe.each(backends)('audit checkpoint worker ($name)', (backend: TestBackend) => {
  it.skipIf(!backend.available)('two workers share one schedule, checkpoints follow the head, and close() checkpoints the head at shutdown', async () => {
    const db = await backend.open();
    const root = mkdtempSync(path.join(os.tmpdir(), 'verbatim-checkpointer-'));
    const key = loadOrCreateCheckpointKey(root);
    const store = new CheckpointStore(path.join(root, 'audit-checkpoints'));
    const prefix = `vbt-cp-${randomBytes(4).toString('hex')}`;
    const log = new AuditLog(db);
    const workers: CheckpointWorker[] = [];
    const files = () => {
      try {
        return readdirSync(store.dir).sort();
      } catch {
        return [];
      }
    };
    try {
      for (let i = 0; i < 2; i++) {
        const w = new CheckpointWorker({ db, store, signer: new Ed25519CheckpointSigner(key.privateKeyPem), redisUrl: REDIS, queuePrefix: prefix, everyMs: 1000, logger: createLogger({ level: 'silent' }) });
        workers.push(w);
        await w.start();
      }
      expect(await workers[0]!.queue.getJobSchedulersCount()).toBe(1);
      for (let i = 0; i < 3; i++) await log.append({ action: 'test.entry', details: { i } });
      await expect.poll(files, { timeout: 15_000, interval: 200 }).toEqual(['audit-checkpoint-000000000003.json']);
      await log.append({ action: 'test.last' });
      await workers[0]!.queue.removeJobScheduler('audit-checkpointer');
      for (const w of workers.splice(0)) await w.close();
      // The stop wrote the last head, exactly once.
      expect(files()).toEqual(['audit-checkpoint-000000000003.json', 'audit-checkpoint-000000000004.json']);
      expect(await verifyAuditTrail(db, { store, verifiers: [new Ed25519CheckpointVerifier(key.publicKeyPem)] })).toMatchObject({ ok: true, checkpoints: 2, checked: 4 });
    } finally {
      for (const w of workers) await w.close();
      await db.destroy();
      rmSync(root, { recursive: true, force: true });
    }
  }, 60_000);
});
