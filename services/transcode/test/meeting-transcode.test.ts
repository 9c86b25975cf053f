import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../db/database.ts';
import { SessionManifestSchema } from '../../lib/contracts/recording.ts';
import { createLogger } from '../../lib/logger.ts';
import { launchChromium } from '../../../testing/browser.ts';
import { audioOnsets, fakeCameraY4m, ffprobe, silenceWav, toneWav } from '../../../testing/media-fixtures.ts';
import { TEST_RECORDER_SECRET, startTestRecorder, type TestRecorder } from '../../../testing/recorder-harness.ts';
import { startTestSfu, type TestSfu } from '../../../testing/sfu-harness.ts';
import { FluentFfmpegRunner } from '../../lib/media/ffmpeg-runner.ts';
import { runSessionPipeline } from '../src/session-pipeline.ts';
import { LocalArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { TranscodeWorker } from '../src/transcode-worker.ts';

let rec: TestRecorder;
let sfu: TestSfu;
const browsers: Browser[] = [];
beforeAll(async () => {
  rec = await startTestRecorder();
  sfu = await startTestSfu({ overrides: { RECORDER_URL: rec.url, RECORDER_SECRET: TEST_RECORDER_SECRET } });
});
afterAll(async () => {
  for (const b of browsers) await b.close();
  await sfu?.close();
  await rec?.stop();
});

async function join(audio: string, identity: string): Promise<Page> {
  const browser = await launchChromium({ video: fakeCameraY4m(), audio });
  browsers.push(browser);
  const { joinUrl } = (await sfu.admin('POST', '/rooms/late-room/tokens', { identity, name: identity.toUpperCase() })).body;
  const page = await (await browser.newContext()).newPage();
  await page.goto(joinUrl);
  await page.waitForFunction(() => (window as any).verbatim?.state.phase === 'joined', undefined, { timeout: 30_000 });
  return page;
}

describe('transcode: a recorded two-person meeting with a late joiner', () => {
  it('produces per-participant files, 16 kHz WAVs and a composite where the late joiner starts at the right offset', async () => {
    await sfu.admin('POST', '/rooms', { id: 'late-room', flags: { record: true } });
    // First participant is silent, the late joiner a 1 kHz tone: its onset in the mix is measurable.
    const first = await join(silenceWav(), 'first');
    await new Promise((r) => setTimeout(r, 10_000));
    const late = await join(toneWav(), 'late');
    await new Promise((r) => setTimeout(r, 4000));
    await late.click('#leave');
    await first.click('#leave');

    const roomDir = path.join(rec.recordingsDir, 'late-room');
    await expect.poll(() => readdirSync(roomDir).some((s) => readdirSync(path.join(roomDir, s)).includes('manifest.json')), { timeout: 20_000 }).toBe(true);
    const sessionDir = path.join(roomDir, readdirSync(roomDir)[0]!);
    const manifest = SessionManifestSchema.parse(JSON.parse(readFileSync(path.join(sessionDir, 'manifest.json'), 'utf8')));
    // The recorder's own database may be an exclusive PGlite: stop it before the worker opens it.
    await rec.stop();

    const db: Db = await rec.openDb();
    const storageDir = mkdtempSync(path.join(os.tmpdir(), 'verbatim-artifacts-'));
    const worker = new TranscodeWorker({
      db,
      storage: new LocalArtifactStorage(storageDir),
      ffmpeg: new FluentFfmpegRunner(),
      workDir: mkdtempSync(path.join(os.tmpdir(), 'verbatim-work-')),
      logger: createLogger({ level: 'warn' }),
      transcriber: async () => {
        throw new Error('transcription is not requested in this room');
      },
      redisUrl: rec.redisUrl,
      queuePrefix: rec.queuePrefix,
      concurrency: 1,
    });
    try {
      await worker.start();
      await expect.poll(async () => (await db.selectFrom('recording_sessions').select('status').where('id', '=', manifest.session).executeTakeFirst())?.status, { timeout: 120_000, interval: 500 }).toBe('done');
      // A real meeting agrees with its arrival: no packet dropped for its RTP clock, no warning on the session.
      expect((await db.selectFrom('recording_sessions').select('error_code').where('id', '=', manifest.session).executeTakeFirstOrThrow()).error_code).toBeNull();
      const artifacts = await db.selectFrom('artifacts').selectAll().where('session_id', '=', manifest.session).execute();
      const byKind = (k: string) => artifacts.filter((a) => a.kind === k);
      expect(byKind('participant-av')).toHaveLength(2);
      expect(byKind('participant-wav')).toHaveLength(2);
      expect(byKind('composite')).toHaveLength(1);
      const local = (key: string) => path.join(storageDir, key);

      // Wall-clock span of the session from the manifest: first sample to last sample.
      const composite = byKind('composite')[0]!;
      const probe = ffprobe(local(composite.key));
      expect(probe.streams.map((s) => `${s.codec_type}:${s.codec_name}`).sort()).toEqual(['audio:aac', 'video:h264']);
      // Segments that received no packet (a track stopped as it started) have no arrivals and no media.
      const segs = manifest.tracks.flatMap((t) => t.segments).filter((s) => typeof s.firstArrivalUs === 'number' && typeof s.lastArrivalUs === 'number');
      const wallSpan = (Math.max(...segs.map((s) => s.lastArrivalUs!)) - Math.min(...segs.map((s) => s.firstArrivalUs!))) / 1e6;
      expect(Math.abs(Number(probe.format.duration) - wallSpan), `composite ${probe.format.duration}s vs wall clock ${wallSpan}s`).toBeLessThan(0.15);

      for (const wav of byKind('participant-wav')) {
        const p = ffprobe(local(wav.key));
        expect(p.streams[0]).toMatchObject({ codec_name: 'pcm_s16le', sample_rate: '16000', channels: 1 });
        expect(Math.abs(Number(p.format.duration) - Number(probe.format.duration))).toBeLessThan(0.1);
      }
      for (const av of byKind('participant-av')) {
        const p = ffprobe(local(av.key));
        expect(p.streams.map((s) => s.codec_name).sort()).toEqual(['opus', 'vp8']);
      }

      // Where the late joiner belongs: its offset on the session clock (RTCP sender
      // reports), which must agree with when its packets reached the recorder...
      const plan = await runSessionPipeline(path.join(sessionDir, 'manifest.json'), mkdtempSync(path.join(os.tmpdir(), 'verbatim-plan-')), new FluentFfmpegRunner());
      const lateOffset = plan.pieces.find((p) => p.participant === 'late' && p.kind === 'audio')!.offset;
      const lateAudio = manifest.tracks.find((t) => t.participant === 'late' && t.kind === 'audio')!.segments[0]!;
      const arrivalOffset = (lateAudio.firstArrivalUs! - Math.min(...segs.map((s) => s.firstArrivalUs!))) / 1e6;
      expect(arrivalOffset).toBeGreaterThan(10);
      expect(Math.abs(lateOffset - arrivalOffset), `clock offset ${lateOffset}s vs arrival offset ${arrivalOffset}s`).toBeLessThan(0.25);
      // ...and the composite really starts its audio there (measured in the encoded mix).
      const onsets = audioOnsets(local(composite.key));
      expect(onsets.length).toBeGreaterThan(0);
      expect(Math.abs(onsets[0]! - lateOffset), `tone onset ${onsets[0]}s vs late joiner offset ${lateOffset}s`).toBeLessThan(0.1);

      // Idempotent: run the same job again → byte-identical artifacts, no duplicate rows.
      const before = new Map(artifacts.map((a) => [a.key, a.sha256]));
      const job = await worker.queue.getJob(`finalize.${manifest.session}`);
      await job!.retry('completed');
      await expect.poll(async () => (await worker.queue.getJob(`finalize.${manifest.session}`))?.finishedOn !== job!.finishedOn, { timeout: 120_000, interval: 500 }).toBe(true);
      await expect.poll(async () => (await db.selectFrom('recording_sessions').select('status').where('id', '=', manifest.session).executeTakeFirst())?.status, { timeout: 60_000 }).toBe('done');
      const after = await db.selectFrom('artifacts').selectAll().where('session_id', '=', manifest.session).execute();
      expect(after).toHaveLength(artifacts.length);
      for (const a of after) expect(a.sha256, a.key).toBe(before.get(a.key));
    } finally {
      await worker.close();
      await db.destroy();
    }
  });
});
