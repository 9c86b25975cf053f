import { afterAll, describe, expect, it } from 'vitest';
import { testBackends, type TestBackend } from '../../../testing/databases.ts';
import { OPUS_RTP_PARAMETERS, TestSignalingClient, startTestSfu, type TestSfu } from '../../../testing/sfu-harness.ts';

const backends = await testBackends();
afterAll(async () => {
  for (const b of backends) await b.cleanup();
});

async function join(sfu: TestSfu, room: string, identity: string, role?: 'host') {
  const minted = await sfu.admin('POST', `/rooms/${room}/tokens`, { identity, name: identity.toUpperCase(), ...(role ? { role } : {}) });
  expect(minted.status).toBe(201);
  const c = await TestSignalingClient.connect(sfu.url);
  const r = await c.request('join', { token: minted.body.token });
  expect(r.ok, JSON.stringify(r.error)).toBe(true);
  const t = await c.request('createWebRtcTransport', { direction: 'send' });
  const produce = (ssrc: number) => c.request('produce', { transportId: t.data.id, kind: 'audio', rtpParameters: OPUS_RTP_PARAMETERS(ssrc) });
  return { c, join: r.data, produce };
}

describe.each(backends)('all-hands roles ($name)', (backend: TestBackend) => {
  it.skipIf(!backend.available)('a viewer cannot publish; raising a hand tells the host, whose promotion lets it publish and is audited', async () => {
    const db = await backend.open();
    const sfu = await startTestSfu({ db });
    try {
      const room = `allhands-${backend.name}`;
      expect((await sfu.admin('POST', '/rooms', { id: room, flags: { mode: 'allhands', speakers: ['ceo'], maxPublishers: 3 } })).status).toBe(201);
      const ceo = await join(sfu, room, 'ceo');
      const host = await join(sfu, room, 'moderator', 'host');
      const viewer = await join(sfu, room, 'staff1');
      expect([ceo.join.role, host.join.role, viewer.join.role]).toEqual(['speaker', 'host', 'viewer']);

      expect((await ceo.produce(1001)).ok).toBe(true);
      const refused = await viewer.produce(1002);
      expect(refused.ok).toBe(false);
      expect(refused.error.code).toBe('NOT_A_SPEAKER');

      // Only a host may promote.
      expect((await ceo.c.request('promote', { peerId: 'staff1' })).error.code).toBe('NOT_HOST');
      expect((await viewer.c.request('raiseHand', { raised: true })).data).toEqual({ raised: true });
      const hand = await host.c.waitFor((n) => n.notification === 'handRaised');
      expect(hand.data).toEqual({ peerId: 'staff1', name: 'STAFF1', raised: true });
      expect((await host.c.request('listPeers')).data.peers.find((p: { id: string }) => p.id === 'staff1')).toMatchObject({ role: 'viewer', handRaised: true });

      const promoted = await host.c.request('promote', { peerId: 'staff1' });
      expect(promoted.data).toEqual({ role: 'speaker', changed: true });
      await viewer.c.waitFor((n) => n.notification === 'roleChanged' && n.data.role === 'speaker');
      expect((await viewer.produce(1003)).ok).toBe(true);
      expect((await host.c.request('promote', { peerId: 'nobody' })).error.code).toBe('NOT_FOUND');

      // The admin API promotes too (another viewer), and each promotion is an audit entry.
      const viewer2 = await join(sfu, room, 'staff2');
      const byAdmin = await sfu.admin('POST', `/rooms/${room}/promote`, { peerId: 'staff2' });
      expect(byAdmin.status).toBe(200);
      expect((await viewer2.produce(1004)).ok).toBe(true);
      const rows = await db.selectFrom('audit_log').select(['action', 'actor_id', 'target_id']).where('action', '=', 'room.promote').orderBy('seq').execute();
      expect(rows).toEqual([
        { action: 'room.promote', actor_id: 'participant:moderator', target_id: 'staff1' },
        { action: 'room.promote', actor_id: 'sfu-admin', target_id: 'staff2' },
      ]);
      for (const p of [ceo, host, viewer, viewer2]) p.c.close();
    } finally {
      await sfu.close();
      await db.destroy();
    }
  });
});
