import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium } from '../../../testing/browser.ts';
import { fakeCameraY4m, speechWav } from '../../../testing/media-fixtures.ts';
import { startTestSfu, type TestSfu } from '../../../testing/sfu-harness.ts';

/**
 * Large meetings in headless Chromium: simulcast layers follow the viewer's tile size, an
 * all-hands viewer is promoted by a host, and last-N video follows the dominant speaker.
 * The camera is 960x540 (Chromium sends three simulcast layers from that size up): 240x135, 480x270, 960x540.
 */
let sfu: TestSfu;
let browser: Browser;
beforeAll(async () => {
  sfu = await startTestSfu();
  browser = await launchChromium({ video: fakeCameraY4m(4, '960x540'), audio: speechWav() });
});
afterAll(async () => {
  await browser?.close();
  await sfu?.close();
});

async function openMeeting(room: string, identity: string, role?: 'host'): Promise<Page> {
  const { joinUrl } = (await sfu.admin('POST', `/rooms/${room}/tokens`, { identity, name: identity.toUpperCase(), ...(role ? { role } : {}) })).body;
  const page = await (await browser.newContext()).newPage();
  page.on('pageerror', (e) => console.error(`[${identity}] page error`, e));
  await page.goto(joinUrl);
  await page.waitForFunction(() => (window as any).verbatim?.state.phase === 'joined', undefined, { timeout: 60_000 });
  return page;
}

type ConsumerStats = { kind: string; producerPeerId: string; paused: boolean; currentLayers: { spatialLayer: number } | null };
/** The viewer's video consumers as the SFU sees them (admin stats). */
async function videoConsumers(room: string, viewer: string): Promise<ConsumerStats[]> {
  const res = await sfu.admin('GET', `/rooms/${room}/stats`);
  const peer = (res.body.peers as { id: string; consumers: ConsumerStats[] }[]).find((p) => p.id === viewer);
  return (peer?.consumers ?? []).filter((c) => c.kind === 'video');
}
const spatialLayer = async (room: string, viewer: string, from: string) => (await videoConsumers(room, viewer)).find((c) => c.producerPeerId === from)?.currentLayers?.spatialLayer ?? null;
/**
 * The highest spatial layer the publisher sends now: Chromium sends fewer simulcast layers than
 * asked when its bandwidth estimate or CPU adaptation says so (and never 3 below 960x540).
 */
async function topLayer(room: string, from: string): Promise<number> {
  const res = await sfu.admin('GET', `/rooms/${room}/stats`);
  const producer = (res.body.peers as { id: string; producers: { kind: string; stats: { rid?: string; bitrate: number }[] }[] }[]).find((p) => p.id === from)?.producers.find((p) => p.kind === 'video');
  return Math.max(-1, ...(producer?.stats ?? []).filter((s) => s.bitrate > 0 && s.rid).map((s) => Number(s.rid!.replace(/\D/g, ''))));
}
/** Whether the viewer now gets the publisher's highest layer being sent (at least layer 1). */
const getsTop = async (room: string, viewer: string, from: string) => {
  const [top, current] = await Promise.all([topLayer(room, from), spatialLayer(room, viewer, from)]);
  return top >= 1 && current === top;
};
const frameWidth = async (page: Page, from: string) =>
  ((await page.evaluate(() => (window as any).verbatim.inboundStats())) as { peerId: string; kind: string; frameWidth: number }[]).find((s) => s.peerId === from && s.kind === 'video')?.frameWidth ?? 0;
const setTileWidth = (page: Page, peer: string, width: string) =>
  page.evaluate(([p, w]) => (document.querySelector(`#remotes [data-peer="${p}"]`) as HTMLElement).style.setProperty('width', w!), [peer, width]);

