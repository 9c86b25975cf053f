import { spawn, type ChildProcess } from 'node:child_process';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium } from '../../../testing/browser.ts';
import { startTestSfu, type TestSfu } from '../../../testing/sfu-harness.ts';

let sfu: TestSfu;
let browser: Browser;
let ffmpeg: ChildProcess | undefined;
beforeAll(async () => {
  sfu = await startTestSfu();
  browser = await launchChromium();
});
afterAll(async () => {
  ffmpeg?.kill('SIGKILL');
  await browser?.close();
  await sfu?.close();
});

describe('PlainTransport ingest', () => {
  it('an ffmpeg Opus + VP8 RTP publisher reaches a browser participant', async () => {
    await sfu.admin('POST', '/rooms', { id: 'ingest-room' });
    const res = await sfu.admin('POST', '/rooms/ingest-room/ingest', {
      identity: 'ffmpeg',
      name: 'FFmpeg source',
      tracks: [
        { kind: 'audio', ssrc: 11111111, payloadType: 100 },
        { kind: 'video', ssrc: 22222222, payloadType: 101 },
      ],
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    const [audio, video] = res.body.tracks as { ip: string; rtpPort: number; rtcpPort: number }[];
    expect(audio!.rtcpPort).not.toBe(audio!.rtpPort);

    // ffmpeg sends RTCP from its own socket: separate RTP/RTCP ports (rtcpMux off).
    ffmpeg = spawn('ffmpeg', [
      '-v', 'error', '-re',
      '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
      '-f', 'lavfi', '-i', 'testsrc2=size=320x240:rate=15',
      '-t', '20',
      '-map', '0:a', '-c:a', 'libopus', '-ac', '2', '-ar', '48000', '-b:a', '64k', '-payload_type', '100', '-ssrc', '11111111',
      '-f', 'rtp', `rtp://${audio!.ip}:${audio!.rtpPort}?rtcpport=${audio!.rtcpPort}&pkt_size=1200`,
      '-map', '1:v', '-c:v', 'libvpx', '-deadline', 'realtime', '-cpu-used', '8', '-b:v', '300k', '-g', '15', '-payload_type', '101', '-ssrc', '22222222',
      '-f', 'rtp', `rtp://${video!.ip}:${video!.rtpPort}?rtcpport=${video!.rtcpPort}&pkt_size=1200`,
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    ffmpeg.stderr!.on('data', (d) => (stderr += d));

    await expect
      .poll(async () => {
        const stats = (await sfu.admin('GET', '/rooms/ingest-room/stats')).body;
        const producers = stats.peers.find((p: { id: string }) => p.id === 'ffmpeg').producers;
        return producers.map((p: { kind: string; stats: { packetCount: number }[] }) => `${p.kind}:${(p.stats[0]?.packetCount ?? 0) > 0}`).sort();
      }, { timeout: 15_000, message: `ffmpeg stderr: ${stderr}` })
      .toEqual(['audio:true', 'video:true']);

    const { joinUrl } = (await sfu.admin('POST', '/rooms/ingest-room/tokens', { identity: 'viewer', name: 'Viewer' })).body;
    const page = await (await browser.newContext()).newPage();
    await page.goto(joinUrl);
    await expect
      .poll(async () => {
        const s = (await page.evaluate(() => (window as any).verbatim?.inboundStats() ?? [])) as { peerId: string; kind: string; packetsReceived: number; framesDecoded: number }[];
        const v = s.find((x) => x.peerId === 'ffmpeg' && x.kind === 'video');
        const a = s.find((x) => x.peerId === 'ffmpeg' && x.kind === 'audio');
        return (v?.framesDecoded ?? 0) > 5 && (a?.packetsReceived ?? 0) > 10;
      }, { timeout: 20_000 })
      .toBe(true);
  });
});
