import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../../db/database.ts';
import { launchChromium } from '../../../../testing/browser.ts';
import { testBackends } from '../../../../testing/databases.ts';
import { createLogger } from '../../../lib/logger.ts';
import { startAuditServer, type AuditServer } from '../http/server.ts';
import { createUserWithKey } from '../key-lifecycle.ts';

/** The session page's transcript in Chromium: a spoken card number shows as its label until the officer reveals it (audited). */
describe('console: redacted transcript (Chromium)', () => {
  let db: Db;
  let server: AuditServer;
  let browser: Browser;
  let cleanup: () => Promise<void>;
  let officerKey: string;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    // The embedded backend, as `npm start` runs it; supervision/redaction.test.ts covers PostgreSQL.
    const backend = (await testBackends())[0]!;
    cleanup = () => backend.cleanup();
    db = await backend.open();
    officerKey = (await createUserWithKey(db, { name: 'Officer', role: 'compliance_officer' })).apiKey;
    await db.insertInto('recording_sessions').values({ id: 'red-ui', room_id: 'desk', started_at: '2026-03-01T10:00:00Z', ended_at: '2026-03-01T10:00:20Z', status: 'done', transcript_status: 'done' }).execute();
    await db
      .insertInto('transcript_segments')
      .values([
        { session_id: 'red-ui', seq: 0, participant_id: 'bob', speaker: 'Bob', start_seconds: 1, end_seconds: 6, text: 'My card is four one one one one one one one one one one one one one one one.', language: 'en' },
        { session_id: 'red-ui', seq: 1, participant_id: 'amy', speaker: 'Amy', start_seconds: 7, end_seconds: 9, text: 'Thanks, noted.', language: 'en' },
      ])
      .execute();
    server = await startAuditServer({ db, logger: createLogger({ level: 'silent' }), failedAuthPerMinute: 0 });
    browser = await launchChromium();
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await db?.destroy();
    await cleanup?.();
  });

  it('shows [CARD NUMBER]; "Show redacted text" shows the words and is a transcript.reveal audit entry', async () => {
    const context = await browser.newContext({ baseURL: server.url });
    const page = await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(e.message));
    try {
      await page.goto('/console/');
      await page.waitForURL(/\/console\/signin/);
      await page.getByLabel('API key').fill(officerKey);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.waitForURL((u) => !u.pathname.startsWith('/console/signin'));
      await page.goto('/console/sessions/red-ui');
      const first = page.locator('ol.transcript li[data-seq="0"] .text');
      await expect.poll(() => first.textContent(), { timeout: 15_000 }).toBe('My card is [CARD NUMBER].');
      expect(await page.locator('ol.transcript li[data-seq="1"] .text').textContent()).toBe('Thanks, noted.');
      expect(await db.selectFrom('audit_log').select('action').where('action', '=', 'transcript.reveal').execute()).toEqual([]);
      await page.getByRole('button', { name: 'Show redacted text (audited)' }).click();
      await expect.poll(() => first.textContent(), { timeout: 15_000 }).toContain('four one one one');
      const reveal = await db.selectFrom('audit_log').select(['action', 'target_id']).where('action', '=', 'transcript.reveal').execute();
      expect(reveal).toEqual([{ action: 'transcript.reveal', target_id: 'red-ui' }]);
      expect(await page.getByRole('button', { name: 'Show redacted text (audited)' }).count()).toBe(0);
      expect(pageErrors).toEqual([]);
    } finally {
      await context.close();
    }
  });
});
