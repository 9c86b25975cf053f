import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestSfu, type TestSfu } from '../sfu-harness.ts';
import { Bot } from './bot.ts';
import { Fleet } from './fleet.ts';

let sfu: TestSfu;
beforeAll(async () => {
  sfu = await startTestSfu();
});
afterAll(async () => {
  await sfu?.close();
});

const token = async (room: string, identity: string) => (await sfu.admin('POST', `/rooms/${room}/tokens`, { identity, name: identity })).body.token as string;

describe('WebRTC bots (libdatachannel) against the SFU', () => {
  it('30 receive-only bots get real Opus and VP8 from 2 publishing bots on every consumer', { timeout: 180_000 }, async () => {
    await sfu.admin('POST', '/rooms', { id: 'bots', name: 'Bots' });
    const publishers = [await Bot.join(sfu.url, await token('bots', 'pub-a'), 'pub-a', { publish: true, consume: false }), await Bot.join(sfu.url, await token('bots', 'pub-b'), 'pub-b', { publish: true, consume: false })];
    const fleet = new Fleet();
    try {
      const members = await Promise.all(Array.from({ length: 30 }, async (_, i) => ({ name: `viewer-${i}`, token: await token('bots', `viewer-${i}`) })));
      await fleet.join(sfu.url, members, { spreadMs: 20 });
      expect(fleet.failed).toEqual([]);
      // Every viewer consumes both publishers' audio and video; video starts at the next keyframe (every 2 s).
      await expect.poll(() => fleet.report().receiving, { timeout: 30_000, interval: 500 }).toBe(30 * 4);
      const report = fleet.report();
      expect(report.consumers).toBe(120);
      for (const b of fleet.bots) {
        const got = b.received();
        expect(got.map((c) => c.kind).sort()).toEqual(['audio', 'audio', 'video', 'video']);
        for (const c of got) expect(c.packets, `${b.name} ${c.kind} from ${c.producerId}`).toBeGreaterThan(0);
      }
      // What the publishers sent is what the SFU forwarded: the viewers' consumers are the SFU's.
      const peers = (await sfu.admin('GET', '/rooms/bots/peers')).body.peers as { id: string; producers: unknown[] }[];
      expect(peers).toHaveLength(32);
      expect(peers.filter((p) => p.producers.length === 2).map((p) => p.id).sort()).toEqual(['pub-a', 'pub-b']);
      for (const p of publishers) expect(Math.min(...p.senders.map((s) => s.packets))).toBeGreaterThan(0);
    } finally {
      fleet.close();
      for (const p of publishers) p.close();
    }
  });
});
