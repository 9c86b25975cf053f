import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Bot } from '../../../testing/bots/bot.ts';
import { Fleet } from '../../../testing/bots/fleet.ts';
import { startTestSfu, type TestSfu } from '../../../testing/sfu-harness.ts';

/**
 * A room over every core: with SFU_WORKERS=2 and a router that takes 8 consumers, the third
 * viewer of a room with 4 producers no longer fits the origin router, so the room spans the
 * other worker (its producers piped there) and viewers are spread over both; a producer added
 * later is piped to both, and the next viewer goes to the less loaded router (the spanned one);
 * closing the room closes both routers.
 */
let sfu: TestSfu;
beforeAll(async () => {
  sfu = await startTestSfu({ overrides: { SFU_WORKERS: 2, SFU_ROOM_WORKER_CONSUMERS: 8 } });
});
afterAll(async () => {
  await sfu?.close();
});

const token = async (room: string, identity: string) => (await sfu.admin('POST', `/rooms/${room}/tokens`, { identity, name: identity })).body.token as string;

interface RouterSummary {
  routerId: string;
  workerPid: number;
  origin: boolean;
  viewers: string[];
  consumers: number;
}

describe('a room over every core', () => {
  it('spans both workers: viewers on both, media flowing to viewers on both, a late producer piped to both', { timeout: 120_000 }, async () => {
    await sfu.admin('POST', '/rooms', { id: 'wide', name: 'Wide' });
    const publishers = [await Bot.join(sfu.url, await token('wide', 'pub-a'), 'pub-a', { publish: true, consume: false }), await Bot.join(sfu.url, await token('wide', 'pub-b'), 'pub-b', { publish: true, consume: false })];
    const fleet = new Fleet();
    const late: Bot[] = [];
    try {
      const members = await Promise.all(Array.from({ length: 3 }, async (_, i) => ({ name: `viewer-${i}`, token: await token('wide', `viewer-${i}`) })));
      await fleet.join(sfu.url, members, { spreadMs: 50 });
      expect(fleet.failed).toEqual([]);

      const stats = (await sfu.admin('GET', '/rooms/wide/stats')).body as { routers: RouterSummary[] };
      const pids = sfu.running.sfu.pool.pids();
      expect(pids).toHaveLength(2);
      // One router per worker, the origin first; every viewer is on one of them, both have viewers.
      expect(stats.routers.map((r) => r.workerPid).sort()).toEqual([...pids].sort());
      expect(stats.routers[0]!.origin).toBe(true);
      for (const r of stats.routers) expect(r.viewers.length, `viewers on worker ${r.workerPid}`).toBeGreaterThan(0);
      expect(stats.routers.flatMap((r) => r.viewers).sort()).toEqual(members.map((m) => m.name).sort());
      // The origin router holds no more than its share (8 consumers = 2 viewers of 4 producers).
      expect(stats.routers[0]!.consumers).toBeLessThanOrEqual(8);

      // Media reaches every consumer of every viewer, on both workers (video from the next keyframe).
      await expect.poll(() => fleet.report().receiving, { timeout: 30_000, interval: 500 }).toBe(3 * 4);
      fleet.resetCounters();
      await new Promise((r) => setTimeout(r, 1500));
      const byViewer = new Map(fleet.bots.map((b) => [b.name, b.received()]));
      for (const r of stats.routers) {
        for (const v of r.viewers) {
          const got = byViewer.get(v)!;
          const audio = got.filter((c) => c.kind === 'audio');
          expect(audio, `${v} on worker ${r.workerPid}`).toHaveLength(2);
          for (const c of audio) {
            expect(c.packets, `${v} (worker ${r.workerPid}) audio packets in 1.5 s`).toBeGreaterThan(30);
            expect(c.bytes).toBeGreaterThan(c.packets * 12);
          }
        }
      }

      // A publisher who comes later is piped to both routers: a viewer placed on the spanned router receives it.
      const pubC = await Bot.join(sfu.url, await token('wide', 'pub-c'), 'pub-c', { publish: true, consume: false });
      late.push(pubC);
      const onSpanned = stats.routers.find((r) => !r.origin)!.viewers[0]!;
      const v = await Bot.join(sfu.url, await token('wide', 'late-viewer'), 'late-viewer', { from: ['pub-c'] });
      late.push(v);
      const after = (await sfu.admin('GET', '/rooms/wide/stats')).body as { routers: RouterSummary[] };
      const lateOn = after.routers.find((r) => r.viewers.includes('late-viewer'))!;
      expect(lateOn.origin, 'the origin router is the more loaded one: the late viewer goes to the spanned one').toBe(false);
      expect(lateOn.viewers).toContain(onSpanned);
      await expect.poll(() => v.received().filter((c) => c.packets > 0).length, { timeout: 15_000, interval: 250 }).toBe(2);

      // Closing the room closes every router it spans.
      const metric = async () => /^verbatim_sfu_spanned_routers(?:\{[^}]*\})? (\d+)$/m.exec(await (await fetch(`${sfu.url}/metrics`)).text())?.[1];
      expect(await metric()).toBe('1');
      const routers = sfu.running.sfu.rooms.get('wide')!.routers.map((r) => r.router);
      expect(routers).toHaveLength(2);
      expect((await sfu.admin('DELETE', '/rooms/wide')).status).toBe(204);
      for (const r of routers) expect(r.closed).toBe(true);
      expect(await metric()).toBe('0');
    } finally {
      fleet.close();
      for (const b of [...publishers, ...late]) b.close();
    }
  });
});
