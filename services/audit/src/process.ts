import { openConfiguredDatabase } from '../../../db/database.ts';
import { loadConfig } from '../../lib/config.ts';
import { VerbatimError } from '../../lib/errors.ts';
import { createLogger } from '../../lib/logger.ts';
import { runStage } from '../../lib/stage-process.ts';
import { storageFromConfig } from '../../lib/storage/storage-from-config.ts';
import { checkpointSignerFromConfig, checkpointStoreFromConfig } from './checkpoint-setup.ts';
import { CheckpointWorker } from './checkpoint-worker.ts';
import { auditServerOptionsFromConfig, startAuditServer } from './http/server.ts';
import { ReconciliationWorker } from './supervision/reconciliation-worker.ts';
import { SweeperWorker } from './sweeper-worker.ts';

/**
 * The compliance service as its own process: the API (with the web console), the audit
 * checkpointer's and the retention sweeper's job schedulers. A stage of `npm start`, or on its own with
 * DATABASE_URL and REDIS_URL. Configuration from the environment.
 */
const logger = createLogger({ name: 'verbatim-audit' }).child({ stage: 'audit' });
runStage({
  stage: 'audit',
  logger,
  async start() {
    const config = loadConfig();
    logger.level = config.LOG_LEVEL;
    const sweep = config.RETENTION_SWEEP_INTERVAL_MS > 0;
    if (!config.REDIS_URL) {
      throw new VerbatimError('CONFIG_INVALID', 'REDIS_URL is required for the audit checkpointer and the retention sweeper', { hint: 'Point it at the Redis of the other stages (npm start does).' });
    }
    const db = await openConfiguredDatabase(config);
    const closers: (() => Promise<void>)[] = [() => db.destroy()];
    const close = async () => {
      for (const c of closers.splice(0).reverse()) await c();
    };
    try {
      // Before the API, so it stops after it: the checkpoint at stop covers the API's last entries.
      const checkpointer = new CheckpointWorker({ db, store: checkpointStoreFromConfig(config, db), signer: checkpointSignerFromConfig(config), redisUrl: config.REDIS_URL, everyMs: config.AUDIT_CHECKPOINT_INTERVAL_MS, logger: logger.child({ service: 'audit-checkpoints' }) });
      closers.push(() => checkpointer.close());
      await checkpointer.start();
      const server = await startAuditServer({ db, host: config.AUDIT_HOST, port: config.AUDIT_PORT, logger: logger.child({ service: 'audit' }), ...auditServerOptionsFromConfig(config, db) });
      closers.push(() => server.close());
      if (sweep) {
        const sweeper = new SweeperWorker({ db, storage: storageFromConfig(config, { db }), recordingsDir: config.RECORDINGS_DIR, redisUrl: config.REDIS_URL, everyMs: config.RETENTION_SWEEP_INTERVAL_MS, logger: logger.child({ service: 'retention' }) });
        await sweeper.start();
        closers.push(() => sweeper.close());
      }
      if (config.RECONCILE_INTERVAL_MS > 0) {
        const reconciler = new ReconciliationWorker({ db, storage: storageFromConfig(config), redisUrl: config.REDIS_URL, everyMs: config.RECONCILE_INTERVAL_MS, gapSeconds: config.RECONCILE_GAP_SECONDS, logger: logger.child({ service: 'reconciliation' }) });
        await reconciler.start();
        closers.push(() => reconciler.close());
      }
      return { url: server.url, close };
    } catch (err) {
      await close().catch(() => {});
      throw err;
    }
  },
});
