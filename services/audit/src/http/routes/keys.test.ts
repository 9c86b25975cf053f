import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../../../db/database.ts';
import { createLogger } from '../../../../lib/logger.ts';
import { testBackends, type TestBackend } from '../../../../../testing/databases.ts';
import { AuditLog } from '../../audit-log.ts';
import { createUserWithKey } from '../../key-lifecycle.ts';
import { startAuditServer, type AuditServer } from '../server.ts';

const backends = await testBackends();
afterAll(async () => {
  for (const b of backends) await b.cleanup();
});

const HOUR = 3_600_000;

describe.each(backends)('users and API keys: list, revoke, rotate, disable ($name)', (backend: TestBackend) => {
  const skip = !backend.available;
  let db: Db;
  let server: AuditServer;
  /** The server's clock: moved forward to run out expiries and grace periods. */
  let clock = Date.now();
  let admin: string;
  let adminKeyId: string;
  let adminUserId: string;

  beforeAll(async () => {
    if (skip) return;
    db = await backend.open();
    const a = await createUserWithKey(db, { name: 'First admin', role: 'admin' });
    admin = `Bearer ${a.apiKey}`;
    adminKeyId = a.key.id;
    adminUserId = a.user.id;
    server = await startAuditServer({ db, logger: createLogger({ level: 'silent' }), failedAuthPerMinute: 0, now: () => new Date(clock), keyRotationGraceHours: 24 });
  });
  afterAll(async () => {
    await server?.close();
    await db?.destroy();
  });

  async function call(method: string, path: string, auth: { bearer?: string; cookie?: string }, body?: unknown): Promise<{ status: number; json: any; setCookie: string | null }> {
    const headers: Record<string, string> = {};
    if (auth.bearer) headers.authorization = auth.bearer;
    if (auth.cookie) Object.assign(headers, { cookie: auth.cookie, 'x-verbatim-csrf': '1' });
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${server.url}/api/v1${path}`, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : null, setCookie: res.headers.get('set-cookie') };
  }
  const asAdmin = (method: string, path: string, body?: unknown) => call(method, path, { bearer: admin }, body);
  /** Signs in like the console does; returns the session cookie. */
  async function signIn(apiKey: string): Promise<string> {
    const r = await call('POST', '/login', {}, { apiKey });
    expect(r.status).toBe(200);
    return r.setCookie!.split(';')[0]!;
  }
  const lastAudit = async (action: string) => {
    const row = await db.selectFrom('audit_log').selectAll().where('action', '=', action).orderBy('seq', 'desc').limit(1).executeTakeFirstOrThrow();
    return { ...row, details: (typeof row.details === 'string' ? JSON.parse(row.details) : row.details) as Record<string, any> };
  };
  const userOf = async (id: string) => ((await asAdmin('GET', '/users')).json.users as any[]).find((u) => u.id === id);

  it.skipIf(skip)('lists users and keys with prefix, created, last used, expiry and state; last use is written at most once a minute', async () => {
    const expiresAt = new Date(clock + 30 * 24 * HOUR).toISOString();
    const created = await asAdmin('POST', '/keys', { name: 'Ann Auditor', role: 'auditor', expiresAt });
    expect(created.status).toBe(201);
    let ann = await userOf(created.json.user.id);
    expect(ann).toMatchObject({ name: 'Ann Auditor', role: 'auditor', state: 'enabled', disabledAt: null, keys: [{ id: created.json.key.id, prefix: created.json.key.prefix, expiresAt, lastUsedAt: null, revokedAt: null, state: 'active' }] });
    expect(JSON.stringify(ann)).not.toContain(created.json.apiKey.slice(12));

    const annKey = `Bearer ${created.json.apiKey}`;
    expect((await call('GET', '/me', { bearer: annKey })).status).toBe(200);
    ann = await userOf(created.json.user.id);
    const firstUse = ann.keys[0].lastUsedAt as string;
    expect(new Date(firstUse).getTime()).toBe(clock);
    clock += 30_000;
    expect((await call('GET', '/me', { bearer: annKey })).status).toBe(200);
    expect((await userOf(created.json.user.id)).keys[0].lastUsedAt).toBe(firstUse);
    clock += 31_000;
    expect((await call('GET', '/me', { bearer: annKey })).status).toBe(200);
    expect((await userOf(created.json.user.id)).keys[0].lastUsedAt).toBe(new Date(clock).toISOString());

    // A second key for the same user, with an expiry: refused once it passes.
    expect((await asAdmin('POST', `/users/${created.json.user.id}/keys`, { expiresAt: new Date(clock - 1000).toISOString() })).json.error).toMatchObject({ code: 'BAD_REQUEST', details: { field: 'expiresAt' } });
    const second = await asAdmin('POST', `/users/${created.json.user.id}/keys`, { expiresAt: new Date(clock + HOUR).toISOString() });
    expect(second.status).toBe(201);
    expect((await call('GET', '/me', { bearer: `Bearer ${second.json.apiKey}` })).status).toBe(200);
    clock += HOUR;
    const expired = await call('GET', '/me', { bearer: `Bearer ${second.json.apiKey}` });
    expect(expired.status).toBe(401);
    expect(expired.json.error.details.reason).toBe('expired');
    expect((await userOf(created.json.user.id)).keys.map((k: any) => k.state)).toEqual(['active', 'expired']);
    expect((await lastAudit('user.list')).details).toMatchObject({ returned: 2 });
    expect((await asAdmin('POST', '/users/usr_00000000-0000-4000-8000-000000000000/keys', {})).json.error.code).toBe('NOT_FOUND');
  });

  it.skipIf(skip)('a revoked key gets 401 at once, and so does the console session it opened; audited with before and after', async () => {
    const bo = await createUserWithKey(db, { name: 'Bo Officer', role: 'compliance_officer' });
    const bearer = `Bearer ${bo.apiKey}`;
    const cookie = await signIn(bo.apiKey);
    expect((await call('GET', '/me', { cookie })).json.via).toBe('session');

    const r = await asAdmin('POST', `/keys/${bo.key.id}/revoke`, { reason: 'laptop stolen' });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ key: { id: bo.key.id, state: 'revoked' }, sessionsEnded: 1 });
    const byKey = await call('GET', '/me', { bearer });
    expect(byKey.status).toBe(401);
    expect(byKey.json.error.details.reason).toBe('revoked');
    const bySession = await call('GET', '/me', { cookie });
    expect(bySession.status).toBe(401);
    expect(bySession.json.error.code).toBe('UNAUTHORIZED');
    // Signing in again with the revoked key opens nothing.
    expect((await call('POST', '/login', {}, { apiKey: bo.apiKey })).status).toBe(401);

    const entry = await lastAudit('key.revoke');
    expect(entry).toMatchObject({ actor_id: adminUserId, target_type: 'api_key', target_id: bo.key.id });
    expect(entry.details).toMatchObject({ keyPrefix: bo.key.prefix, before: { state: 'active', revokedAt: null }, after: { state: 'revoked' }, sessionsEnded: 1, reason: 'laptop stolen' });
    expect((await asAdmin('POST', `/keys/${bo.key.id}/revoke`, {})).json.error.code).toBe('CONFLICT');
    expect((await asAdmin('POST', '/keys/key_00000000-0000-4000-8000-000000000000/revoke', {})).status).toBe(404);
    // Only admins manage keys.
    const carl = await createUserWithKey(db, { name: 'Carl', role: 'auditor' });
    expect((await call('POST', `/keys/${carl.key.id}/revoke`, { bearer: `Bearer ${carl.apiKey}` }, {})).status).toBe(403);
    expect((await call('GET', '/users', { bearer: `Bearer ${carl.apiKey}` })).status).toBe(403);
  });

  it.skipIf(skip)('a disabled user gets 401 at once on every key and session; enabled again the keys work, the old sessions stay ended', async () => {
    const dee = await createUserWithKey(db, { name: 'Dee', role: 'auditor' });
    const bearer = `Bearer ${dee.apiKey}`;
    const cookie = await signIn(dee.apiKey);

    const off = await asAdmin('POST', `/users/${dee.user.id}/disable`, { reason: 'left the company' });
    expect(off.status).toBe(200);
    expect(off.json).toMatchObject({ user: { id: dee.user.id, state: 'disabled' }, sessionsEnded: 1 });
    const byKey = await call('GET', '/me', { bearer });
    expect(byKey.status).toBe(401);
    expect(byKey.json.error.details.reason).toBe('disabled');
    expect((await call('GET', '/me', { cookie })).status).toBe(401);
    expect((await lastAudit('user.disable')).details).toMatchObject({ before: { state: 'enabled', disabledAt: null }, after: { state: 'disabled' }, sessionsEnded: 1, reason: 'left the company' });
    expect((await asAdmin('POST', `/users/${dee.user.id}/disable`, {})).json.error.code).toBe('CONFLICT');

    const on = await asAdmin('POST', `/users/${dee.user.id}/enable`, {});
    expect(on.json).toMatchObject({ user: { state: 'enabled', disabledAt: null } });
    expect((await lastAudit('user.enable')).details).toMatchObject({ before: { state: 'disabled' }, after: { state: 'enabled' } });
    expect((await call('GET', '/me', { bearer })).status).toBe(200);
    expect((await call('GET', '/me', { cookie })).status).toBe(401);
  });

  it.skipIf(skip)('the last enabled admin with a usable key can be neither disabled nor have that key revoked (409 LAST_ADMIN)', async () => {
    const self = await asAdmin('POST', `/users/${adminUserId}/disable`, {});
    expect(self.status).toBe(409);
    expect(self.json.error).toMatchObject({ code: 'LAST_ADMIN' });
    expect(self.json.error.hint).toContain('verbatim keys create-admin');
    expect((await asAdmin('POST', `/keys/${adminKeyId}/revoke`, {})).json.error.code).toBe('LAST_ADMIN');
    // A disabled admin, or one whose keys are all revoked, does not count as another admin.
    const idle = await createUserWithKey(db, { name: 'Idle admin', role: 'admin' });
    expect((await asAdmin('POST', `/keys/${idle.key.id}/revoke`, {})).status).toBe(200);
    expect((await asAdmin('POST', `/users/${adminUserId}/disable`, {})).json.error.code).toBe('LAST_ADMIN');
    const second = await createUserWithKey(db, { name: 'Second admin', role: 'admin' });
    expect((await asAdmin('POST', `/users/${second.user.id}/disable`, {})).status).toBe(200);
    expect((await asAdmin('POST', `/keys/${adminKeyId}/revoke`, {})).json.error.code).toBe('LAST_ADMIN');
    // With the second admin enabled again, the first may go.
    expect((await asAdmin('POST', `/users/${second.user.id}/enable`, {})).status).toBe(200);
    const bySecond = await call('POST', `/users/${adminUserId}/disable`, { bearer: `Bearer ${second.apiKey}` }, {});
    expect(bySecond.status).toBe(200);
    expect((await asAdmin('GET', '/me')).status).toBe(401);
    expect((await call('POST', `/users/${adminUserId}/enable`, { bearer: `Bearer ${second.apiKey}` }, {})).status).toBe(200);
    expect((await asAdmin('GET', '/me')).status).toBe(200);
  });

  it.skipIf(skip)('rotation: the new key works at once, the old one until the grace period ends (default or per request), then 401', async () => {
    const eve = await createUserWithKey(db, { name: 'Eve', role: 'auditor', expiresAt: new Date(clock + 90 * 24 * HOUR) });
    const oldBearer = `Bearer ${eve.apiKey}`;
    const oldCookie = await signIn(eve.apiKey);
    const r = await asAdmin('POST', `/keys/${eve.key.id}/rotate`, {});
    expect(r.status).toBe(201);
    expect(r.json.apiKey).toMatch(/^vb_[0-9a-f]{8}_[A-Za-z0-9_-]{43}$/);
    // The new key keeps the old one's expiry.
    expect(r.json.key.expiresAt).toBe(eve.key.expiresAt);
    expect(r.json.oldRevokedAt).toBe(new Date(clock + 24 * HOUR).toISOString());
    expect(r.json.old.state).toBe('rotating');
    const newBearer = `Bearer ${r.json.apiKey}`;
    expect((await call('GET', '/me', { bearer: newBearer })).status).toBe(200);
    expect((await call('GET', '/me', { bearer: oldBearer })).status).toBe(200);
    const listed = (await userOf(eve.user.id)).keys;
    expect(listed.map((k: any) => [k.state, k.rotatedFrom])).toEqual([
      ['rotating', null],
      ['active', eve.key.id],
    ]);
    expect((await lastAudit('key.rotate')).details).toMatchObject({ before: { state: 'active' }, after: { state: 'rotating' }, newKey: { id: r.json.key.id, prefix: r.json.key.prefix } });
    expect(JSON.stringify((await lastAudit('key.rotate')).details)).not.toContain(r.json.apiKey.slice(12));
    // A key in its grace period is not rotated twice.
    expect((await asAdmin('POST', `/keys/${eve.key.id}/rotate`, {})).json.error.code).toBe('CONFLICT');

    clock += 24 * HOUR - 1000;
    expect((await call('GET', '/me', { bearer: oldBearer })).status).toBe(200);
    clock += 1000;
    const late = await call('GET', '/me', { bearer: oldBearer });
    expect(late.status).toBe(401);
    expect(late.json.error.details.reason).toBe('revoked');
    expect((await call('GET', '/me', { cookie: oldCookie })).status).toBe(401);
    expect((await call('GET', '/me', { bearer: newBearer })).status).toBe(200);

    // graceHours 0: the old key and its sessions are refused at once.
    const newCookie = await signIn(r.json.apiKey);
    const now0 = await asAdmin('POST', `/keys/${r.json.key.id}/rotate`, { graceHours: 0, expiresAt: null });
    expect(now0.status).toBe(201);
    expect(now0.json.key.expiresAt).toBeNull();
    expect(now0.json.old.state).toBe('revoked');
    expect((await call('GET', '/me', { bearer: newBearer })).status).toBe(401);
    expect((await call('GET', '/me', { cookie: newCookie })).status).toBe(401);
    expect((await call('GET', '/me', { bearer: `Bearer ${now0.json.apiKey}` })).status).toBe(200);
    expect((await asAdmin('POST', `/keys/${eve.key.id}/rotate`, { graceHours: 1000 })).status).toBe(400);
    expect((await new AuditLog(db).verify()).ok).toBe(true);
  });
});
