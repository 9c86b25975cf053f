import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../../db/database.ts';
import type { SessionManifest } from '../../../lib/contracts/recording.ts';
import { createLogger } from '../../../lib/logger.ts';
import { launchChromium } from '../../../../testing/browser.ts';
import { testBackends } from '../../../../testing/databases.ts';
import { SessionStore } from '../../../recorder/index.ts';
import { FluentFfmpegRunner } from '../../../lib/media/ffmpeg-runner.ts';
import { runSessionPipeline } from '../../../transcode/index.ts';
import { LocalArtifactStorage } from '../../../lib/storage/artifact-storage.ts';
import { syntheticSession } from '../../../../testing/synthetic-session.ts';
import { startTestTranscodeWorker, type TestTranscodeWorker } from '../../../../testing/transcode-worker.ts';
import { createUserWithKey } from '../key-lifecycle.ts';
import { verifyArchive } from '../export.ts';
import type { SessionDetails } from './client/api.ts';
import { timelineEvents } from './client/timeline.ts';
import { startAuditServer, type AuditServer } from '../http/server.ts';

/**
 * The web console end to end: a session recorded synthetically and processed by the real
 * transcode pipeline (composite H.264/AAC MP4 in local storage, rows registered as the
 * finalize job registers them), then Debian Chromium drives the console as each role.
 * Screenshots land in test-artifacts/console/ (desktop and 390 px wide).
 */

const SHOTS = fileURLToPath(new URL('../../../../test-artifacts/console/', import.meta.url));
const SESSION = 'console-s1';
const PROCESSING = 'console-s2';
const ROOM = 'board';
/** Where the seeded hit starts in the composite (seconds). */
const HIT_START = 6.5;
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };
const logger = createLogger({ level: 'silent' });
/** expect.poll with room for a loaded 2-core machine (its default gives up after 1 s). */
const poll = <T>(fn: () => T | Promise<T>, opts: { timeout?: number } = {}) => expect.poll(fn, { timeout: 15_000, interval: 100, ...opts });

const CONTENT_TYPES: Record<string, string> = { '.mp4': 'video/mp4', '.mkv': 'video/x-matroska', '.wav': 'audio/wav', '.ogg': 'audio/ogg', '.ivf': 'video/x-ivf' };

