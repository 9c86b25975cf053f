import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../db/database.ts';
import type { SessionManifest } from '../../lib/contracts/recording.ts';
import { createLogger } from '../../lib/logger.ts';
import { testBackends, type TestBackend } from '../../../testing/databases.ts';
import { audioOnsets, ffprobe } from '../../../testing/media-fixtures.ts';
import { verifySessionDir, SessionStore } from '../../recorder/index.ts';
import { LocalArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { transcriptText } from '../../lib/transcript/transcript-files.ts';
import { writeToneSession, type ToneSpeaker } from '../../../testing/synthetic-session.ts';
import { startTestTranscodeWorker, type TestTranscodeWorker } from '../../../testing/transcode-worker.ts';
import { AuditLog } from './audit-log.ts';
import { createUserWithKey } from './key-lifecycle.ts';
import { startAuditServer, type AuditServer } from './http/server.ts';

const backends = await testBackends();
afterAll(async () => {
  for (const b of backends) await b.cleanup();
});

const ROOM = 'r';
const SESSION = 'sess-erase';
/** A second recording of the same meeting shape, where the first speaker (Alice) is erased. */
const FIRST = 'sess-first';

/**
 * A real two-participant session as the recorder leaves it: Alice's tone plays 0–1 s and 2.6–3 s,
 * Bob's 1.5–3 s (the gaps are DTX: no packets). Sealed and registered like the recorder does.
 */
function recordSession(recordingsDir: string, scratch: string, session = SESSION): { manifestPath: string; manifest: SessionManifest; sha: string } {
  const speakers: ToneSpeaker[] = [
    { id: 'p-alice', name: 'Alice', track: 'ta', dtx: [[1, 2.6]] },
    // Bob in the main session; someone else in the other, so erasing Bob everywhere leaves it alone.
    { id: session === SESSION ? 'p-bob' : 'p-carol', name: session === SESSION ? 'Bob' : 'Carol', track: 'tb', dtx: [[0, 1.5]] },
  ];
  const recorded = writeToneSession({ recordingsDir, scratch, room: ROOM, session, speakers, events: (at) => [{ at, type: 'participant-joined', participant: 'p-bob', details: {} }] });
  writeFileSync(path.join(recorded.dir, '.session.json.done'), JSON.stringify({ participants: speakers.map((p) => p.id) }));
  return recorded;
}

/** [start, end] of every silence ffmpeg's silencedetect finds (end = duration when it runs to the end). */
function silences(file: string): [number, number][] {
  const r = spawnSync('ffmpeg', ['-v', 'info', '-nostats', '-i', file, '-af', 'silencedetect=n=-40dB:d=0.3', '-f', 'null', '-'], { encoding: 'utf8' });
  const starts = [...r.stderr.matchAll(/silence_start: ([0-9.e-]+)/g)].map((m) => Math.max(0, Number(m[1])));
  const ends = [...r.stderr.matchAll(/silence_end: ([0-9.]+)/g)].map((m) => Number(m[1]));
  return starts.map((st, i) => [st, ends[i] ?? Number(ffprobe(file).format.duration)]);
}

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

describe.each(backends)('GDPR erasure ($name)', (backend: TestBackend) => {
  const skip = !backend.available;
  let db: Db;
  let server: AuditServer;
  let transcode: TestTranscodeWorker;
  let root: string;
  let storage: LocalArtifactStorage;
  let recordingsDir: string;
  let officer: string;
  let officerId: string;
  const composite = `sessions/${ROOM}/${SESSION}/composite.mp4`;
  let before: { file: string; sha: string; duration: number };

  beforeAll(async () => {
    if (skip) return;
    db = await backend.open();
    root = mkdtempSync(path.join(os.tmpdir(), 'verbatim-erasure-'));
    recordingsDir = path.join(root, 'recordings');
    storage = new LocalArtifactStorage(path.join(root, 'artifacts'));
    const logger = createLogger({ level: 'silent' });
    await db.insertInto('rooms').values({ id: ROOM, name: ROOM, flags: JSON.stringify({}), secret_hash: 'scrypt$x$y' }).execute();
    for (const id of [SESSION, FIRST]) {
      const rec = recordSession(recordingsDir, root, id);
      await new SessionStore(db).registerSealed(rec.manifest, rec.manifestPath, rec.sha);
    }
    // The real transcode worker finalizes both sealed sessions (no transcription: the room does not
    // transcribe); later it re-renders the composites the erasure jobs ask for.
    transcode = await startTestTranscodeWorker({ db, storage, workDir: path.join(root, 'work') });
    for (const deadline = Date.now() + 60_000; ; await new Promise((r) => setTimeout(r, 200))) {
      const states = (await db.selectFrom('recording_sessions').select(['id', 'status', 'error_code']).where('id', 'in', [SESSION, FIRST]).execute()).map((r) => `${r.id}:${r.status}:${r.error_code ?? ''}`);
      if (states.every((x) => x.includes(':done:'))) break;
      if (Date.now() > deadline) throw new Error(`the sessions were not finalized: ${states.join(', ')}`);
    }
    // Their words, as transcription stores them, and the transcript file with everyone's words.
    const segments = [
      { participant: 'p-alice', speaker: 'Alice', start: 0.1, end: 0.9, text: 'Let us review the quarterly budget.' },
      { participant: 'p-bob', speaker: 'Bob', start: 1.6, end: 2.9, text: 'The Zanzibar acquisition stays confidential.' },
    ];
    await db
      .insertInto('transcript_segments')
      .values(segments.map((s, i) => ({ session_id: SESSION, seq: i, participant_id: s.participant, speaker: s.speaker, start_seconds: s.start, end_seconds: s.end, text: s.text, language: 'en' })))
      .execute();
    const txt = path.join(root, 'transcript.txt');
    writeFileSync(txt, transcriptText(segments));
    const stored = await storage.put(`sessions/${ROOM}/${SESSION}/transcript.txt`, txt);
    await db.insertInto('artifacts').values({ session_id: SESSION, key: stored.key, kind: 'transcript-txt', participant_id: null, content_type: 'text/plain', bytes: stored.bytes, sha256: stored.sha256, storage: 'local', duration_seconds: null }).execute();

    const file = path.join(root, 'composite-before.mp4');
    copyFileSync(await storage.locate(composite), file);
    before = { file, sha: sha256(file), duration: Number(ffprobe(file).format.duration) };

    const o = await createUserWithKey(db, { name: 'DPO', role: 'compliance_officer' });
    officer = `Bearer ${o.apiKey}`;
    officerId = o.user.id;
    server = await startAuditServer({ db, logger, storage, recordingsDir, workDir: path.join(root, 'erasure-work'), failedAuthPerMinute: 0, ...transcode.queue });
  }, 120_000);
  afterAll(async () => {
    await server?.close();
    await transcode?.close();
    await db?.destroy();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  async function call(method: string, url: string, body?: unknown): Promise<{ status: number; json: any }> {
    const res = await fetch(`${server.url}${url}`, { method, headers: { authorization: officer, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    return { status: res.status, json: await res.json() };
  }
  /** An erasure request as a client makes it: 202 with the accepted request, then its outcome once the background job is done. */
  async function erase(body: unknown): Promise<{ status: number; accepted: any; done: any }> {
    const r = await call('POST', '/api/v1/erasure-requests', body);
    if (r.status !== 202) return { status: r.status, accepted: r.json, done: undefined };
    // Polled in the database: every GET of the request is audited, and the checks below count entries.
    await expect
      .poll(async () => (await db.selectFrom('erasure_requests').select('status').where('id', '=', r.json.id).executeTakeFirstOrThrow()).status, { timeout: 120_000, interval: 200 })
      .toMatch(/^(completed|restricted|partial|failed)$/);
    return { status: r.status, accepted: r.json, done: (await call('GET', `/api/v1/erasure-requests/${r.json.id}`)).json };
  }
  const searchTotal = async (q: string) => (await call('GET', `/api/v1/search?q=${encodeURIComponent(q)}`)).json.total as number;
  const rows = async () => ({
    tracks: (await db.selectFrom('tracks').select('participant_id').where('session_id', '=', SESSION).execute()).map((r) => r.participant_id).sort(),
    participants: (await db.selectFrom('session_participants').select('participant_id').where('session_id', '=', SESSION).execute()).map((r) => r.participant_id).sort(),
    artifacts: await db.selectFrom('artifacts').select(['key', 'participant_id', 'sha256', 'duration_seconds', 'kind']).where('session_id', '=', SESSION).orderBy('key').execute(),
  });
  const dir = () => path.join(recordingsDir, ROOM, SESSION);

  it.skipIf(skip)('under a legal hold the request is recorded as restricted, naming the hold, and nothing is deleted', async () => {
    const hold = await call('POST', '/api/v1/legal-holds', { caseId: 'CASE-42', reason: 'pending litigation', scope: { type: 'session', value: SESSION } });
    expect(hold.status).toBe(201);
    const state = await rows();
    expect(state.tracks).toEqual(['p-alice', 'p-bob']);
    expect(state.artifacts.filter((a) => a.participant_id === 'p-bob').length).toBeGreaterThanOrEqual(2);

    const { status, accepted, done } = await erase({ participant: 'p-bob', session: SESSION, reason: 'DSR-1001' });
    expect(status, JSON.stringify(accepted)).toBe(202);
    expect(accepted).toMatchObject({ participant: 'p-bob', session: SESSION, status: 'pending', sessions: [SESSION], progress: { pct: 0, sessionsDone: 0, sessionsTotal: 1 }, outcome: [] });
    expect(done).toMatchObject({ id: accepted.id, participant: 'p-bob', session: SESSION, status: 'restricted', holds: [hold.json.id], progress: { pct: 100, sessionsDone: 1 }, error: null });
    expect(done.outcome).toEqual([{ session: SESSION, room: ROOM, state: 'restricted', holds: [{ id: hold.json.id, caseId: 'CASE-42' }] }]);

    expect(await rows()).toEqual(state);
    expect(existsSync(path.join(dir(), 'tb-0.vrtp'))).toBe(true);
    expect(sha256(await storage.locate(composite))).toBe(before.sha);
    expect(await searchTotal('zanzibar')).toBe(1);
    // The request (when accepted) and the restriction (when the job met the hold), both by the officer.
    const audit = await db.selectFrom('audit_log').select(['action', 'target_id', 'actor_id']).where('action', 'like', 'erasure.%').orderBy('seq').execute();
    expect(audit.map((a) => a.action).sort()).toEqual(['erasure.request', 'erasure.restricted', 'erasure.view']);
    expect(audit.find((a) => a.action === 'erasure.request')).toMatchObject({ target_id: accepted.id, actor_id: officerId });
    expect(audit.find((a) => a.action === 'erasure.restricted')).toMatchObject({ target_id: SESSION, actor_id: officerId });

    const rel = await call('POST', `/api/v1/legal-holds/${hold.json.id}/release`, { reason: 'case settled' });
    expect(rel.status).toBe(200);
  });

  it.skipIf(skip)('without a hold: their rows, files and words go, the composite is re-rendered without their audio, tombstones and audit entries remain, the chain verifies', async () => {
    const bobArtifacts = (await rows()).artifacts.filter((a) => a.participant_id === 'p-bob').map((a) => a.key);
    const { status, accepted, done } = await erase({ participant: 'p-bob', reason: 'DSR-1002' });
    expect(status, JSON.stringify(accepted)).toBe(202);
    expect(accepted).toMatchObject({ participant: 'p-bob', session: null, status: 'pending', sessions: [SESSION] });
    const r = { json: done };
    expect(r.json).toMatchObject({ participant: 'p-bob', session: null, status: 'completed', holds: [], progress: { pct: 100, stage: null } });
    const [o] = r.json.outcome;
    expect(o).toMatchObject({ session: SESSION, state: 'erased', composite: 're-rendered', deleted: { transcriptSegments: 1, tracks: ['tb'] } });
    expect(o.deleted.artifacts.sort()).toEqual(bobArtifacts.sort());

    // Rows and files.
    const after = await rows();
    expect(after.tracks).toEqual(['p-alice']);
    expect(after.participants).toEqual(['p-alice']);
    expect(after.artifacts.filter((a) => a.participant_id === 'p-bob')).toEqual([]);
    expect(after.artifacts.some((a) => a.participant_id === 'p-alice')).toBe(true);
    for (const key of bobArtifacts) expect(await storage.exists(key)).toBe(false);
    expect(existsSync(path.join(dir(), 'tb-0.vrtp'))).toBe(false);
    expect(existsSync(path.join(dir(), 'ta-0.vrtp'))).toBe(true);
    expect(existsSync(path.join(dir(), '.session.json.done'))).toBe(false);
    const manifest = JSON.parse(readFileSync(path.join(dir(), 'manifest.json'), 'utf8')) as SessionManifest;
    expect(manifest.tracks.map((t) => t.track)).toEqual(['ta']);
    expect(manifest.participants.map((p) => p.id)).toEqual(['p-alice']);
    expect(manifest.events.map((e) => e.type)).toEqual(['erasure']);
    expect(manifest.events[0]!.details).toMatchObject({ request: r.json.id, tracksRemoved: 1 });
    // The stored timeline the API shows follows the manifest: their join is gone, the erasure is there.
    const timeline = await db.selectFrom('session_events').select(['type', 'participant_id', 'details']).where('session_id', '=', SESSION).orderBy('ordinal').execute();
    expect(timeline.map((e) => [e.type, e.participant_id])).toEqual([['erasure', null]]);
    expect(typeof timeline[0]!.details === 'string' ? JSON.parse(timeline[0]!.details) : timeline[0]!.details).toMatchObject({ request: r.json.id, tracksRemoved: 1 });
    const s = await db.selectFrom('recording_sessions').select('manifest_sha256').where('id', '=', SESSION).executeTakeFirstOrThrow();
    expect(s.manifest_sha256).toBe(sha256(path.join(dir(), 'manifest.json')));
    // What remains is still a valid recording (`verbatim recording verify`).
    const verified = verifySessionDir(dir());
    expect(verified.problems).toEqual([]);
    expect(verified.checked.tracks).toBe(1);

    // Search and the transcript file.
    expect(await searchTotal('zanzibar')).toBe(0);
    expect(await searchTotal('budget')).toBe(1);
    const txt = readFileSync(await storage.locate(`sessions/${ROOM}/${SESSION}/transcript.txt`), 'utf8');
    expect(txt).toContain('quarterly budget');
    expect(txt).not.toMatch(/zanzibar|Bob/i);
    expect(after.artifacts.find((a) => a.kind === 'transcript-txt')!.sha256).toBe(sha256(await storage.locate(`sessions/${ROOM}/${SESSION}/transcript.txt`)));

    // The composite: re-rendered (new bytes, recorded SHA-256), same length, Bob's tone gone from the mix.
    const file = await storage.locate(composite);
    const row = after.artifacts.find((a) => a.key === composite)!;
    expect(row.sha256).toBe(sha256(file));
    expect(row.sha256).not.toBe(before.sha);
    expect(o.compositeSha256).toBe(row.sha256);
    expect(Math.abs(Number(ffprobe(file).format.duration) - before.duration)).toBeLessThan(0.1);
    const onsetsBefore = audioOnsets(before.file);
    const onsetsAfter = audioOnsets(file);
    // Before: sound resumes at 1.5 s (Bob). After: silence until Alice's 2.6 s.
    expect(onsetsBefore.some((t) => Math.abs(t - 1.5) < 0.15), `before: ${onsetsBefore.join(', ')}`).toBe(true);
    expect(onsetsAfter.some((t) => t > 1.2 && t < 2.45), `after: ${onsetsAfter.join(', ')}`).toBe(false);
    expect(onsetsAfter.some((t) => Math.abs(t - 2.6) < 0.15), `after: ${onsetsAfter.join(', ')}`).toBe(true);

    // Tombstones, the erased media's state, the audit trail.
    const tombs = await db.selectFrom('tombstones').selectAll().where('erasure_request', '=', r.json.id).execute();
    expect(tombs.map((t) => t.kind).sort()).toEqual(expect.arrayContaining(['media', 'raw', 'transcript']));
    expect(tombs.some((t) => t.item === `${composite}@sha256:${before.sha}`)).toBe(true);
    const gone = await call('GET', `/api/v1/sessions/${SESSION}/artifacts/${encodeURIComponent(bobArtifacts[0]!.slice(`sessions/${ROOM}/${SESSION}/`.length))}/content`);
    expect(gone.status).toBe(410);
    expect(gone.json.error.details).toMatchObject({ state: 'erased', erasureRequest: r.json.id });
    const entries = await db.selectFrom('audit_log').select(['action', 'target_type', 'target_id', 'actor_id', 'details']).where('action', 'in', ['erasure.delete', 'erasure.request']).orderBy('seq').execute();
    const del = entries.find((e) => e.action === 'erasure.delete')!;
    expect(del).toMatchObject({ target_type: 'session', target_id: SESSION, actor_id: officerId });
    expect(typeof del.details === 'string' ? JSON.parse(del.details) : del.details).toMatchObject({ request: r.json.id, participant: 'p-bob', composite: 're-rendered' });
    expect(entries.filter((e) => e.action === 'erasure.request' && e.target_id === r.json.id)).toHaveLength(1);
    expect((await new AuditLog(db).verify()).ok).toBe(true);

    const list = await call('GET', '/api/v1/erasure-requests?participant=p-bob');
    expect(list.json.requests.map((x: { status: string }) => x.status)).toEqual(['restricted', 'completed']);
  }, 120_000);

  it.skipIf(skip)('erasing the participant who opened the session keeps the composite on its original timeline (their part silent, the rest where it was)', async () => {
    const key = `sessions/${ROOM}/${FIRST}/composite.mp4`;
    const old = path.join(root, 'first-before.mp4');
    copyFileSync(await storage.locate(key), old);
    expect(silences(old).filter(([a]) => a < 0.5)).toEqual([]); // Alice is heard from 0 s
    const { status, done } = await erase({ participant: 'p-alice', session: FIRST, reason: 'DSR-1004' });
    expect(status).toBe(202);
    expect(done.outcome[0]).toMatchObject({ state: 'erased', composite: 're-rendered' });
    const file = await storage.locate(key);
    expect(Math.abs(Number(ffprobe(file).format.duration) - Number(ffprobe(old).format.duration))).toBeLessThan(0.1);
    // Silent from 0 s until Carol starts at 1.5 s, as in the original recording; then Carol to the end.
    const quiet = silences(file);
    expect(quiet.length, JSON.stringify(quiet)).toBeGreaterThanOrEqual(1);
    expect(quiet[0]![0]).toBeLessThan(0.05);
    expect(Math.abs(quiet[0]![1] - 1.5), JSON.stringify(quiet)).toBeLessThan(0.15);
    expect(quiet.slice(1).filter(([a, b]) => b - a > 0.3 && a < 2.8)).toEqual([]);
  }, 120_000);

  it.skipIf(skip)('a compliance service stopped while its erasure waits for the re-render resumes it when it starts again: one re-render, one tombstone, one audit entry', async () => {
    const id = 'sess-restart';
    const rec = recordSession(recordingsDir, root, id);
    await new SessionStore(db).registerSealed(rec.manifest, rec.manifestPath, rec.sha);
    await transcode.worker.reconcile();
    const row = (request: string) => db.selectFrom('erasure_requests').selectAll().where('id', '=', request).executeTakeFirstOrThrow();
    await expect.poll(async () => (await db.selectFrom('recording_sessions').select('status').where('id', '=', id).executeTakeFirstOrThrow()).status, { timeout: 60_000, interval: 200 }).toBe('done');
    const key = `sessions/${ROOM}/${id}/composite.mp4`;
    const old = await db.selectFrom('artifacts').select('sha256').where('key', '=', key).executeTakeFirstOrThrow();
    // The re-render waits in the transcode queue until the worker takes jobs again.
    await transcode.worker.worker.pause();
    const r = await call('POST', '/api/v1/erasure-requests', { participant: 'p-carol', session: id, reason: 'DSR-1005' });
    expect(r.status, JSON.stringify(r.json)).toBe(202);
    await expect.poll(async () => (await row(r.json.id)).stage ?? '', { timeout: 30_000, interval: 100 }).toContain('re-rendering the composite');
    await server.close();
    expect(await row(r.json.id)).toMatchObject({ status: 'running', error_code: null });
    expect(JSON.parse(JSON.stringify((await row(r.json.id)).sessions))).toEqual([expect.objectContaining({ session: id, step: 'composite' })]);

    server = await startAuditServer({ db, logger: createLogger({ level: 'silent' }), storage, recordingsDir, workDir: path.join(root, 'erasure-work'), failedAuthPerMinute: 0, ...transcode.queue });
    await transcode.worker.worker.resume();
    await expect.poll(async () => (await row(r.json.id)).status, { timeout: 120_000, interval: 200 }).toBe('completed');
    const done = (await call('GET', `/api/v1/erasure-requests/${r.json.id}`)).json;
    expect(done.outcome).toEqual([expect.objectContaining({ session: id, state: 'erased', composite: 're-rendered', deleted: expect.objectContaining({ tracks: ['tb'] }) })]);
    const now = await db.selectFrom('artifacts').select('sha256').where('key', '=', key).executeTakeFirstOrThrow();
    expect(now.sha256).toBe(done.outcome[0].compositeSha256);
    expect(now.sha256).not.toBe(old.sha256);
    expect(now.sha256).toBe(sha256(await storage.locate(key)));
    const tombs = await db.selectFrom('tombstones').select('item').where('erasure_request', '=', r.json.id).execute();
    expect(tombs.filter((t) => t.item.startsWith(`${key}@sha256:`)).map((t) => t.item)).toEqual([`${key}@sha256:${old.sha256}`]);
    expect(tombs.filter((t) => t.item.endsWith('tb-0.vrtp'))).toHaveLength(1);
    const entries = await db.selectFrom('audit_log').select('action').where('target_id', '=', id).where('action', 'like', 'erasure.%').execute();
    expect(entries.map((e) => e.action)).toEqual(['erasure.delete']);
    const rerender = (await transcode.worker.queue.getJob(`rerender.${r.json.id}.${id}`))!;
    expect(await rerender.getState()).toBe('completed');
    expect(rerender.attemptsMade).toBe(1);
    expect((await new AuditLog(db).verify()).ok).toBe(true);
  }, 180_000);

  it.skipIf(skip)('raw recording already deleted by retention: the composite cannot be re-rendered and is deleted instead, and the outcome says so', async () => {
    const id = 'sess-raw-gone';
    await db.insertInto('recording_sessions').values({ id, room_id: ROOM, started_at: '2024-01-01T00:00:00Z', ended_at: '2024-01-01T01:00:00Z', status: 'done', manifest_path: null }).execute();
    await db.insertInto('session_participants').values({ session_id: id, participant_id: 'p-bob', name: 'Bob', consent_decision: 'granted', consent_method: 'click' }).execute();
    const stored = await storage.put(`sessions/${ROOM}/${id}/composite.mp4`, before.file);
    await db.insertInto('artifacts').values({ session_id: id, key: stored.key, kind: 'composite', participant_id: null, content_type: 'video/mp4', bytes: stored.bytes, sha256: stored.sha256, storage: 'local', duration_seconds: 3 }).execute();
    const { status, done } = await erase({ participant: 'p-bob', reason: 'DSR-1003' });
    expect(status).toBe(202);
    const r = { json: done };
    expect(r.json.status).toBe('completed');
    expect(r.json.outcome).toEqual([expect.objectContaining({ session: id, state: 'erased', composite: 'deleted: raw recording already deleted' })]);
    expect(r.json.outcome[0].note).toMatch(/could not be re-rendered/);
    expect(await storage.exists(stored.key)).toBe(false);
    expect(await db.selectFrom('artifacts').select('key').where('session_id', '=', id).execute()).toEqual([]);

    // Bad input and unknown targets answer 4xx with a code.
    expect((await call('POST', '/api/v1/erasure-requests', { participant: 'p-bob', session: 'nope', reason: 'x' })).json.error.code).toBe('SESSION_NOT_FOUND');
    expect((await call('POST', '/api/v1/erasure-requests', { participant: 'p-nobody', session: SESSION, reason: 'x' })).json.error.code).toBe('NOT_FOUND');
    expect((await call('POST', '/api/v1/erasure-requests', { participant: 'p-bob' })).status).toBe(400);
    expect((await call('GET', '/api/v1/erasure-requests/00000000-0000-4000-8000-000000000000')).status).toBe(404);
  });
});
