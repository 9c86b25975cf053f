import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, describe, expect, it } from 'vitest';
import { launchChromium } from '../../testing/browser.ts';
import { removeDataDir, tempDataDir } from '../../testing/data-dirs.ts';
import { launchStart, type Banner, type Launched } from '../../testing/launcher.ts';
import { fakeCameraY4m, speechWav } from '../../testing/media-fixtures.ts';
import { processAlive } from '../../testing/processes.ts';

const dataDir = tempDataDir('verbatim-stage-crash-');
let launched: Launched | undefined;
let browser: Browser | undefined;
afterAll(async () => {
  await browser?.close();
  launched?.killAll();
  removeDataDir(dataDir);
});

interface SessionView {
  session: string;
  status: string;
  endReason: string | null;
  tracks: { kind: string; segments: { bytes: number }[] }[];
  artifacts: { kind: string; bytes: number }[];
}

describe('crash isolation between the stages of npm start', () => {
  it('kill -9 of the SFU mid-meeting: the compliance API keeps answering, the interrupted session is sealed and processed, the SFU is back and the room joinable; kill -9 of the compliance API while a meeting records', { timeout: 600_000 }, async () => {
    const l = (launched = launchStart(dataDir, { STAGE_RESTART_BACKOFF_MS: '200' }));
    const banner = await l.ready;
    const api = complianceClient(banner);
    const officer = ((await api.post('/keys', banner.adminKey!, { name: 'Olga', role: 'compliance_officer' })) as { apiKey: string }).apiKey;
    const sfu = sfuClient(banner);
    await sfu('POST', '/rooms', { id: 'crash', name: 'Crash room', flags: { record: true, consent: 'notify', transcribe: false } });
    browser = await launchChromium({ video: fakeCameraY4m(), audio: speechWav() });
    const alice = await join(browser, ((await sfu('POST', '/rooms/crash/tokens', { identity: 'alice', name: 'Alice' })) as { joinUrl: string }).joinUrl);
    await expect.poll(() => alice.locator('#recording-banner').textContent(), { timeout: 20_000 }).toContain('being recorded');
    const recordingSession = async () => ((await api.get('/sessions?room=crash&status=recording', officer)) as { sessions: { session: string }[] }).sessions[0]?.session;
    const first = await waitFor(recordingSession, 30_000, 'a recording session');
    await new Promise((r) => setTimeout(r, 4000)); // some media on disk

    // The SFU dies mid-meeting, its mediasoup workers with it.
    const sfuPid = l.stagePid('sfu')!;
    process.kill(sfuPid, 'SIGKILL');
    const killedAt = Date.now();
    // The compliance API does not notice: it answers at once, and all along.
    expect((await fetch(`${banner.complianceUrl}/api/v1/sessions`, { headers: { authorization: `Bearer ${officer}` } })).status).toBe(200);
    await expect.poll(() => alice.evaluate(() => (window as any).verbatim.state.phase), { timeout: 15_000 }).toBe('closed');

    // Back within seconds on the same URL, as a new process.
    await expect
      .poll(async () => (await fetch(`${banner.sfuUrl}/healthz`).then((r) => r.status, () => 0)) === 200 && l.stagePid('sfu') !== sfuPid, { timeout: 60_000, interval: 200 })
      .toBe(true);
    const sfuBackMs = Date.now() - killedAt;
    expect(sfuBackMs).toBeLessThan(45_000);
    expect(l.output()).toMatch(/"stage":"sfu".*stage exited unexpectedly \(killed by SIGKILL\)/);

    // The restarted SFU ended the session its predecessor left open: sealed with what was recorded, then processed.
    const sealed = await waitFor(
      async () => {
        const s = (await api.get(`/sessions/${first}`, officer)) as SessionView;
        if (s.status === 'failed') throw new Error(`session ${first} failed: ${JSON.stringify(s)}`);
        return s.status === 'done' ? s : undefined;
      },
      180_000,
      'the interrupted session to be processed',
    );
    expect(sealed.endReason).toBe('sfu-restarted');
    expect(sealed.tracks.map((t) => t.kind).sort()).toEqual(['audio', 'video']);
    for (const t of sealed.tracks) expect(t.segments.reduce((n, s) => n + s.bytes, 0)).toBeGreaterThan(1000);
    expect(sealed.artifacts.find((a) => a.kind === 'composite')?.bytes ?? 0).toBeGreaterThan(0);

    // The room is joinable again: Alice reconnects (a reload) and joins as a new peer that produces, in a new recorded session.
    await alice.reload();
    await alice.waitForFunction(() => (window as any).verbatim?.state.phase === 'joined', undefined, { timeout: 60_000 });
    await expect
      .poll(async () => ((await sfu('GET', '/rooms/crash/peers')) as { peers: { id: string; producers: { kind: string }[] }[] }).peers.find((p) => p.id === 'alice')?.producers.map((p) => p.kind).sort(), { timeout: 20_000 })
      .toEqual(['audio', 'video']);
    const second = await waitFor(recordingSession, 30_000, 'a new recording session');
    expect(second).not.toBe(first);

    // The compliance API dies while that meeting records: restarted on its URL; the recording goes on meanwhile.
    const stored = () => recorderStored(banner, dataDir);
    const before = await stored();
    const auditPid = l.stagePid('audit')!;
    process.kill(auditPid, 'SIGKILL');
    await expect
      .poll(async () => (await fetch(`${banner.complianceUrl}/healthz`).then((r) => r.status, () => 0)) === 200 && l.stagePid('audit') !== auditPid, { timeout: 60_000, interval: 200 })
      .toBe(true);
    await expect.poll(stored, { timeout: 15_000 }).toBeGreaterThan(before + 50);
    expect(((await api.get(`/sessions/${second}`, officer)) as SessionView).status).toBe('recording');
    expect(l.stagePid('sfu')).toBeDefined();

    await alice.click('#leave');
    await expect.poll(async () => ((await api.get(`/sessions/${second}`, officer)) as SessionView).status, { timeout: 180_000, interval: 1000 }).toBe('done');

    const procs = [...l.seen.keys()];
    l.interrupt();
    expect(await l.exited).toBe(0);
    await expect.poll(() => procs.filter(processAlive), { timeout: 15_000 }).toEqual([]);
  });
});

