import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium } from '../../../testing/browser.ts';
import { fakeCameraY4m, speechWav } from '../../../testing/media-fixtures.ts';
import { Bot } from '../../../testing/bots/bot.ts';
import { Fleet, type FleetMember } from '../../../testing/bots/fleet.ts';
import { TestSignalingClient, startTestSfu, type TestSfu } from '../../../testing/sfu-harness.ts';

let sfu: TestSfu;
let browser: Browser;
beforeAll(async () => {
  sfu = await startTestSfu();
  browser = await launchChromium({ video: fakeCameraY4m(), audio: speechWav() });
});
afterAll(async () => {
  await browser?.close();
  await sfu?.close();
});

type MeetingWindow = { verbatim: { state: { phase: string }; inboundStats(): Promise<{ peerId: string; kind: string; packetsReceived: number; framesDecoded: number }[]> } };

/** A meeting page (Chromium) joining at `delayMs` into the storm; resolves once it is joined. */
async function chromiumJoins(identity: string, delayMs: number): Promise<Page> {
  await new Promise((r) => setTimeout(r, delayMs));
  const { joinUrl } = (await sfu.admin('POST', '/rooms/storm/tokens', { identity, name: identity })).body;
  const page = await (await browser.newContext()).newPage();
  await page.goto(joinUrl);
  await page.waitForFunction(() => ['joined', 'error'].includes((window as unknown as MeetingWindow).verbatim?.state.phase), undefined, { timeout: 60_000 });
  return page;
}

const members = (room: string, prefix: string, n: number): Promise<FleetMember[]> =>
  Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const name = `${prefix}-${i}`;
      return { name, token: (await sfu.admin('POST', `/rooms/${room}/tokens`, { identity: name, name })).body.token as string };
    }),
  );

describe('join storm', () => {
  it('200 participants (and 2 browsers) joining within 10 s are all answered; nobody is sent a join or leave fan-out; the list comes on demand', { timeout: 240_000 }, async () => {
    // Default flags: notifyJoining is off, as for any large room.
    await sfu.admin('POST', '/rooms', { id: 'storm', name: 'Storm' });
    const publisher = await Bot.join(sfu.url, (await members('storm', 'speaker', 1))[0]!.token, 'speaker-0', { publish: true, consume: false });
    const watcher = await TestSignalingClient.connect(sfu.url);
    const viewers = new Fleet();
    const joiners = new Fleet();
    try {
      expect((await watcher.request('join', { token: (await members('storm', 'watcher', 1))[0]!.token })).ok).toBe(true);
      // 30 real WebRTC viewers and 170 signaling-only joiners, one join every 50 ms, interleaved: 200 in 10 s.
      const media = await members('storm', 'viewer', 30);
      const plain = await members('storm', 'joiner', 170);
      // Two browsers join in the middle of it, through the meeting page.
      const [, , ...pages] = await Promise.all([
        // The bots watch the speaker bot only (the browsers publish too).
        viewers.join(sfu.url, media, { spreadMs: 333, from: ['speaker-0'] }),
        joiners.join(sfu.url, plain, { spreadMs: 59, consume: false }),
        chromiumJoins('browser-a', 3000),
        chromiumJoins('browser-b', 6000),
      ]);
      expect([...viewers.failed, ...joiners.failed]).toEqual([]);
      expect(viewers.bots.length + joiners.bots.length).toBe(200);
      for (const page of pages) {
        expect(await page.evaluate(() => (window as unknown as MeetingWindow).verbatim.state.phase)).toBe('joined');
        // The speaker bot's Opus and VP8 reach the browser and decode there.
        await expect
          .poll(async () => (await page.evaluate(() => (window as unknown as MeetingWindow).verbatim.inboundStats())).filter((x) => x.peerId === 'speaker-0' && x.packetsReceived > 0 && (x.kind === 'audio' || x.framesDecoded > 0)).map((x) => x.kind).sort(), { timeout: 30_000 })
          .toEqual(['audio', 'video']);
      }

      const listed = await watcher.request('listPeers');
      expect(listed.ok).toBe(true);
      expect(listed.data.peers).toHaveLength(204);
      // No fan-out: neither the early watcher nor a late joiner was told about anyone's join.
      expect(watcher.notifications.filter((n) => n.notification === 'peerJoined' || n.notification === 'peerLeft')).toEqual([]);
      for (const b of [...viewers.bots, ...joiners.bots]) expect(b.sig.notificationCounts.get('peerJoined') ?? 0).toBe(0);

      await expect.poll(() => viewers.report().receiving, { timeout: 30_000, interval: 500 }).toBe(60);
    } finally {
      viewers.close();
      joiners.close();
      publisher.close();
      watcher.close();
    }
  });
});
