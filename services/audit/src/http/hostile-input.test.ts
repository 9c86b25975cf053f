import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../../db/database.ts';
import { testBackends, type TestBackend } from '../../../../testing/databases.ts';
import { send, sendBytes, type FuzzResponse } from '../../../../testing/http-fuzz.ts';
import { createLogger } from '../../../lib/logger.ts';
import { LocalArtifactStorage } from '../../../lib/storage/artifact-storage.ts';
import { artifactKey } from '../../../lib/storage/artifact-keys.ts';
import { AuditLog } from '../audit-log.ts';
import { createUserWithKey } from '../key-lifecycle.ts';
import { startAuditServer, type AuditServer } from './server.ts';

/**
 * The compliance API against the hostile requests of issue 12, one by one: requests refused
 * before routing (bad URL encoding, 414, 431, bytes that are not HTTP), malformed bodies, NUL and
 * lone surrogates in every kind of text field, an export naming what does not exist, and an audit
 * trail that cannot be written. Each refusal answers `{error: {code}}` and is one audit entry.
 */
const backends = await testBackends();
afterAll(async () => {
  for (const b of backends) await b.cleanup();
});

const MEDIA = Buffer.from('bytes of a composite, for a download that must not happen without evidence');

describe.each(backends)('compliance API against hostile input ($name)', (backend: TestBackend) => {
  const skip = !backend.available;
  let db: Db;
  let server: AuditServer;
  let dir: string;
  let admin: string;
  let officer: string;
  let auditor: string;

  beforeAll(async () => {
    if (skip) return;
    db = await backend.open();
    dir = mkdtempSync(path.join(os.tmpdir(), 'verbatim-hostile-'));
    mkdirSync(path.join(dir, 'exports'));
    const storage = new LocalArtifactStorage(path.join(dir, 'artifacts'));
    writeFileSync(path.join(dir, 'media'), MEDIA);
    await storage.put(artifactKey('board', 's1', 'composite.mp4'), path.join(dir, 'media'));
    await db.insertInto('rooms').values({ id: 'board', name: 'board', flags: JSON.stringify({}), secret_hash: 'scrypt$x$y' }).execute();
    await db.insertInto('recording_sessions').values({ id: 's1', room_id: 'board', started_at: '2024-03-01T10:00:00Z', ended_at: '2024-03-01T10:10:00Z', status: 'done', transcript_status: 'done' }).execute();
    await db.insertInto('transcript_segments').values({ session_id: 's1', seq: 0, participant_id: 'p-alice', speaker: 'Alice', start_seconds: 0, end_seconds: 4, text: 'The confidential budget.', language: 'en' }).execute();
    await db
      .insertInto('artifacts')
      .values({ session_id: 's1', key: artifactKey('board', 's1', 'composite.mp4'), kind: 'composite', participant_id: null, content_type: 'video/mp4', bytes: MEDIA.length, sha256: 'a'.repeat(64), storage: 'local', duration_seconds: 4 })
      .execute();
    server = await startAuditServer({ db, logger: createLogger({ level: 'silent' }), failedAuthPerMinute: 0, storage, recordingsDir: path.join(dir, 'recordings'), exportsDir: path.join(dir, 'exports') });
    admin = `Bearer ${(await createUserWithKey(db, { name: 'admin', role: 'admin' })).apiKey}`;
    officer = `Bearer ${(await createUserWithKey(db, { name: 'officer', role: 'compliance_officer' })).apiKey}`;
    auditor = `Bearer ${(await createUserWithKey(db, { name: 'auditor', role: 'auditor' })).apiKey}`;
  });
  afterAll(async () => {
    await server?.close();
    await db?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const auditCount = async () => Number((await db.selectFrom('audit_log').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
  const lastAudit = async () => db.selectFrom('audit_log').selectAll().orderBy('seq', 'desc').limit(1).executeTakeFirstOrThrow();
  const json = (res: FuzzResponse) => JSON.parse(res.text) as { error: { code: string; message: string; hint?: string } } & Record<string, unknown>;

  /** Sends, and checks the answer is `{error: {code}}` with that status and code and exactly one audit entry records it. */
  async function refused(status: number, code: string, go: () => Promise<FuzzResponse>) {
    const before = await auditCount();
    const res = await go();
    expect(res.status, res.text).toBe(status);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    const body = json(res);
    expect(body.error.code).toBe(code);
    expect(typeof body.error.message).toBe('string');
    expect(await auditCount()).toBe(before + 1);
    const entry = await lastAudit();
    expect((entry.details as { code: string }).code).toBe(code);
    expect((entry.details as { status: number }).status).toBe(status);
    return entry;
  }
  const get = (p: string, headers: Record<string, string> = {}) => send(server.url, { method: 'GET', path: p, headers });
  const post = (p: string, body: string, headers: Record<string, string> = {}) => send(server.url, { method: 'POST', path: p, headers: { 'content-type': 'application/json', ...headers }, body });

  it.skipIf(skip)('refusals before routing: bad URL encoding, 414 for a long path segment and a long request line, 431, bytes that are not HTTP, CONNECT, no Host', async () => {
    expect(await refused(400, 'BAD_REQUEST', () => get('/api/v1/%E0%A4%A', { authorization: officer }))).toMatchObject({ action: 'request.rejected', target_id: 'GET /api/v1/%E0%A4%A' });
    await refused(400, 'BAD_REQUEST', () => get('/api/v1/sessions/%E0%A4%A/transcript', { authorization: officer }));
    await refused(414, 'URI_TOO_LONG', () => get(`/api/v1/sessions/${'x'.repeat(2000)}`, { authorization: officer }));
    expect(await refused(414, 'URI_TOO_LONG', () => get(`/api/v1/search?q=${'q'.repeat(20_000)}`, { authorization: officer }))).toMatchObject({ target_id: 'GET /api/v1/search', actor_type: 'anonymous' });
    expect(await refused(431, 'HEADERS_TOO_LARGE', () => get('/api/v1/me', { authorization: officer, 'x-pad': 'p'.repeat(20_000) }))).toMatchObject({ target_id: 'GET /api/v1/me' });
    await refused(400, 'BAD_REQUEST', () => sendBytes(server.url, 'FOO /api/v1/me HTTP/1.1\r\nHost: x\r\n\r\n'));
    await refused(400, 'BAD_REQUEST', () => sendBytes(server.url, '\u0000\u0001garbage\r\n\r\n'));
    await refused(400, 'BAD_REQUEST', () => sendBytes(server.url, 'CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n'));
    // Node would answer a request without Host with a bare 400 of its own: the API answers it.
    await refused(401, 'UNAUTHORIZED', () => sendBytes(server.url, 'GET /api/v1/me HTTP/1.1\r\nConnection: close\r\n\r\n'));
    // A HEAD refused by the parser gets no body (the client would take it for a second answer).
    const head = await sendBytes(server.url, `HEAD /api/v1/me HTTP/1.1\r\nHost: x\r\nX-Pad: ${'p'.repeat(20_000)}\r\n\r\n`);
    expect([head.status, head.text]).toEqual([431, '']);
  });

  it.skipIf(skip)('refusals of the request itself: malformed JSON, wrong content type, body too large, unknown route, other methods, prototype keys', async () => {
    await refused(400, 'BAD_REQUEST', () => post('/api/v1/legal-holds', '{"caseId":', { authorization: officer }));
    await refused(415, 'UNSUPPORTED_MEDIA_TYPE', () => post('/api/v1/legal-holds', 'caseId=x', { authorization: officer, 'content-type': 'application/x-www-form-urlencoded' }));
    await refused(415, 'UNSUPPORTED_MEDIA_TYPE', () => post('/api/v1/legal-holds', '{}', { authorization: officer, 'content-type': 'text/plain' }));
    await refused(413, 'MESSAGE_TOO_LARGE', () => post('/api/v1/legal-holds', JSON.stringify({ caseId: 'x'.repeat(70_000) }), { authorization: officer }));
    await refused(404, 'NOT_FOUND', () => get('/api/v1/nothing-here', { authorization: officer }));
    await refused(404, 'NOT_FOUND', () => get('/nothing-here'));
    await refused(404, 'NOT_FOUND', () => send(server.url, { method: 'PATCH', path: '/api/v1/me', headers: { authorization: officer } }));
    await refused(400, 'BAD_REQUEST', () => post('/api/v1/legal-holds', '{"__proto__":{"caseId":"x"}}', { authorization: officer }));
    await refused(400, 'BAD_REQUEST', () => get('/play/..%2F..%2Fx'));
  });

  const NUL = '\u0000';
  const LONE = '\ud800';
  const hold = (over: Record<string, unknown>) => JSON.stringify({ caseId: 'C-1', reason: 'r', scope: { type: 'room', value: 'board' }, ...over });
  // (A lone surrogate cannot reach a query string: percent-decoding invalid UTF-8 gives U+FFFD, which is storable.)
  const cases: [string, () => Promise<FuzzResponse>][] = [
    ['room id (path)', () => send(server.url, { method: 'PUT', path: '/api/v1/rooms/a%00b/retention-policy', headers: { authorization: admin, 'content-type': 'application/json' }, body: '{"policy":null}' })],
    ['retention policy name', () => post('/api/v1/retention-policies', JSON.stringify({ name: `p${NUL}`, scope: 'tag', mediaDays: 1, transcriptDays: 1, rawDays: 1 }), { authorization: admin })],
    ["room's retention policy", () => send(server.url, { method: 'PUT', path: '/api/v1/rooms/board/retention-policy', headers: { authorization: admin, 'content-type': 'application/json' }, body: JSON.stringify({ policy: `p${LONE}` }) })],
    ['retention policy (path)', () => send(server.url, { method: 'DELETE', path: '/api/v1/retention-policies/p%00', headers: { authorization: admin } })],
    ['hold case id', () => post('/api/v1/legal-holds', hold({ caseId: `C${NUL}` }), { authorization: officer })],
    ['hold reason', () => post('/api/v1/legal-holds', hold({ reason: `r${LONE}` }), { authorization: officer })],
    ['hold scope', () => post('/api/v1/legal-holds', hold({ scope: { type: 'query', value: `budget${NUL}` } }), { authorization: officer })],
    ['release reason', () => post('/api/v1/legal-holds/00000000-0000-4000-8000-000000000001/release', JSON.stringify({ reason: `r${NUL}` }), { authorization: officer })],
    ['erasure reason', () => post('/api/v1/erasure-requests', JSON.stringify({ participant: 'p-alice', reason: `gdpr${NUL}` }), { authorization: officer })],
    ['erasure participant', () => post('/api/v1/erasure-requests', JSON.stringify({ participant: `p${LONE}`, reason: 'gdpr' }), { authorization: officer })],
    ['export query', () => post('/api/v1/exports', JSON.stringify({ query: `budget${NUL}` }), { authorization: officer })],
    ['search query', () => get('/api/v1/search?q=budget%00', { authorization: officer })],
    ['search participant', () => get('/api/v1/search?q=budget&participant=p%00', { authorization: officer })],
    ['consent participant', () => get('/api/v1/consent?participant=p%00', { authorization: auditor })],
    ['key name (display name)', () => post('/api/v1/keys', JSON.stringify({ name: `Mallory${NUL}`, role: 'auditor' }), { authorization: admin })],
    ['key name (lone surrogate)', () => post('/api/v1/keys', `{"name":"Mallory\\ud800","role":"auditor"}`, { authorization: admin })],
    ['object key', () => post('/api/v1/legal-holds', `{"caseId":"C","reason":"r","scope":{"type":"room","value":"board"},"x\\u0000":1}`, { authorization: officer })],
  ];
  it.skipIf(skip)(`NUL or a lone surrogate in any text field → 400 with a code, never a 500 from the database (${cases.length} fields)`, async () => {
    for (const [field, go] of cases) {
      const before = await auditCount();
      const res = await go();
      expect([field, res.status]).toEqual([field, 400]);
      expect([field, json(res).error.code]).toEqual([field, 'BAD_REQUEST']);
      expect([field, (await auditCount()) - before]).toEqual([field, 1]);
    }
    expect(await db.selectFrom('legal_holds').select('id').execute()).toEqual([]);
    expect(await db.selectFrom('retention_policies').select('name').execute()).toEqual([]);
  });

  it.skipIf(skip)('POST /exports naming an unknown hold or unknown sessions → 404 at once, nothing started', async () => {
    const hold = await refused(404, 'NOT_FOUND', () => post('/api/v1/exports', JSON.stringify({ holdId: '00000000-0000-4000-8000-0000000000ff' }), { authorization: officer }));
    expect(hold).toMatchObject({ action: 'request.rejected', target_id: 'POST /api/v1/exports' });
    const sessions = await refused(404, 'SESSION_NOT_FOUND', () => post('/api/v1/exports', JSON.stringify({ sessionIds: ['s1', 'nope', 'nope-2'] }), { authorization: officer }));
    expect((sessions.details as { error: { missing: string[] } }).error.missing).toEqual(['nope', 'nope-2']);
    expect(await db.selectFrom('exports').select('id').execute()).toEqual([]);
  });

  it.skipIf(skip)('an audit entry that cannot be written fails its request: 503 AUDIT_UNAVAILABLE with Retry-After, no results, no bytes; refusals stand; the chain verifies after', async () => {
    const before = await auditCount();
    // A real write failure of the audit trail (the database refuses the insert), not a stand-in.
    await sql`create function verbatim_test_refuse_audit() returns trigger language plpgsql as $$ begin raise exception 'audit trail unavailable (test)'; end $$`.execute(db);
    await sql`create trigger verbatim_test_refuse_audit before insert on audit_log for each row execute function verbatim_test_refuse_audit()`.execute(db);
    try {
      const search = await get('/api/v1/search?q=confidential', { authorization: officer });
      expect(search.status).toBe(503);
      expect(search.headers['retry-after']).toBe('5');
      expect(json(search).error.code).toBe('AUDIT_UNAVAILABLE');
      expect(search.text).not.toContain('confidential');
      expect(json(search)).not.toHaveProperty('hits');

      const media = await get(`/api/v1/sessions/s1/artifacts/composite.mp4/content`, { authorization: officer });
      expect([media.status, json(media).error.code]).toEqual([503, 'AUDIT_UNAVAILABLE']);
      expect(media.text).not.toContain(MEDIA.toString());

      const created = await post('/api/v1/keys', JSON.stringify({ name: 'unrecorded', role: 'auditor' }), { authorization: admin });
      expect([created.status, json(created).error.code]).toEqual([503, 'AUDIT_UNAVAILABLE']);
      expect(created.text).not.toMatch(/vb_[0-9a-f]{8}_/);

      // A refusal discloses and changes nothing: it is answered as itself even when its entry cannot be written.
      const denied = await get('/api/v1/search?q=confidential', { authorization: 'Bearer vb_00000000_nope' });
      expect([denied.status, json(denied).error.code]).toEqual([401, 'UNAUTHORIZED']);
      const bad = await get('/api/v1/%E0%A4%A');
      expect([bad.status, json(bad).error.code]).toEqual([400, 'BAD_REQUEST']);
    } finally {
      await sql`drop trigger verbatim_test_refuse_audit on audit_log`.execute(db);
      await sql`drop function verbatim_test_refuse_audit()`.execute(db);
    }
    expect(await auditCount()).toBe(before);
    const again = await get('/api/v1/search?q=confidential', { authorization: officer });
    expect(again.status).toBe(200);
    expect((JSON.parse(again.text) as { total: number }).total).toBe(1);
    expect(await new AuditLog(db).verify()).toMatchObject({ ok: true, checked: await auditCount() });
  });
});