describe('large meetings in headless Chromium', () => {
  it('simulcast: the layer a viewer gets follows its tile size; an all-hands viewer is promoted by a host and then publishes', async () => {
    const room = 'simulcast-room';
    await sfu.admin('POST', '/rooms', { id: room, flags: { mode: 'allhands', speakers: [] } });
    const host = await openMeeting(room, 'host', 'host');
    const viewer = await openMeeting(room, 'viewer');
    expect(await viewer.evaluate(() => (window as any).verbatim.largeState.role)).toBe('viewer');
    await expect.poll(() => videoConsumers(room, 'viewer').then((c) => c.length), { timeout: 30_000 }).toBe(1);

    // A big tile (960 CSS px tall) wants the top layer; a thumbnail the lowest; then big again.
    await setTileWidth(viewer, 'host', '1280px');
    await expect.poll(() => getsTop(room, 'viewer', 'host'), { timeout: 60_000 }).toBe(true);
    const bigWidth = () => frameWidth(viewer, 'host').then((w) => w > 240);
    await expect.poll(bigWidth, { timeout: 30_000 }).toBe(true);
    await setTileWidth(viewer, 'host', '100px');
    await expect.poll(() => spatialLayer(room, 'viewer', 'host'), { timeout: 30_000 }).toBe(0);
    // Layer 0 is a quarter of the camera's 960 px width.
    await expect.poll(() => frameWidth(viewer, 'host'), { timeout: 30_000 }).toBeLessThanOrEqual(240);
    await setTileWidth(viewer, 'host', '1280px');
    await expect.poll(() => getsTop(room, 'viewer', 'host'), { timeout: 60_000 }).toBe(true);
    await expect.poll(bigWidth, { timeout: 30_000 }).toBe(true);

    // All-hands: the viewer raises a hand, the host sees it and promotes, the viewer publishes.
    await viewer.getByRole('button', { name: 'Raise hand' }).click();
    await host.getByRole('button', { name: 'Promote VIEWER' }).click();
    await expect.poll(() => viewer.evaluate(() => Object.keys((window as any).verbatim.state.producers).sort()), { timeout: 30_000 }).toEqual(['audio', 'video']);
    await expect.poll(() => viewer.getByRole('button', { name: 'Raise hand' }).isVisible()).toBe(false);
    await expect.poll(() => videoConsumers(room, 'host').then((c) => c.map((x) => x.producerPeerId)), { timeout: 30_000 }).toEqual(['viewer']);
    await Promise.all([host, viewer].map((p) => p.context().close()));
  }, 240_000);

  it('last-N = 1: the viewer gets the video of the dominant speaker only, as two speakers take turns', async () => {
    const room = 'lastn-room';
    await sfu.admin('POST', '/rooms', { id: room, flags: { mode: 'allhands', speakers: ['sa', 'sb'], lastN: 1 } });
    const sa = await openMeeting(room, 'sa');
    const sb = await openMeeting(room, 'sb');
    const viewer = await openMeeting(room, 'v');
    await expect.poll(() => videoConsumers(room, 'v').then((c) => c.length), { timeout: 30_000 }).toBe(2);
    /** Whose video the SFU forwards to the viewer (its unpaused video consumers). */
    const forwarded = async () => (await videoConsumers(room, 'v')).filter((c) => !c.paused).map((c) => c.producerPeerId);

    // Both speak the same espeak-ng sentence; muting one leaves the other the only voice.
    const turn = async (speaking: Page, silent: Page, who: string) => {
      if ((await silent.locator('#mute').textContent()) === 'Mute') await silent.click('#mute');
      if ((await speaking.locator('#mute').textContent()) === 'Unmute') await speaking.click('#mute');
      await expect.poll(() => viewer.evaluate(() => (window as any).verbatim.largeState.activeSpeaker), { timeout: 30_000 }).toBe(who);
      await expect.poll(forwarded, { timeout: 20_000 }).toEqual([who]);
      await expect.poll(() => viewer.locator('#active-speaker').textContent()).toBe(`Speaking: ${who.toUpperCase()}`);
      // The page receives frames of that speaker's video.
      const decoded = () => viewer.evaluate((p) => (window as any).verbatim.inboundStats().then((s: any[]) => s.find((x) => x.peerId === p && x.kind === 'video')?.framesDecoded ?? 0), who);
      const before = await decoded();
      await expect.poll(decoded, { timeout: 20_000 }).toBeGreaterThan(before);
    };
    await turn(sb, sa, 'sb');
    await turn(sa, sb, 'sa');
    await turn(sb, sa, 'sb');
    await Promise.all([sa, sb, viewer].map((p) => p.context().close()));
  }, 240_000);
});
