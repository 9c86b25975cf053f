import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type Db } from '../../../db/database.ts';
import { SESSION_FINALIZE_JOB, SessionClockResultSchema, TRANSCODE_QUEUE, finalizeJobId } from '../../lib/contracts/jobs.ts';
import { SessionManifestSchema } from '../../lib/contracts/recording.ts';
import { loadConfig } from '../../lib/config.ts';
import { createLogger } from '../../lib/logger.ts';
import { FluentFfmpegRunner, type FfmpegRunner } from '../../lib/media/ffmpeg-runner.ts';
import { redisConnection } from '../../lib/redis.ts';
import { LocalArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { SessionStore } from '../../recorder/index.ts';
import { TEST_DATABASE_URL, testBackends } from '../../../testing/databases.ts';
import { ffprobe } from '../../../testing/media-fixtures.ts';
import { syntheticSession } from '../../../testing/synthetic-session.ts';
import { CorruptInputError, runSessionPipeline, sessionClock } from '../src/session-pipeline.ts';
import { sessionLimitsFromConfig, type SessionLimits } from '../src/session-limits.ts';
import { TranscodeWorker } from '../src/transcode-worker.ts';

/**
 * Issue 12: hostile or broken input must not blow transcode up. Junk RTP (this track's SSRC
 * and payload type, absurd timestamps) is dropped and the session is processed on the arrival
 * clock with a warning; sessions over the limits, or with no usable media, fail once with a
 * code; ffmpeg dies with its job on shutdown and on lock loss.
 */

const REDIS = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-hostile-'));
const pgAvailable = (await testBackends()).find((b) => b.name === 'postgres')!.available;
let db: Db;
beforeAll(async () => {
  db = pgAvailable ? await openDatabase({ url: TEST_DATABASE_URL, schema: `h_${randomBytes(5).toString('hex')}` }) : await openDatabase({ pgliteDir: path.join(tmp, 'db') });
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

function worker(opts: { prefix?: string; ffmpeg?: FfmpegRunner; limits?: SessionLimits; lockMs?: number; mode?: 'flow' | 'single' } = {}) {
  const prefix = opts.prefix ?? `hi${randomBytes(3).toString('hex')}`;
  return new TranscodeWorker({
    db,
    storage: new LocalArtifactStorage(path.join(tmp, `store-${prefix}`)),
    ffmpeg: opts.ffmpeg ?? new FluentFfmpegRunner(),
    workDir: path.join(tmp, `work-${prefix}`),
    logger: createLogger({ level: 'silent' }),
    transcriber: () => Promise.reject(new Error('no transcription in these sessions')),
    redisUrl: REDIS,
    queuePrefix: prefix,
    concurrency: 2,
    ...(opts.limits ? { limits: opts.limits } : {}),
    ...(opts.lockMs ? { lockMs: opts.lockMs } : {}),
    ...(opts.mode ? { mode: opts.mode } : {}),
  });
}

/** Live (not zombie) ffmpeg processes whose parent is this test process. */
function ffmpegChildren(): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .flatMap((pid) => {
      try {
        const m = /^\d+ \((.*)\) (\S) (\d+)/.exec(readFileSync(`/proc/${pid}/stat`, 'utf8'));
        return m && m[1] === 'ffmpeg' && m[2] !== 'Z' && Number(m[3]) === process.pid ? [Number(pid)] : [];
      } catch {
        return []; // gone while we looked
      }
    });
}

/**
 * The real ffmpeg, except that the composite takes ten minutes: it reads a silent source at
 * its native rate. A real child process that only stopping it can end early.
 */
function slowComposite(): FfmpegRunner {
  const real = new FluentFfmpegRunner();
  return {
    run(job, o) {
      if (!job.output.endsWith('composite.mp4.tmp')) return real.run(job, o);
      return real.run({ inputs: [{ path: 'anullsrc=r=8000:cl=mono', options: ['-re', '-f', 'lavfi', '-t', '600'] }], outputOptions: ['-c:a', 'pcm_s16le', '-f', 'wav'], output: job.output }, o);
    },
  };
}

describe('junk RTP', () => {
  it('~70 junk packets on a track (absurd timestamps, some backwards) and a participant who sent only junk: processed at the real duration, every artifact small, the junk counted and flagged', async () => {
    const manifestPath = syntheticSession(tmp, () => {}, { session: 'junk-1', seconds: 4, junk: 70, junkTrack: true, video: true });
    const id = await seal(manifestPath);
    const w = worker();
    try {
      await w.start();
      await expect.poll(async () => (await status(id)).status, { timeout: 60_000 }).toBe('done');
      // A warning, not a failure: the media that remains is there, and the session says what was dropped.
      const row = await status(id);
      expect(row.error_code).toBe('RTP_CLOCK_MISMATCH');
      expect(row.error_message).toMatch(/^warning: /);
      expect(row.error_message).toContain('track a (participant p): 70 packet(s) with RTP timestamps that disagree with their arrival dropped');
      expect(row.error_message).toMatch(/track j \(participant q\): 200 packet\(s\) .* no packet was usable, the track is left out/);
      // The flag in the clock stage's result.
      const root = (await w.queue.getJob(finalizeJobId(id)))!;
      const clock = SessionClockResultSchema.parse(Object.entries(await root.getChildrenValues()).find(([k]) => k.endsWith('.clock'))![1]);
      expect(clock.anomalies).toEqual([
        { track: 'a', participant: 'p', offClockPackets: 70, outsideArrivalPackets: 0, rejectedSenderReports: 0, dropped: false },
        { track: 'j', participant: 'q', offClockPackets: 200, outsideArrivalPackets: 0, rejectedSenderReports: 0, dropped: true },
      ]);
      expect(clock.participants.map((p) => p.id)).toEqual(['p']);
      // Duration from arrival: the 4 s the packets took, not the hours their timestamps claim.
      expect(Math.abs(clock.durationSeconds - 4)).toBeLessThan(0.5);
      const arts = await db.selectFrom('artifacts').selectAll().where('session_id', '=', id).execute();
      expect(arts.map((a) => `${a.kind}:${a.participant_id ?? ''}`).sort()).toEqual(['composite:', 'participant-av:p', 'participant-wav:p', 'track:p', 'track:p']);
      const store = path.join(tmp, `store-${w.queue.opts.prefix}`);
      for (const a of arts) {
        const bytes = Number(a.bytes);
        if (a.kind === 'participant-wav') {
          // 16 kHz mono s16: 32 kB per second of session, plus the header.
          expect(Math.abs(bytes - clock.durationSeconds * 32_000)).toBeLessThan(2_000);
        } else {
          expect(bytes, a.key).toBeLessThan(200_000);
        }
        const seconds = Number(ffprobe(path.join(store, a.key)).format.duration);
        expect(Math.abs(seconds - 4), a.key).toBeLessThan(0.5);
      }
    } finally {
      await w.close();
    }
  });

  it('the local pipeline gives the same account: junk counted, the junk-only track left out, nothing longer than the meeting', async () => {
    const manifestPath = syntheticSession(tmp, () => {}, { session: 'junk-2', seconds: 3, junk: 70, junkTrack: true });
    const r = await runSessionPipeline(manifestPath, mkdtempSync(path.join(tmp, 'out-')), new FluentFfmpegRunner());
    expect(r.anomalies.map((a) => [a.track, a.offClockPackets, a.dropped])).toEqual([
      ['a', 70, false],
      ['j', 150, true],
    ]);
    expect(new Set(r.pieces.map((p) => p.participant))).toEqual(new Set(['p']));
    expect(Math.abs(r.durationSeconds - 3)).toBeLessThan(0.5);
    for (const p of r.pieces) expect(p.duration).toBeLessThan(3.5);
  });
});

describe('per-session limits and unusable input fail once, with a code on the session', () => {
  it('a session longer than TRANSCODE_MAX_SESSION_HOURS: SESSION_TOO_LARGE from the clock stage, unretried, before any file is written', async () => {
    const manifestPath = syntheticSession(tmp, () => {}, { session: 'long-1', seconds: 6 });
    const id = await seal(manifestPath);
    // 0.001 h = 3.6 s: the 6 s session is over it.
    const limits = sessionLimitsFromConfig(loadConfig({ env: {}, overrides: { TRANSCODE_MAX_SESSION_HOURS: '0.001' } }));
    expect(limits.maxSessionSeconds).toBeCloseTo(3.6, 6);
    const w = worker({ limits });
    try {
      await w.start();
      await expect.poll(async () => (await status(id)).status, { timeout: 60_000 }).toBe('failed');
      const row = await status(id);
      expect(row.error_code).toBe('SESSION_TOO_LARGE');
      expect(row.error_message).toMatch(/TRANSCODE_MAX_SESSION_HOURS/);
      const root = (await w.queue.getJob(finalizeJobId(id)))!;
      await expect.poll(async () => root.getState(), { timeout: 10_000 }).toBe('failed');
      expect((await w.queue.getJob(finalizeJobId(id)))!.attemptsMade).toBe(1);
      const stage = (await w.queue.getJob(`${finalizeJobId(id)}.clock`))!;
      expect(stage.attemptsMade).toBe(1);
      expect(stage.failedReason).toMatch(/^SESSION_TOO_LARGE: /);
      expect(await w.queue.getJob(`${finalizeJobId(id)}.track0`)).toBeUndefined();
      expect(existsSync(path.join(tmp, `work-${w.queue.opts.prefix}`, 'r', id))).toBe(false);
    } finally {
      await w.close();
    }
  });

  it('TRANSCODE_MAX_SESSION_BYTES is checked from the segment sizes before a byte is read; the hint says how to go on', async () => {
    const manifestPath = syntheticSession(tmp, () => {}, { session: 'big-1', seconds: 2 });
    const limits = sessionLimitsFromConfig(loadConfig({ env: {}, overrides: { TRANSCODE_MAX_SESSION_BYTES: '2048' } }));
    const err = await sessionClock(manifestPath, limits).then(
      () => {
        throw new Error('expected SESSION_TOO_LARGE');
      },
      (e: unknown) => e as CorruptInputError,
    );
    expect(err).toBeInstanceOf(CorruptInputError);
    expect(err.errorCode).toBe('SESSION_TOO_LARGE');
    expect(err.message).toMatch(/more than TRANSCODE_MAX_SESSION_BYTES \(2048\)/);
    expect(err.hint).toMatch(/raise TRANSCODE_MAX_SESSION_HOURS \/ TRANSCODE_MAX_SESSION_BYTES/);
    expect(() => loadConfig({ env: { TRANSCODE_MAX_SESSION_HOURS: '-1' } })).toThrow(/TRANSCODE_MAX_SESSION_HOURS/);
    expect(() => loadConfig({ env: { TRANSCODE_MAX_SESSION_BYTES: 'lots' } })).toThrow(/TRANSCODE_MAX_SESSION_BYTES/);
  });

  it('input whose duration came out below zero (every packet junk, its clock running backwards): EMPTY_SESSION once, not 5 retries, not left processing', async () => {
    const manifestPath = syntheticSession(tmp, (_dir, m) => {
      m.tracks = m.tracks.filter((t) => t.track === 'j');
      m.participants = m.participants.filter((p) => p.id === 'q');
    }, { session: 'negative-1', seconds: 3, junkTrack: true });
    const id = await seal(manifestPath);
    const w = worker();
    try {
      await w.start();
      await expect.poll(async () => (await status(id)).status, { timeout: 60_000 }).toBe('failed');
      expect(await status(id)).toMatchObject({ error_code: 'EMPTY_SESSION' });
      const root = (await w.queue.getJob(finalizeJobId(id)))!;
      await expect.poll(async () => root.getState(), { timeout: 10_000 }).toBe('failed');
      expect((await w.queue.getJob(finalizeJobId(id)))!.attemptsMade).toBe(1);
      expect((await w.queue.getJob(`${finalizeJobId(id)}.clock`))!.attemptsMade).toBe(1);
    } finally {
      await w.close();
    }
  });

  it('a finalize that fails for good for any other reason (here: ffmpeg always failing, no retries left) leaves the session failed with a code', async () => {
    const id = await seal(syntheticSession(tmp, () => {}, { session: 'broken-1', seconds: 2 }));
    const broken: FfmpegRunner = { run: (job) => Promise.reject(new Error(`ffmpeg failed for ${job.output}: exit 1`)) };
    const w = worker({ ffmpeg: broken, mode: 'single' });
    try {
      await w.queue.add(SESSION_FINALIZE_JOB, { v: 1, room: 'r', session: id, manifestPath: (await status(id)).manifest_path, manifestSha256: (await status(id)).manifest_sha256 }, { jobId: finalizeJobId(id), attempts: 1 });
      await w.start();
      await expect.poll(async () => (await status(id)).status, { timeout: 60_000 }).toBe('failed');
      expect(await status(id)).toMatchObject({ error_code: 'TRANSCODE_FAILED' });
      expect((await status(id)).error_message).toMatch(/ffmpeg failed/);
    } finally {
      await w.close();
    }
  });
});

describe('ffmpeg dies with its job', () => {
  it('close() during a long composite returns within seconds, leaves no ffmpeg behind and hands the job back unspent; the next worker finishes the session', async () => {
    const id = await seal(syntheticSession(tmp, () => {}, { session: 'shutdown-1', seconds: 2 }));
    const prefix = `hi${randomBytes(3).toString('hex')}`;
    const w = worker({ prefix, ffmpeg: slowComposite() });
    let closed = false;
    try {
      await w.start();
      const compositeId = `${finalizeJobId(id)}.composite`;
      await expect.poll(async () => (await (await w.queue.getJob(compositeId))?.getState()) === 'active' && ffmpegChildren().length === 1, { timeout: 60_000, interval: 100 }).toBe(true);
      const started = Date.now();
      await w.close();
      closed = true;
      expect(Date.now() - started).toBeLessThan(5_000);
      expect(ffmpegChildren()).toEqual([]);
      const queue = new Queue(TRANSCODE_QUEUE, { connection: redisConnection(REDIS), prefix });
      try {
        const job = (await queue.getJob(compositeId))!;
        expect(await job.getState()).toBe('waiting');
        expect(job.attemptsMade).toBe(0);
      } finally {
        await queue.close();
      }
    } finally {
      if (!closed) await w.close();
    }
    const next = worker({ prefix });
    try {
      await next.start();
      await expect.poll(async () => (await status(id)).status, { timeout: 60_000 }).toBe('done');
    } finally {
      await next.close();
    }
  });

  it('a job whose lock is lost has its ffmpeg killed at once (another worker may own the job now)', async () => {
    await seal(syntheticSession(tmp, () => {}, { session: 'locklost-1', seconds: 2 }));
    const w = worker({ ffmpeg: slowComposite(), lockMs: 2000 });
    const redis = new Redis(redisConnection(REDIS));
    try {
      await w.start();
      const compositeId = `${finalizeJobId('locklost-1')}.composite`;
      let pids: number[] = [];
      await expect.poll(async () => (await (await w.queue.getJob(compositeId))?.getState()) === 'active' && (pids = ffmpegChildren()).length === 1, { timeout: 60_000, interval: 100 }).toBe(true);
      const [first] = pids;
      // As if the lock had expired and another worker had taken the job over.
      expect(await redis.del(w.queue.toKey(`${compositeId}:lock`))).toBe(1);
      await expect.poll(() => ffmpegChildren().includes(first!), { timeout: 5_000, interval: 50 }).toBe(false);
    } finally {
      redis.disconnect();
      await w.close();
    }
    expect(ffmpegChildren()).toEqual([]);
  });
});