/** A 12 s recorded meeting run through the real pipeline, stored and registered like services/transcode/src/finalize-job.ts does. */
async function seedProcessedSession(db: Db, root: string, storage: LocalArtifactStorage): Promise<{ compositeSha256: string; compositeBytes: number }> {
  const manifestPath = syntheticSession(
    root,
    (_dir, m: SessionManifest) => {
      m.room = ROOM;
      m.participants = [{ id: 'alice', name: 'Alice', consent: { decision: 'granted', method: 'click' } }];
      m.tracks[0]!.participant = 'alice';
      // The fixture's segment carries a placeholder clock; put it on the session's.
      Object.assign(m.tracks[0]!.segments[0]!, { startedAt: m.startedAt, endedAt: m.endedAt!, endReason: 'track-stopped' });
      m.events.push({ at: m.startedAt, type: 'recording-on', details: { transcribe: true, language: 'en' } });
    },
    { seconds: 12, session: SESSION },
  );
  const m = JSON.parse(readFileSync(manifestPath, 'utf8')) as SessionManifest;
  await db.insertInto('rooms').values({ id: ROOM, name: 'Board room', flags: JSON.stringify({ record: true, consent: 'required', transcribe: true }), secret_hash: 'scrypt$x$y' }).execute();
  await new SessionStore(db).registerSealed(m, manifestPath, createHash('sha256').update(readFileSync(manifestPath)).digest('hex'));

  const outDir = path.join(root, 'work', ROOM, SESSION);
  mkdirSync(outDir, { recursive: true });
  const result = await runSessionPipeline(manifestPath, outDir, new FluentFfmpegRunner());
  const rows: { session_id: string; key: string; kind: string; participant_id: string | null; content_type: string; bytes: number; sha256: string; storage: string; duration_seconds: number | null }[] = [];
  for (const f of result.files) {
    const rel = path.relative(outDir, f.path).split(path.sep).join('/');
    const key = `sessions/${ROOM}/${SESSION}/${rel}`;
    const contentType = CONTENT_TYPES[path.extname(f.path)] ?? 'application/octet-stream';
    const stored = await storage.put(key, f.path);
    rows.push({ session_id: SESSION, key, kind: f.kind, participant_id: f.participant ?? null, content_type: contentType, bytes: stored.bytes, sha256: stored.sha256, storage: storage.name, duration_seconds: rel === 'composite.mp4' ? result.durationSeconds : null });
  }
  // The transcript: seeded text (the test Whisper model only ever says one fixed phrase) on the session timeline.
  const segments = [
    { start: 0.5, end: 3.5, text: 'Good morning everyone, this is the quarterly review.' },
    { start: HIT_START, end: 9.5, text: 'The Zanzibar acquisition stays confidential until Friday.' },
    { start: 10, end: 11.5, text: 'Thanks, that is all for today.' },
    // Markup in what someone said stays text, in snippets and in the transcript.
    { start: 11.6, end: 11.9, text: 'Budget <img src=x onerror="document.title=1"> & co.' },
    // Enough lines before the hit that the transcript box has to scroll to show it.
    ...Array.from({ length: 24 }, (_, i) => ({ start: 3.6 + i * 0.1, end: 3.65 + i * 0.1, text: `Agenda item ${i + 1} is noted.` })),
  ].sort((a, b) => a.start - b.start);
  await db.transaction().execute(async (tx) => {
    await tx.insertInto('artifacts').values(rows).execute();
    await tx
      .insertInto('transcript_segments')
      .values(segments.map((s, i) => ({ session_id: SESSION, seq: i, participant_id: 'alice', speaker: 'Alice', start_seconds: s.start, end_seconds: s.end, text: s.text, language: 'en' })))
      .execute();
    await tx.updateTable('recording_sessions').set({ status: 'done', transcript_status: 'done', progress: 100, updated_at: new Date() }).where('id', '=', SESSION).execute();
  });
  await db
    .insertInto('consent_events')
    .values([
      { room_id: ROOM, session_id: SESSION, participant_id: 'alice', participant_name: 'Alice', policy: 'required', decision: 'granted', method: 'click', client_info: JSON.stringify({ userAgent: 'Chromium test' }) },
      { room_id: ROOM, session_id: SESSION, participant_id: 'bob', participant_name: 'Bob', policy: 'required', decision: 'declined', method: 'click', client_info: JSON.stringify({ userAgent: 'Chromium test' }) },
    ])
    .execute();
  // A second session still in the pipeline, for the live progress display.
  await db.insertInto('recording_sessions').values({ id: PROCESSING, room_id: ROOM, started_at: m.startedAt, ended_at: m.endedAt, status: 'processing', progress: 30 }).execute();
  const composite = rows.find((r) => r.key.endsWith('/composite.mp4'))!;
  return { compositeSha256: composite.sha256, compositeBytes: composite.bytes };
}

describe('session timeline', () => {
  const base: SessionDetails = {
    session: 's',
    room: 'r',
    status: 'done',
    startedAt: '2026-01-01T10:00:00.000Z',
    endedAt: '2026-01-01T10:05:00.000Z',
    endReason: 'room-closed',
    manifestSha256: null,
    transcriptStatus: 'done',
    progress: 100,
    error: null,
    participants: [{ participant: 'a', name: 'Ann', consent: 'granted', consentMethod: 'click' }],
    tracks: [
      {
        track: 'a-mic',
        participant: 'a',
        kind: 'audio',
        codec: {},
        segments: [
          { segment: 0, file: 'a-mic-0.vrtp', bytes: 1, sha256: 'x', startedAt: '2026-01-01T10:00:05.000Z', endedAt: '2026-01-01T10:01:00.000Z', endReason: 'producer-paused', truncated: false },
          { segment: 1, file: 'a-mic-1.vrtp', bytes: 1, sha256: 'x', startedAt: '2026-01-01T10:02:00.000Z', endedAt: '2026-01-01T10:04:00.000Z', endReason: 'track-stopped', truncated: true },
        ],
      },
    ],
    artifacts: [],
  };
  const names = new Map([['a', 'Ann']]);

  it('infers joins, pauses, leaves and consent from the recorded segments', () => {
    const ev = timelineEvents(base, names);
    expect(ev.map((e) => [new Date(e.at).toISOString().slice(11, 19), e.kind, e.label])).toEqual([
      ['10:00:00', 'session', 'Recording started'],
      ['10:00:00', 'consent', 'Ann: consent granted (click)'],
      ['10:00:05', 'join', 'Ann: audio recording started'],
      ['10:01:00', 'pause', 'Ann: audio paused'],
      ['10:02:00', 'join', 'Ann: audio recording resumed'],
      ['10:04:00', 'leave', 'Ann: audio stopped (track-stopped), truncated'],
      ['10:05:00', 'session', 'Recording ended (room-closed)'],
    ]);
  });

  it("uses the session's recorded events when the API sends them", () => {
    const ev = timelineEvents(
      {
        ...base,
        events: [
          { at: '2026-01-01T10:00:00.000Z', type: 'session-started' },
          { at: '2026-01-01T10:00:01.000Z', type: 'participant-joined', participant: 'a', details: { name: 'Ann' } },
          { at: '2026-01-01T10:00:02.000Z', type: 'consent', participant: 'a', details: { decision: 'declined', method: 'click' } },
          { at: '2026-01-01T10:00:03.000Z', type: 'producer-paused', participant: 'a', track: 'a-mic' },
          { at: '2026-01-01T10:00:04.000Z', type: 'participant-left', participant: 'a' },
        ],
      },
      names,
    );
    expect(ev.map((e) => `${e.kind}: ${e.label}`)).toEqual([
      'session: Recording started',
      'join: Ann joined',
      'consent: Ann: consent declined (click)',
      'pause: Ann paused (a-mic)',
      'leave: Ann left',
      'session: Recording ended (room-closed)',
    ]);
  });
});

