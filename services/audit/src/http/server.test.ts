import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../../db/database.ts';
import type { UserRole } from '../../../../db/schema.ts';
import { createLogger } from '../../../lib/logger.ts';
import { testBackends, type TestBackend } from '../../../../testing/databases.ts';
import { AuditLog } from '../audit-log.ts';
import { createUserWithKey, revokeApiKey } from '../key-lifecycle.ts';
import { startAuditServer, type AuditServer } from './server.ts';
import { verifyArchive } from '../export.ts';
import { LocalArtifactStorage } from '../../../lib/storage/artifact-storage.ts';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const backends = await testBackends();
afterAll(async () => {
  for (const b of backends) await b.cleanup();
});

const ROLES: UserRole[] = ['admin', 'compliance_officer', 'auditor'];
type KeyState = 'valid' | 'none' | 'expired' | 'revoked' | 'forged' | 'garbage';
const STATES: KeyState[] = ['valid', 'none', 'expired', 'revoked', 'forged', 'garbage'];
/** What each refused key state says in details.reason (all UNAUTHORIZED). */
const REASON: Record<Exclude<KeyState, 'valid'>, string> = { none: 'missing', expired: 'expired', revoked: 'revoked', forged: 'forged', garbage: 'malformed' };

interface Endpoint {
  name: string;
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  path: string;
  body?: unknown;
  roles: UserRole[];
  action: string;
  okStatus: number;
}
const SEEDED_HOLD = '00000000-0000-4000-8000-000000000001';
const RELEASABLE_HOLD = '00000000-0000-4000-8000-000000000002';
const SEEDED_EXPORT = '00000000-0000-4000-8000-000000000003';
const SEEDED_ARCHIVE = Buffer.from('not really a tar, but bytes to serve');
const ENDPOINTS: Endpoint[] = [
  { name: 'create key', method: 'POST', path: '/api/v1/keys', body: { name: 'matrix user', role: 'auditor' }, roles: ['admin'], action: 'key.create', okStatus: 201 },
  { name: 'list users', method: 'GET', path: '/api/v1/users', roles: ['admin'], action: 'user.list', okStatus: 200 },
  { name: 'search', method: 'GET', path: '/api/v1/search?q=budget', roles: ['compliance_officer'], action: 'search', okStatus: 200 },
  { name: 'sessions', method: 'GET', path: '/api/v1/sessions?room=board', roles: ['compliance_officer', 'auditor'], action: 'session.list', okStatus: 200 },
  { name: 'session', method: 'GET', path: '/api/v1/sessions/s1', roles: ['compliance_officer', 'auditor'], action: 'session.view', okStatus: 200 },
  { name: 'transcript', method: 'GET', path: '/api/v1/sessions/s1/transcript', roles: ['compliance_officer'], action: 'transcript.view', okStatus: 200 },
  { name: 'consent', method: 'GET', path: '/api/v1/consent', roles: ['auditor'], action: 'consent.view', okStatus: 200 },
  { name: 'audit read', method: 'GET', path: '/api/v1/audit?from_seq=1&limit=5', roles: ['auditor'], action: 'audit.read', okStatus: 200 },
  { name: 'audit verify', method: 'POST', path: '/api/v1/audit/verify', body: {}, roles: ['auditor'], action: 'audit.verify', okStatus: 200 },
  { name: 'me', method: 'GET', path: '/api/v1/me', roles: ROLES, action: 'me.view', okStatus: 200 },
  { name: 'logout', method: 'POST', path: '/api/v1/logout', roles: ROLES, action: 'logout', okStatus: 200 },
  { name: 'list policies', method: 'GET', path: '/api/v1/retention-policies', roles: ['admin'], action: 'retention_policy.list', okStatus: 200 },
  { name: 'create policy', method: 'POST', path: '/api/v1/retention-policies', body: { name: 'matrix', scope: 'tag', mediaDays: 1, transcriptDays: 2, rawDays: null }, roles: ['admin'], action: 'retention_policy.create', okStatus: 201 },
  { name: 'update policy', method: 'PUT', path: '/api/v1/retention-policies/seeded-room', body: { mediaDays: 30 }, roles: ['admin'], action: 'retention_policy.update', okStatus: 200 },
  { name: 'delete policy', method: 'DELETE', path: '/api/v1/retention-policies/doomed', roles: ['admin'], action: 'retention_policy.delete', okStatus: 200 },
  { name: 'room policy', method: 'PUT', path: '/api/v1/rooms/eng/retention-policy', body: { policy: 'seeded-room' }, roles: ['admin'], action: 'room.retention_policy', okStatus: 200 },
  { name: 'list holds', method: 'GET', path: '/api/v1/legal-holds', roles: ['compliance_officer'], action: 'legal_hold.list', okStatus: 200 },
  { name: 'view hold', method: 'GET', path: `/api/v1/legal-holds/${SEEDED_HOLD}`, roles: ['compliance_officer'], action: 'legal_hold.view', okStatus: 200 },
  { name: 'place hold', method: 'POST', path: '/api/v1/legal-holds', body: { caseId: 'CASE-M', reason: 'matrix', scope: { type: 'session', value: 's4' } }, roles: ['compliance_officer'], action: 'legal_hold.place', okStatus: 201 },
  { name: 'artifacts', method: 'GET', path: '/api/v1/sessions/s1/artifacts', roles: ['compliance_officer'], action: 'artifact.list', okStatus: 200 },
  { name: 'media', method: 'GET', path: `/api/v1/sessions/s1/artifacts/${encodeURIComponent('board/s1/composite.webm')}/content`, roles: ['compliance_officer'], action: 'media.download', okStatus: 200 },
  // Nothing of p-nobody is stored: accepted (202, as every erasure request) and already completed, with no job to run.
  { name: 'erase', method: 'POST', path: '/api/v1/erasure-requests', body: { participant: 'p-nobody', reason: 'matrix' }, roles: ['compliance_officer'], action: 'erasure.request', okStatus: 202 },
  { name: 'list erasures', method: 'GET', path: '/api/v1/erasure-requests', roles: ['compliance_officer'], action: 'erasure.list', okStatus: 200 },
  { name: 'view erasure', method: 'GET', path: `/api/v1/erasure-requests/${SEEDED_HOLD}`, roles: ['compliance_officer'], action: 'erasure.view', okStatus: 200 },
  // A query that matches nothing: the background build fails without an audit entry of its own, so the count stays exact.
  { name: 'start export', method: 'POST', path: '/api/v1/exports', body: { query: 'matrixnomatch' }, roles: ['compliance_officer'], action: 'export.request', okStatus: 202 },
  { name: 'list exports', method: 'GET', path: '/api/v1/exports', roles: ['compliance_officer'], action: 'export.list', okStatus: 200 },
  { name: 'view export', method: 'GET', path: `/api/v1/exports/${SEEDED_EXPORT}`, roles: ['compliance_officer'], action: 'export.view', okStatus: 200 },
  { name: 'export archive', method: 'GET', path: `/api/v1/exports/${SEEDED_EXPORT}/archive`, roles: ['compliance_officer'], action: 'export.download', okStatus: 200 },
  { name: 'regulated list', method: 'GET', path: '/api/v1/capture/regulated', roles: ['admin', 'compliance_officer', 'auditor'], action: 'capture.regulated.list', okStatus: 200 },
  { name: 'reconciliations', method: 'GET', path: '/api/v1/capture/reconciliations', roles: ['compliance_officer', 'auditor'], action: 'reconciliation.list', okStatus: 200 },
  { name: 'recorders', method: 'GET', path: '/api/v1/recorders', roles: ['admin', 'compliance_officer', 'auditor'], action: 'recorders.list', okStatus: 200 },
  { name: 'redactions', method: 'GET', path: '/api/v1/sessions/s1/redactions', roles: ['compliance_officer'], action: 'redaction.list', okStatus: 200 },
  { name: 'release hold', method: 'POST', path: `/api/v1/legal-holds/${RELEASABLE_HOLD}/release`, body: { reason: 'matrix' }, roles: ['compliance_officer'], action: 'legal_hold.release', okStatus: 200 },
];

