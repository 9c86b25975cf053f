import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openConfiguredDatabase } from '../../../db/database.ts';
import { evaluateRegisteredTranscript, objectLockRetention } from '../../audit/index.ts';
import { loadConfig } from '../../lib/config.ts';
import { VerbatimError } from '../../lib/errors.ts';
import { createLogger } from '../../lib/logger.ts';
import { FluentFfmpegRunner } from '../../lib/media/ffmpeg-runner.ts';
import { runStage } from '../../lib/stage-process.ts';
import { storageFromConfig } from '../../lib/storage/storage-from-config.ts';
import { sessionLimitsFromConfig } from './session-limits.ts';
import { transcriberFromConfig } from './transcriber-factory.ts';
import { TranscodeWorker } from './transcode-worker.ts';
import { modelLocation } from './transcriber/whisper-models.ts';

/**
 * A transcode worker process (`npm run worker:transcode`, or a stage of `npm start`). Start
 * more of them, on this or other hosts, against the same Redis and database to scale out.
 */
const logger = createLogger({ name: 'verbatim-transcode' }).child({ stage: 'transcode' });
runStage({
  stage: 'transcode',
  logger,
  async start() {
    const config = loadConfig();
    logger.level = config.LOG_LEVEL;
    if (!config.REDIS_URL) {
      throw new VerbatimError('CONFIG_INVALID', 'REDIS_URL is required for a standalone transcode worker', { hint: 'Point it at the Redis the recorder queues to (npm start runs everything together on embedded defaults).' });
    }
    const db = await openConfiguredDatabase(config);
    try {
      const worker = new TranscodeWorker({
        db,
        // With S3 Object Lock, uploads carry their session's retention date (from the audit service's policies).
        storage: storageFromConfig(config, { retainUntil: objectLockRetention(db), db }),
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
        // Supervision policies run over each transcript as it is registered (the review queue's items).
        onTranscriptRegistered: async (session) => {
          const r = await evaluateRegisteredTranscript(db, session);
          if (r.items > 0) logger.info({ session, items: r.items, hits: r.hits, sampled: r.sampled }, 'supervision: review items filed');
        },
      });
      await worker.start();
      logger.info({ concurrency: config.TRANSCODE_CONCURRENCY }, 'transcode worker ready');
      const model = modelLocation({ model: config.WHISPER_MODEL, modelsDir: config.WHISPER_MODELS_DIR });
      const notes = existsSync(model.path)
        ? []
        : [`No Whisper model at ${model.path}: recordings are processed, but transcripts of rooms with "transcribe" wait (MODEL_MISSING) until you add one. See "Whisper model" in README.md.`];
      return {
        notes,
        async close() {
          await worker.close();
          await db.destroy();
        },
      };
    } catch (err) {
      await db.destroy();
      throw err;
    }
  },
});
