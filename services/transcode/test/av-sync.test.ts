import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium } from '../../../testing/browser.ts';
import { audioOnsets, avPairs, flashOnsets, syncClip, syncError } from '../../../testing/media-fixtures.ts';
import { TEST_RECORDER_SECRET, startTestRecorder, type TestRecorder } from '../../../testing/recorder-harness.ts';
import { startTestSfu, type TestSfu } from '../../../testing/sfu-harness.ts';
import { FluentFfmpegRunner } from '../../lib/media/ffmpeg-runner.ts';
import { runSessionPipeline } from '../src/session-pipeline.ts';

let rec: TestRecorder;
let sfu: TestSfu;
let browser: Browser;
beforeAll(async () => {
  rec = await startTestRecorder();
  sfu = await startTestSfu({ overrides: { RECORDER_URL: rec.url, RECORDER_SECRET: TEST_RECORDER_SECRET } });
  const clip = syncClip();
  browser = await launchChromium({ video: clip.video, audio: clip.audio });
});
afterAll(async () => {
  await browser?.close();
  await sfu?.close();
  await rec?.stop();
});

describe('A/V sync', () => {
  it('the output shows the flash-to-beep offset the publisher captured, within 40 ms', async () => {
    await sfu.admin('POST', '/rooms', { id: 'sync-room', flags: { record: true } });
    const { joinUrl } = (await sfu.admin('POST', '/rooms/sync-room/tokens', { identity: 'sync', name: 'Sync' })).body;
    const page = await (await browser.newContext()).newPage();
    await page.goto(joinUrl);
    await page.waitForFunction(() => (window as any).verbatim?.state.phase === 'joined', undefined, { timeout: 30_000 });
    // Ground truth: Chromium opens its fake camera and microphone at slightly different
    // moments, so record what the publishing page itself captured. PCM, not Opus:
    // Chromium's MediaRecorder Opus encoder stamps each 60 ms packet with the capture
    // time of its last 10 ms buffer (AudioTrackOpusEncoder::EncodeAudio), 50 ms late,
    // and writes pre-skip 0 (6.5 ms more; measured together: 57 ms against raw
    // MediaStreamTrackProcessor frames). Its PCM path stamps each buffer's first sample.
    const { b64: localB64, startedAtMs } = await page.evaluate(async () => {
      const stream = (document.getElementById('local-video') as HTMLVideoElement).srcObject as MediaStream;
      const mimeType = 'video/webm;codecs=vp8,pcm';
      if (!MediaRecorder.isTypeSupported(mimeType)) throw new Error(`this Chromium cannot record ${mimeType}`);
      const rec = new MediaRecorder(stream, { mimeType });
      const chunks: Blob[] = [];
      rec.ondataavailable = (e) => chunks.push(e.data);
      const done = new Promise((r) => (rec.onstop = r));
      rec.start(500);
      const startedAtMs = Date.now();
      await new Promise((r) => setTimeout(r, 6500));
      rec.stop();
      await done;
      const buf = new Uint8Array(await new Blob(chunks).arrayBuffer());
      let s = '';
      for (let i = 0; i < buf.length; i += 0x8000) s += String.fromCharCode(...buf.subarray(i, i + 0x8000));
      return { b64: btoa(s), startedAtMs };
    });
    await page.click('#leave');
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-sync-'));
    const local = path.join(tmp, 'local.webm');
    writeFileSync(local, Buffer.from(localB64, 'base64'));
    const truth = avPairs(flashOnsets(local), audioOnsets(local, -30, 0.1));
    expect(truth.length).toBeGreaterThanOrEqual(4);

    const roomDir = path.join(rec.recordingsDir, 'sync-room');
    await expect.poll(() => readdirSync(roomDir).some((s) => readdirSync(path.join(roomDir, s)).includes('manifest.json')), { timeout: 20_000 }).toBe(true);
    const manifest = path.join(roomDir, readdirSync(roomDir)[0]!, 'manifest.json');
    const res = await runSessionPipeline(manifest, path.join(tmp, 'out'), new FluentFfmpegRunner());
    // A real WebRTC recording agrees with its arrival: nothing dropped, every track placed by its sender reports.
    expect(res.anomalies).toEqual([]);
    expect(Object.values(res.syncSource)).toEqual(expect.arrayContaining(['rtcp-sr']));
    const avFile = res.files.find((f) => f.kind === 'participant-av')!;
    const got = avPairs(flashOnsets(avFile.path), audioOnsets(avFile.path, -30, 0.1));
    // Compare flash by flash on the wall clock: the recording starts when the page calls
    // start(); the output's t = 0 is the participant's first piece on the session clock.
    const avStart = res.originUs / 1e6 + Math.min(...res.pieces.filter((p) => p.participant === avFile.participant).map((p) => p.offset));
    const err = syncError(truth, startedAtMs / 1000, got, avStart);
    const ms = (xs: number[]) => xs.map((x) => (x * 1000).toFixed(1)).join(', ');
    console.info(`A/V sync: captured offsets [${ms(truth.map((p) => p.offset))}] ms, output [${ms(got.map((p) => p.offset))}] ms, per-flash error [${ms(err.diffs)}] ms, median ${(err.median * 1000).toFixed(1)} ms`);
    expect(err.diffs.length).toBeGreaterThanOrEqual(4);
    expect(Math.abs(err.median), `median per-flash sync error ${(err.median * 1000).toFixed(1)} ms`).toBeLessThan(0.04);
  });
});