const DOC_PATHS = [
  '/api/v1/audit',
  '/api/v1/audit/verify',
  '/api/v1/capture/reconciliations',
  '/api/v1/capture/reconciliations/{id}',
  '/api/v1/capture/regulated',
  '/api/v1/capture/regulated/{kind}/{value}',
  '/api/v1/consent',
  '/api/v1/erasure-requests',
  '/api/v1/erasure-requests/{id}',
  '/api/v1/exports',
  '/api/v1/exports/{id}',
  '/api/v1/exports/{id}/archive',
  '/api/v1/keys',
  '/api/v1/keys/{id}/revoke',
  '/api/v1/keys/{id}/rotate',
  '/api/v1/legal-holds',
  '/api/v1/legal-holds/{id}',
  '/api/v1/legal-holds/{id}/release',
  '/api/v1/login',
  '/api/v1/logout',
  '/api/v1/me',
  '/api/v1/recorders',
  '/api/v1/retention-policies',
  '/api/v1/retention-policies/{name}',
  '/api/v1/review/items',
  '/api/v1/review/items/{id}',
  '/api/v1/review/items/{id}/assign',
  '/api/v1/review/items/{id}/decision',
  '/api/v1/review/items/{id}/notes',
  '/api/v1/review/pseudonyms/reveal',
  '/api/v1/review/report',
  '/api/v1/rooms/{id}/retention-policy',
  '/api/v1/search',
  '/api/v1/sessions',
  '/api/v1/sessions/{id}',
  '/api/v1/sessions/{id}/artifacts',
  '/api/v1/sessions/{id}/artifacts/{artifactId}/content',
  '/api/v1/sessions/{id}/redactions',
  '/api/v1/sessions/{id}/transcript',
  '/api/v1/sso/backchannel-logout',
  '/api/v1/sso/callback',
  '/api/v1/sso/login',
  '/api/v1/supervision/groups',
  '/api/v1/supervision/groups/{name}',
  '/api/v1/supervision/policies',
  '/api/v1/supervision/policies/{id}',
  '/api/v1/supervision/policies/{id}/runs',
  '/api/v1/supervision/policies/{id}/versions',
  '/api/v1/supervision/runs/{id}',
  '/api/v1/supervision/starter-lexicon',
  '/api/v1/users',
  '/api/v1/users/{id}/disable',
  '/api/v1/users/{id}/enable',
  '/api/v1/users/{id}/keys',
];

const WIDGETS = 25;
/** The bytes of the seeded s1 artifacts, stored for real in a local artifact directory. */
const MEDIA = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 7 + 3) & 0xff));

async function seed(db: Db): Promise<void> {
  await db
    .insertInto('rooms')
    .values(['board', 'sales', 'eng'].map((id) => ({ id, name: id, flags: JSON.stringify({}), secret_hash: 'scrypt$x$y' })))
    .execute();
  const sessions = [
    { id: 's1', room_id: 'board', started_at: '2024-03-01T10:00:00Z', status: 'done' as const },
    { id: 's2', room_id: 'sales', started_at: '2024-04-15T14:00:00Z', status: 'done' as const },
    { id: 's3', room_id: 'board', started_at: '2024-05-20T09:00:00Z', status: 'done' as const },
    { id: 's4', room_id: 'eng', started_at: '2024-06-01T08:00:00Z', status: 'done' as const },
  ];
  await db.insertInto('recording_sessions').values(sessions.map((s) => ({ ...s, ended_at: s.started_at, transcript_status: 'done' }))).execute();
  const seg = (session_id: string, seq: number, participant_id: string, speaker: string, start: number, end: number, text: string) => ({
    session_id,
    seq,
    participant_id,
    speaker,
    start_seconds: start,
    end_seconds: end,
    text,
    language: 'en',
  });
  await db
    .insertInto('transcript_segments')
    .values([
      seg('s1', 0, 'p-alice', 'Alice', 0, 5, 'Good morning everyone, let us review the quarterly budget.'),
      seg('s1', 1, 'p-bob', 'Bob', 5, 12, 'The Zanzibar acquisition is confidential until the announcement.'),
      seg('s1', 2, 'p-alice', 'Alice', 12, 20, 'We need to finalize the merger agreement before Friday.'),
      seg('s2', 0, 'p-carol', 'Carol', 0, 6, 'Quarterly budget numbers look strong for the sales team.'),
      seg('s2', 1, 'p-dave', 'Dave', 6, 14, 'Has anyone seen the merger draft? The agreement is late.'),
      seg('s2', 2, 'p-carol', 'Carol', 100, 110, '<script>alert(1)</script> pricing update & "quotes"'),
      seg('s2', 3, 'p-dave', 'Dave', 120, 125, 'Budget, budget, budget: the budget overrun again.'),
      seg('s3', 0, 'p-alice', 'Alice', 30, 40, 'The budget for the quarterly review was approved.'),
      ...Array.from({ length: WIDGETS }, (_, i) => seg('s4', i, 'p-erin', 'Erin', i * 10, i * 10 + 5, `Widget number ${i} was discussed at length.`)),
    ])
    .execute();
  await db
    .insertInto('session_participants')
    .values([
      { session_id: 's1', participant_id: 'p-alice', name: 'Alice', consent_decision: 'granted', consent_method: 'click' },
      { session_id: 's1', participant_id: 'p-bob', name: 'Bob', consent_decision: 'granted', consent_method: 'announcement' },
    ])
    .execute();
  await db.insertInto('tracks').values({ session_id: 's1', track_id: 't-alice-audio', participant_id: 'p-alice', kind: 'audio', codec: JSON.stringify({ mimeType: 'audio/opus' }) }).execute();
  await db
    .insertInto('track_segments')
    .values({
      session_id: 's1',
      track_id: 't-alice-audio',
      segment: 0,
      file: 'board/s1/t-alice-audio-0.vrtp',
      ssrc: 1234,
      bytes: 4096,
      sha256: 'b'.repeat(64),
      rtp_packets: 10,
      rtcp_packets: 1,
      started_at: '2024-03-01T10:00:00Z',
      ended_at: '2024-03-01T10:00:20Z',
      end_reason: 'stop',
      truncated: false,
    })
    .execute();
  await db
    .insertInto('artifacts')
    .values([
      { session_id: 's1', key: 'board/s1/composite.webm', kind: 'composite', participant_id: null, content_type: 'video/webm', bytes: 123456, sha256: 'a'.repeat(64), storage: 'local', duration_seconds: 20 },
      { session_id: 's1', key: 'sessions/board/s1/composite.mp4', kind: 'composite', participant_id: null, content_type: 'video/mp4', bytes: MEDIA.length, sha256: createHash('sha256').update(MEDIA).digest('hex'), storage: 'local', duration_seconds: 20 },
      { session_id: 's1', key: 'sessions/board/s1/tracks/t-alice-audio-0.ogg', kind: 'track', participant_id: 'p-alice', content_type: 'audio/ogg', bytes: 3, sha256: 'c'.repeat(64), storage: 'local', duration_seconds: null },
    ])
    .execute();
  await db.insertInto('tombstones').values({ session_id: 's1', kind: 'media', item: 'sessions/board/s1/participant-p-bob.mkv', reason: 'GDPR Art. 17 erasure', policy: null, erasure_request: 'er-1' }).execute();
  await db
    .insertInto('consent_events')
    .values([
      { room_id: 'board', session_id: 's1', participant_id: 'p-alice', participant_name: 'Alice', policy: 'required', decision: 'granted', method: 'click', client_info: JSON.stringify({ ua: 'x' }) },
      { room_id: 'board', session_id: 's1', participant_id: 'p-bob', participant_name: 'Bob', policy: 'required', decision: 'declined', method: 'click', client_info: JSON.stringify({}) },
      { room_id: 'sales', session_id: 's2', participant_id: 'p-carol', participant_name: 'Carol', policy: 'notify', decision: 'granted', method: 'announcement', client_info: JSON.stringify({}) },
    ])
    .execute();
  await db
    .insertInto('retention_policies')
    .values([
      { name: 'seeded-room', scope: 'room', media_days: 10, transcript_days: 10, raw_days: 1 },
      { name: 'doomed', scope: 'default', media_days: null, transcript_days: null, raw_days: null },
    ])
    .execute();
  await db
    .insertInto('legal_holds')
    .values([SEEDED_HOLD, RELEASABLE_HOLD].map((id) => ({ id, case_id: 'CASE-S', reason: 'seeded', scope_type: 'room' as const, scope_value: 'sales', placed_by: 'user:seed' })))
    .execute();
  await db
    .insertInto('exports')
    .values({ id: SEEDED_EXPORT, selection: JSON.stringify({ sessionIds: ['s2'] }), status: 'done', requested_by: 'user:seed', file: 'seeded.tar', bytes: SEEDED_ARCHIVE.length, manifest_sha256: 'd'.repeat(64), session_ids: JSON.stringify(['s2']), finished_at: new Date() })
    .execute();
  await db.insertInto('erasure_requests').values({ id: SEEDED_HOLD, participant_id: 'p-gone', reason: 'seeded', status: 'completed', requested_by: 'user:seed' }).execute();
}

