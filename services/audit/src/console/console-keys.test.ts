import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../../db/database.ts';
import { launchChromium } from '../../../../testing/browser.ts';
import { testBackends } from '../../../../testing/databases.ts';
import { createLogger } from '../../../lib/logger.ts';
import { startAuditServer, type AuditServer } from '../http/server.ts';
import { createUserWithKey } from '../key-lifecycle.ts';

/**
 * The console's Users and API keys page in Chromium: list, create with an expiry, revoke,
 * disable, rotate; a revoked key's or disabled user's console session is sent back to sign-in
 * on its next request. Screenshots in test-artifacts/console/ (desktop and 390 px wide).
 */

const SHOTS = fileURLToPath(new URL('../../../../test-artifacts/console/', import.meta.url));
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };
const KEY_RE = /^vb_[0-9a-f]{8}_[A-Za-z0-9_-]{43}$/;
const poll = <T>(fn: () => T | Promise<T>) => expect.poll(fn, { timeout: 15_000, interval: 100 });

describe('console: users and API keys (Chromium)', () => {
  let db: Db;
  let server: AuditServer;
  let browser: Browser;
  let cleanup: () => Promise<void>;
  let adminKey: string;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    mkdirSync(SHOTS, { recursive: true });
    // The embedded backend, as `npm start` runs it; routes/keys.test.ts covers PostgreSQL.
    const backend = (await testBackends())[0]!;
    cleanup = () => backend.cleanup();
    db = await backend.open();
    adminKey = (await createUserWithKey(db, { name: 'First admin', role: 'admin' })).apiKey;
    server = await startAuditServer({ db, logger: createLogger({ level: 'silent' }), failedAuthPerMinute: 0 });
    browser = await launchChromium();
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await db?.destroy();
    await cleanup?.();
  });
  afterEach(() => expect(pageErrors.splice(0)).toEqual([]));

  async function signIn(key: string, viewport = DESKTOP): Promise<{ context: BrowserContext; page: Page }> {
    const context = await browser.newContext({ viewport, baseURL: server.url });
    const page = await context.newPage();
    page.on('dialog', (d) => void d.accept());
    page.on('pageerror', (e) => pageErrors.push(`${page.url()}: ${e.message}`));
    await page.goto('/console/');
    await page.waitForURL(/\/console\/signin/);
    await page.getByLabel('API key').fill(key);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL((u) => !u.pathname.startsWith('/console/signin'));
    return { context, page };
  }
  const keyItem = (page: Page, prefix: string) => page.locator(`li[data-key="${prefix}"]`);
  const userRow = (page: Page, name: string) => page.locator(`tr[data-name="${name}"]`);

  it('lists, creates with an expiry, revokes and disables; the revoked key and the disabled user are sent to sign-in at their next request', async () => {
    const { context, page } = await signIn(adminKey);
    try {
      await page.getByRole('link', { name: 'Users & keys' }).click();
      await userRow(page, 'First admin').waitFor();
      expect(await userRow(page, 'First admin').textContent()).toContain('(you)');

      // Create with an expiry: the key is shown once and the list shows its prefix, expiry and state.
      await page.getByLabel('Name', { exact: true }).fill('Ann Auditor');
      await page.getByLabel('Role', { exact: true }).selectOption('auditor');
      await page.getByLabel('Expires (optional)').fill('2099-12-31');
      await page.getByRole('button', { name: 'Create', exact: true }).click();
      await poll(() => page.getByLabel('New API key').inputValue()).toMatch(KEY_RE);
      const annKey = await page.getByLabel('New API key').inputValue();
      const annPrefix = annKey.slice(3, 11);
      await poll(() => keyItem(page, annPrefix).getAttribute('data-state')).toBe('active');
      expect(await keyItem(page, annPrefix).textContent()).toMatch(/last used never · expires 2099-12-31 23:59:59 UTC/);

      // Ann works in the console; the admin revokes her key: her next request ends at sign-in.
      const ann = await signIn(annKey);
      try {
        expect(new URL(ann.page.url()).pathname).toBe('/console/audit');
        await page.reload();
        await poll(() => keyItem(page, annPrefix).textContent()).toMatch(/last used \d{4}-/);
        await page.getByRole('button', { name: `Revoke key ${annPrefix}` }).click();
        await poll(() => page.locator('.form-status').textContent()).toContain(`Revoked key ${annPrefix} and ended 1 console session(s)`);
        await poll(() => keyItem(page, annPrefix).getAttribute('data-state')).toBe('revoked');
        expect((await ann.context.request.get(`${server.url}/api/v1/me`)).status()).toBe(401);
        await ann.page.getByRole('link', { name: 'Consent log' }).click();
        await ann.page.waitForURL(/\/console\/signin/);
        expect(await ann.page.locator('.notice').textContent()).toContain('its API key was revoked');
      } finally {
        await ann.context.close();
      }

      // Disabling a user ends their session the same way; enabling them again lets their key sign in.
      const bo = await createUserWithKey(db, { name: 'Bo Officer', role: 'compliance_officer' });
      const boBrowser = await signIn(bo.apiKey);
      try {
        await page.reload();
        await page.getByRole('button', { name: 'Disable Bo Officer' }).click();
        await poll(() => userRow(page, 'Bo Officer').getAttribute('data-state')).toBe('disabled');
        await boBrowser.page.getByRole('link', { name: 'Legal holds' }).click();
        await boBrowser.page.waitForURL(/\/console\/signin/);
        expect(await boBrowser.page.locator('.notice').textContent()).toContain('your user was disabled');
        expect((await boBrowser.context.request.get(`${server.url}/api/v1/me`)).status()).toBe(401);
        await boBrowser.page.getByLabel('API key').fill(bo.apiKey);
        await boBrowser.page.getByRole('button', { name: 'Sign in' }).click();
        await poll(() => boBrowser.page.locator('.error[role=alert]').count()).toBeGreaterThan(0);
      } finally {
        await boBrowser.context.close();
      }
      await page.getByRole('button', { name: 'Enable Bo Officer' }).click();
      await poll(() => userRow(page, 'Bo Officer').getAttribute('data-state')).toBe('enabled');

      // The last admin cannot disable themself: the refusal is shown with its code.
      await page.getByRole('button', { name: 'Disable First admin' }).click();
      await poll(() => page.locator('.form-status [role=alert]').getAttribute('data-code')).toBe('LAST_ADMIN');
      expect(await userRow(page, 'First admin').getAttribute('data-state')).toBe('enabled');

      // Rotate Bo's key: the new key is shown once and works; the old one is rotating.
      await page.getByLabel('Rotation grace (hours)').fill('2');
      await page.getByRole('button', { name: `Rotate key ${bo.key.prefix}` }).click();
      await poll(() => keyItem(page, bo.key.prefix).getAttribute('data-state')).toBe('rotating');
      const rotated = await page.getByLabel('New API key').inputValue();
      expect(rotated).toMatch(KEY_RE);
      expect(rotated).not.toBe(annKey);
      expect(await keyItem(page, rotated.slice(3, 11)).getAttribute('data-state')).toBe('active');
      expect((await fetch(`${server.url}/api/v1/me`, { headers: { authorization: `Bearer ${rotated}` } })).status).toBe(200);
      await page.screenshot({ path: path.join(SHOTS, 'admin-users-keys-desktop.png'), fullPage: true });
    } finally {
      await context.close();
    }
  });

  it('fits a 390 px screen', async () => {
    const { context, page } = await signIn(adminKey, PHONE);
    try {
      await page.goto('/console/keys');
      await userRow(page, 'First admin').waitFor();
      expect(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1)).toBe(true);
      await page.screenshot({ path: path.join(SHOTS, 'admin-users-keys-phone.png'), fullPage: true });
    } finally {
      await context.close();
    }
  });
});
