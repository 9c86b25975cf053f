import { loadConfig } from '../../lib/config.ts';
import { createLogger } from '../../lib/logger.ts';
import { startEmbeddedRedis } from '../../lib/redis.ts';
import { AuditLog } from '../../audit/index.ts';
import { startRecorder } from './main.ts';

/** The recorder as its own process (`npm run recorder`): config from the environment. */
const config = loadConfig();
const logger = createLogger({ level: config.LOG_LEVEL, name: 'verbatim-recorder' });
const redis = config.REDIS_URL ? undefined : await startEmbeddedRedis(config.DATA_DIR);
const running = await startRecorder(config, logger, {
  redisUrl: config.REDIS_URL ?? redis!.url,
  ...(process.env.VERBATIM_QUEUE_PREFIX ? { queuePrefix: process.env.VERBATIM_QUEUE_PREFIX } : {}),
  // Refused control requests go to the same audit trail as everything else.
  audit: (db) => new AuditLog(db),
});
process.send?.({ t: 'listening', url: running.url });
const stop = async () => {
  await running.close();
  await redis?.stop();
  process.exit(0);
};
process.once('SIGINT', () => void stop());
process.once('SIGTERM', () => void stop());
