import dgram from 'node:dgram';
import type { types as ms } from 'mediasoup';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium } from '../../../testing/browser.ts';
import { fakeCameraY4m, speechWav } from '../../../testing/media-fixtures.ts';
import { startTestSfu, type TestSfu } from '../../../testing/sfu-harness.ts';
import { buildRtp } from '../../lib/rtp/rtp-packet.ts';
import { peerQuality } from '../src/quality-monitor.ts';

// Only the fields peerQuality reads, with mediasoup's names and units.
const stat = <T extends ms.ConsumerStat | ms.ProducerStat>(type: 'inbound-rtp' | 'outbound-rtp', fractionLost: number, roundTripTime?: number) => ({ type, fractionLost, ...(roundTripTime !== undefined ? { roundTripTime } : {}) }) as unknown as T;

describe('peerQuality (from mediasoup stream stats)', () => {
  const thresholds = { lossPct: 5, rttMs: 300 };
  it('loss is the worst stream in percent of RTCP fraction lost (x/256); RTT the worst report; each threshold crossed on its own', () => {
    expect(peerQuality([[stat('inbound-rtp', 26)]], [[stat('outbound-rtp', 0, 40), stat('inbound-rtp', 200)]], thresholds)).toMatchObject({ lossUpPct: 10.2, lossDownPct: 0, rttMs: 40, poor: ['loss'] });
    expect(peerQuality([], [[stat('outbound-rtp', 5, 120)], [stat('outbound-rtp', 2, 410)]], thresholds)).toMatchObject({ lossUpPct: 0, lossDownPct: 2, rttMs: 410, poor: ['rtt'] });
    expect(peerQuality([], [[stat('outbound-rtp', 13)]], thresholds)).toMatchObject({ lossDownPct: 5.1, rttMs: null, poor: ['loss'] });
    expect(peerQuality([], [[stat('outbound-rtp', 12, 300)]], thresholds)).toMatchObject({ lossDownPct: 4.7, rttMs: 300, poor: [] });
  });
});

describe('quality monitoring in a running SFU', () => {
  let sfu: TestSfu;
  let browser: Browser;
  const socket = dgram.createSocket('udp4');
  beforeAll(async () => {
    sfu = await startTestSfu({ overrides: { SFU_QUALITY_SAMPLE_MS: 250, SFU_QUALITY_LOSS_PCT: 5, SFU_QUALITY_RTT_MS: 300 } });
    browser = await launchChromium({ video: fakeCameraY4m(), audio: speechWav() });
  });
  afterAll(async () => {
    socket.close();
    await browser?.close();
    await sfu?.close();
  });

  const metrics = async () => (await fetch(`${sfu.url}/metrics`)).text();
  type Q = { lossUpPct: number; lossDownPct: number; rttMs: number | null; poor: string[] } | null;
  const qualityOf = async (room: string, peer: string): Promise<Q> => ((await sfu.admin('GET', `/rooms/${room}/peers`)).body.peers as { id: string; quality: Q }[]).find((p) => p.id === peer)?.quality ?? null;

  it('a sender losing every 5th packet is measured (~20 % up), flagged, logged and counted once; it shows in the room stats and /metrics', { timeout: 60_000 }, async () => {
    await sfu.admin('POST', '/rooms', { id: 'lossy', name: 'Lossy' });
    const ingest = (await sfu.admin('POST', '/rooms/lossy/ingest', { identity: 'cam', name: 'Camera', tracks: [{ kind: 'video', ssrc: 4242, payloadType: 101 }] })).body as { tracks: { ip: string; rtpPort: number }[] };
    const { ip, rtpPort } = ingest.tracks[0]!;
    // 30 packets/s of VP8-shaped RTP for ~4 s; every 5th sequence number never sent.
    const t0 = Date.now();
    for (let seq = 0; Date.now() - t0 < 4000; seq++) {
      if (seq % 5 === 4) continue;
      // VP8 payload descriptor 0x10: start of partition.
      const pkt = buildRtp({ payloadType: 101, seq, timestamp: seq * 3000, ssrc: 4242 }, Buffer.concat([Buffer.from([0x10]), Buffer.alloc(19)]));
      await new Promise<void>((r) => socket.send(pkt, rtpPort, ip, () => r()));
      await new Promise((r) => setTimeout(r, 33));
    }
    const q = (await qualityOf('lossy', 'cam'))!;
    expect(q.lossUpPct).toBeGreaterThan(10);
    expect(q.lossUpPct).toBeLessThan(35);
    expect(q.poor).toEqual(['loss']);
    const stats = (await sfu.admin('GET', '/rooms/lossy/stats')).body as { peers: { id: string; quality: Q }[] };
    expect(stats.peers.find((p) => p.id === 'cam')?.quality?.poor).toEqual(['loss']);
    const text = await metrics();
    expect(text).toMatch(/verbatim_sfu_peer_packet_loss_percent\{room="lossy",peer="cam",direction="up"[^}]*\} (1\d|2\d|3[0-4])(\.\d)?\n/);
    // Counted when it crossed, not on every one of the ~16 samples since.
    expect(text).toMatch(/verbatim_sfu_quality_threshold_crossings_total\{threshold="loss"[^}]*\} 1\n/);
  });

  it('two Chromium participants on a clean link: RTT measured from their receiver reports, no loss, not flagged', { timeout: 60_000 }, async () => {
    await sfu.admin('POST', '/rooms', { id: 'clean', name: 'Clean' });
    const open = async (identity: string): Promise<Page> => {
      const { joinUrl } = (await sfu.admin('POST', '/rooms/clean/tokens', { identity, name: identity })).body as { joinUrl: string };
      const page = await (await browser.newContext()).newPage();
      await page.goto(joinUrl);
      await page.waitForFunction(() => (window as any).verbatim?.state.phase === 'joined', undefined, { timeout: 30_000 });
      return page;
    };
    await open('alice');
    await open('bob');
    await expect.poll(async () => (await qualityOf('clean', 'alice'))?.rttMs ?? null, { timeout: 20_000, interval: 250 }).not.toBeNull();
    for (const who of ['alice', 'bob']) {
      await expect.poll(async () => (await qualityOf('clean', who))?.rttMs ?? null, { timeout: 20_000, interval: 250 }).not.toBeNull();
      const q = (await qualityOf('clean', who))!;
      // Measured (not null); on loopback it can be a few µs.
      expect(q.rttMs).toBeGreaterThanOrEqual(0);
      expect(q.rttMs).toBeLessThan(300);
      expect(q.poor).toEqual([]);
    }
    expect(await metrics()).toMatch(/verbatim_sfu_peer_rtt_ms\{room="clean",peer="alice"[^}]*\} \d/);
    // No crossing added by the clean room.
    expect(await metrics()).toMatch(/verbatim_sfu_quality_threshold_crossings_total\{threshold="loss"[^}]*\} 1\n/);
  });
});
