import { openConfiguredDatabase } from '../../../db/database.ts';
import { AuditLog } from '../../audit/index.ts';
import { loadConfig } from '../../lib/config.ts';
import { createLogger } from '../../lib/logger.ts';
import { runStage } from '../../lib/stage-process.ts';
import { startSfu } from './main.ts';
import { endOrphanedSessions } from './orphan-sessions.ts';

/**
 * The SFU as its own process: a stage of `npm start` (services/cli/start.ts), or on its own
 * with DATABASE_URL and RECORDER_URL. Configuration from the environment.
 */
const logger = createLogger({ name: 'verbatim-sfu' }).child({ stage: 'sfu' });
runStage({
  stage: 'sfu',
  logger,
  async start() {
    const config = loadConfig();
    logger.level = config.LOG_LEVEL;
    const db = await openConfiguredDatabase(config);
    try {
      await endOrphanedSessions({ db, config, logger });
      const sfu = await startSfu(config, logger, { db, audit: (d) => new AuditLog(d) });
      return {
        url: sfu.url,
        async close() {
          await sfu.close();
          await db.destroy();
        },
      };
    } catch (err) {
      await db.destroy();
      throw err;
    }
  },
});
