import { loadConfig } from '../../lib/config.ts';
import { createLogger } from '../../lib/logger.ts';
import { startEmbeddedRedis } from '../../lib/redis.ts';
import { runStage } from '../../lib/stage-process.ts';
import { AuditLog, objectLockRetention } from '../../audit/index.ts';
import { storageFromConfig } from '../../lib/storage/storage-from-config.ts';
import { startRecorder } from './main.ts';

/**
 * The recorder as its own process (`npm run recorder`, or a stage of `npm start`):
 * configuration from the environment; without REDIS_URL it starts a private redis-server.
 */
const logger = createLogger({ name: 'verbatim-recorder' }).child({ stage: 'recorder' });
runStage({
  stage: 'recorder',
  logger,
  async start() {
    const config = loadConfig();
    logger.level = config.LOG_LEVEL;
    const redis = config.REDIS_URL ? undefined : await startEmbeddedRedis(config.DATA_DIR);
    try {
      const running = await startRecorder(config, logger, {
        redisUrl: config.REDIS_URL ?? redis!.url,
        ...(process.env.VERBATIM_QUEUE_PREFIX ? { queuePrefix: process.env.VERBATIM_QUEUE_PREFIX } : {}),
        // Refused control requests go to the same audit trail as everything else.
        audit: (db) => new AuditLog(db),
        // Raw segments carry the same Object Lock retention as their session's artifacts.
        storage: (db) => storageFromConfig(config, { retainUntil: objectLockRetention(db), db }),
      });
      return {
        url: running.url,
        async close() {
          await running.close();
          await redis?.stop();
        },
      };
    } catch (err) {
      await redis?.stop();
      throw err;
    }
  },
});
