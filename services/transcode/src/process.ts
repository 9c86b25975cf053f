import os from 'node:os';
import path from 'node:path';
import { openConfiguredDatabase } from '../../../db/database.ts';
import { loadConfig } from '../../lib/config.ts';
import { VerbatimError } from '../../lib/errors.ts';
import { createLogger } from '../../lib/logger.ts';
import { FluentFfmpegRunner } from '../../lib/media/ffmpeg-runner.ts';
import { storageFromConfig } from '../../lib/storage/storage-from-config.ts';
import { sessionLimitsFromConfig } from './session-limits.ts';
import { transcriberFromConfig } from './transcriber-factory.ts';
import { TranscodeWorker } from './transcode-worker.ts';

/**
 * A transcode worker process (`npm run worker:transcode`). Start more of them, on this
 * or other hosts, against the same Redis and database to scale out.
 */
const config = loadConfig();
const logger = createLogger({ level: config.LOG_LEVEL, name: 'verbatim-transcode' });
if (!config.REDIS_URL) {
  throw new VerbatimError('CONFIG_INVALID', 'REDIS_URL is required for a standalone transcode worker', { hint: 'Point it at the Redis the recorder queues to (npm start runs everything together on embedded defaults).' });
}
const storage = storageFromConfig(config);
const db = await openConfiguredDatabase(config);
const worker = new TranscodeWorker({
  db,
  storage,
  ffmpeg: new FluentFfmpegRunner(),
  workDir: path.join(config.DATA_DIR, 'transcode-work', os.hostname()),
  logger,
  transcriber: transcriberFromConfig(config),
  redisUrl: config.REDIS_URL,
  ...(process.env.VERBATIM_QUEUE_PREFIX ? { queuePrefix: process.env.VERBATIM_QUEUE_PREFIX } : {}),
  concurrency: config.TRANSCODE_CONCURRENCY,
  // Two transcriptions at once split WHISPER_THREADS between them (one thread each by default).
  asrConcurrency: Math.max(1, Math.min(2, config.WHISPER_THREADS)),
  lockMs: config.TRANSCODE_LOCK_MS,
  limits: sessionLimitsFromConfig(config),
});
await worker.start();
logger.info({ concurrency: config.TRANSCODE_CONCURRENCY }, 'transcode worker ready');
process.send?.({ t: 'ready' });
const stop = async () => {
  await worker.close();
  await db.destroy();
  process.exit(0);
};
process.once('SIGINT', () => void stop());
process.once('SIGTERM', () => void stop());
