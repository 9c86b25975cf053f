import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../../db/database.ts';
import { testBackends, type TestBackend } from '../../../../testing/databases.ts';
import { syntheticSession } from '../../../../testing/synthetic-session.ts';
import { TEST_REDIS_URL } from '../../../../testing/transcode-worker.ts';
import { loadConfig } from '../../../lib/config.ts';
import { SessionManifestSchema } from '../../../lib/contracts/recording.ts';
import { createLogger } from '../../../lib/logger.ts';
import { FluentFfmpegRunner } from '../../../lib/media/ffmpeg-runner.ts';
import { LocalArtifactStorage } from '../../../lib/storage/artifact-storage.ts';
import { SessionStore } from '../../../recorder/index.ts';
import { TEST_PHRASE, TranscodeWorker, fixedPhraseModelPath, transcriberFromConfig } from '../../../transcode/index.ts';
import { evaluateRegisteredTranscript } from './evaluate.ts';
import { PolicyDefinitionSchema, SupervisionPolicies } from './policies.ts';

/**
 * The whole registration path: a sealed session finalized by the transcode worker with the
 * generated Whisper model (its transcript is always TEST_PHRASE), whose onTranscriptRegistered
 * hook runs the policies in force, as services/transcode/src/process.ts wires it. A lexicon
 * matching the test phrase files a review item for the speaker, on the session's timeline.
 */

const backend: TestBackend = (await testBackends()).find((b) => b.available && b.name === 'postgres') ?? (await testBackends())[0]!;

describe(`transcript registration runs the policies in force (${backend.name})`, () => {
  let db: Db;
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-supervision-hook-'));
  beforeAll(async () => {
    db = await backend.open();
  });
  afterAll(async () => {
    await db?.destroy();
    await backend.cleanup();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('a finalized session with the test phrase gets a review item through the worker hook', async () => {
    const def = PolicyDefinitionSchema.parse({ name: 'Test phrase', severity: 'low', lexicon: ['"test phrase"'] });
    const policy = await new SupervisionPolicies(db).create(def, 'test');
    // Tone with a pause (as the finalize worker's ASR test): speech the VAD finds.
    const manifestPath = syntheticSession(tmp, () => {}, { session: 'hook-1', transcribe: true, seconds: 8, silences: [[2, 5]] });
    const json = readFileSync(manifestPath, 'utf8');
    await new SessionStore(db).registerSealed(SessionManifestSchema.parse(JSON.parse(json)), manifestPath, createHash('sha256').update(json).digest('hex'));
    const config = loadConfig({ env: {}, overrides: { DATA_DIR: tmp, WHISPER_MODEL: fixedPhraseModelPath() } });
    const filed: string[] = [];
    const worker = new TranscodeWorker({
      db,
      storage: new LocalArtifactStorage(path.join(tmp, 'store')),
      ffmpeg: new FluentFfmpegRunner(),
      workDir: path.join(tmp, 'work'),
      logger: createLogger({ level: 'silent' }),
      transcriber: transcriberFromConfig(config),
      redisUrl: TEST_REDIS_URL,
      queuePrefix: `t${randomBytes(4).toString('hex')}`,
      concurrency: 1,
      onTranscriptRegistered: async (session) => {
        await evaluateRegisteredTranscript(db, session);
        filed.push(session);
      },
    });
    try {
      await worker.start();
      await expect.poll(async () => (await db.selectFrom('recording_sessions').select('status').where('id', '=', 'hook-1').executeTakeFirstOrThrow()).status, { timeout: 180_000, interval: 250 }).toBe('done');
    } finally {
      await worker.close();
    }
    expect(filed).toEqual(['hook-1']);
    const segs = await db.selectFrom('transcript_segments').select(['seq', 'participant_id', 'text', 'start_seconds']).where('session_id', '=', 'hook-1').execute();
    expect(segs.map((s) => s.text)).toEqual([TEST_PHRASE]);
    const items = await db.selectFrom('review_items').selectAll().where('session_id', '=', 'hook-1').execute();
    expect(items).toEqual([expect.objectContaining({ policy_id: policy.id, policy_version: 1, kind: 'hit', participant_id: segs[0]!.participant_id, hit_count: 1, start_seconds: segs[0]!.start_seconds })]);
    const hits = await db.selectFrom('review_hits').select(['rule', 'matched', 'seq']).where('item_id', '=', items[0]!.id).execute();
    expect(hits).toEqual([{ rule: 'lexicon:"test phrase"', matched: 'test phrase', seq: segs[0]!.seq }]);
  });
});
