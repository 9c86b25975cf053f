import { createHmac } from 'node:crypto';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium } from '../../../testing/browser.ts';
import { coturnUnavailable, startCoturn, type Coturn } from '../../../testing/coturn.ts';
import { fakeCameraY4m, speechWav } from '../../../testing/media-fixtures.ts';
import { startTestSfu, TestSignalingClient, type TestSfu } from '../../../testing/sfu-harness.ts';
import { loadConfig } from '../../lib/config.ts';
import { turnIceServers } from '../src/turn-credentials.ts';

const SECRET = 'turn-shared-secret-0123456789';
const why = coturnUnavailable();

describe('TURN credentials (coturn REST scheme)', () => {
  it('username "<expiry>:<identity>", password base64(HMAC-SHA1(secret, username)); none without TURN', () => {
    const config = loadConfig({ env: {}, overrides: { SFU_TURN_URLS: 'turn:turn.example.org:3478?transport=udp, turns:turn.example.org:5349', SFU_TURN_SECRET: SECRET, SFU_TURN_TTL_S: 600 } });
    const [server] = turnIceServers(config, 'alice', 1_700_000_000_000);
    expect(server).toEqual({
      urls: ['turn:turn.example.org:3478?transport=udp', 'turns:turn.example.org:5349'],
      username: '1700000600:alice',
      credential: createHmac('sha1', SECRET).update('1700000600:alice').digest('base64'),
    });
    expect(turnIceServers(loadConfig({ env: {}, overrides: {} }), 'alice')).toEqual([]);
  });

  it('config is checked at start-up: URLs must be turn:/turns:, a secret is required with them', () => {
    expect(() => loadConfig({ env: {}, overrides: { SFU_TURN_URLS: 'http://turn.example.org', SFU_TURN_SECRET: SECRET } })).toThrow(/SFU_TURN_URLS: "http:\/\/turn.example.org" is not a turn/);
    expect(() => loadConfig({ env: {}, overrides: { SFU_TURN_URLS: 'turn:turn.example.org:3478' } })).toThrow(/SFU_TURN_SECRET: required/);
    expect(() => loadConfig({ env: {}, overrides: { SFU_TURN_URLS: 'turn:turn.example.org:3478', SFU_TURN_SECRET: 'short' } })).toThrow(/SFU_TURN_SECRET: must be at least 16/);
  });
});

if (why) {
  describe('a relay-only participant through coturn', () => {
    it.skip(`not run: ${why}`, () => {});
  });
} else {
  describe('a relay-only participant through coturn', () => {
    let coturn: Coturn;
    let sfu: TestSfu;
    let browser: Browser;
    beforeAll(async () => {
      coturn = await startCoturn(SECRET);
      sfu = await startTestSfu({ overrides: { SFU_TURN_URLS: coturn.url, SFU_TURN_SECRET: SECRET, SFU_TURN_TTL_S: 600 } });
      browser = await launchChromium({ video: fakeCameraY4m(), audio: speechWav() });
    });
    afterAll(async () => {
      await browser?.close();
      await sfu?.close();
      await coturn?.stop();
    });

    const open = async (identity: string, relay: boolean): Promise<Page> => {
      const { joinUrl } = (await sfu.admin('POST', '/rooms/turn-room/tokens', { identity, name: identity })).body as { joinUrl: string };
      const page = await (await browser.newContext()).newPage();
      await page.goto(`${joinUrl}${relay ? '&relay=1' : ''}`);
      await page.waitForFunction(() => (window as any).verbatim?.state.phase === 'joined', undefined, { timeout: 30_000 });
      return page;
    };
    type Inbound = { peerId: string; kind: string; packetsReceived: number };
    const inbound = (page: Page) => page.evaluate(() => (window as any).verbatim.inboundStats() as Promise<Inbound[]>);
    const routes = (page: Page) => page.evaluate(() => (window as any).verbatim.iceRoutes() as Promise<{ direction: string; local: string; remote: string }[]>);

    it('the join answer carries the TURN server and credentials coturn accepts', async () => {
      await sfu.admin('POST', '/rooms', { id: 'turn-room', name: 'TURN room' });
      const { joinUrl } = (await sfu.admin('POST', '/rooms/turn-room/tokens', { identity: 'probe', name: 'Probe' })).body as { joinUrl: string };
      const client = await TestSignalingClient.connect(sfu.url);
      try {
        const res = (await client.request('join', { token: new URL(joinUrl).searchParams.get('token')! })) as { ok: boolean; data: { iceServers: { urls: string[]; username: string; credential: string }[] } };
        expect(res.ok).toBe(true);
        const [server] = res.data.iceServers;
        expect(server!.urls).toEqual([coturn.url]);
        const [expiry, identity] = server!.username.split(':');
        expect(identity).toBe('probe');
        expect(Number(expiry) - Date.now() / 1000).toBeGreaterThan(590);
        expect(Number(expiry) - Date.now() / 1000).toBeLessThanOrEqual(600);
        expect(server!.credential).toBe(createHmac('sha1', SECRET).update(server!.username).digest('base64'));
      } finally {
        client.close();
      }
    });

    it('two Chromium participants forced to iceTransportPolicy "relay" send and receive audio and video through it', { timeout: 90_000 }, async () => {
      const alice = await open('alice', true);
      const bob = await open('bob', true);
      for (const [page, other] of [[alice, 'bob'], [bob, 'alice']] as const) {
        await expect.poll(async () => (await inbound(page)).filter((s) => s.peerId === other && s.packetsReceived > 0).map((s) => s.kind).sort(), { timeout: 30_000 }).toEqual(['audio', 'video']);
        // Both transports (send and receive) run over a relayed candidate: the media went through coturn.
        await expect.poll(async () => (await routes(page)).map((r) => `${r.direction}:${r.local}`).sort(), { timeout: 10_000 }).toEqual(['recv:relay', 'send:relay']);
      }
      // coturn allocated relays for both, authenticated by the usernames the SFU minted.
      for (const who of ['alice', 'bob']) expect(coturn.log()).toMatch(new RegExp(`new, realm=<verbatim.test>, username=<\\d+:${who}>`));
    });
  });
}
