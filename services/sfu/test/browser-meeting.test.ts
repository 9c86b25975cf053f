import { mkdirSync } from 'node:fs';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium } from '../../../testing/browser.ts';
import { fakeCameraY4m, speechWav } from '../../../testing/media-fixtures.ts';
import { startTestSfu, type TestSfu } from '../../../testing/sfu-harness.ts';

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

async function openMeeting(room: string, identity: string): Promise<Page> {
  const { joinUrl } = (await sfu.admin('POST', `/rooms/${room}/tokens`, { identity, name: identity.toUpperCase() })).body;
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`[${identity}] page error`, e));
  await page.goto(joinUrl);
  await page.waitForFunction(() => (window as any).verbatim?.state.phase === 'joined', undefined, { timeout: 30_000 });
  return page;
}

type Inbound = { peerId: string; kind: string; bytesReceived: number; packetsReceived: number; framesDecoded: number };
const inbound = (page: Page) => page.evaluate(() => (window as any).verbatim.inboundStats() as Promise<Inbound[]>);

describe('meeting page in headless Chromium', () => {
  it('two participants receive each other\'s audio and video', async () => {
    await sfu.admin('POST', '/rooms', { id: 'browser-room', name: 'Browser room' });
    const alice = await openMeeting('browser-room', 'alice');
    const bob = await openMeeting('browser-room', 'bob');

    for (const [page, other] of [[alice, 'bob'], [bob, 'alice']] as const) {
      await expect.poll(async () => (await inbound(page)).filter((s) => s.peerId === other && s.packetsReceived > 0).map((s) => s.kind).sort(), { timeout: 20_000 }).toEqual(['audio', 'video']);
    }
    const first = await inbound(alice);
    await new Promise((r) => setTimeout(r, 2000));
    const second = await inbound(alice);
    for (const kind of ['audio', 'video']) {
      const a = first.find((s) => s.kind === kind)!;
      const b = second.find((s) => s.kind === kind)!;
      expect(b.bytesReceived, `${kind} bytes grow`).toBeGreaterThan(a.bytesReceived);
    }
    const v1 = first.find((s) => s.kind === 'video')!;
    const v2 = second.find((s) => s.kind === 'video')!;
    expect(v2.framesDecoded, 'video frames are decoded and grow').toBeGreaterThan(v1.framesDecoded);
    expect(v2.framesDecoded).toBeGreaterThan(0);

    // The server sees the same thing: two publishers with two producers each.
    const peers = (await sfu.admin('GET', '/rooms/browser-room/peers')).body.peers;
    expect(peers.map((p: { producers: unknown[] }) => p.producers.length)).toEqual([2, 2]);
    mkdirSync('test-artifacts', { recursive: true });
    await alice.screenshot({ path: 'test-artifacts/meeting-alice.png' });

    // Bob leaves: alice's consumers close and his tile goes away.
    await bob.click('#leave');
    await expect.poll(async () => alice.locator('[data-peer="bob"]').count(), { timeout: 10_000 }).toBe(0);
  });

  it('asks for consent in a consent-required recorded room and shows join errors plainly', async () => {
    await sfu.admin('POST', '/rooms', { id: 'consent-room', flags: { record: true, consent: 'required' } });
    const { joinUrl } = (await sfu.admin('POST', '/rooms/consent-room/tokens', { identity: 'carol', name: 'Carol' })).body;
    const page = await (await browser.newContext()).newPage();
    await page.goto(joinUrl);
    const dialog = page.getByRole('dialog', { name: 'This meeting is recorded' });
    await expect.poll(() => dialog.isVisible(), { timeout: 20_000 }).toBe(true);
    await page.getByRole('button', { name: 'Do not record me' }).click();
    // The decline is logged as a consent event.
    await expect
      .poll(async () => (await sfu.running.db.selectFrom('consent_events').select(['participant_id', 'decision', 'method']).where('room_id', '=', 'consent-room').execute()), { timeout: 10_000 })
      .toEqual([{ participant_id: 'carol', decision: 'declined', method: 'click' }]);
    // This SFU has no recorder: the room says so rather than pretending to record.
    await expect.poll(() => page.locator('#recording-banner').textContent(), { timeout: 20_000 }).toContain('RECORDER_UNAVAILABLE');

    const bad = await (await browser.newContext()).newPage();
    await bad.goto(`${sfu.url}/meet?token=forged.token`);
    await expect.poll(() => bad.locator('#error').textContent(), { timeout: 10_000 }).toContain('TOKEN_INVALID');
  });
});
