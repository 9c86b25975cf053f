import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../db/database.ts';
import { TEST_RECORDER_SECRET, startTestRecorder, type TestRecorder } from '../../../testing/recorder-harness.ts';
import { send, sendBytes, type FuzzResponse } from '../../../testing/http-fuzz.ts';
import { AuditLog } from '../../audit/index.ts';

/**
 * The recorder control API against the hostile requests of issue 12: ids that would leave
 * RECORDINGS_DIR, a sealed session written to again, bad secrets, bodies the journal or the
 * database could not hold, and requests refused before routing. Each refusal answers
 * `{error: {code}}` and is one entry in the audit trail; nothing lands outside RECORDINGS_DIR.
 */
const AUTH = { authorization: `Bearer ${TEST_RECORDER_SECRET}` };
const track = (session: string, t = 'alice-audio', room = 'room1') => ({
  v: 1,
  room,
  session,
  track: t,
  participant: { id: 'alice', name: 'Alice' },
  kind: 'audio',
  codec: { mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 100, parameters: {} },
  ssrc: 1234,
  headerExtensions: [],
  consent: { decision: 'granted', method: 'click' },
});
const at = () => new Date().toISOString();

let rec: TestRecorder;
let db: Db;
beforeAll(async () => {
  rec = await startTestRecorder();
  db = await rec.openDb();
});
afterAll(async () => {
  await rec?.stop();
  await db?.destroy();
});

