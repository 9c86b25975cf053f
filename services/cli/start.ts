import { existsSync } from 'node:fs';
import path from 'node:path';
import { openConfiguredDatabase, type Db } from '../../db/database.ts';
import type { Config } from '../lib/config.ts';
import type { Logger } from '../lib/logger.ts';
import { startEmbeddedRedis } from '../lib/redis.ts';
import { startRecorder, type RunningRecorder } from '../recorder/index.ts';
import { startSfu, type RunningSfu } from '../sfu/index.ts';
import { FluentFfmpegRunner } from '../lib/media/ffmpeg-runner.ts';
import { storageFromConfig } from '../lib/storage/storage-from-config.ts';
import { transcriberFromConfig, TranscodeWorker, modelLocation } from '../transcode/index.ts';
import { AuditLog, auditServerOptionsFromConfig, createUserWithKey, objectLockRetention, startAuditServer, SweeperWorker, type AuditServer } from '../audit/index.ts';

export interface RunningStack {
  sfu: RunningSfu;
  recorder: RunningRecorder;
  transcode: TranscodeWorker;
  audit: AuditServer;
  /** Set on the first start only: the first admin API key (shown once, never stored). */
  firstAdminKey: string | undefined;
  db: Db;
  redisUrl: string;
  modelMissing: string | undefined;
  stop(): Promise<void>;
}

/**
 * Every service in one launcher on embedded defaults: one PGlite database, a private
 * redis-server child (dies with us, even on kill -9), local storage and recordings under
 * DATA_DIR. The recorder's and the SFU's media still run in their own worker processes.
 * With DATABASE_URL / REDIS_URL set, the same launcher uses those instead.
 */
export async function startStack(config: Config, logger: Logger): Promise<RunningStack> {
  const redis = config.REDIS_URL ? undefined : await startEmbeddedRedis(config.DATA_DIR);
  const redisUrl = config.REDIS_URL ?? redis!.url;
  const db = await openConfiguredDatabase(config);
  const started: { stop(): Promise<void> }[] = [];
  try {
    const recorder = await startRecorder({ ...config, RECORDER_PORT: config.RECORDER_PORT }, logger, { db, redisUrl });
    started.push({ stop: () => recorder.close() });
    const sfu = await startSfu({ ...config, RECORDER_URL: config.RECORDER_URL ?? recorder.url }, logger, { db, audit: (d) => new AuditLog(d) });
    started.push({ stop: () => sfu.close() });
    const transcode = new TranscodeWorker({
      db,
      storage: storageFromConfig(config, { retainUntil: objectLockRetention(db) }),
      ffmpeg: new FluentFfmpegRunner(),
      workDir: path.join(config.DATA_DIR, 'transcode-work'),
      logger: logger.child({ service: 'transcode' }),
      transcriber: transcriberFromConfig(config),
      redisUrl,
      concurrency: config.TRANSCODE_CONCURRENCY,
      lockMs: config.TRANSCODE_LOCK_MS,
    });
    await transcode.start();
    started.push({ stop: () => transcode.close() });
    // Same Redis (and default queue prefix) as the transcode worker above: erasure jobs queue composite re-renders to it.
    const audit = await startAuditServer({ db, host: config.AUDIT_HOST, port: config.AUDIT_PORT, logger: logger.child({ service: 'audit' }), ...auditServerOptionsFromConfig(config, db), redisUrl });
    started.push({ stop: () => audit.close() });
    const sweeper =
      config.RETENTION_SWEEP_INTERVAL_MS > 0
        ? new SweeperWorker({ db, storage: storageFromConfig(config), recordingsDir: config.RECORDINGS_DIR, redisUrl, everyMs: config.RETENTION_SWEEP_INTERVAL_MS, logger: logger.child({ service: 'retention' }) })
        : undefined;
    await sweeper?.start();
    started.push({ stop: async () => sweeper?.close() });
    // First start: an admin key for the compliance API, printed once.
    const admins = await db.selectFrom('users').select('id').where('role', '=', 'admin').execute();
    const firstAdminKey = admins.length === 0 ? (await createUserWithKey(db, { name: 'admin', role: 'admin' })).apiKey : undefined;
    const model = modelLocation({ model: config.WHISPER_MODEL, modelsDir: config.WHISPER_MODELS_DIR });
    const modelMissing = existsSync(model.path)
      ? undefined
      : `No Whisper model at ${model.path}: recordings are processed, but transcripts of rooms with "transcribe" wait (MODEL_MISSING) until you add one. See "Whisper model" in README.md.`;
    let stopping: Promise<void> | undefined;
    return {
      sfu,
      recorder,
      transcode,
      audit,
      firstAdminKey,
      db,
      redisUrl,
      modelMissing,
      stop() {
        // Order matters: the SFU ends recording sessions, the recorder seals and queues
        // them, then the queue consumer and the stores go.
        stopping ??= (async () => {
          await sfu.close();
          await audit.close();
          await sweeper?.close();
          await transcode.close();
          await recorder.close();
          await db.destroy();
          await redis?.stop();
        })();
        return stopping;
      },
    };
  } catch (err) {
    for (const s of started.reverse()) await s.stop().catch(() => {});
    await db.destroy().catch(() => {});
    await redis?.stop();
    throw err;
  }
}
