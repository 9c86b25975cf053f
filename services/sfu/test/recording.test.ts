import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SessionManifestSchema, type SessionManifest } from '../../lib/contracts/recording.ts';
import { launchChromium } from '../../../testing/browser.ts';
import { fakeCameraY4m, speechWav } from '../../../testing/media-fixtures.ts';
import { TEST_RECORDER_SECRET, startTestRecorder, type TestRecorder } from '../../../testing/recorder-harness.ts';
import { startTestSfu, type TestSfu } from '../../../testing/sfu-harness.ts';
import { inspectFile } from '../../recorder/index.ts';
import { parseRecording } from '../../lib/recording/vrtp-format.ts';

let rec: TestRecorder;
let sfu: TestSfu;
let browser: Browser;
beforeAll(async () => {
  rec = await startTestRecorder();
  sfu = await startTestSfu({ overrides: { RECORDER_URL: rec.url, RECORDER_SECRET: TEST_RECORDER_SECRET } });
  browser = await launchChromium({ video: fakeCameraY4m(), audio: speechWav() });
});
afterAll(async () => {
  await browser?.close();
  await sfu?.close();
  await rec?.stop();
});

async function join(room: string, identity: string): Promise<Page> {
  const { joinUrl } = (await sfu.admin('POST', `/rooms/${room}/tokens`, { identity, name: identity.toUpperCase() })).body;
  const page = await (await browser.newContext()).newPage();
  await page.goto(joinUrl);
  await page.waitForFunction(() => (window as any).verbatim?.state.phase === 'joined', undefined, { timeout: 30_000 });
  return page;
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const roomDir = (room: string) => path.join(rec.recordingsDir, room);
async function sealedManifest(room: string): Promise<{ dir: string; manifest: SessionManifest }> {
  let found: string | undefined;
  await expect
    .poll(() => {
      const sessions = readdirSync(roomDir(room));
      found = sessions.map((s) => path.join(roomDir(room), s)).find((d) => readdirSync(d).includes('manifest.json'));
      return !!found;
    }, { timeout: 20_000 })
    .toBe(true);
  return { dir: found!, manifest: SessionManifestSchema.parse(JSON.parse(readFileSync(path.join(found!, 'manifest.json'), 'utf8'))) };
}

describe('recording a room from headless Chromium', () => {
  it('writes per-track files and a manifest whose durations match the time published; session row and finalize job exist', async () => {
    await sfu.admin('POST', '/rooms', { id: 'rec-room', flags: { record: true } });
    const page = await join('rec-room', 'alice');
    const t0 = Date.now();
    await sleep(4000);
    await page.click('#leave');
    const published = (Date.now() - t0) / 1000;
    const { dir, manifest } = await sealedManifest('rec-room');
    expect(manifest.tracks.map((t) => t.kind).sort()).toEqual(['audio', 'video']);
    expect(published).toBeGreaterThan(4);
    const at = (type: string, track: string) => new Date(manifest.events.find((e) => e.type === type && e.track === track)!.at).getTime();
    for (const t of manifest.tracks) {
      expect(t.segments).toHaveLength(1);
      // The time this track was published: its producer's life on the SFU.
      const publishedS = (at('producer-closed', t.track) - at('producer-added', t.track)) / 1000;
      expect(publishedS).toBeGreaterThan(3.5);
      const info = inspectFile(path.join(dir, t.segments[0]!.file));
      expect(info.header.codec.mimeType).toBe(t.kind === 'audio' ? 'audio/opus' : 'video/VP8');
      expect(info.records.rtp).toBeGreaterThan(t.kind === 'audio' ? 150 : 30);
      expect(info.records.rtcp, 'sender reports recorded for A/V sync').toBeGreaterThan(0);
      expect(info.rtcp.types.SR ?? 0).toBeGreaterThan(0);
      expect(Math.abs(info.rtp.durationSeconds - publishedS), `${t.kind} duration ${info.rtp.durationSeconds}s vs published ${publishedS}s`).toBeLessThan(0.5);
    }
    expect(manifest.participants.map((p) => p.id)).toEqual(['alice']);
    expect(manifest.events.map((e) => e.type)).toEqual(expect.arrayContaining(['session-started', 'recording-on', 'participant-joined', 'producer-added', 'participant-left', 'session-ended']));
    const db = await rec.openDb();
    try {
      const row = await db.selectFrom('recording_sessions').selectAll().where('id', '=', manifest.session).executeTakeFirstOrThrow();
      expect(row).toMatchObject({ room_id: 'rec-room', status: 'sealed' });
    } finally {
      await db.destroy();
    }
    const queue = rec.finalizeQueue();
    expect((await queue.getJob(`finalize.${manifest.session}`))?.data.manifestPath).toBe(path.join(dir, 'manifest.json'));
    await queue.close();
  });

  it('never records a participant who declines consent; a late consent starts their tracks then', async () => {
    await sfu.admin('POST', '/rooms', { id: 'consent-rec', flags: { record: true, consent: 'required' } });
    const decliner = await join('consent-rec', 'dan');
    await decliner.getByRole('button', { name: 'Do not record me' }).click();
    const late = await join('consent-rec', 'lea');
    await sleep(2500);
    const consentAt = Date.now();
    await late.getByRole('button', { name: 'I consent' }).click();
    await sleep(2500);
    await late.click('#leave');
    await decliner.click('#leave');
    const { dir, manifest } = await sealedManifest('consent-rec');
    expect(manifest.tracks.every((t) => t.participant === 'lea')).toBe(true);
    expect(manifest.tracks).toHaveLength(2);
    expect(readdirSync(dir).some((f) => f.startsWith('dan'))).toBe(false);
    for (const t of manifest.tracks) {
      const first = t.segments[0]!.firstArrivalUs! / 1000;
      expect(first).toBeGreaterThanOrEqual(consentAt - 50);
      expect(first - consentAt).toBeLessThan(1500);
    }
    expect(manifest.participants.find((p) => p.id === 'dan')?.consent.decision).toBe('declined');
    expect(manifest.participants.find((p) => p.id === 'lea')?.consent.decision).toBe('granted');
  });

  it('consent answered while no session is open (the room emptied) still governs the next session: manifest and consent log carry it', async () => {
    await sfu.admin('POST', '/rooms', { id: 'consent-early', flags: { record: true, consent: 'required' } });
    // A first meeting empties the room: its session ends, and the room waits with recording on.
    const first = await join('consent-early', 'xena');
    await first.getByRole('button', { name: 'I consent' }).click();
    await sleep(1500);
    await first.click('#leave');
    await sealedManifest('consent-early');
    // Answers given now have no session to go to yet; the session opens with the first recordable producer.
    const decliner = await join('consent-early', 'dora');
    await decliner.getByRole('button', { name: 'Do not record me' }).click();
    await sleep(500);
    const consenter = await join('consent-early', 'finn');
    await consenter.getByRole('button', { name: 'I consent' }).click();
    await sleep(2500);
    await consenter.click('#leave');
    await decliner.click('#leave');
    let manifest: SessionManifest | undefined;
    await expect
      .poll(() => {
        for (const s of readdirSync(roomDir('consent-early'))) {
          const f = path.join(roomDir('consent-early'), s, 'manifest.json');
          try {
            const m = SessionManifestSchema.parse(JSON.parse(readFileSync(f, 'utf8')));
            if (m.participants.some((p) => p.id === 'finn')) manifest = m;
          } catch {
            // not sealed yet
          }
        }
        return !!manifest;
      }, { timeout: 20_000 })
      .toBe(true);
    expect(manifest!.tracks.length).toBeGreaterThan(0);
    expect(manifest!.tracks.every((t) => t.participant === 'finn')).toBe(true);
    expect(manifest!.participants.find((p) => p.id === 'dora')?.consent).toMatchObject({ decision: 'declined', method: 'click' });
    expect(manifest!.participants.find((p) => p.id === 'finn')?.consent).toMatchObject({ decision: 'granted', method: 'click' });
    // The consent log ties dora's earlier answer to this session too.
    const rows = await sfu.running.db.selectFrom('consent_events').selectAll().where('room_id', '=', 'consent-early').where('participant_id', 'in', ['dora', 'finn']).orderBy('id').execute();
    const bySession = rows.filter((r) => r.session_id === manifest!.session);
    expect(bySession.map((r) => `${r.participant_id}:${r.decision}`).sort()).toEqual(['dora:declined', 'finn:granted']);
    const restated = bySession.filter((r) => ((typeof r.client_info === 'string' ? JSON.parse(r.client_info) : r.client_info) as { decidedBeforeSession?: boolean }).decidedBeforeSession === true);
    expect(restated.map((r) => r.participant_id)).toContain('dora');
  });

  it('survives kill -9 of the recorder: earlier data readable, taps re-attach, the manifest shows the gap', async () => {
    await sfu.admin('POST', '/rooms', { id: 'crash-room', flags: { record: true } });
    const page = await join('crash-room', 'kim');
    await sleep(3000);
    const killedAt = Date.now();
    rec.kill9();
    // Participants are told the recorder is gone (never a silent gap).
    await expect.poll(() => page.locator('#recording-banner').textContent(), { timeout: 10_000 }).toContain('RECORDER_UNAVAILABLE');
    const sessionDir = path.join(roomDir('crash-room'), readdirSync(roomDir('crash-room'))[0]!);
    for (const f of readdirSync(sessionDir).filter((x) => x.endsWith('.part'))) {
      const parsed = parseRecording(readFileSync(path.join(sessionDir, f)));
      expect(parsed.records.length).toBeGreaterThan(0);
      const lastUs = parsed.records.at(-1)!.arrivalUs;
      expect(killedAt - lastUs / 1000, `${f} is durable up to ≤1 s before the kill`).toBeLessThanOrEqual(1000);
    }
    await rec.restart();
    await expect.poll(() => page.locator('#recording-banner').textContent(), { timeout: 15_000 }).not.toContain('RECORDER_UNAVAILABLE');
    await sleep(2500);
    await page.click('#leave');
    const { manifest } = await sealedManifest('crash-room');
    for (const t of manifest.tracks) {
      expect(t.segments.length, `${t.track} has a segment before and after the crash`).toBe(2);
      expect(t.segments[0]!.endReason).toBe('recorder-crash');
      expect(t.segments[1]!.rtpPackets).toBeGreaterThan(0);
    }
    expect(manifest.gaps.length).toBe(manifest.tracks.length);
    for (const g of manifest.gaps) expect(new Date(g.to).getTime()).toBeGreaterThan(new Date(g.from).getTime());
    expect(manifest.events.map((e) => e.type)).toContain('recorder-restarted');
  });
});