const post = (p: string, body: unknown, headers: Record<string, string> = AUTH) => send(rec.url, { method: 'POST', path: p, headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
const auditCount = async () => Number((await db.selectFrom('audit_log').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
const lastAudit = () => db.selectFrom('audit_log').selectAll().orderBy('seq', 'desc').limit(1).executeTakeFirstOrThrow();
const codeOf = (res: FuzzResponse) => (JSON.parse(res.text) as { error: { code: string } }).error.code;
/** Everything under DATA_DIR outside RECORDINGS_DIR (the recorder's own files: secrets, its database). */
const outsideRecordings = () => readdirSync(rec.dataDir).filter((f) => f !== 'recordings');

async function refused(status: number, code: string, go: () => Promise<FuzzResponse>) {
  const before = await auditCount();
  const res = await go();
  expect(res.status, res.text).toBe(status);
  expect(codeOf(res)).toBe(code);
  expect(await auditCount()).toBe(before + 1);
  const entry = await lastAudit();
  expect(entry.details).toMatchObject({ service: 'recorder', status, code });
  return entry;
}

describe('recorder control API against hostile input', () => {
  it('POST /v1/sessions/..%2F..%2Fx/events: refused as a bad id; nothing written outside RECORDINGS_DIR, no session row', async () => {
    const outside = outsideRecordings();
    const entry = await refused(400, 'BAD_REQUEST', () => post('/v1/sessions/..%2F..%2Fx/events', { v: 1, room: 'room1', events: [{ at: at(), type: 'participant-joined', participant: 'alice' }] }));
    expect(entry).toMatchObject({ action: 'request.rejected', actor_type: 'service', actor_id: 'recorder-client', target_id: 'POST /v1/sessions/:session/events' });
    await refused(400, 'BAD_REQUEST', () => post('/v1/sessions/..%2F..%2Fy/end', { v: 1, room: 'room1' }));
    await refused(400, 'BAD_REQUEST', () => post('/v1/tracks', track('../../z')));
    await refused(400, 'BAD_REQUEST', () => post('/v1/tracks', track('s-ok', 'a/../../t')));
    await refused(400, 'BAD_REQUEST', () => post('/v1/tracks', track('s-ok', 'alice-audio', '..')));
    await refused(400, 'BAD_REQUEST', () => post('/v1/sessions/a..b/events', { v: 1, room: 'room1', events: [{ at: at(), type: 'recording-on' }] }));
    await refused(400, 'BAD_REQUEST', () => send(rec.url, { method: 'DELETE', path: '/v1/sessions/%00/tracks/..', headers: AUTH }));
    expect(outsideRecordings()).toEqual(outside);
    for (const f of ['x', 'y', 'z']) expect(existsSync(path.join(rec.dataDir, f))).toBe(false);
    expect(existsSync(rec.recordingsDir) ? readdirSync(rec.recordingsDir) : []).toEqual([]);
    expect(await db.selectFrom('recording_sessions').select('id').execute()).toEqual([]);
  });

  it('a sealed session takes no more events or tracks (409 SESSION_ENDED): its directory is left as sealed, also after a restart and after retention removed it', async () => {
    const started = await post('/v1/tracks', track('sealed-1'));
    expect(started.status, started.text).toBe(201);
    expect((await post('/v1/sessions/sealed-1/events', { v: 1, room: 'room1', events: [{ at: at(), type: 'participant-joined', participant: 'alice', details: { name: 'Alice' } }] })).status).toBe(204);
    const ended = await post('/v1/sessions/sealed-1/end', { v: 1, room: 'room1', reason: 'test' });
    expect(ended.status, ended.text).toBe(200);
    const dir = path.join(rec.recordingsDir, 'room1', 'sealed-1');
    const files = readdirSync(dir).sort();
    const manifestSha = createHash('sha256').update(readFileSync(path.join(dir, 'manifest.json'))).digest('hex');
    const sealedAgain = async () => {
      await refused(409, 'SESSION_ENDED', () => post('/v1/sessions/sealed-1/events', { v: 1, room: 'room1', events: [{ at: at(), type: 'participant-left', participant: 'alice' }] }));
      await refused(409, 'SESSION_ENDED', () => post('/v1/tracks', track('sealed-1', 'bob-audio')));
      await refused(409, 'SESSION_ENDED', () => post('/v1/sessions/sealed-1/end', { v: 1, room: 'room1' }));
    };
    await sealedAgain();
    expect(readdirSync(dir).sort()).toEqual(files);
    expect(existsSync(path.join(dir, 'session.json'))).toBe(false);
    expect(createHash('sha256').update(readFileSync(path.join(dir, 'manifest.json'))).digest('hex')).toBe(manifestSha);

    // Not in the restarted recorder's memory: the manifest on disk says it.
    await rec.stop();
    await rec.restart();
    await sealedAgain();
    expect(readdirSync(dir).sort()).toEqual(files);
    // Retention removed the raw recording: the database still says it ended.
    rmSync(path.join(rec.recordingsDir, 'room1'), { recursive: true, force: true });
    await refused(409, 'SESSION_ENDED', () => post('/v1/sessions/sealed-1/events', { v: 1, room: 'room1', events: [{ at: at(), type: 'recording-on' }] }));
    expect(existsSync(dir)).toBe(false);
    expect((await db.selectFrom('recording_sessions').select('status').where('id', '=', 'sealed-1').executeTakeFirstOrThrow()).status).toBe('sealed');
    // The same id in another room is not that session either.
    await refused(400, 'BAD_REQUEST', () => post('/v1/sessions/sealed-1/events', { v: 1, room: 'room2', events: [{ at: at(), type: 'recording-on' }] }));
  });

  it('bad secrets, and bodies the journal or the database could not hold, are refused with a code (never a 500, never an unsealable session)', async () => {
    const denied = await refused(401, 'UNAUTHORIZED', () => post('/v1/tracks', track('s-auth'), { authorization: 'Bearer wrong' }));
    expect(denied).toMatchObject({ action: 'auth.denied', actor_type: 'anonymous' });
    await refused(401, 'UNAUTHORIZED', () => post('/v1/tracks', track('s-auth'), {}));
    const ev = (events: unknown[]) => post('/v1/sessions/s-body/events', { v: 1, room: 'room1', events });
    // As text: JSON.stringify itself overflows the stack on it (as the journal writer would have).
    const deep = `${'['.repeat(50_000)}"x"${']'.repeat(50_000)}`;
    const cases: [string, () => Promise<FuzzResponse>][] = [
      ['NUL in a participant name', () => post('/v1/tracks', { ...track('s-body'), participant: { id: 'alice', name: 'Al\u0000ice' } })],
      ['lone surrogate in a participant name', () => post('/v1/tracks', `${JSON.stringify({ ...track('s-body'), participant: undefined }).slice(0, -1)},"participant":{"id":"alice","name":"\\ud800"}}`)],
      ['NUL in a codec parameter', () => post('/v1/tracks', { ...track('s-body'), codec: { ...track('s-body').codec, parameters: { 'x\u0000': 1 } } })],
      ['NUL in event details', () => ev([{ at: at(), type: 'participant-joined', participant: 'alice', details: { name: 'a\u0000' } }])],
      ['details nested 50,000 deep', () => post('/v1/sessions/s-body/events', `{"v":1,"room":"room1","events":[{"at":"${at()}","type":"recording-on","details":{"deep":${deep}}}]}`)],
      ['an event time that is no time', () => ev([{ at: 'yesterday', type: 'recording-on' }])],
      ['a participant id that is a path', () => ev([{ at: at(), type: 'participant-joined', participant: '../alice' }])],
      ['NUL in an end reason', () => post('/v1/sessions/s-body/end', { v: 1, room: 'room1', reason: 'done\u0000' })],
      ['prototype keys', () => post('/v1/sessions/s-body/events', '{"v":1,"room":"room1","events":[],"__proto__":{"x":1}}')],
      ['not JSON', () => post('/v1/tracks', '{"v":1,')],
      ['wrong content type', () => send(rec.url, { method: 'POST', path: '/v1/tracks', headers: { ...AUTH, 'content-type': 'text/plain' }, body: 'x' })],
    ];
    for (const [what, go] of cases) {
      const before = await auditCount();
      const res = await go();
      expect([what, res.status]).toEqual([what, what === 'wrong content type' ? 415 : 400]);
      expect([what, (await auditCount()) - before]).toEqual([what, 1]);
    }
    // None of them opened the session.
    expect(existsSync(path.join(rec.recordingsDir, 'room1', 's-body'))).toBe(false);
  });

  it('refused before routing: bad URL encoding, an overlong id (414), oversized headers (431), not HTTP, all coded and audited', async () => {
    await refused(400, 'BAD_REQUEST', () => send(rec.url, { method: 'POST', path: '/v1/sessions/%E0%A4%A/events', headers: AUTH }));
    await refused(414, 'URI_TOO_LONG', () => send(rec.url, { method: 'POST', path: `/v1/sessions/${'s'.repeat(300)}/end`, headers: AUTH }));
    await refused(431, 'HEADERS_TOO_LARGE', () => send(rec.url, { method: 'GET', path: '/v1/stats', headers: { ...AUTH, 'x-pad': 'p'.repeat(20_000) } }));
    await refused(400, 'BAD_REQUEST', () => sendBytes(rec.url, 'BREW /v1/health HTTP/1.1\r\nHost: x\r\n\r\n'));
    await refused(404, 'NOT_FOUND', () => send(rec.url, { method: 'PUT', path: '/v1/tracks', headers: AUTH }));
    expect(rec.child.exitCode).toBeNull();
    expect((await send(rec.url, { method: 'GET', path: '/v1/health', headers: {} })).status).toBe(200);
    expect(await new AuditLog(db).verify()).toMatchObject({ ok: true, checked: await auditCount() });
  });
});
