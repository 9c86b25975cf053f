import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SessionManifestSchema } from '../../lib/contracts/recording.ts';
import { RecordType, parseRecording } from '../../lib/recording/vrtp-format.ts';
import { parseRtp, rtpPayload } from '../../lib/rtp/index.ts';
import { launchChromium } from '../../../testing/browser.ts';
import { fakeCameraY4m, speechWav } from '../../../testing/media-fixtures.ts';
import { TEST_RECORDER_SECRET, startTestRecorder, type TestRecorder } from '../../../testing/recorder-harness.ts';
import { startTestSfu, type TestSfu } from '../../../testing/sfu-harness.ts';

/** A simulcast camera (960x540: Chromium sends three layers) is recorded in its top layer, whatever the viewers get. */
let rec: TestRecorder;
let sfu: TestSfu;
let browser: Browser;
beforeAll(async () => {
  rec = await startTestRecorder();
  sfu = await startTestSfu({ overrides: { RECORDER_URL: rec.url, RECORDER_SECRET: TEST_RECORDER_SECRET } });
  browser = await launchChromium({ video: fakeCameraY4m(4, '960x540'), audio: speechWav() });
});
afterAll(async () => {
  await browser?.close();
  await sfu?.close();
  await rec?.stop();
});

/** Width of a VP8 keyframe carried by this RTP payload (RFC 7741 descriptor, then RFC 6386 frame header); null otherwise. */
function vp8KeyframeWidth(payload: Buffer): number | null {
  let off = 1;
  const first = payload[0]!;
  if ((first & 0x10) === 0 || (first & 0x0f) !== 0) return null; // not the start of partition 0
  if (first & 0x80) {
    const x = payload[off++]!;
    if (x & 0x80) off += payload[off]! & 0x80 ? 2 : 1; // picture id, 7 or 15 bits
    if (x & 0x40) off += 1; // TL0PICIDX
    if (x & 0x30) off += 1; // TID / KEYIDX
  }
  const frame = payload.subarray(off);
  if (frame.length < 10 || (frame[0]! & 0x01) !== 0) return null; // inter frame
  if (frame[3] !== 0x9d || frame[4] !== 0x01 || frame[5] !== 0x2a) return null;
  return frame.readUInt16LE(6) & 0x3fff;
}

describe('recording a simulcast camera', () => {
  it('the recording tap takes the highest layer: keyframes reach the recorder at the camera\'s full 960 px width', async () => {
    await sfu.admin('POST', '/rooms', { id: 'sim-rec', flags: { record: true } });
    const { joinUrl } = (await sfu.admin('POST', '/rooms/sim-rec/tokens', { identity: 'ann', name: 'Ann' })).body;
    const page = await (await browser.newContext()).newPage();
    await page.goto(joinUrl);
    await page.waitForFunction(() => (window as any).verbatim?.state.phase === 'joined', undefined, { timeout: 60_000 });
    // Until Chromium sends the top layer (its bandwidth estimate ramps up), then a little more for the tap to switch to it.
    const topSent = async () => {
      const peers = (await sfu.admin('GET', '/rooms/sim-rec/stats')).body.peers as { producers: { kind: string; stats: { rid?: string; bitrate: number }[] }[] }[];
      return peers[0]?.producers.find((p) => p.kind === 'video')?.stats.some((s) => s.rid === 'r2' && s.bitrate > 0) ?? false;
    };
    await expect.poll(topSent, { timeout: 60_000 }).toBe(true);
    await new Promise((r) => setTimeout(r, 3000));
    await page.click('#leave');

    const dir = path.join(rec.recordingsDir, 'sim-rec');
    let sessionDir = '';
    await expect
      .poll(() => {
        sessionDir = readdirSync(dir).map((s) => path.join(dir, s)).find((d) => readdirSync(d).includes('manifest.json')) ?? '';
        return sessionDir !== '';
      }, { timeout: 20_000 })
      .toBe(true);
    const manifest = SessionManifestSchema.parse(JSON.parse(readFileSync(path.join(sessionDir, 'manifest.json'), 'utf8')));
    const video = manifest.tracks.find((t) => t.kind === 'video')!;
    // The tap asks for no bandwidth-estimation extensions: the recorder sends no feedback for them.
    expect(manifest.tracks.flatMap((t) => t.headerExtensions.map((h) => h.uri)).filter((u) => /transport-wide-cc|abs-send-time/.test(u))).toEqual([]);
    const widths: number[] = [];
    for (const segment of video.segments) {
      for (const r of parseRecording(readFileSync(path.join(sessionDir, segment.file))).records) {
        const info = r.type === RecordType.RTP ? parseRtp(r.data) : null;
        const width = info ? vp8KeyframeWidth(rtpPayload(r.data, info)) : null;
        if (width !== null) widths.push(width);
      }
    }
    expect(widths.length).toBeGreaterThan(0);
    expect(widths.at(-1), `keyframe widths in order: ${widths.join(', ')}`).toBe(960);
  }, 180_000);
});
