import type { Browser } from 'playwright-core';
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

type MeetingState = { phase: string; step?: string; error?: { code: string; message: string }; recording?: { recording: boolean } };

describe('meeting page join', () => {
  // The demo's intermittent "page never reaches joined": recording started (another participant's
  // first producer) while this page was still loading its device, so "recording started" waited in
  // the early-notification queue; replaying it when the handler was set read a variable declared
  // after the handler (temporal dead zone), threw, and left the page in phase "error".
  it('joins when "recording started" arrives while the page is still setting up (queued notification)', { timeout: 90_000 }, async () => {
    await sfu.admin('POST', '/rooms', { id: 'race', name: 'Race', flags: { record: true, consent: 'required' } });
    const { joinUrl } = (await sfu.admin('POST', '/rooms/race/tokens', { identity: 'ann', name: 'Ann' })).body;
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));

    // Between the page and the SFU: the answer to setRtpCapabilities (sent after join, before the
    // page sets its notification handler) is held until the recordingState notification went through.
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let notified!: () => void;
    const recordingNotified = new Promise<void>((r) => (notified = r));
    let holdId: number | undefined;
    await page.routeWebSocket(/\/ws$/, (ws) => {
      const server = ws.connectToServer();
      ws.onMessage((m) => {
        const frame = JSON.parse(String(m)) as { id: number; method: string };
        if (frame.method === 'setRtpCapabilities') holdId = frame.id;
        server.send(m);
      });
      server.onMessage((m) => {
        const frame = JSON.parse(String(m)) as { id?: number; notification?: string; data?: { recording?: boolean } };
        if (frame.notification === 'recordingState' && frame.data?.recording) notified();
        if (frame.id !== undefined && frame.id === holdId) void released.then(() => ws.send(m));
        else ws.send(m);
      });
    });
    await page.goto(joinUrl);
    await expect.poll(() => holdId, { timeout: 30_000 }).toBeDefined();
    // Recording starts now (as another participant's first producer would start it).
    expect((await sfu.admin('PUT', '/rooms/race/recording', { enabled: true })).status).toBe(200);
    await recordingNotified;
    release();

    await page.waitForFunction(() => ['joined', 'error'].includes((window as unknown as { verbatim: { state: MeetingState } }).verbatim.state.phase), undefined, { timeout: 30_000 });
    const state = await page.evaluate(() => (window as unknown as { verbatim: { state: MeetingState } }).verbatim.state);
    expect({ phase: state.phase, error: state.error, pageErrors: errors }).toEqual({ phase: 'joined', error: undefined, pageErrors: [] });
    expect(state.recording?.recording).toBe(true);
    // The consent question is asked (recording runs, no answer yet).
    await page.locator('#consent-dialog[open]').waitFor({ timeout: 10_000 });
    await context.close();
  });
});
