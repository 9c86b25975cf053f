import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Bot } from '../../../testing/bots/bot.ts';
import { Fleet, type FleetMember } from '../../../testing/bots/fleet.ts';
import { TestSignalingClient, startTestSfu, type TestSfu } from '../../../testing/sfu-harness.ts';

let sfu: TestSfu;
beforeAll(async () => {
  sfu = await startTestSfu();
});
afterAll(async () => {
  await sfu?.close();
});

const members = (room: string, prefix: string, n: number): Promise<FleetMember[]> =>
  Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const name = `${prefix}-${i}`;
      return { name, token: (await sfu.admin('POST', `/rooms/${room}/tokens`, { identity: name, name })).body.token as string };
    }),
  );

describe('join storm', () => {
  it('200 participants joining within 10 s are all answered; nobody is sent a join or leave fan-out; the list comes on demand', { timeout: 240_000 }, async () => {
    // Default flags: notifyJoining is off, as for any large room.
    await sfu.admin('POST', '/rooms', { id: 'storm', name: 'Storm' });
    const publisher = await Bot.join(sfu.url, (await members('storm', 'speaker', 1))[0]!.token, 'speaker', { publish: true, consume: false });
    const watcher = await TestSignalingClient.connect(sfu.url);
    const viewers = new Fleet();
    const joiners = new Fleet();
    try {
      expect((await watcher.request('join', { token: (await members('storm', 'watcher', 1))[0]!.token })).ok).toBe(true);
      // 30 real WebRTC viewers and 170 signaling-only joiners, one join every 50 ms, interleaved: 200 in 10 s.
      const media = await members('storm', 'viewer', 30);
      const plain = await members('storm', 'joiner', 170);
      await Promise.all([viewers.join(sfu.url, media, { spreadMs: 333 }), joiners.join(sfu.url, plain, { spreadMs: 59, consume: false })]);
      expect([...viewers.failed, ...joiners.failed]).toEqual([]);
      expect(viewers.bots.length + joiners.bots.length).toBe(200);

      const listed = await watcher.request('listPeers');
      expect(listed.ok).toBe(true);
      expect(listed.data.peers).toHaveLength(202);
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