async function waitFor<T>(fn: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

async function join(browser: Browser, url: string): Promise<Page> {
  const page = await (await browser.newContext()).newPage();
  await page.goto(url);
  await page.waitForFunction(() => (window as any).verbatim?.state.phase === 'joined', undefined, { timeout: 60_000 });
  return page;
}

function complianceClient(banner: Banner) {
  const call = async (method: string, p: string, key: string, body?: unknown) => {
    const res = await fetch(`${banner.complianceUrl}/api/v1${p}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const json = (await res.json()) as unknown;
    if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  };
  return { get: (p: string, key: string) => call('GET', p, key), post: (p: string, key: string, body: unknown) => call('POST', p, key, body) };
}

function sfuClient(banner: Banner) {
  return async (method: string, p: string, body?: unknown): Promise<unknown> => {
    const res = await fetch(`${banner.sfuUrl}/api/v1${p}`, {
      method,
      headers: { authorization: `Bearer ${banner.apiSecret}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const json = (await res.json()) as unknown;
    if (!res.ok) throw new Error(`SFU ${method} ${p}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  };
}

/** Packets the recorder's workers have stored so far (its control API, with the generated recorder secret). */
async function recorderStored(banner: Banner, dir: string): Promise<number> {
  const { recorderSecret } = JSON.parse(readFileSync(path.join(dir, 'secrets.json'), 'utf8')) as { recorderSecret: string };
  const res = await fetch(`${banner.recorderUrl}/v1/stats`, { headers: { authorization: `Bearer ${recorderSecret}` } });
  const stats = (await res.json()) as { workers: { stored: number }[] };
  return stats.workers.reduce((n, w) => n + w.stored, 0);
}