describe.each(backends)('compliance HTTP API ($name)', (backend: TestBackend) => {
  const skip = !backend.available;
  let db: Db;
  let server: AuditServer;
  /** keys[role][state] → Authorization header value (undefined: none sent). */
  const keys = {} as Record<UserRole, Record<KeyState, string | undefined>>;
  const userIds = {} as Record<UserRole, string>;

  beforeAll(async () => {
    if (skip) return;
    db = await backend.open();
    await seed(db);
    for (const role of ROLES) {
      const valid = await createUserWithKey(db, { name: `${role} user`, role });
      userIds[role] = valid.user.id;
      const expired = await createUserWithKey(db, { name: `${role} expired`, role, expiresAt: new Date(Date.now() - 60_000) });
      const revoked = await createUserWithKey(db, { name: `${role} revoked`, role });
      expect(await revokeApiKey(db, revoked.key.id)).toBe(true);
      // Right prefix, wrong secret (same length and alphabet).
      const secret = valid.apiKey.slice(12);
      const forged = `vb_${valid.key.prefix}_${secret.startsWith('A') ? 'B' : 'A'}${secret.slice(1)}`;
      keys[role] = {
        valid: `Bearer ${valid.apiKey}`,
        none: undefined,
        expired: `Bearer ${expired.apiKey}`,
        revoked: `Bearer ${revoked.apiKey}`,
        forged: `Bearer ${forged}`,
        garbage: 'Bearer not-a-key',
      };
    }
    // The matrix sends ~100 forged/garbage keys from one address: no rate limit here (tested on its own below).
    storageDir = mkdtempSync(path.join(os.tmpdir(), 'verbatim-audit-media-'));
    writeFileSync(path.join(storageDir, 'x'), MEDIA);
    const storage = new LocalArtifactStorage(storageDir);
    await storage.put('sessions/board/s1/composite.mp4', path.join(storageDir, 'x'));
    await storage.put('board/s1/composite.webm', path.join(storageDir, 'x'));
    await storage.put('sessions/board/s1/tracks/t-alice-audio-0.ogg', path.join(storageDir, 'x'));
    mkdirSync(path.join(storageDir, 'exports'));
    writeFileSync(path.join(storageDir, 'exports', 'seeded.tar'), SEEDED_ARCHIVE);
    server = await startAuditServer({ db, host: '127.0.0.1', port: 0, logger: createLogger({ level: 'silent' }), failedAuthPerMinute: 0, storage, recordingsDir: path.join(storageDir, 'recordings'), exportsDir: path.join(storageDir, 'exports') });
  });
  let storageDir: string | undefined;
  afterAll(async () => {
    await server?.close();
    // Exports started by the tests build in the background: let them finish before the db goes.
    for (let i = 0; i < 200 && db; i++) {
      const running = await db.selectFrom('exports').select('id').where('status', '=', 'running').execute();
      if (running.length === 0) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    await db?.destroy();
    if (storageDir) rmSync(storageDir, { recursive: true, force: true });
  });

  async function call(method: string, path: string, auth?: string, body?: unknown, raw?: string): Promise<{ status: number; json: any }> {
    const headers: Record<string, string> = {};
    if (auth !== undefined) headers.authorization = auth;
    if (body !== undefined || raw !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${server.url}${path}`, { method, headers, ...(raw !== undefined ? { body: raw } : body !== undefined ? { body: JSON.stringify(body) } : {}) });
    const text = await res.text();
    return { status: res.status, json: text && res.headers.get('content-type')?.startsWith('application/json') ? JSON.parse(text) : text || null };
  }
  const as = (role: UserRole) => keys[role].valid!;
  const search = async (qs: string) => {
    const r = await call('GET', `/api/v1/search?${qs}`, as('compliance_officer'));
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    return r.json as { total: number; page: number; pageSize: number; hits: { session: string; room: string; seq: number; speaker: string; participant: string; start: number; end: number; snippet: string; playUrl: string }[] };
  };
  const lastAudit = async () => (await db.selectFrom('audit_log').selectAll().orderBy('seq', 'desc').limit(1).executeTakeFirstOrThrow());
  const auditCount = async () => Number((await db.selectFrom('audit_log').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);

  const matrix = ENDPOINTS.flatMap((ep) =>
    ROLES.flatMap((role) =>
      STATES.map((state) => {
        const status = state !== 'valid' ? 401 : ep.roles.includes(role) ? ep.okStatus : 403;
        return { ep, role, state, status, code: status === 401 ? 'UNAUTHORIZED' : status === 403 ? 'FORBIDDEN' : null };
      }),
    ),
  );

  it.skipIf(skip)(`authorization matrix: ${ENDPOINTS.length} endpoints × ${ROLES.length} roles × ${STATES.length} key states, each request audited once`, async () => {
    const failures: string[] = [];
    for (const c of matrix) {
      const label = `${c.ep.name} as ${c.role} with ${c.state} key`;
      const before = await auditCount();
      const r = await call(c.ep.method, c.ep.path, keys[c.role][c.state], c.ep.body);
      if (r.status !== c.status) failures.push(`${label}: status ${r.status}, expected ${c.status} (${JSON.stringify(r.json).slice(0, 200)})`);
      if (c.code && r.json?.error?.code !== c.code) failures.push(`${label}: code ${r.json?.error?.code}, expected ${c.code}`);
      if (c.status === 401 && r.json?.error?.details?.reason !== REASON[c.state as Exclude<KeyState, 'valid'>]) {
        failures.push(`${label}: reason ${r.json?.error?.details?.reason}, expected ${REASON[c.state as Exclude<KeyState, 'valid'>]}`);
      }
      if (c.status === 401 || c.status === 403) expect(typeof r.json.error.hint, label).toBe('string');
      // Exactly one audit entry per request: the action on success, auth.denied otherwise.
      const after = await auditCount();
      if (after !== before + 1) failures.push(`${label}: ${after - before} audit entries, expected 1`);
      const entry = await lastAudit();
      const action = c.code ? 'auth.denied' : c.ep.action;
      if (entry.action !== action) failures.push(`${label}: audited as ${entry.action}, expected ${action}`);
      const actor = c.state === 'valid' ? userIds[c.role] : null;
      if (entry.actor_id !== actor) failures.push(`${label}: audit actor ${entry.actor_id}, expected ${actor}`);
      if (entry.client_address !== '127.0.0.1') failures.push(`${label}: audit client address ${entry.client_address}`);
    }
    expect(failures).toEqual([]);
    // The refused keys' messages are told apart (one code, distinct messages).
    const messages = new Set<string>();
    for (const state of ['none', 'expired', 'revoked', 'forged', 'garbage'] as const) {
      const r = await call('GET', '/api/v1/consent', keys.auditor[state]);
      messages.add(r.json.error.message.replace(/[0-9a-f]{8}/g, 'X').replace(/\d{4}-.*Z/, 'T'));
    }
    expect(messages.size).toBe(5);
  });

  it.skipIf(skip)('recorders: each recorder with its liveness and the raw-upload backlog its heartbeat reported', async () => {
    await db
      .insertInto('recorders')
      .values([
        { id: 'rec-a', url: 'http://198.18.0.2:7001', instance_id: 'i-a', host: 'rec-host-a', capacity: 500, load: 12, recordings_dir: '/rec', upload_backlog_segments: 3, upload_backlog_bytes: 3 * 2 ** 31, upload_oldest_at: new Date(Date.now() - 90_000), upload_failed_attempts: 7, upload_last_error: 'storage unreachable' },
        { id: 'rec-b', url: 'http://198.18.0.3:7001', instance_id: 'i-b', host: 'rec-host-b', capacity: 500, load: 0, state: 'draining', recordings_dir: '/rec', heartbeat_at: new Date(Date.now() - 60_000) },
      ])
      .execute();
    try {
      const r = await call('GET', '/api/v1/recorders', as('auditor'));
      expect(r.status, JSON.stringify(r.json)).toBe(200);
      const [a, b] = r.json.recorders;
      expect(a).toMatchObject({ id: 'rec-a', host: 'rec-host-a', state: 'active', alive: true, tracks: 12, capacity: 500, uploads: { segments: 3, bytes: 3 * 2 ** 31, failedAttempts: 7, lastError: 'storage unreachable' } });
      expect(Date.now() - Date.parse(a.uploads.oldestQueuedAt)).toBeGreaterThanOrEqual(89_000);
      expect(b).toMatchObject({ id: 'rec-b', state: 'draining', alive: false, uploads: null });
      expect(b.heartbeatAgeMs).toBeGreaterThanOrEqual(59_000);
      expect(r.json.backlog).toEqual({ segments: 3, bytes: 3 * 2 ** 31 });
    } finally {
      await db.deleteFrom('recorders').where('id', 'in', ['rec-a', 'rec-b']).execute();
    }
  });

  it.skipIf(skip)('search: a rare word names the right session, speaker and start, with a highlighted snippet and play link', async () => {
    const r = await search('q=zanzibar');
    expect(r.total).toBe(1);
    expect(r.hits).toHaveLength(1);
    const [hit] = r.hits;
    expect(hit).toMatchObject({ session: 's1', room: 'board', speaker: 'Bob', participant: 'p-bob', start: 5, end: 12, playUrl: '/play/s1?t=5' });
    expect(hit!.snippet).toContain('<mark>Zanzibar</mark>');
    expect(hit!.snippet).not.toContain('<mark>confidential');

    const none = await search(`q=${encodeURIComponent('zanzibarian xylophone')}`);
    expect(none.hits).toEqual([]);
  });

  it.skipIf(skip)('search: a quoted phrase matches only adjacent words; ranking puts the densest segment first', async () => {
    const phrase = await search(`q=${encodeURIComponent('"merger agreement"')}`);
    expect(phrase.hits.map((h) => `${h.session}:${h.seq}`)).toEqual(['s1:2']);
    expect(phrase.hits[0]!.snippet).toMatch(/<mark>merger<\/mark> <mark>agreement<\/mark>/);
    const words = await search('q=merger+agreement');
    expect(words.hits.map((h) => `${h.session}:${h.seq}`).sort()).toEqual(['s1:2', 's2:1']);

    const budget = await search('q=budget');
    expect(budget.total).toBe(4);
    expect(`${budget.hits[0]!.session}:${budget.hits[0]!.seq}`).toBe('s2:3');
  });

  it.skipIf(skip)('search: room, participant, session and date-range filters', async () => {
    const ids = (r: Awaited<ReturnType<typeof search>>) => r.hits.map((h) => `${h.session}:${h.seq}`).sort();
    expect(ids(await search('q=budget&room=board'))).toEqual(['s1:0', 's3:0']);
    expect(ids(await search('q=budget&participant=p-alice'))).toEqual(['s1:0', 's3:0']);
    expect(ids(await search('q=budget&participant=p-dave'))).toEqual(['s2:3']);
    expect(ids(await search('q=budget&session=s2'))).toEqual(['s2:0', 's2:3']);
    expect(ids(await search('q=budget&from=2024-04-01&to=2024-04-30'))).toEqual(['s2:0', 's2:3']);
    expect(ids(await search('q=budget&from=2024-05-01'))).toEqual(['s3:0']);
    expect(ids(await search('q=budget&to=2024-03-01'))).toEqual(['s1:0']);
    // By when the words were spoken (session start + offset): s3's segment is at 09:00:30.
    expect(ids(await search(`q=budget&from=${encodeURIComponent('2024-05-20T09:00:29Z')}`))).toEqual(['s3:0']);
    expect(ids(await search(`q=budget&from=${encodeURIComponent('2024-05-20T09:00:31Z')}`))).toEqual([]);
    expect(ids(await search(`q=budget&to=${encodeURIComponent('2024-05-20T11:00:29+02:00')}&from=2024-05-01`))).toEqual([]);
    expect(ids(await search(`q=budget&to=${encodeURIComponent('2024-05-20T11:00:30+02:00')}&from=2024-05-01`))).toEqual(['s3:0']);
  });

  it.skipIf(skip)('search: snippets escape transcript markup', async () => {
    const r = await search('q=pricing');
    expect(r.hits).toHaveLength(1);
    expect(r.hits[0]!.snippet).toContain('<mark>pricing</mark>');
    expect(r.hits[0]!.snippet).not.toMatch(/<(?!\/?mark>)/);
  });

  it.skipIf(skip)('search: pagination covers every hit once, in a stable order', async () => {
    const seen: number[] = [];
    for (let page = 1; page <= 4; page++) {
      const r = await search(`q=widget&pageSize=10&page=${page}`);
      expect(r.total).toBe(WIDGETS);
      expect(r.page).toBe(page);
      expect(r.pageSize).toBe(10);
      expect(r.hits.length).toBe(page < 3 ? 10 : page === 3 ? 5 : 0);
      for (const h of r.hits) {
        expect(h.session).toBe('s4');
        expect(h.snippet).toContain('<mark>Widget</mark>');
        expect(h.start).toBe(h.seq * 10);
        seen.push(h.seq);
      }
    }
    expect(seen.sort((a, b) => a - b)).toEqual(Array.from({ length: WIDGETS }, (_, i) => i));
    expect((await search('q=widget')).hits).toHaveLength(20);
  });

  it.skipIf(skip)('session, transcript, consent and audit endpoints return what was stored', async () => {
    const s = await call('GET', '/api/v1/sessions/s1', as('auditor'));
    expect(s.status).toBe(200);
    expect(s.json).toMatchObject({ session: 's1', room: 'board', status: 'done', transcriptStatus: 'done' });
    expect(s.json.participants.map((p: { participant: string }) => p.participant)).toEqual(['p-alice', 'p-bob']);
    expect(s.json.tracks[0]).toMatchObject({ track: 't-alice-audio', kind: 'audio', codec: { mimeType: 'audio/opus' } });
    expect(s.json.tracks[0].segments[0]).toMatchObject({ segment: 0, bytes: 4096, sha256: 'b'.repeat(64) });
    expect(s.json.artifacts[0]).toEqual(expect.objectContaining({ key: 'board/s1/composite.webm', bytes: 123456, sha256: 'a'.repeat(64) }));

    // No manifest on disk for the seeded session: an empty timeline, not a failure.
    expect(s.json.events).toEqual([]);

    const list = await call('GET', '/api/v1/sessions?room=board', as('auditor'));
    expect(list.status).toBe(200);
    expect(list.json.sessions.map((x: { session: string }) => x.session)).toEqual(['s3', 's1']);
    expect(list.json.sessions[1]).toMatchObject({ room: 'board', status: 'done', startedAt: '2024-03-01T10:00:00.000Z', participants: 2 });
    const paged = await call('GET', '/api/v1/sessions?limit=1&from=2024-04-01T00:00:00Z', as('compliance_officer'));
    expect(paged.json.sessions.map((x: { session: string }) => x.session)).toEqual(['s4']);
    expect(paged.json.next).toBe(1);
    const page2 = await call('GET', '/api/v1/sessions?limit=1&offset=1&from=2024-04-01T00:00:00Z', as('compliance_officer'));
    expect(page2.json.sessions.map((x: { session: string }) => x.session)).toEqual(['s3']);
    expect((await call('GET', '/api/v1/sessions?status=bogus', as('auditor'))).status).toBe(400);

    const missing = await call('GET', '/api/v1/sessions/nope', as('auditor'));
    expect(missing.status).toBe(404);
    expect(missing.json.error.code).toBe('SESSION_NOT_FOUND');
    expect((await lastAudit()).action).toBe('request.rejected');

    const t = await call('GET', '/api/v1/sessions/s1/transcript', as('compliance_officer'));
    expect(t.status).toBe(200);
    expect(t.json.segments.map((g: { speaker: string; start: number }) => `${g.speaker}@${g.start}`)).toEqual(['Alice@0', 'Bob@5', 'Alice@12']);

    const c = await call('GET', '/api/v1/consent?participant=p-bob', as('auditor'));
    expect(c.status).toBe(200);
    expect(c.json.events).toEqual([expect.objectContaining({ room: 'board', session: 's1', participant: 'p-bob', decision: 'declined', method: 'click' })]);
    const room = await call('GET', '/api/v1/consent?room=board&limit=1', as('auditor'));
    expect(room.json.events.map((e: { participant: string }) => e.participant)).toEqual(['p-alice']);
    const next = await call('GET', `/api/v1/consent?room=board&after=${room.json.next}`, as('auditor'));
    expect(next.json.events.map((e: { participant: string }) => e.participant)).toEqual(['p-bob']);
    // The same log as a CSV download, per session.
    const csvRes = await fetch(`${server.url}/api/v1/consent?session=s1&format=csv`, { headers: { authorization: as('auditor') } });
    expect(csvRes.status).toBe(200);
    expect(csvRes.headers.get('content-type')).toMatch(/^text\/csv/);
    expect(csvRes.headers.get('content-disposition')).toBe('attachment; filename="consent-s1.csv"');
    const csvLines = (await csvRes.text()).trimEnd().split('\r\n');
    expect(csvLines[0]).toBe('id,at,room,session,participant,participantName,policy,decision,method,clientInfo');
    expect(csvLines.slice(1).map((l) => l.split(',').slice(2, 9).join(','))).toEqual(['board,s1,p-alice,Alice,required,granted,click', 'board,s1,p-bob,Bob,required,declined,click']);
    expect(csvLines[1]).toMatch(/,"\{""ua"":""x""\}"$/);
    expect((await lastAudit()).action).toBe('consent.view');

    const a = await call('GET', '/api/v1/audit?from_seq=2&limit=3', as('auditor'));
    expect(a.status).toBe(200);
    expect(a.json.entries.map((e: { seq: number }) => e.seq)).toEqual([2, 3, 4]);
    expect(a.json.nextFromSeq).toBe(5);
    // headSeq = the newest entry: this very request's entry is appended before the response is sent.
    const headBefore = Number((await lastAudit()).seq);
    expect(a.json.headSeq).toBeGreaterThanOrEqual(5);
    expect(a.json.headSeq).toBeLessThanOrEqual(headBefore);
  });

  it.skipIf(skip)('exports over the API: 202 → progress to done → the downloaded archive verifies, a flipped byte fails; a query export; a failed one answers 410 with its state', async () => {
    const officer = as('compliance_officer');
    const waitDone = async (id: string) => {
      for (let i = 0; i < 400; i++) {
        const r = await call('GET', `/api/v1/exports/${id}`, officer);
        expect(r.status).toBe(200);
        if (r.json.status !== 'running') return r.json;
        await new Promise((res) => setTimeout(res, 25));
      }
      throw new Error(`export ${id} did not finish`);
    };
    const started = await call('POST', '/api/v1/exports', officer, { sessionIds: ['s2', 's3'] });
    expect(started.status).toBe(202);
    expect(started.json).toMatchObject({ status: 'running', statusUrl: `/api/v1/exports/${started.json.id}` });
    const done = await waitDone(started.json.id);
    expect(done).toMatchObject({ status: 'done', sessionIds: ['s2', 's3'], progress: { pct: 100 }, error: null });
    expect(done.progress.filesDone).toBe(done.progress.filesTotal);
    expect(done.manifestSha256).toMatch(/^[0-9a-f]{64}$/);
    // The archive's manifest is the one named in the export.create audit entry.
    const created = await db.selectFrom('audit_log').selectAll().where('action', '=', 'export.create').where('target_id', '=', started.json.id).executeTakeFirstOrThrow();
    expect((typeof created.details === 'string' ? JSON.parse(created.details) : created.details).manifestSha256).toBe(done.manifestSha256);

    const res = await fetch(`${server.url}/api/v1/exports/${started.json.id}/archive`, { headers: { authorization: officer } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/x-tar');
    expect((await lastAudit()).action).toBe('export.download');
    const tar = path.join(storageDir!, 'downloaded.tar');
    writeFileSync(tar, Buffer.from(await res.arrayBuffer()));
    expect((await verifyArchive(tar)).ok).toBe(true);
    const bytes = readFileSync(tar);
    bytes[600] = bytes[600]! ^ 0xff; // inside the first file's data (after its 512-byte header)
    writeFileSync(tar, bytes);
    const bad = await verifyArchive(tar);
    expect(bad.ok).toBe(false);
    expect(bad.problems[0]!.code).toBe('SHA256_MISMATCH');

    const byQuery = await call('POST', '/api/v1/exports', officer, { query: 'widget' });
    expect(byQuery.status).toBe(202);
    expect((await waitDone(byQuery.json.id)).sessionIds).toEqual(['s4']);

    const none = await call('POST', '/api/v1/exports', officer, { query: 'xylophonic' });
    const failed = await waitDone(none.json.id);
    expect(failed).toMatchObject({ status: 'failed', error: { code: 'BAD_REQUEST' } });
    const gone = await call('GET', `/api/v1/exports/${none.json.id}/archive`, officer);
    expect(gone.status).toBe(410);
    expect(gone.json.error.details.state).toBe('failed');

    expect((await call('POST', '/api/v1/exports', officer, { holdId: SEEDED_HOLD, query: 'x' })).status).toBe(400);
    expect((await call('POST', '/api/v1/exports', officer, { sessionIds: [] })).status).toBe(400);
    expect((await call('GET', '/api/v1/exports/not-a-uuid', officer)).status).toBe(400);
    expect((await call('GET', '/api/v1/exports/00000000-0000-4000-8000-0000000000ff', officer)).status).toBe(404);
    const list = await call('GET', '/api/v1/exports', officer);
    expect(list.json.exports.map((e: { id: string }) => e.id)).toEqual(expect.arrayContaining([started.json.id, byQuery.json.id, none.json.id]));
  });

  it.skipIf(skip)('a key created through the API works for its role only, and its secret never reaches the audit trail', async () => {
    const r = await call('POST', '/api/v1/keys', as('admin'), { name: 'Olga Officer', role: 'compliance_officer', expiresAt: new Date(Date.now() + 86_400_000).toISOString() });
    expect(r.status).toBe(201);
    expect(r.json.apiKey).toMatch(/^vb_[0-9a-f]{8}_[A-Za-z0-9_-]{43}$/);
    expect(r.json.user).toMatchObject({ name: 'Olga Officer', role: 'compliance_officer' });
    const entry = await lastAudit();
    expect(entry).toMatchObject({ action: 'key.create', actor_id: userIds.admin, target_type: 'api_key', target_id: r.json.key.id });
    expect(JSON.stringify(entry)).not.toContain(r.json.apiKey.slice(12));
    const stored = await db.selectFrom('api_keys').selectAll().where('id', '=', r.json.key.id).executeTakeFirstOrThrow();
    expect(stored.hash).toMatch(/^scrypt\$/);
    expect(stored.hash).not.toContain(r.json.apiKey.slice(12));

    expect((await call('GET', '/api/v1/search?q=zanzibar', `Bearer ${r.json.apiKey}`)).status).toBe(200);
    expect((await lastAudit()).actor_id).toBe(r.json.user.id);
    const denied = await call('GET', '/api/v1/audit', `Bearer ${r.json.apiKey}`);
    expect(denied.status).toBe(403);
    expect(denied.json.error.code).toBe('FORBIDDEN');
    // Revocation takes effect on the next request (the verified-key cache does not outlive it).
    await revokeApiKey(db, r.json.key.id);
    const revoked = await call('GET', '/api/v1/search?q=zanzibar', `Bearer ${r.json.apiKey}`);
    expect(revoked.status).toBe(401);
    expect(revoked.json.error.details.reason).toBe('revoked');
  });

  it.skipIf(skip)('every search and view is in the audit trail with its actor, and the chain still verifies', async () => {
    await search(`q=${encodeURIComponent('"merger agreement"')}&room=board`);
    await call('GET', '/api/v1/sessions/s2', as('compliance_officer'));
    await call('GET', '/api/v1/sessions/s2/transcript', as('compliance_officer'));

    const rows = await db.selectFrom('audit_log').selectAll().orderBy('seq').execute();
    const details = (d: unknown) => (typeof d === 'string' ? JSON.parse(d) : d) as Record<string, any>;
    const searches = rows.filter((r) => r.action === 'search');
    expect(searches.length).toBeGreaterThan(20);
    const officers = (await db.selectFrom('users').select('id').where('role', '=', 'compliance_officer').execute()).map((u) => u.id);
    expect(searches.filter((r) => r.actor_id === userIds.compliance_officer).length).toBeGreaterThan(20);
    for (const r of searches) {
      expect(r.actor_type).toBe('user');
      expect(officers).toContain(r.actor_id);
      expect(r.client_address).toBe('127.0.0.1');
      expect(typeof details(r.details).query).toBe('string');
    }
    const phrase = searches.at(-1)!;
    expect(details(phrase.details)).toMatchObject({ query: '"merger agreement"', filters: { room: 'board' }, total: 1, sessions: ['s1'] });
    expect(phrase).toMatchObject({ target_type: 'room', target_id: 'board' });
    expect(searches.some((r) => details(r.details).query === 'zanzibar')).toBe(true);
    expect(rows.find((r) => r.action === 'session.view' && r.target_id === 's2')).toMatchObject({ actor_id: userIds.compliance_officer, target_type: 'session' });
    expect(rows.find((r) => r.action === 'transcript.view' && r.target_id === 's2')).toMatchObject({ actor_id: userIds.compliance_officer });
    expect(rows.some((r) => r.action === 'session.view' && r.actor_id === userIds.auditor)).toBe(true);
    expect(rows.some((r) => r.action === 'consent.view' && r.actor_id === userIds.auditor)).toBe(true);

    expect((await new AuditLog(db).verify()).ok).toBe(true);
    const v = await call('POST', '/api/v1/audit/verify', as('auditor'), {});
    expect(v.status).toBe(200);
    expect(v.json).toMatchObject({ ok: true, checked: rows.length });
    expect(await lastAudit()).toMatchObject({ action: 'audit.verify', actor_id: userIds.auditor });
    // A JSON content type with no body at all is no body, not a 400; a malformed one still is.
    expect((await call('POST', '/api/v1/audit/verify', as('auditor'), undefined, '')).status).toBe(200);
    expect((await call('POST', '/api/v1/audit/verify', as('auditor'), undefined, '{')).status).toBe(400);
    expect((await call('POST', '/api/v1/audit/verify', as('auditor'), undefined, '{"x":1}')).status).toBe(400);
  });

  const BAD: [string, string, string, unknown?, string?][] = [
    ['search without q', 'GET', '/api/v1/search'],
    ['search with an empty q', 'GET', '/api/v1/search?q=%20'],
    ['search with q twice', 'GET', '/api/v1/search?q=a&q=b'],
    ['search with page 0', 'GET', '/api/v1/search?q=a&page=0'],
    ['search with page abc', 'GET', '/api/v1/search?q=a&page=abc'],
    ['search with pageSize 1000', 'GET', '/api/v1/search?q=a&pageSize=1000'],
    ['search with a bad date', 'GET', '/api/v1/search?q=a&from=yesterday'],
    ['search with from after to', 'GET', '/api/v1/search?q=a&from=2024-05-01&to=2024-04-01'],
    ['search with an unknown parameter', 'GET', '/api/v1/search?q=a&sort=asc'],
    ['search with a bad room id', 'GET', '/api/v1/search?q=a&room=%2Fetc'],
    ['search with a NUL', 'GET', '/api/v1/search?q=a%00b'],
    ['search with a 501-char q', 'GET', `/api/v1/search?q=${'a'.repeat(501)}`],
    ['session with a bad id', 'GET', '/api/v1/sessions/bad%20id'],
    ['session with a query', 'GET', '/api/v1/sessions/s1?x=1'],
    ['consent with limit 5000', 'GET', '/api/v1/consent?limit=5000'],
    ['audit from_seq 0', 'GET', '/api/v1/audit?from_seq=0'],
    ['audit limit -1', 'GET', '/api/v1/audit?limit=-1'],
    ['key with an unknown role', 'POST', '/api/v1/keys', { name: 'x', role: 'root' }],
    ['key without a name', 'POST', '/api/v1/keys', { role: 'auditor' }],
    ['key with an extra field', 'POST', '/api/v1/keys', { name: 'x', role: 'auditor', admin: true }],
    ['key expiring in the past', 'POST', '/api/v1/keys', { name: 'x', role: 'auditor', expiresAt: '2020-01-01T00:00:00Z' }],
    ['key with invalid JSON', 'POST', '/api/v1/keys', undefined, '{"name":'],
    ['key with an array body', 'POST', '/api/v1/keys', ['x']],
  ];
  it.skipIf(skip).each(BAD)('%s → 400 BAD_REQUEST, audited as rejected', async (_name, method, path, body, raw) => {
    const role: UserRole = path.startsWith('/api/v1/keys') ? 'admin' : path.startsWith('/api/v1/search') || path.startsWith('/api/v1/sessions') ? 'compliance_officer' : 'auditor';
    const before = await auditCount();
    const r = await call(method, path, as(role), body, raw);
    expect(r.status, JSON.stringify(r.json)).toBe(400);
    expect(r.json.error.code).toBe('BAD_REQUEST');
    expect(r.json.error.hint).toBeTypeOf('string');
    expect(await auditCount()).toBe(before + 1);
    expect(await lastAudit()).toMatchObject({ action: 'request.rejected', actor_id: userIds[role] });
  });

  it.skipIf(skip)('an oversized body → 413 MESSAGE_TOO_LARGE (after authorisation: a wrong role still gets 403)', async () => {
    const big = { name: 'x'.repeat(70 * 1024), role: 'auditor' };
    const r = await call('POST', '/api/v1/keys', as('admin'), big);
    expect(r.status).toBe(413);
    expect(r.json.error.code).toBe('MESSAGE_TOO_LARGE');
    expect(await lastAudit()).toMatchObject({ action: 'request.rejected', actor_id: userIds.admin });
    const f = await call('POST', '/api/v1/keys', as('auditor'), big);
    expect(f.status).toBe(403);
    const anon = await call('POST', '/api/v1/keys', undefined, big);
    expect(anon.status).toBe(401);
  });

  async function fetchWith(method: string, path: string, headers: Record<string, string>, body?: unknown, base = server.url): Promise<{ status: number; json: any; headers: Headers }> {
    const h = { ...headers, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) };
    const res = await fetch(`${base}${path}`, { method, headers: h, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : null, headers: res.headers };
  }
  const bareKey = (role: UserRole) => keys[role].valid!.slice('Bearer '.length);
  const cookieOf = (res: { headers: Headers }) => {
    const set = res.headers.get('set-cookie');
    expect(set).toBeTruthy();
    return set!.split(';')[0]!;
  };

  it.skipIf(skip)('GET /me names the caller, its role and permissions', async () => {
    const r = await call('GET', '/api/v1/me', as('compliance_officer'));
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ user: { id: userIds.compliance_officer, name: 'compliance_officer user' }, role: 'compliance_officer', via: 'key' });
    expect(r.json.permissions).toContain('recordings.play');
    expect(r.json.permissions).not.toContain('keys.manage');
    expect(await lastAudit()).toMatchObject({ action: 'me.view', actor_id: userIds.compliance_officer });
  });

  it.skipIf(skip)('login matrix: every role × key state in the body → a session only for a valid key, each attempt audited once', async () => {
    const failures: string[] = [];
    for (const role of ROLES) {
      for (const state of STATES) {
        const before = await auditCount();
        const key = keys[role][state];
        const r = await fetchWith('POST', '/api/v1/login', {}, key === undefined ? {} : { apiKey: key.slice('Bearer '.length) });
        const expected = state === 'valid' ? 200 : state === 'none' ? 400 : 401;
        const label = `login as ${role} with ${state} key`;
        if (r.status !== expected) failures.push(`${label}: ${r.status}, expected ${expected}`);
        if (state !== 'valid' && r.headers.get('set-cookie') !== null) failures.push(`${label}: got a cookie`);
        if (expected === 401 && r.json?.error?.details?.reason !== REASON[state as Exclude<KeyState, 'valid'>]) failures.push(`${label}: reason ${r.json?.error?.details?.reason}`);
        if ((await auditCount()) !== before + 1) failures.push(`${label}: not audited exactly once`);
        const entry = await lastAudit();
        const action = expected === 200 ? 'login' : expected === 401 ? 'login.failed' : 'request.rejected';
        if (entry.action !== action) failures.push(`${label}: audited as ${entry.action}, expected ${action}`);
        if (entry.actor_id !== (state === 'valid' ? userIds[role] : null)) failures.push(`${label}: actor ${entry.actor_id}`);
      }
    }
    expect(failures).toEqual([]);
  });

  it.skipIf(skip)('cookie sign-in: login sets an HttpOnly SameSite=Strict session; GETs work with it, changes need the CSRF header; logout ends it', async () => {
    const login = await fetchWith('POST', '/api/v1/login', {}, { apiKey: bareKey('compliance_officer') });
    expect(login.status, JSON.stringify(login.json)).toBe(200);
    expect(login.json).toMatchObject({ role: 'compliance_officer', user: { id: userIds.compliance_officer } });
    const setCookie = login.headers.get('set-cookie')!;
    expect(setCookie).toMatch(/^vb_session=[A-Za-z0-9_.-]+; Path=\/; HttpOnly; SameSite=Strict; Max-Age=28800$/);
    expect(await lastAudit()).toMatchObject({ action: 'login', actor_id: userIds.compliance_officer, client_address: '127.0.0.1' });
    expect(JSON.stringify(await lastAudit())).not.toContain(cookieOf(login).split('=')[1]!.split('.')[2]!);
    const cookie = { cookie: cookieOf(login) };

    const me = await fetchWith('GET', '/api/v1/me', cookie);
    expect(me.status).toBe(200);
    expect(me.json).toMatchObject({ role: 'compliance_officer', via: 'session' });
    expect((await fetchWith('GET', '/api/v1/search?q=zanzibar', cookie)).json.total).toBe(1);
    expect(await lastAudit()).toMatchObject({ action: 'search', actor_id: userIds.compliance_officer });
    // The session carries the key's role, no more.
    expect((await fetchWith('GET', '/api/v1/audit', cookie)).status).toBe(403);

    // A cross-site form can send the cookie but not a custom header.
    const before = await auditCount();
    const csrf = await fetchWith('POST', '/api/v1/logout', cookie);
    expect(csrf.status).toBe(403);
    expect(csrf.json.error).toMatchObject({ code: 'FORBIDDEN', details: { reason: 'csrf' } });
    expect(await auditCount()).toBe(before + 1);
    expect(await lastAudit()).toMatchObject({ action: 'auth.denied', actor_id: userIds.compliance_officer });
    expect((await fetchWith('GET', '/api/v1/me', cookie)).status).toBe(200);

    const out = await fetchWith('POST', '/api/v1/logout', { ...cookie, 'x-verbatim-csrf': '1' });
    expect(out.status).toBe(200);
    expect(out.json).toEqual({ ended: true });
    expect(out.headers.get('set-cookie')).toMatch(/^vb_session=; .*Max-Age=0/);
    expect(await lastAudit()).toMatchObject({ action: 'logout', actor_id: userIds.compliance_officer });
    const after = await fetchWith('GET', '/api/v1/me', cookie);
    expect(after.status).toBe(401);
    expect(after.json.error.details.reason).toBe('session_ended');
  });

  it.skipIf(skip)('cookie sign-in: an admin session may change things with the CSRF header; forged cookies and revoked keys are refused', async () => {
    const login = await fetchWith('POST', '/api/v1/login', {}, { apiKey: bareKey('admin') });
    const cookie = cookieOf(login);
    const created = await fetchWith('POST', '/api/v1/keys', { cookie, 'x-verbatim-csrf': '1' }, { name: 'via console', role: 'auditor' });
    expect(created.status).toBe(201);
    expect(await lastAudit()).toMatchObject({ action: 'key.create', actor_id: userIds.admin });

    // Altered id, expiry or MAC → session_invalid.
    const [id, exp, mac] = cookie.slice('vb_session='.length).split('.') as [string, string, string];
    const flip = (s: string) => (s[0] === 'A' ? 'B' : 'A') + s.slice(1);
    for (const bad of [`${flip(id)}.${exp}.${mac}`, `${id}.${Number(exp) + 3_600_000}.${mac}`, `${id}.${exp}.${flip(mac)}`, 'garbage']) {
      const r = await fetchWith('GET', '/api/v1/me', { cookie: `vb_session=${bad}` });
      expect(r.status, bad).toBe(401);
      expect(r.json.error.details.reason).toBe('session_invalid');
    }

    // A session dies with its key.
    const k = await call('POST', '/api/v1/keys', as('admin'), { name: 'short-lived', role: 'auditor' });
    const l2 = await fetchWith('POST', '/api/v1/login', {}, { apiKey: k.json.apiKey });
    expect((await fetchWith('GET', '/api/v1/me', { cookie: cookieOf(l2) })).status).toBe(200);
    await revokeApiKey(db, k.json.key.id);
    const r = await fetchWith('GET', '/api/v1/me', { cookie: cookieOf(l2) });
    expect(r.status).toBe(401);
    expect(r.json.error.details.reason).toBe('revoked');

    // A failed sign-in is audited as such, anonymously.
    const before = await auditCount();
    const bad = await fetchWith('POST', '/api/v1/login', {}, { apiKey: keys.admin.forged!.slice('Bearer '.length) });
    expect(bad.status).toBe(401);
    expect(bad.json.error.details.reason).toBe('forged');
    expect(bad.headers.get('set-cookie')).toBeNull();
    expect(await auditCount()).toBe(before + 1);
    expect(await lastAudit()).toMatchObject({ action: 'login.failed', actor_id: null, actor_type: 'anonymous', target_id: 'POST /api/v1/login' });
    expect((await fetchWith('POST', '/api/v1/login', {}, { apiKey: 'x', extra: 1 })).status).toBe(400);
  });

  it.skipIf(skip)('rate limit: 10 failed key guesses a minute from one address → 429 RATE_LIMITED with Retry-After, even for a valid key, until the window passes', async () => {
    let clock = Date.now();
    const limited = await startAuditServer({ db, host: '127.0.0.1', port: 0, logger: createLogger({ level: 'silent' }), now: () => new Date(clock), sessionTtlMs: 3_600_000 });
    try {
      const base = limited.url;
      const forged = keys.auditor.forged!;
      // Expired/revoked keys are not guesses: they do not count.
      for (let i = 0; i < 12; i++) expect((await fetchWith('GET', '/api/v1/me', { authorization: keys.auditor.expired! }, undefined, base)).status).toBe(401);
      for (let i = 0; i < 6; i++) {
        clock += 1000;
        expect((await fetchWith('GET', '/api/v1/me', { authorization: forged }, undefined, base)).status).toBe(401);
      }
      for (let i = 0; i < 4; i++) {
        clock += 1000;
        expect((await fetchWith('POST', '/api/v1/login', {}, { apiKey: `vb_0000000${i}_${'A'.repeat(43)}` }, base)).status).toBe(401);
      }
      const before = await auditCount();
      const r = await fetchWith('GET', '/api/v1/me', { authorization: keys.auditor.valid! }, undefined, base);
      expect(r.status).toBe(429);
      expect(r.json.error.code).toBe('RATE_LIMITED');
      // The oldest counted failure was 9 s ago: 51 s to go.
      expect(r.headers.get('retry-after')).toBe('51');
      expect(await auditCount()).toBe(before + 1);
      expect(await lastAudit()).toMatchObject({ action: 'auth.denied' });
      const l = await fetchWith('POST', '/api/v1/login', {}, { apiKey: bareKey('auditor') }, base);
      expect(l.status).toBe(429);
      expect(await lastAudit()).toMatchObject({ action: 'login.failed' });
      clock += 51_000;
      expect((await fetchWith('GET', '/api/v1/me', { authorization: keys.auditor.valid! }, undefined, base)).status).toBe(200);

      // The session's own expiry (1 h here) follows the same clock.
      const s = await fetchWith('POST', '/api/v1/login', {}, { apiKey: bareKey('auditor') }, base);
      expect(s.status).toBe(200);
      expect(s.headers.get('set-cookie')).toContain('Max-Age=3600');
      clock += 3_600_001;
      const gone = await fetchWith('GET', '/api/v1/me', { cookie: cookieOf(s) }, undefined, base);
      expect(gone.status).toBe(401);
      expect(gone.json.error.details.reason).toBe('session_expired');
    } finally {
      await limited.close();
    }
  });

  it.skipIf(skip)('retention policies: create, update, assign to a room, delete; each change audited with before/after; bad input → 4xx with a code', async () => {
    const admin = as('admin');
    const created = await call('POST', '/api/v1/retention-policies', admin, { name: 'finance-7y', scope: 'room', mediaDays: 2555, transcriptDays: 2555, rawDays: 30 });
    expect(created.status, JSON.stringify(created.json)).toBe(201);
    expect(created.json).toMatchObject({ name: 'finance-7y', scope: 'room', mediaDays: 2555, transcriptDays: 2555, rawDays: 30, rooms: [] });
    expect(await lastAudit()).toMatchObject({ action: 'retention_policy.create', actor_id: userIds.admin, target_type: 'retention_policy', target_id: 'finance-7y' });
    const dup = await call('POST', '/api/v1/retention-policies', admin, { name: 'finance-7y', scope: 'default', mediaDays: 1, transcriptDays: 1, rawDays: 1 });
    expect(dup.status).toBe(409);
    expect(dup.json.error).toMatchObject({ code: 'CONFLICT', details: { policy: { name: 'finance-7y', mediaDays: 2555 } } });

    const upd = await call('PUT', '/api/v1/retention-policies/finance-7y', admin, { rawDays: null });
    expect(upd.status).toBe(200);
    expect(upd.json).toMatchObject({ rawDays: null, mediaDays: 2555 });
    const entry = await lastAudit();
    expect(entry).toMatchObject({ action: 'retention_policy.update', target_id: 'finance-7y' });
    expect(typeof entry.details === 'string' ? JSON.parse(entry.details) : entry.details).toMatchObject({ before: { rawDays: 30 }, after: { rawDays: null } });

    const assign = await call('PUT', '/api/v1/rooms/board/retention-policy', admin, { policy: 'finance-7y' });
    expect(assign.status).toBe(200);
    expect(assign.json).toMatchObject({ room: 'board', retentionPolicy: 'finance-7y', previous: null });
    const room = await db.selectFrom('rooms').select('flags').where('id', '=', 'board').executeTakeFirstOrThrow();
    expect(typeof room.flags === 'string' ? JSON.parse(room.flags) : room.flags).toMatchObject({ retentionPolicy: 'finance-7y' });
    expect(await lastAudit()).toMatchObject({ action: 'room.retention_policy', target_type: 'room', target_id: 'board' });
    expect((await call('GET', '/api/v1/retention-policies', admin)).json.policies.find((p: { name: string }) => p.name === 'finance-7y').rooms).toEqual(['board']);

    // A policy in use cannot be deleted or leave the 'room' scope; a room cannot name a non-room policy.
    const inUse = await call('DELETE', '/api/v1/retention-policies/finance-7y', admin);
    expect(inUse.status).toBe(409);
    expect(inUse.json.error.details.rooms).toEqual(['board']);
    expect((await call('PUT', '/api/v1/retention-policies/finance-7y', admin, { scope: 'tag' })).status).toBe(409);
    const wrongScope = await call('PUT', '/api/v1/rooms/board/retention-policy', admin, { policy: 'matrix' });
    expect(wrongScope.status).toBe(400);
    expect((await call('PUT', '/api/v1/rooms/nope/retention-policy', admin, { policy: 'finance-7y' })).json.error.code).toBe('ROOM_NOT_FOUND');
    expect((await call('PUT', '/api/v1/rooms/board/retention-policy', admin, { policy: 'nope' })).json.error.code).toBe('NOT_FOUND');
    expect((await call('PUT', '/api/v1/rooms/board/retention-policy', admin, { policy: null })).json).toMatchObject({ retentionPolicy: null, previous: 'finance-7y' });
    const del = await call('DELETE', '/api/v1/retention-policies/finance-7y', admin);
    expect(del.status).toBe(200);
    expect(await lastAudit()).toMatchObject({ action: 'retention_policy.delete', target_id: 'finance-7y' });
    const gone = await call('DELETE', '/api/v1/retention-policies/finance-7y', admin);
    expect(gone.status).toBe(404);
    expect(gone.json.error.code).toBe('NOT_FOUND');
    expect(await lastAudit()).toMatchObject({ action: 'request.rejected' });

    for (const bad of [
      { name: '../x', scope: 'room', mediaDays: 1, transcriptDays: 1, rawDays: 1 },
      { name: 'x', scope: 'forever', mediaDays: 1, transcriptDays: 1, rawDays: 1 },
      { name: 'x', scope: 'room', mediaDays: -1, transcriptDays: 1, rawDays: 1 },
      { name: 'x', scope: 'room', mediaDays: 1.5, transcriptDays: 1, rawDays: 1 },
      { name: 'x', scope: 'room', mediaDays: 1, transcriptDays: 1 },
    ]) {
      const r = await call('POST', '/api/v1/retention-policies', admin, bad);
      expect(r.status, JSON.stringify(bad)).toBe(400);
      expect(r.json.error.code).toBe('BAD_REQUEST');
    }
    expect((await call('PUT', '/api/v1/retention-policies/seeded-room', admin, {})).status).toBe(400);
  });

  it.skipIf(skip)('legal holds: place (a query hold freezes its sessions), list, view, release; a released hold answers with its state', async () => {
    const officer = as('compliance_officer');
    const placed = await call('POST', '/api/v1/legal-holds', officer, { caseId: 'SEC-2024-17', reason: 'Zanzibar inquiry', scope: { type: 'query', value: 'zanzibar' } });
    expect(placed.status, JSON.stringify(placed.json)).toBe(201);
    expect(placed.json).toMatchObject({ caseId: 'SEC-2024-17', reason: 'Zanzibar inquiry', scope: { type: 'query', value: 'zanzibar' }, frozenSessionIds: ['s1'], state: 'in_force', placedBy: `user:${userIds.compliance_officer}` });
    const id = placed.json.id as string;
    const before = await auditCount();
    expect((await lastAudit()).action).toBe('legal_hold.place');
    expect(await lastAudit()).toMatchObject({ actor_id: userIds.compliance_officer, target_type: 'legal_hold', target_id: id });
    const d = (await lastAudit()).details as unknown;
    expect(typeof d === 'string' ? JSON.parse(d) : d).toMatchObject({ caseId: 'SEC-2024-17', scopeType: 'query', frozenSessionIds: ['s1'], role: 'compliance_officer' });

    const list = await call('GET', '/api/v1/legal-holds', officer);
    expect(list.json.holds.map((h: { id: string }) => h.id)).toContain(id);
    expect(await auditCount()).toBe(before + 1);
    expect((await call('GET', `/api/v1/legal-holds/${id}`, officer)).json).toMatchObject({ id, state: 'in_force' });

    const rel = await call('POST', `/api/v1/legal-holds/${id}/release`, officer, { reason: 'case closed' });
    expect(rel.status).toBe(200);
    expect(rel.json).toMatchObject({ id, state: 'released', releasedBy: `user:${userIds.compliance_officer}` });
    expect(await lastAudit()).toMatchObject({ action: 'legal_hold.release', target_id: id });
    expect((await call('GET', '/api/v1/legal-holds', officer)).json.holds.map((h: { id: string }) => h.id)).not.toContain(id);
    expect((await call('GET', '/api/v1/legal-holds?includeReleased=true', officer)).json.holds.map((h: { id: string }) => h.id)).toContain(id);

    const again = await call('POST', `/api/v1/legal-holds/${id}/release`, officer, {});
    expect(again.status).toBe(409);
    expect(again.json.error).toMatchObject({ code: 'CONFLICT', details: { hold: { id, state: 'released' } } });
    const unknown = await call('GET', '/api/v1/legal-holds/00000000-0000-4000-8000-00000000ffff', officer);
    expect(unknown.status).toBe(404);
    for (const bad of [
      { caseId: 'C', reason: 'r', scope: { type: 'planet', value: 'x' } },
      { caseId: '', reason: 'r', scope: { type: 'room', value: 'x' } },
      { caseId: 'C', reason: 'r', scope: { type: 'room', value: '  ' } },
      { caseId: 'C', scope: { type: 'room', value: 'x' } },
    ]) {
      const r = await call('POST', '/api/v1/legal-holds', officer, bad);
      expect(r.status, JSON.stringify(bad)).toBe(400);
    }
    expect((await call('GET', '/api/v1/legal-holds/not-a-uuid', officer)).status).toBe(400);
  });

  it.skipIf(skip)('media: artifacts listed with their state; content streamed whole or by Range (206) for <video> seeking, with the cookie too; erased → 410', async () => {
    const officer = as('compliance_officer');
    const list = await call('GET', '/api/v1/sessions/s1/artifacts', officer);
    expect(list.status).toBe(200);
    const mp4 = list.json.artifacts.find((a: { id: string }) => a.id === 'composite.mp4');
    expect(mp4).toMatchObject({ kind: 'composite', participant: null, bytes: MEDIA.length, contentType: 'video/mp4', contentUrl: '/api/v1/sessions/s1/artifacts/composite.mp4/content' });
    const track = list.json.artifacts.find((a: { id: string }) => a.id === 'tracks/t-alice-audio-0.ogg');
    expect(track).toMatchObject({ participant: 'p-alice', contentUrl: '/api/v1/sessions/s1/artifacts/tracks%2Ft-alice-audio-0.ogg/content' });
    expect(list.json.deleted).toEqual([expect.objectContaining({ item: 'sessions/board/s1/participant-p-bob.mkv', state: 'erased', erasureRequest: 'er-1' })]);
    expect(await lastAudit()).toMatchObject({ action: 'artifact.list', target_id: 's1' });

    const get = (url: string, headers: Record<string, string>) => fetch(`${server.url}${url}`, { headers });
    const whole = await get(mp4.contentUrl, { authorization: officer });
    expect(whole.status).toBe(200);
    expect(whole.headers.get('content-type')).toBe('video/mp4');
    expect(whole.headers.get('accept-ranges')).toBe('bytes');
    expect(whole.headers.get('content-length')).toBe(String(MEDIA.length));
    const bytes = Buffer.from(await whole.arrayBuffer());
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(mp4.sha256);
    expect(await lastAudit()).toMatchObject({ action: 'media.download', target_type: 'artifact', target_id: 'sessions/board/s1/composite.mp4', actor_id: userIds.compliance_officer });

    const part = await get(mp4.contentUrl, { authorization: officer, range: 'bytes=1000-1099' });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 1000-1099/${MEDIA.length}`);
    expect(part.headers.get('content-length')).toBe('100');
    expect(Buffer.from(await part.arrayBuffer()).equals(MEDIA.subarray(1000, 1100))).toBe(true);
    const entry = await lastAudit();
    expect(entry).toMatchObject({ action: 'media.stream' });
    expect(typeof entry.details === 'string' ? JSON.parse(entry.details) : entry.details).toMatchObject({ range: '1000-1099', session: 's1' });
    const tail = await get(mp4.contentUrl, { authorization: officer, range: 'bytes=-10' });
    expect(tail.status).toBe(206);
    expect(Buffer.from(await tail.arrayBuffer()).equals(MEDIA.subarray(MEDIA.length - 10))).toBe(true);
    const open = await get(mp4.contentUrl, { authorization: officer, range: 'bytes=4990-' });
    expect(open.headers.get('content-range')).toBe(`bytes 4990-4999/${MEDIA.length}`);
    const beyond = await get(mp4.contentUrl, { authorization: officer, range: 'bytes=6000-' });
    expect(beyond.status).toBe(416);
    expect(beyond.headers.get('content-range')).toBe(`bytes */${MEDIA.length}`);
    expect((await beyond.json()).error.code).toBe('RANGE_NOT_SATISFIABLE');

    // A <video src> sends the cookie and no headers.
    const login = await fetchWith('POST', '/api/v1/login', {}, { apiKey: bareKey('compliance_officer') });
    const viaCookie = await get(mp4.contentUrl, { cookie: cookieOf(login), range: 'bytes=0-1' });
    expect(viaCookie.status).toBe(206);
    expect(Buffer.from(await viaCookie.arrayBuffer()).equals(MEDIA.subarray(0, 2))).toBe(true);
    expect((await get(track.contentUrl, { authorization: officer })).status).toBe(200);

    const erased = await call('GET', '/api/v1/sessions/s1/artifacts/participant-p-bob.mkv/content', officer);
    expect(erased.status).toBe(410);
    expect(erased.json.error).toMatchObject({ code: 'GONE', details: { state: 'erased', erasureRequest: 'er-1' } });
    expect(await lastAudit()).toMatchObject({ action: 'request.rejected' });
    expect((await call('GET', '/api/v1/sessions/s1/artifacts/nothing.mp4/content', officer)).status).toBe(404);
    expect((await call('GET', '/api/v1/sessions/s1/artifacts/..%2Fs2%2Fcomposite.mp4/content', officer)).status).toBe(400);
    expect((await call('GET', '/api/v1/sessions/s1/artifacts/composite.mp4/content', as('auditor'))).status).toBe(403);
  });

  it.skipIf(skip)('serves the OpenAPI document at /docs/json and a page at /docs', async () => {
    const doc = await call('GET', '/docs/json');
    expect(doc.status).toBe(200);
    expect(doc.json.openapi).toBe('3.1.0');
    expect(Object.keys(doc.json.paths).sort()).toEqual(DOC_PATHS);
    const params = doc.json.paths['/api/v1/search'].get.parameters.map((p: { name: string }) => p.name);
    expect(params).toEqual(['q', 'room', 'participant', 'session', 'from', 'to', 'page', 'pageSize', 'reveal']);
    expect(doc.json.paths['/api/v1/keys'].post.requestBody.content['application/json'].schema.properties.role.enum).toEqual(['admin', 'compliance_officer', 'auditor']);
    const page = await fetch(`${server.url}/docs`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('/api/v1/search');
  });
});