describe('console in Chromium, per role', () => {
  let root: string;
  let db: Db;
  let server: AuditServer;
  let transcode: TestTranscodeWorker;
  let browser: Browser;
  let cleanup: () => Promise<void>;
  let seeded: { compositeSha256: string; compositeBytes: number };
  const keys: Record<'admin' | 'compliance_officer' | 'auditor', string> = { admin: '', compliance_officer: '', auditor: '' };

  beforeAll(async () => {
    root = mkdtempSync(path.join(os.tmpdir(), 'verbatim-console-'));
    rmSync(SHOTS, { recursive: true, force: true });
    mkdirSync(SHOTS, { recursive: true });
    // The embedded backend, as `npm start` runs it; the API's own tests cover Postgres.
    const backend = (await testBackends())[0]!;
    cleanup = () => backend.cleanup();
    db = await backend.open();
    const storage = new LocalArtifactStorage(path.join(root, 'artifacts'));
    seeded = await seedProcessedSession(db, root, storage);
    for (const role of ['admin', 'compliance_officer', 'auditor'] as const) keys[role] = (await createUserWithKey(db, { name: `${role} user`, role })).apiKey;
    // Erasure requests run as jobs next to a transcode worker (composite re-renders), as npm start runs them.
    transcode = await startTestTranscodeWorker({ db, storage, workDir: path.join(root, 'transcode-work') });
    server = await startAuditServer({ db, logger, failedAuthPerMinute: 0, storage, recordingsDir: root, workDir: path.join(root, 'erasure-work'), exportsDir: path.join(root, 'exports'), ...transcode.queue });
    browser = await launchChromium();
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await transcode?.close();
    await db?.destroy();
    await cleanup?.();
    rmSync(root, { recursive: true, force: true });
  });

  async function signIn(role: keyof typeof keys, viewport = DESKTOP): Promise<{ context: BrowserContext; page: Page }> {
    const context = await browser.newContext({ viewport, baseURL: server.url });
    const page = await context.newPage();
    page.on('dialog', (d) => void d.accept());
    watch(page);
    await page.goto('/console/');
    await page.waitForURL(/\/console\/signin/);
    // Keyboard only: the key field has focus on arrival, Enter submits.
    await page.keyboard.type(keys[role]);
    await page.keyboard.press('Enter');
    await page.waitForURL((u) => !u.pathname.startsWith('/console/signin'));
    return { context, page };
  }

  /** Script errors on any page fail the test that caused them. */
  const pageErrors: string[] = [];
  const watch = (page: Page) => {
    page.on('pageerror', (e) => pageErrors.push(`${page.url()}: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) pageErrors.push(`${page.url()}: console: ${m.text()}`);
    });
  };
  afterEach(() => {
    const errors = pageErrors.splice(0);
    expect(errors).toEqual([]);
  });

  /** Every page shot is also checked for form controls without a label. */
  const shot = async (page: Page, name: string) => {
    const unlabelled = await page.evaluate(() =>
      [...document.querySelectorAll('input, select, textarea, button')]
        .filter((el) => !(el as HTMLElement).hidden && (el as HTMLInputElement).type !== 'hidden')
        .filter((el) => {
          const labels = (el as HTMLInputElement).labels;
          return !(labels && labels.length > 0) && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby') && !(el.tagName === 'BUTTON' && el.textContent?.trim());
        })
        .map((el) => el.outerHTML.slice(0, 120)),
    );
    expect(unlabelled, name).toEqual([]);
    await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  };
  const navLinks = (page: Page) => page.locator('header nav a').allTextContents();
  /** Nothing sticks out sideways at phone width. */
  const fitsWidth = (page: Page) => page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1);

  it('serves the page, its bundle and styles, client routes, and turns play links into session pages', async () => {
    const app = server.app;
    const page = await app.inject({ method: 'GET', url: '/console/' });
    expect(page.statusCode).toBe(200);
    expect(page.headers['content-type']).toMatch(/^text\/html/);
    expect(page.headers['content-security-policy']).toContain("script-src 'self'");
    expect(page.body).toContain('<script type="module" src="/console/app.js">');
    // The RBAC table the navigation follows is auth.ts's, not a copy.
    expect(JSON.parse(/<script type="application\/json" id="rbac">(.*?)<\/script>/s.exec(page.body)![1]!)).toMatchObject({ admin: expect.arrayContaining(['retention.manage']) });
    const js = await app.inject({ method: 'GET', url: '/console/app.js' });
    expect(js.statusCode).toBe(200);
    expect(js.headers['content-type']).toMatch(/^text\/javascript/);
    expect(js.body.length).toBeGreaterThan(5000);
    const css = await app.inject({ method: 'GET', url: '/console/app.css' });
    expect(css.headers['content-type']).toMatch(/^text\/css/);
    expect(css.body).toContain('@media (max-width: 640px)');
    for (const url of ['/console/search?q=x', '/console/sessions/s1', '/console/anything/else']) {
      const r = await app.inject({ method: 'GET', url });
      expect(r.statusCode, url).toBe(200);
      expect(r.body).toBe(page.body);
    }
    expect((await app.inject({ method: 'GET', url: '/console' })).headers.location).toBe('/console/');
    const play = await app.inject({ method: 'GET', url: '/play/console-s1?t=6.5' });
    expect(play.statusCode).toBe(302);
    expect(play.headers.location).toBe('/console/sessions/console-s1?t=6.5');
    expect((await app.inject({ method: 'GET', url: '/play/console-s1?t=evil' })).headers.location).toBe('/console/sessions/console-s1');
    expect((await app.inject({ method: 'GET', url: '/play/..%2Fetc?t=1' })).statusCode).toBe(400);
    // The page is public; the data is not.
    expect((await app.inject({ method: 'GET', url: '/api/v1/me' })).statusCode).toBe(401);
  });

  it('compliance officer: search → click a hit → the composite plays from the hit while the transcript follows', async () => {
    const { context, page } = await signIn('compliance_officer');
    try {
      expect(new URL(page.url()).pathname).toBe('/console/search');
      const nav = await navLinks(page);
      expect(nav).toEqual(expect.arrayContaining(['Search', 'Legal holds', 'Erasure requests']));
      for (const absent of ['Retention policies', 'Audit log', 'Consent log', 'Users & keys']) expect(nav).not.toContain(absent);

      await page.getByLabel('Search the transcripts').fill('zanzibar');
      await page.locator('details.filters summary').click();
      await page.getByLabel('Room').fill(ROOM);
      await page.getByLabel('Room').press('Enter');
      await poll(() => page.getByTestId('search-summary').textContent()).toContain('1 result');
      const hit = page.locator('.hit').first();
      expect(await hit.locator('mark').first().textContent()).toBe('Zanzibar');
      expect(await hit.locator('.speaker').textContent()).toBe('Alice');
      await shot(page, 'officer-search-desktop');

      await hit.locator('a.hit-link').click();
      await page.waitForURL(new RegExp(`/console/sessions/${SESSION}\\?t=${HIT_START}`));
      const state = await page.waitForFunction(
        () => {
          const v = document.querySelector('video');
          return v && !v.paused && v.readyState >= 2 && v.currentTime > 0 ? { t: v.currentTime, src: v.currentSrc, paused: v.paused } : null;
        },
        undefined,
        { timeout: 20_000 },
      );
      const playing = (await state.jsonValue())!;
      expect(playing.paused).toBe(false);
      expect(Math.abs(playing.t - HIT_START)).toBeLessThan(1);
      console.info(`console: hit at ${HIT_START} s → composite playing at ${playing.t.toFixed(3)} s`);
      expect(playing.src).toMatch(/\/api\/v1\/sessions\/console-s1\/artifacts\/.+\/content/);
      // The transcript line being spoken is highlighted and scrolled into its box.
      await poll(() => page.locator('.segment.active .text').textContent()).toContain('Zanzibar');
      const inView = await page.evaluate(() => {
        const list = document.querySelector('.transcript')!.getBoundingClientRect();
        const line = document.querySelector('.segment.active')!.getBoundingClientRect();
        return { scrolled: document.querySelector('.transcript')!.scrollTop > 0, inside: line.top >= list.top && line.bottom <= list.bottom };
      });
      expect(inView).toEqual({ scrolled: true, inside: true });
      // Artifacts with size and SHA-256, each with an (audited) download link.
      const compositeRow = page.locator('tr[data-key$="/composite.mp4"]');
      expect(await compositeRow.locator('code.hash').textContent()).toBe(seeded.compositeSha256);
      expect(await compositeRow.getByRole('link', { name: /Download/ }).count()).toBe(1);
      const download = await context.request.get(new URL((await compositeRow.getByRole('link', { name: /Download/ }).getAttribute('href'))!, server.url).href);
      expect(download.status()).toBe(200);
      expect(createHash('sha256').update(await download.body()).digest('hex')).toBe(seeded.compositeSha256);

      // Keyboard: a transcript line's time button seeks the player there.
      await page.getByRole('button', { name: /Play from 0:10\.0/ }).focus();
      await page.keyboard.press('Enter');
      await poll(() => page.evaluate(() => document.querySelector('video')!.currentTime)).toBeGreaterThanOrEqual(10);
      await poll(() => page.locator('.segment.active .text').textContent()).toContain('Thanks');

      // The participant's own file plays too (Matroska/Opus), from the same moment.
      await page.getByLabel('Play', { exact: true }).selectOption({ label: 'Alice — own file (MKV)' });
      const own = await page.waitForFunction(
        () => {
          const v = document.querySelector('video');
          return v && v.dataset.kind === 'participant-av' && v.readyState >= 2 ? { t: v.currentTime, error: v.error?.code ?? null } : null;
        },
        undefined,
        { timeout: 20_000 },
      );
      const ownState = (await own.jsonValue())!;
      expect(ownState.error).toBeNull();
      expect(ownState.t).toBeGreaterThanOrEqual(9);
      await page.evaluate(() => document.querySelector('video')?.pause());
      await shot(page, 'officer-session-desktop');

      // Legal hold from the console.
      await page.getByRole('link', { name: 'Legal holds' }).click();
      await page.getByLabel('Case id').fill('CASE-42');
      await page.getByLabel('Reason', { exact: true }).fill('Litigation');
      await page.getByLabel('Scope').selectOption('session');
      await page.getByLabel('Session, room, participant or query').fill(SESSION);
      await page.getByRole('button', { name: 'Place hold' }).click();
      await poll(() => page.locator('table.holds').textContent()).toContain('CASE-42');
      await shot(page, 'officer-holds-desktop');

      // Erasure of a held participant: recorded as restricted, naming the hold; nothing is deleted.
      await page.getByRole('link', { name: 'Erasure requests' }).click();
      await page.getByLabel('Participant id').fill('alice');
      await page.getByLabel('Session id (empty: all their sessions)').fill(SESSION);
      await page.getByLabel('Reason', { exact: true }).fill('Data subject request DSR-7');
      await page.getByRole('button', { name: 'Submit request' }).click();
      await poll(() => page.locator('table.erasures').textContent()).toContain('restricted');
      expect(await page.locator('table.erasures').textContent()).toContain('CASE-42');
      await shot(page, 'officer-erasure-desktop');
      // An e-discovery export of what the hold covers: progress, then a download that verifies.
      await page.getByRole('link', { name: 'Exports' }).click();
      const holdId = ((await (await context.request.get(`${server.url}/api/v1/legal-holds`)).json()) as { holds: { id: string; caseId: string }[] }).holds.find((x) => x.caseId === 'CASE-42')!.id;
      await page.getByLabel('Export by').selectOption('hold');
      await page.getByLabel('Hold id, query or sessions').fill(holdId);
      await page.getByRole('button', { name: 'Start export' }).click();
      await page.locator('table.exports tr[data-status="done"]').waitFor({ timeout: 30_000 });
      await shot(page, 'officer-exports-desktop');
      const [archiveDownload] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Download archive' }).first().click()]);
      const archive = path.join(root, 'downloaded-export.tar');
      await archiveDownload.saveAs(archive);
      const verified = await verifyArchive(archive);
      expect(verified.ok, JSON.stringify(verified.problems)).toBe(true);
      expect(verified.manifest?.sessionIds).toEqual([SESSION]);
      const flipped = readFileSync(archive);
      flipped[700] = flipped[700]! ^ 1;
      writeFileSync(archive, flipped);
      expect((await verifyArchive(archive)).ok).toBe(false);

      await page.getByRole('link', { name: 'Erasure requests' }).click();
      await page.getByRole('link', { name: SESSION }).click();
      await poll(() => page.getByTestId('session-holds').textContent()).toContain('Under legal hold: CASE-42 (session)');
      // Without a play link's ?t= the player waits for the user.
      await page.locator('video').waitFor();
      await page.waitForTimeout(500);
      expect(await page.evaluate(() => [document.querySelector('video')!.paused, document.querySelector('video')!.currentTime])).toEqual([true, 0]);
      const artifacts = await context.request.get(`${server.url}/api/v1/sessions/${SESSION}/artifacts`);
      expect(((await artifacts.json()) as { artifacts: unknown[] }).artifacts.length).toBe(4);

      // What the officer may not do, the API refuses (the cookie is the browser's).
      for (const [method, url] of [['GET', '/api/v1/audit'], ['GET', '/api/v1/consent'], ['GET', '/api/v1/retention-policies']] as const) {
        const r = await context.request.fetch(`${server.url}${url}`, { method });
        expect(r.status(), url).toBe(403);
      }
      const policy = await context.request.post(`${server.url}/api/v1/retention-policies`, { data: { name: 'x', scope: 'default', mediaDays: 1, transcriptDays: 1, rawDays: 1 }, headers: { 'x-verbatim-csrf': '1' } });
      expect(policy.status()).toBe(403);
    } finally {
      await context.close();
    }
  });

  it('compliance officer at 390 px: search and session pages fit the screen', async () => {
    const { context, page } = await signIn('compliance_officer', PHONE);
    try {
      await page.goto(`/console/search?q=confidential`);
      await poll(() => page.getByTestId('search-summary').textContent()).toContain('1 result');
      expect(await fitsWidth(page)).toBe(true);
      await shot(page, 'officer-search-phone');
      await page.getByLabel('Search the transcripts').fill('budget');
      await page.getByLabel('Search the transcripts').press('Enter');
      await poll(() => page.getByTestId('search-summary').textContent()).toContain('1 result');
      expect(await page.locator('main img').count()).toBe(0);
      await page.goto(`/play/${SESSION}?t=${HIT_START}`);
      await page.waitForURL(new RegExp(`/console/sessions/${SESSION}`));
      await page.locator('table.artifacts').waitFor();
      expect(await page.locator('.transcript').textContent()).toContain('Budget <img src=x onerror="document.title=1"> & co.');
      expect(await page.locator('main img').count()).toBe(0);
      expect(await fitsWidth(page)).toBe(true);
      await shot(page, 'officer-session-phone');
    } finally {
      await context.close();
    }
  });

  it('processing status updates live while the pipeline works', async () => {
    const { context, page } = await signIn('compliance_officer');
    try {
      await page.goto(`/console/sessions/${PROCESSING}`);
      await poll(() => page.getByTestId('session-status').textContent()).toBe('processing');
      expect(await page.locator('progress').getAttribute('value')).toBe('30');
      await db.updateTable('recording_sessions').set({ progress: 75 }).where('id', '=', PROCESSING).execute();
      await poll(() => page.locator('progress').getAttribute('value')).toBe('75');
      await db.updateTable('recording_sessions').set({ status: 'done', progress: 100 }).where('id', '=', PROCESSING).execute();
      await poll(() => page.getByTestId('session-status').textContent()).toBe('done');
    } finally {
      await context.close();
    }
  });

  it('admin: retention policies work; search and holds are absent and refused', async () => {
    for (const [viewport, suffix] of [[DESKTOP, 'desktop'], [PHONE, 'phone']] as const) {
      const { context, page } = await signIn('admin', viewport);
      try {
        expect(new URL(page.url()).pathname).toBe('/console/policies');
        const nav = await navLinks(page);
        expect(nav).toContain('Retention policies');
        for (const absent of ['Search', 'Legal holds', 'Erasure requests', 'Audit log', 'Consent log']) expect(nav).not.toContain(absent);
        if (suffix === 'desktop') {
          await page.getByLabel('Name', { exact: true }).fill('standard');
          await page.getByLabel('Scope', { exact: true }).selectOption('room');
          await page.getByLabel('Media (days)').fill('365');
          await page.getByLabel('Transcript (days)').fill('2555');
          await page.getByRole('button', { name: 'Save policy' }).click();
          await poll(() => page.locator('tr[data-policy="standard"]').textContent()).toContain('365 d');
          // Change it in place.
          await page.getByRole('button', { name: 'Edit policy standard' }).click();
          await page.getByLabel('Media (days)').fill('400');
          await page.getByRole('button', { name: 'Save policy' }).click();
          await poll(() => page.locator('tr[data-policy="standard"]').textContent()).toContain('400 d');
          await page.getByLabel('Room id').fill(ROOM);
          await page.getByLabel("Policy (scope 'room')").fill('standard');
          await page.getByRole('button', { name: 'Assign' }).click();
          await poll(() => page.locator('tr[data-policy="standard"]').textContent()).toContain(ROOM);
        } else {
          await page.locator('tr[data-policy="standard"]').waitFor();
          expect(await fitsWidth(page)).toBe(true);
        }
        await shot(page, `admin-policies-${suffix}`);
        if (suffix === 'desktop') {
          await page.getByRole('link', { name: 'Users & keys' }).click();
          await page.getByLabel('Name', { exact: true }).fill('Second auditor');
          await page.getByLabel('Role').selectOption('auditor');
          await page.getByRole('button', { name: 'Create' }).click();
          await poll(() => page.getByLabel('New API key').inputValue()).toMatch(/^vb_[0-9a-f]{8}_[A-Za-z0-9_-]{43}$/);
          await shot(page, 'admin-keys-desktop');
        }
        // No search or hold controls anywhere, even when the admin types the address.
        await page.goto('/console/search?q=zanzibar');
        await page.getByRole('alert').waitFor();
        expect(await page.getByRole('search').count()).toBe(0);
        expect(await page.getByRole('alert').textContent()).toContain('Not allowed for your role');
        await page.goto('/console/holds');
        expect(await page.getByRole('button', { name: 'Place hold' }).count()).toBe(0);
        if (suffix === 'desktop') {
          await shot(page, 'admin-holds-refused-desktop');
          expect((await context.request.get(`${server.url}/api/v1/search?q=zanzibar`)).status()).toBe(403);
          expect((await context.request.get(`${server.url}/api/v1/legal-holds`)).status()).toBe(403);
          const place = await context.request.post(`${server.url}/api/v1/legal-holds`, { data: { caseId: 'X', reason: 'Y', scope: { type: 'session', value: SESSION } }, headers: { 'x-verbatim-csrf': '1' } });
          expect(place.status()).toBe(403);
          expect((await context.request.get(`${server.url}/api/v1/sessions/${SESSION}/transcript`)).status()).toBe(403);
        }
      } finally {
        await context.close();
      }
    }
  });

  it('auditor: audit log with Verify → OK, consent log per participant, session metadata without media', async () => {
    for (const [viewport, suffix] of [[DESKTOP, 'desktop'], [PHONE, 'phone']] as const) {
      const { context, page } = await signIn('auditor', viewport);
      try {
        expect(new URL(page.url()).pathname).toBe('/console/audit');
        const nav = await navLinks(page);
        expect(nav).toEqual(expect.arrayContaining(['Audit log', 'Consent log']));
        for (const absent of ['Search', 'Legal holds', 'Retention policies']) expect(nav).not.toContain(absent);
        await page.locator('table.audit tbody tr').first().waitFor();
        // The officer's search and hold are in the trail.
        expect(await page.locator('table.audit').textContent()).toContain('search');
        await page.getByTestId('verify').click();
        await poll(() => page.getByTestId('verify-result').textContent()).toContain('OK');
        expect(await page.locator('[data-testid="verify-result"] [data-ok="true"]').count()).toBe(1);
        if (suffix === 'phone') expect(await fitsWidth(page)).toBe(true);
        await shot(page, `auditor-audit-${suffix}`);

        await page.getByRole('link', { name: 'Consent log' }).click();
        await page.locator('table.consent').waitFor();
        await page.getByRole('link', { name: 'Bob' }).click();
        await page.waitForURL(/participant=bob/);
        await poll(() => page.locator('table.consent tbody tr').count()).toBe(1);
        expect(await page.locator('table.consent').textContent()).toContain('declined');
        if (suffix === 'phone') expect(await fitsWidth(page)).toBe(true);
        await shot(page, `auditor-consent-${suffix}`);

        if (suffix === 'desktop') {
          // The sessions page lists recent sessions; a row opens the session page.
          await page.getByRole('link', { name: 'Sessions' }).click();
          await page.getByRole('link', { name: SESSION, exact: true }).click();
          await page.waitForURL(new RegExp(`/console/sessions/${SESSION}$`));
          await page.locator('table.artifacts').waitFor();
          expect(await page.locator('video').count()).toBe(0);
          expect(await page.getByRole('link', { name: /Download/ }).count()).toBe(0);
          expect(await page.locator('#timeline-title').count()).toBe(1);
          await shot(page, 'auditor-session-desktop');
          expect((await context.request.get(`${server.url}/api/v1/search?q=zanzibar`)).status()).toBe(403);
        }
      } finally {
        await context.close();
      }
    }
  });

  it('admin: the Recorders page shows each recorder, a dead one, and the raw segments waiting for object storage', async () => {
    await db
      .insertInto('recorders')
      .values([
        { id: 'rec-east', url: 'http://198.18.0.2:7001', instance_id: 'i1', host: 'rec-host-east', capacity: 400, load: 36, recordings_dir: '/rec', upload_backlog_segments: 4, upload_backlog_bytes: 31_457_280, upload_oldest_at: new Date(Date.now() - 600_000), upload_failed_attempts: 12, upload_last_error: 'storage unreachable (ECONNREFUSED)' },
        { id: 'rec-west', url: 'http://198.18.0.3:7001', instance_id: 'i2', host: 'rec-host-west', capacity: 400, load: 0, recordings_dir: '/rec', heartbeat_at: new Date(Date.now() - 120_000), upload_backlog_segments: 0, upload_backlog_bytes: 0, upload_failed_attempts: 0 },
      ])
      .execute();
    try {
      for (const [viewport, suffix] of [[DESKTOP, 'desktop'], [PHONE, 'phone']] as const) {
        const { context, page } = await signIn('admin', viewport);
        try {
          await page.getByRole('link', { name: 'Recorders' }).click();
          await page.waitForURL(/\/console\/recorders$/);
          await page.locator('table.recorders tbody tr').first().waitFor();
          expect(await page.getByTestId('backlog-total').textContent()).toContain('4 raw segments');
          const east = await page.locator('tr[data-recorder="rec-east"]').textContent();
          expect(east).toContain('36 / 400');
          expect(await page.getByTestId('backlog-rec-east').textContent()).toMatch(/4 segments, 30(\.0)? MiB.*12 failed attempts; last: storage unreachable/s);
          const west = await page.locator('tr[data-recorder="rec-west"]').textContent();
          expect(west).toContain('not answering');
          expect(west).toContain('none waiting');
          if (suffix === 'phone') expect(await fitsWidth(page)).toBe(true);
          await shot(page, `admin-recorders-${suffix}`);
        } finally {
          await context.close();
        }
      }
    } finally {
      await db.deleteFrom('recorders').where('id', 'in', ['rec-east', 'rec-west']).execute();
    }
  });

  it('error states: bad key, ended session → sign-in, 403 page, network failure', async () => {
    const context = await browser.newContext({ viewport: DESKTOP, baseURL: server.url });
    const page = await context.newPage();
    watch(page);
    try {
      await page.goto('/console/search?q=zanzibar');
      await page.waitForURL(/\/console\/signin\?next=/);
      await page.getByLabel('API key').fill('vb_00000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await poll(() => page.locator('.error[role=alert]').textContent()).toContain('That API key was not accepted');
      await shot(page, 'signin-error-desktop');
      await page.getByLabel('API key').fill(keys.compliance_officer);
      await page.getByRole('button', { name: 'Sign in' }).click();
      // Back where the user was going.
      await page.waitForURL(/\/console\/search\?q=zanzibar/);
      await poll(() => page.getByTestId('search-summary').textContent()).toContain('1 result');

      // The network fails: said so, with a retry.
      await page.route('**/api/v1/search**', (r) => r.abort('internetdisconnected'));
      await page.getByRole('button', { name: 'Search' }).click();
      await poll(() => page.locator('.error.network').textContent()).toContain('Cannot reach the server');
      await page.unroute('**/api/v1/search**');
      await page.getByRole('button', { name: 'Retry' }).click();
      await poll(() => page.getByTestId('search-summary').textContent()).toContain('1 result');

      // A page the role may not use.
      await page.goto('/console/audit');
      expect(await page.getByRole('alert').textContent()).toContain('Not allowed for your role');

      // The session ends behind the page's back (signed out elsewhere): next request → sign-in.
      const cookies = await context.cookies();
      expect(cookies.find((c) => c.name === 'vb_session')?.httpOnly).toBe(true);
      await context.request.post(`${server.url}/api/v1/logout`, { headers: { 'x-verbatim-csrf': '1' } });
      await context.addCookies(cookies);
      await page.getByRole('link', { name: 'Search' }).click();
      await page.getByLabel('Search the transcripts').fill('zanzibar');
      await page.getByRole('button', { name: 'Search' }).click();
      await page.waitForURL(/\/console\/signin/);
      expect(await page.locator('.notice').textContent()).toMatch(/signed out|session has ended/);

      // Sign out from the header.
      await page.getByLabel('API key').fill(keys.auditor);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.waitForURL(/\/console\/(audit|search)/);
      await page.getByRole('button', { name: 'Sign out' }).click();
      await page.waitForURL(/\/console\/signin/);
      expect((await context.request.get(`${server.url}/api/v1/me`)).status()).toBe(401);
    } finally {
      await context.close();
    }
  });
});
