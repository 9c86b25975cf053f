import { randomBytes } from 'node:crypto';
import type { Db } from '../db/database.ts';
import { VerbatimError } from '../services/lib/errors.ts';
import { createLogger } from '../services/lib/logger.ts';
import { FluentFfmpegRunner } from '../services/lib/media/ffmpeg-runner.ts';
import type { ArtifactStorage } from '../services/lib/storage/artifact-storage.ts';
import { TranscodeWorker } from '../services/transcode/index.ts';

export const TEST_REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

export interface TestTranscodeWorker {
  worker: TranscodeWorker;
  /** What startAuditServer needs to queue erasure jobs and re-renders next to this worker. */
  queue: { redisUrl: string; queuePrefix: string };
  close(): Promise<void>;
}

/**
 * A real transcode worker (the flow, ffmpeg) on a queue prefix of its own on the test Redis:
 * it finalizes the sealed sessions of `db` (its reconciler queues them at start) and runs the
 * composite re-renders the compliance service's erasure jobs queue. No transcription: a room
 * that asks for it gets MODEL_MISSING.
 */
export async function startTestTranscodeWorker(opts: { db: Db; storage: ArtifactStorage; workDir: string }): Promise<TestTranscodeWorker> {
  const queue = { redisUrl: TEST_REDIS_URL, queuePrefix: `t${randomBytes(4).toString('hex')}` };
  const worker = new TranscodeWorker({
    db: opts.db,
    storage: opts.storage,
    ffmpeg: new FluentFfmpegRunner(),
    workDir: opts.workDir,
    logger: createLogger({ level: 'silent' }),
    transcriber: () => Promise.reject(new VerbatimError('MODEL_MISSING', 'no Whisper model in this test', { hint: 'Tests that transcribe install the generated test model.' })),
    ...queue,
    concurrency: 2,
  });
  await worker.start();
  return { worker, queue, close: () => worker.close() };
}
