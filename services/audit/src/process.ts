import { openConfiguredDatabase } from '../../../db/database.ts';
import { loadConfig } from '../../lib/config.ts';
import { VerbatimError } from '../../lib/errors.ts';
import { createLogger } from '../../lib/logger.ts';
import { runStage } from '../../lib/stage-process.ts';
import { storageFromConfig } from '../../lib/storage/storage-from-config.ts';
import { auditServerOptionsFromConfig, startAuditServer } from './http/server.ts';
import { SweeperWorker } from './sweeper-worker.ts';

/**
 * The compliance service as its own process: the API (with the web console) and the
 * retention sweeper's job scheduler. A stage of `npm start`, or on its own with
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
    if (sweep && !config.REDIS_URL) {
      throw new VerbatimError('CONFIG_INVALID', 'REDIS_URL is required for the retention sweeper', { hint: 'Point it at the Redis of the other stages, or set RETENTION_SWEEP_INTERVAL_MS=0 to run the compliance API without the sweeper.' });
    }
    const db = await openConfiguredDatabase(config);
    const closers: (() => Promise<void>)[] = [() => db.destroy()];
    const close = async () => {
      for (const c of closers.splice(0).reverse()) await c();
    };
    try {
      const server = await startAuditServer({ db, host: config.AUDIT_HOST, port: config.AUDIT_PORT, logger: logger.child({ service: 'audit' }), ...auditServerOptionsFromConfig(config, db) });
      closers.push(() => server.close());
      if (sweep) {
        const sweeper = new SweeperWorker({ db, storage: storageFromConfig(config), recordingsDir: config.RECORDINGS_DIR, redisUrl: config.REDIS_URL!, everyMs: config.RETENTION_SWEEP_INTERVAL_MS, logger: logger.child({ service: 'retention' }) });
        await sweeper.start();
        closers.push(() => sweeper.close());
      }
      return { url: server.url, close };
    } catch (err) {
      await close().catch(() => {});
      throw err;
    }
  },
});
