import { fork, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type Db } from '../../../db/database.ts';
import {
  TRANSCODE_QUEUE,
  SESSION_COMPOSITE_JOB,
  SESSION_RERENDER_JOB,
  SessionClockResultSchema,
  SessionCompositeResultSchema,
  SessionRerenderResultSchema,
  TRACK_DEPACKETIZE_JOB,
  TrackDepacketizeResultSchema,
  rerenderJobId,
  type SessionCompositePayload,
  type SessionRerenderPayload,
  type TrackDepacketizePayload,
} from '../../lib/contracts/jobs.ts';
import { SessionManifestSchema } from '../../lib/contracts/recording.ts';
import { loadConfig } from '../../lib/config.ts';
import { createLogger } from '../../lib/logger.ts';
import { redisConnection } from '../../lib/redis.ts';
import { TEST_DATABASE_URL, testBackends } from '../../../testing/databases.ts';
import { audioOnsets, ffprobe } from '../../../testing/media-fixtures.ts';
import { SessionStore } from '../../recorder/index.ts';
import { FluentFfmpegRunner, type FfmpegRunner } from '../../lib/media/ffmpeg-runner.ts';
import { runSessionPipeline } from '../src/session-pipeline.ts';
import { LocalArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { transcriberFromConfig } from '../src/transcriber-factory.ts';
import { TranscodeWorker } from '../src/transcode-worker.ts';
import { STAGE_JOB_OPTIONS } from '../src/session-flow.ts';
import { syntheticSession } from '../../../testing/synthetic-session.ts';
import { TEST_PHRASE, fixedPhraseModelPath } from '../src/transcriber/ggml-test-model.ts';

const REDIS = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-fw-'));
const pgAvailable = (await testBackends()).find((b) => b.name === 'postgres')!.available;
const schema = `w_${randomBytes(5).toString('hex')}`;
let db: Db;
beforeAll(async () => {
  // Postgres when present (the worker process below shares it); else an in-process PGlite.
  db = pgAvailable ? await openDatabase({ url: TEST_DATABASE_URL, schema }) : await openDatabase({ pgliteDir: path.join(tmp, 'db') });
});
afterAll(async () => {
  await db?.destroy();
});

async function seal(manifestPath: string): Promise<string> {
  const json = readFileSync(manifestPath, 'utf8');
  const m = SessionManifestSchema.parse(JSON.parse(json));
  await new SessionStore(db).registerSealed(m, manifestPath, createHash('sha256').update(json).digest('hex'));
  return m.session;
}
const status = async (id: string) => db.selectFrom('recording_sessions').selectAll().where('id', '=', id).executeTakeFirstOrThrow();

function inProcessWorker(prefix: string, opts: { modelsDir?: string; model?: string; workDir?: string; mode?: 'flow' | 'single'; ffmpeg?: FfmpegRunner } = {}) {
  const config = loadConfig({ env: {}, overrides: { DATA_DIR: tmp, ...(opts.modelsDir ? { WHISPER_MODELS_DIR: opts.modelsDir } : {}), ...(opts.model ? { WHISPER_MODEL: opts.model } : {}) } });
  return new TranscodeWorker({
    db,
    storage: new LocalArtifactStorage(path.join(tmp, `store-${prefix}`)),
    ffmpeg: opts.ffmpeg ?? new FluentFfmpegRunner(),
    workDir: opts.workDir ?? path.join(tmp, `work-${prefix}`),
    logger: createLogger({ level: 'silent' }),
    transcriber: transcriberFromConfig(config),
    redisUrl: REDIS,
    queuePrefix: prefix,
    concurrency: 2,
    ...(opts.mode ? { mode: opts.mode } : {}),
  });
}

describe('session.finalize worker', () => {
  it('corrupt input fails once with its code on the session; other sessions are unaffected; the reconciler enqueues from the database', async () => {
    // The good session's track is in two segments (the recorder restarted for 2 s).
    const goodManifest = syntheticSession(tmp, () => {}, { session: 'good-1', restart: { gapSeconds: 2, seconds: 1 } });
    const good = await seal(goodManifest);
    const bad = await seal(
      syntheticSession(tmp, (dir) => {
        const f = path.join(dir, 'a-0.vrtp');
        const b = readFileSync(f);
        b[300]! ^= 0x55;
        writeFileSync(f, b);
      }, { session: 'bad-1' }),
    );
    const prefix = `fw${randomBytes(3).toString('hex')}`;
    const worker = inProcessWorker(prefix);
    try {
      // No job was ever queued (as if Redis lost it): start() reconciles from the database.
      await worker.start();
      await expect.poll(async () => (await status(good)).status, { timeout: 60_000 }).toBe('done');
      await expect.poll(async () => (await status(bad)).status, { timeout: 60_000 }).toBe('failed');
      expect(await status(bad)).toMatchObject({ error_code: 'CORRUPT_RECORDING' });
      const job = await worker.queue.getJob('finalize.bad-1');
      expect(job!.attemptsMade).toBe(1); // UnrecoverableError: no retries
      expect(job!.failedReason).toMatch(/^CORRUPT_RECORDING/);
      // It is a flow: the clock stage failed once, unretried, and failed the root with its code.
      const stage = await worker.queue.getJob('finalize.bad-1.clock');
      expect(stage!.attemptsMade).toBe(1);
      expect(stage!.failedReason).toMatch(/^CORRUPT_RECORDING/);
      const goodRoot = await worker.queue.getJob('finalize.good-1');
      expect(await goodRoot!.getState()).toBe('completed');
      expect(Object.keys(await goodRoot!.getChildrenValues()).map((k) => k.split(':').at(-1)).sort()).toEqual(['finalize.good-1.clock', 'finalize.good-1.composite', 'finalize.good-1.mux0', 'finalize.good-1.track0']);
      const arts = await db.selectFrom('artifacts').select(['kind', 'key', 'sha256']).where('session_id', '=', good).execute();
      expect(arts.map((a) => a.kind).sort()).toEqual(['composite', 'participant-av', 'participant-wav', 'track', 'track']);
      // Per-track stages give the bytes the single-process pipeline gives.
      const refDir = path.join(tmp, 'ref-good');
      const ref = await runSessionPipeline(goodManifest, refDir, new FluentFfmpegRunner());
      expect(arts.map((a) => [a.key, a.sha256]).sort()).toEqual(
        ref.files.map((f) => [`sessions/r/good-1/${path.relative(refDir, f.path).split(path.sep).join('/')}`, createHash('sha256').update(readFileSync(f.path)).digest('hex')]).sort(),
      );
      expect(await worker.reconcile()).toBe(0);
    } finally {
      await worker.close();
    }
  });

  it('a track.depacketize stage that meets a corrupt segment fails once, unretried, with CORRUPT_RECORDING on the session', async () => {
    const manifestPath = syntheticSession(tmp, () => {}, { session: 'badtrack-1' });
    const id = await seal(manifestPath);
    const worker = inProcessWorker(`fw${randomBytes(3).toString('hex')}`);
    try {
      await worker.start();
      await expect.poll(async () => (await status(id)).status, { timeout: 60_000 }).toBe('done');
      // The segment goes bad after the clock stage measured it; the track stage runs again.
      const f = path.join(path.dirname(manifestPath), 'a-0.vrtp');
      const b = readFileSync(f);
      b[400]! ^= 0x33;
      writeFileSync(f, b);
      const payload: TrackDepacketizePayload = { v: 1, room: 'r', session: id, manifestPath, manifestSha256: '0'.repeat(64), track: 0, trackId: 'a', ntpOffsetUs: 0, originUs: 0 };
      const job = await worker.queue.add(TRACK_DEPACKETIZE_JOB, payload, { ...STAGE_JOB_OPTIONS, jobId: 'badtrack-1.again.track0' });
      await expect.poll(async () => (await worker.queue.getJob(job.id!))!.getState(), { timeout: 30_000 }).toBe('failed');
      const failed = (await worker.queue.getJob(job.id!))!;
      expect(failed.attemptsMade).toBe(1);
      expect(failed.failedReason).toMatch(/^CORRUPT_RECORDING/);
      expect(await status(id)).toMatchObject({ status: 'failed', error_code: 'CORRUPT_RECORDING' });
    } finally {
      await worker.close();
    }
  });

  it('a track whose codec no depacketizer handles (video/AV1) fails its track stage once, unretried, with CODEC_UNSUPPORTED on the session', async () => {
    const id = await seal(syntheticSession(tmp, () => {}, { session: 'av1-1', video: true, codecs: { video: { mimeType: 'video/AV1', clockRate: 90000, payloadType: 101, parameters: {} } } }));
    const worker = inProcessWorker(`fw${randomBytes(3).toString('hex')}`);
    try {
      await worker.start();
      await expect.poll(async () => (await status(id)).status, { timeout: 60_000 }).toBe('failed');
      expect(await status(id)).toMatchObject({ error_code: 'CODEC_UNSUPPORTED' });
      const stage = await worker.queue.getJob('finalize.av1-1.track1');
      expect(stage!.attemptsMade).toBe(1);
      expect(stage!.failedReason).toMatch(/^CODEC_UNSUPPORTED: .*video\/AV1/);
      const root = await worker.queue.getJob('finalize.av1-1');
      await expect.poll(async () => root!.getState(), { timeout: 30_000 }).toBe('failed');
    } finally {
      await worker.close();
    }
  });

  it('a missing Whisper model puts the session in MODEL_MISSING with the fix, media still stored', async () => {
    const id = await seal(syntheticSession(tmp, () => {}, { session: 'nomodel-1', transcribe: true }));
    const worker = inProcessWorker(`fw${randomBytes(3).toString('hex')}`, { modelsDir: path.join(tmp, 'no-models-here') });
    try {
      await worker.start();
      await expect.poll(async () => (await status(id)).status, { timeout: 60_000 }).toBe('failed');
      const row = await status(id);
      expect(row.error_code).toBe('MODEL_MISSING');
      expect(row.transcript_status).toBe('MODEL_MISSING');
      expect(row.error_message).toMatch(/ggml-base\.en\.bin/);
      expect((await db.selectFrom('artifacts').select('key').where('session_id', '=', id).execute()).length).toBeGreaterThan(0);
      expect(await db.selectFrom('transcript_segments').select('seq').where('session_id', '=', id).execute()).toEqual([]);
    } finally {
      await worker.close();
    }
  });

  it('after MODEL_MISSING, retrying the job once the model is installed runs fresh stages and completes the transcript', async () => {
    const id = await seal(syntheticSession(tmp, () => {}, { session: 'latemodel-1', transcribe: true, seconds: 6, silences: [[2, 4]] }));
    const later = path.join(tmp, 'installed-later.bin');
    const worker = inProcessWorker(`fw${randomBytes(3).toString('hex')}`, { model: later });
    try {
      await worker.start();
      await expect.poll(async () => (await status(id)).status, { timeout: 60_000 }).toBe('failed');
      expect((await status(id)).error_code).toBe('MODEL_MISSING');
      copyFileSync(fixedPhraseModelPath(), later);
      const root = (await worker.queue.getJob('finalize.latemodel-1'))!;
      expect(root.failedReason).toMatch(/^MODEL_MISSING/);
      await root.retry();
      await expect.poll(async () => (await status(id)).status, { timeout: 60_000 }).toBe('done');
      expect(await status(id)).toMatchObject({ transcript_status: 'done', error_code: null });
      const segs = await db.selectFrom('transcript_segments').select('text').where('session_id', '=', id).execute();
      expect(segs.map((x) => x.text)).toEqual([TEST_PHRASE]);
      // The retry ran a second generation of stage jobs next to the first one.
      expect(await (await worker.queue.getJob('finalize.latemodel-1.1.clock'))!.getState()).toBe('completed');
    } finally {
      await worker.close();
    }
  });

  it('transcribes each participant through VAD and whisper-cli onto the session timeline (generated model)', async () => {
    // 2 s of tone then 3 s of silence, twice: VAD must find two speech spans.
    const id = await seal(syntheticSession(tmp, () => {}, { session: 'asr-1', transcribe: true, seconds: 8, silences: [[2, 5]] }));
    const worker = inProcessWorker(`fw${randomBytes(3).toString('hex')}`, { model: fixedPhraseModelPath() });
    try {
      await worker.start();
      await expect.poll(async () => (await status(id)).status, { timeout: 120_000 }).toBe('done');
      expect((await status(id)).transcript_status).toBe('done');
      const segs = await db.selectFrom('transcript_segments').selectAll().where('session_id', '=', id).orderBy('seq').execute();
      // Both spans are packed into one 30 s window: one whisper-cli run, one window, and the
      // model's one segment maps back from the first span's start to the last one's end.
      expect(segs.map((x) => [x.speaker, x.participant_id, x.text])).toEqual([['P', 'p', TEST_PHRASE]]);
      // On the session timeline: speech at 0–2 s and 5–8 s (VAD pads by ~0.2 s).
      expect(segs[0]!.start_seconds).toBeLessThan(0.3);
      expect(segs[0]!.end_seconds).toBeGreaterThan(7.7);
      expect(segs[0]!.end_seconds).toBeLessThanOrEqual(8.05);
      // Word timing (whisper-cli -ojf) is stored with the segment, on the session timeline.
      const words = segs[0]!.words!;
      expect(words.map((w) => w.text)).toEqual(TEST_PHRASE.split(' '));
      for (const w of words) expect(w.start >= segs[0]!.start_seconds && w.end <= segs[0]!.end_seconds && w.start <= w.end, JSON.stringify(w)).toBe(true);
      const kinds = (await db.selectFrom('artifacts').select('kind').where('session_id', '=', id).execute()).map((a) => a.kind);
      expect(kinds).toEqual(expect.arrayContaining(['transcript-json', 'transcript-vtt', 'transcript-txt']));
      // The text search index sees it.
      const { sql } = await import('kysely');
      const hits = await sql<{ n: number }>`select count(*)::int as n from transcript_segments where session_id = ${id} and tsv @@ websearch_to_tsquery('english', 'verbatim phrase')`.execute(db);
      expect(hits.rows[0]!.n).toBe(1);
    } finally {
      await worker.close();
    }
  });

  it("mode 'single' (the whole session in one job, composite during ASR) registers the same kinds of results", async () => {
    const id = await seal(syntheticSession(tmp, () => {}, { session: 'single-1', transcribe: true, seconds: 8, silences: [[2, 5]] }));
    const worker = inProcessWorker(`fw${randomBytes(3).toString('hex')}`, { model: fixedPhraseModelPath(), mode: 'single' });
    try {
      await worker.start();
      await expect.poll(async () => (await status(id)).status, { timeout: 120_000 }).toBe('done');
      expect(await worker.queue.getJob('finalize.single-1.clock')).toBeUndefined();
      const segs = await db.selectFrom('transcript_segments').select(['text', 'start_seconds', 'end_seconds']).where('session_id', '=', id).execute();
      expect(segs.map((x) => x.text)).toEqual([TEST_PHRASE]);
      expect(segs[0]!.start_seconds).toBeLessThan(0.3);
      expect(segs[0]!.end_seconds).toBeGreaterThan(7.7);
      const kinds = (await db.selectFrom('artifacts').select('kind').where('session_id', '=', id).execute()).map((a) => a.kind).sort();
      expect(kinds).toEqual(['composite', 'participant-av', 'participant-wav', 'track', 'transcript-json', 'transcript-txt', 'transcript-vtt']);
    } finally {
      await worker.close();
    }
  });

  it.each(['flow', 'single'] as const)('session.rerender (%s): the composite again from the manifest by the same stages, on the timeline it is given; the session and its rows are left alone, corrupt input fails only the re-render', async (mode) => {
    const manifestPath = syntheticSession(tmp, () => {}, { session: `rerender-${mode}`, seconds: 3 });
    const id = await seal(manifestPath);
    const prefix = `fw${randomBytes(3).toString('hex')}`;
    const worker = inProcessWorker(prefix, { mode });
    try {
      await worker.start();
      await expect.poll(async () => (await status(id)).status, { timeout: 60_000 }).toBe('done');
      const rows = await db.selectFrom('artifacts').selectAll().where('session_id', '=', id).orderBy('key').execute();
      const stored = rows.find((r) => r.kind === 'composite')!;
      const payload: SessionRerenderPayload = {
        v: 1,
        room: 'r',
        session: id,
        manifestPath,
        manifestSha256: createHash('sha256').update(readFileSync(manifestPath)).digest('hex'),
        requestedBy: { type: 'erasure', id: 'req-1' },
        // As if someone who spoke for the first second had been erased, and the session ran 5 s.
        timeline: { leadSeconds: 1, durationSeconds: 5 },
      };
      const job = await worker.queue.add(SESSION_RERENDER_JOB, payload, { jobId: rerenderJobId('req-1', id) });
      await expect.poll(async () => (await worker.queue.getJob(job.id!))!.getState(), { timeout: 60_000 }).toBe('completed');
      const done = (await worker.queue.getJob(job.id!))!;
      const out = SessionRerenderResultSchema.parse(done.returnvalue);
      expect(out.composite).toMatchObject({ key: stored.key, kind: 'composite', durationSeconds: 5 });
      expect(out.composite.sha256).not.toBe(stored.sha256);
      if (mode === 'flow') {
        expect(Object.keys(await done.getChildrenValues()).map((k) => k.split(':').at(-1)).sort()).toEqual([`rerender.req-1.${id}.clock`, `rerender.req-1.${id}.composite`, `rerender.req-1.${id}.track0`]);
      }
      const file = await new LocalArtifactStorage(path.join(tmp, `store-${prefix}`)).locate(stored.key);
      expect(createHash('sha256').update(readFileSync(file)).digest('hex')).toBe(out.composite.sha256);
      expect(Math.abs(Number(ffprobe(file).format.duration) - 5)).toBeLessThan(0.1);
      const onsets = audioOnsets(file);
      expect(onsets.some((t) => Math.abs(t - 1) < 0.15), `onsets ${onsets.join(', ')}`).toBe(true);
      // Rows are the caller's to replace (the erasure job does, with its tombstone).
      expect(await db.selectFrom('artifacts').selectAll().where('session_id', '=', id).orderBy('key').execute()).toEqual(rows);

      const bad = await worker.queue.add(SESSION_RERENDER_JOB, { ...payload, manifestPath: path.join(tmp, 'gone', 'manifest.json'), requestedBy: { type: 'erasure', id: 'req-2' } }, { jobId: rerenderJobId('req-2', id) });
      await expect.poll(async () => (await worker.queue.getJob(bad.id!))!.getState(), { timeout: 30_000 }).toBe('failed');
      expect((await worker.queue.getJob(bad.id!))!.failedReason).toMatch(/^CORRUPT_MANIFEST/);
      expect(await status(id)).toMatchObject({ status: 'done', error_code: null });
    } finally {
      await worker.close();
    }
  });

  it('a stage that fails once (a transient error) is retried after a backoff and the flow completes', async () => {
    const id = await seal(syntheticSession(tmp, () => {}, { session: 'retry-1', seconds: 3 }));
    const real = new FluentFfmpegRunner();
    const composites: number[] = [];
    // The real ffmpeg, except that the first composite render fails as a full disk would.
    const flaky: FfmpegRunner = {
      run(job, o) {
        if (job.output.endsWith('composite.mp4.tmp') && composites.push(Date.now()) === 1) return Promise.reject(new Error('ENOSPC: no space left on device'));
        return real.run(job, o);
      },
    };
    const worker = inProcessWorker(`fw${randomBytes(3).toString('hex')}`, { ffmpeg: flaky });
    try {
      await worker.start();
      await expect.poll(async () => (await status(id)).status, { timeout: 60_000 }).toBe('done');
      const stage = (await worker.queue.getJob('finalize.retry-1.composite'))!;
      expect(stage.attemptsMade).toBe(2);
      expect(composites).toHaveLength(2);
      expect(composites[1]! - composites[0]!).toBeGreaterThanOrEqual(1900); // exponential backoff, 2 s first

      const kinds = (await db.selectFrom('artifacts').select('kind').where('session_id', '=', id).execute()).map((a) => a.kind);
      expect(kinds).toContain('composite');
    } finally {
      await worker.close();
    }
  });

  it('a stage on another host fetches its inputs from artifact storage and makes the same bytes', async () => {
    const id = await seal(syntheticSession(tmp, () => {}, { session: 'hosts-1', seconds: 3 }));
    const prefix = `fw${randomBytes(3).toString('hex')}`;
    const first = inProcessWorker(prefix);
    let prep: { durationSeconds: number; pieces: SessionCompositePayload['pieces'] };
    try {
      await first.start();
      await expect.poll(async () => (await status(id)).status, { timeout: 60_000 }).toBe('done');
      const values = await (await first.queue.getJob('finalize.hosts-1'))!.getChildrenValues();
      const clock = SessionClockResultSchema.parse(Object.entries(values).find(([k]) => k.endsWith('.clock'))![1]);
      const tracks = Object.entries(values).filter(([k]) => /\.track\d+$/.test(k)).map(([, v]) => TrackDepacketizeResultSchema.parse(v));
      prep = { durationSeconds: clock.durationSeconds, pieces: tracks.flatMap((t) => t.pieces) };
    } finally {
      await first.close();
    }
    // A second worker with an empty work dir (another host), same queue and storage.
    const otherHost = path.join(tmp, 'other-host');
    const second = inProcessWorker(prefix, { workDir: otherHost });
    try {
      await second.start();
      const payload: SessionCompositePayload = { v: 1, room: 'r', session: id, manifestPath: 'unused-by-this-stage', manifestSha256: '0'.repeat(64), durationSeconds: prep.durationSeconds, pieces: prep.pieces };
      const job = await second.queue.add(SESSION_COMPOSITE_JOB, payload, { jobId: 'recomposite-hosts-1' });
      await expect.poll(async () => (await second.queue.getJob(job.id!))!.getState(), { timeout: 60_000 }).toBe('completed');
      const out = SessionCompositeResultSchema.parse((await second.queue.getJob(job.id!))!.returnvalue);
      const stored = await db.selectFrom('artifacts').select(['key', 'sha256']).where('session_id', '=', id).where('kind', '=', 'composite').execute();
      expect(out.artifacts.map((a) => [a.key, a.sha256])).toEqual(stored.map((a) => [a.key, a.sha256]));
      expect(readdirSync(path.join(otherHost, 'r', id, 'tracks')).sort()).toEqual(prep.pieces.map((x) => path.basename(x.key)).sort());
    } finally {
      await second.close();
    }
  });

  it.skipIf(!pgAvailable)('a worker killed mid-job: another worker finishes it with byte-identical artifacts and no duplicate rows', async () => {
    const manifest = syntheticSession(tmp, () => {}, { session: 'killed-1', seconds: 40 });
    const id = await seal(manifest);
    const prefix = `fw${randomBytes(3).toString('hex')}`;
    const storeDir = path.join(tmp, 'store-kill');
    const entry = fileURLToPath(new URL('../src/process.ts', import.meta.url));
    const start = (): Promise<ChildProcess> =>
      new Promise((resolve, reject) => {
        const child = fork(entry, [], {
          execArgv: ['--import', 'tsx'],
          env: { ...process.env, DATA_DIR: path.join(tmp, 'killdata'), DATABASE_URL: TEST_DATABASE_URL, DATABASE_SCHEMA: schema, REDIS_URL: REDIS, VERBATIM_QUEUE_PREFIX: prefix, STORAGE_DIR: storeDir, TRANSCODE_LOCK_MS: '4000', LOG_LEVEL: 'warn' },
          stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        });
        child.on('message', (m: any) => m?.t === 'ready' && resolve(child));
        child.once('exit', (code) => reject(new Error(`worker exited ${code}`)));
      });
    const first = await start();
    // Killed while a stage job of the flow is running (its lock is then taken over as stalled).
    const queue = new Queue(TRANSCODE_QUEUE, { connection: redisConnection(REDIS), prefix });
    let killedIn = '';
    try {
      await expect
        .poll(
          async () => {
            for (const stage of ['clock', 'track0', 'mux0', 'composite']) {
              if ((await (await queue.getJob(`finalize.killed-1.${stage}`))?.getState()) === 'active') return (killedIn = stage);
            }
            return '';
          },
          { timeout: 60_000, interval: 50 },
        )
        .not.toBe('');
    } finally {
      await queue.close();
    }
    first.kill('SIGKILL');
    expect(killedIn).not.toBe('');
    expect((await status(id)).status).toBe('processing');
    const second = await start();
    try {
      await expect.poll(async () => (await status(id)).status, { timeout: 120_000, interval: 500 }).toBe('done');
      const rows = await db.selectFrom('artifacts').selectAll().where('session_id', '=', id).execute();
      expect(new Set(rows.map((r) => r.key)).size).toBe(rows.length);
      // The same session built again from scratch gives the same bytes.
      const ref = await runSessionPipeline(manifest, path.join(tmp, 'ref-kill'), new FluentFfmpegRunner());
      for (const f of ref.files) {
        const rel = path.relative(path.join(tmp, 'ref-kill'), f.path).split(path.sep).join('/');
        const row = rows.find((r) => r.key === `sessions/r/killed-1/${rel}`)!;
        expect(row, rel).toBeDefined();
        expect(row.sha256, rel).toBe(createHash('sha256').update(readFileSync(f.path)).digest('hex'));
      }
      expect(readdirSync(path.join(storeDir, 'sessions/r/killed-1')).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    } finally {
      second.kill('SIGTERM');
    }
  });
});
