import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../../db/database.ts';
import { launchChromium } from '../../../../testing/browser.ts';
import { testBackends } from '../../../../testing/databases.ts';
import { TEST_REDIS_URL } from '../../../../testing/transcode-worker.ts';
import { createLogger } from '../../../lib/logger.ts';
import { startAuditServer, type AuditServer } from '../http/server.ts';
import { createUserWithKey } from '../key-lifecycle.ts';
import { evaluateRegisteredTranscript } from './evaluate.ts';

/**
 * The review queue in Debian Chromium: a transcript registered with a spoken card number and
 * an off-channel phrase is flagged; an officer opens the item from the queue, decides it in
 * the console, and the decision is in the audit chain and the evidence report (which an
 * auditor reads in the console too). Screenshots land in test-artifacts/review/.
 */

const SHOTS = fileURLToPath(new URL('../../../../test-artifacts/review/', import.meta.url));
const logger = createLogger({ level: 'silent' });

describe('review queue in the console (Chromium)', () => {
  let db: Db;
  let server: AuditServer;
  let browser: Browser;
  let cleanup: () => Promise<void>;
  const keys: Record<'officer' | 'auditor', { key: string; id: string }> = { officer: { key: '', id: '' }, auditor: { key: '', id: '' } };

  beforeAll(async () => {
    rmSync(SHOTS, { recursive: true, force: true });
    mkdirSync(SHOTS, { recursive: true });
    const backend = (await testBackends())[0]!;
    cleanup = () => backend.cleanup();
    db = await backend.open();
    for (const [who, role] of [['officer', 'compliance_officer'], ['auditor', 'auditor']] as const) {
      const k = await createUserWithKey(db, { name: `${who} user`, role });
      keys[who] = { key: k.apiKey, id: k.user.id };
    }
    server = await startAuditServer({ db, logger, failedAuthPerMinute: 0, redisUrl: TEST_REDIS_URL, queuePrefix: `t${randomBytes(4).toString('hex')}` });
    browser = await launchChromium();
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await db?.destroy();
    await cleanup?.();
  });

  const signIn = async (who: keyof typeof keys): Promise<Page> => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, baseURL: server.url });
    const page = await context.newPage();
    await page.goto('/console/');
    await page.waitForURL(/\/console\/signin/);
    await page.keyboard.type(keys[who].key);
    await page.keyboard.press('Enter');
    await page.waitForURL((u) => !u.pathname.startsWith('/console/signin'));
    return page;
  };

  it('an officer dispositions a flagged item in the console; it is audited and in the evidence report', async () => {
    const created = await fetch(`${server.url}/api/v1/supervision/policies`, {
      method: 'POST',
      headers: { authorization: `Bearer ${keys.officer.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'Off-channel and cards', severity: 'high', lexicon: ['text me', 'my personal phone'], detectors: ['card'] }),
    });
    expect(created.status).toBe(201);
    const policy = ((await created.json()) as { policy: { id: string } }).policy;

    // Registered as the finalize job registers a transcript, then the registration hook.
    await db.insertInto('recording_sessions').values({ id: 'rv-1', room_id: 'desk', started_at: new Date('2026-03-02T09:00:00Z'), status: 'processing' }).execute();
    await db.transaction().execute(async (tx) => {
      await tx
        .insertInto('transcript_segments')
        .values([
          { session_id: 'rv-1', seq: 0, participant_id: 'alice', speaker: 'Alice', start_seconds: 1, end_seconds: 3, text: 'Morning. Can you read me the card?', language: 'en' },
          { session_id: 'rv-1', seq: 1, participant_id: 'bob', speaker: 'Bob', start_seconds: 4.5, end_seconds: 9, text: 'It is four one one one one one one one one one one one one one one one.', language: 'en' },
          { session_id: 'rv-1', seq: 2, participant_id: 'alice', speaker: 'Alice', start_seconds: 10, end_seconds: 12, text: 'Thanks. Text me on my personal phone later.', language: 'en' },
        ])
        .execute();
      await tx.updateTable('recording_sessions').set({ status: 'done', transcript_status: 'done' }).where('id', '=', 'rv-1').execute();
    });
    expect((await evaluateRegisteredTranscript(db, 'rv-1')).items).toBe(2);

    const page = await signIn('officer');
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.getByRole('link', { name: 'Review', exact: true }).click();
    await page.waitForURL(/\/console\/review$/);
    await expect.poll(() => page.locator('table.review-items tbody tr').count(), { timeout: 15_000 }).toBe(2);
    await page.getByLabel('Severity').selectOption('high');
    await page.getByLabel('Room').fill('desk');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.waitForURL(/severity=high/);
    await expect.poll(() => page.locator('table.review-items tbody tr').count(), { timeout: 15_000 }).toBe(2);
    await page.screenshot({ path: path.join(SHOTS, 'queue.png'), fullPage: true });

    const bobRow = page.locator('table.review-items tbody tr', { hasText: 'Bob' });
    expect(await bobRow.locator('mark').textContent()).toBe('four one one one one one one one one one one one one one one one');
    const itemId = await bobRow.getAttribute('data-item');
    await bobRow.getByRole('link', { name: 'Open' }).click();
    await page.waitForURL(new RegExp(`/console/review/${itemId}$`));
    const play = page.getByTestId('item-play');
    await play.waitFor();
    expect(await play.getAttribute('href')).toBe('/console/sessions/rv-1?t=4.5&participant=bob');
    await page.getByLabel('Disposition').selectOption('violation');
    // No reason: the browser refuses to submit (required), and the API would answer REASON_REQUIRED.
    await page.getByRole('button', { name: 'Record decision' }).click();
    expect(await db.selectFrom('review_decisions').selectAll().execute()).toEqual([]);
    await page.getByLabel('Reason').fill('Full card number read out on a recorded line.');
    await page.screenshot({ path: path.join(SHOTS, 'item.png'), fullPage: true });
    await page.getByRole('button', { name: 'Record decision' }).click();
    await page.getByTestId('decision-ok').waitFor();
    expect(await page.getByTestId('item-state').textContent()).toContain('closed · violation: Full card number read out');
    expect(await page.getByRole('button', { name: 'Record decision' }).count()).toBe(0);

    const trail = await db.selectFrom('audit_log').select(['action', 'actor_id', 'details']).where('target_id', '=', itemId).orderBy('seq').execute();
    expect(trail.map((t) => t.action)).toEqual(['review.item.view', 'review.item.decide', 'review.item.view']);
    const decideEntry = trail[1]!;
    expect(decideEntry.actor_id).toBe(keys.officer.id);
    expect(typeof decideEntry.details === 'string' ? JSON.parse(decideEntry.details) : decideEntry.details).toMatchObject({ disposition: 'violation', reason: 'Full card number read out on a recorded line.', via: 'session' });
    expect(await db.selectFrom('audit_log').select('action').where('action', '=', 'review.item.list').execute()).toHaveLength(2);

    // The evidence report, in the console of an auditor.
    const auditor = await signIn('auditor');
    await auditor.goto('/console/review-report?from=2020-01-01&to=2100-01-01');
    const row = auditor.locator(`table.review-report tr[data-policy="${policy.id}"]`);
    await row.waitFor();
    const cells = await row.locator('td').allTextContents();
    expect(cells.slice(0, 9)).toEqual(['Off-channel and cards', 'all', '2', '0', '1', '0', '0', '0', '1']);
    expect(await auditor.locator(`table.review-report tr[data-reviewer="${keys.officer.id}"] td`).nth(4).textContent()).toBe('1');
    await auditor.screenshot({ path: path.join(SHOTS, 'report.png'), fullPage: true });
    expect(errors).toEqual([]);
  });
});
