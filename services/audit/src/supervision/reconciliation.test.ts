import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { testBackends, type TestBackend } from '../../../../testing/databases.ts';
import type { Db } from '../../../../db/database.ts';
import { createLogger } from '../../../lib/logger.ts';
import { LocalArtifactStorage } from '../../../lib/storage/artifact-storage.ts';
import { AuditLog } from '../audit-log.ts';
import { startAuditServer } from '../http/server.ts';
import { createUserWithKey } from '../key-lifecycle.ts';
import { ReconciliationWorker } from './reconciliation-worker.ts';
import { PROCESSING_GRACE_MS, uncovered } from './reconciliation.ts';

const REDIS = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const backends = await testBackends();
const root = mkdtempSync(path.join(os.tmpdir(), 'verbatim-reconcile-'));
afterAll(async () => {
  for (const b of backends) await b.cleanup();
  rmSync(root, { recursive: true, force: true });
});

const iso = (ms: number) => new Date(ms).toISOString();

/** A sealed session as the recorder registers it (SessionStore.registerSealed's rows), with stored artifacts. */
async function seedSession(db: Db, storage: LocalArtifactStorage, s: { id: string; room: string; startMs: number; endMs: number; status: 'done' | 'failed'; transcriptStatus: string | null; transcribe: boolean; tracks: { track: string; participant: string; segments: [number, number][] }[]; artifacts: string[] }) {
  await db.insertInto('recording_sessions').values({ id: s.id, room_id: s.room, started_at: iso(s.startMs), ended_at: iso(s.endMs), status: s.status, transcript_status: s.transcriptStatus }).execute();
  for (const t of s.tracks) {
    await db.insertInto('tracks').values({ session_id: s.id, track_id: t.track, participant_id: t.participant, kind: 'audio', codec: JSON.stringify({ mimeType: 'audio/opus' }) }).execute();
    for (const [i, [a, b]] of t.segments.entries()) {
      await db
        .insertInto('track_segments')
        .values({ session_id: s.id, track_id: t.track, segment: i, file: `${t.track}.${i}.vrtp`, ssrc: 1, bytes: 1000, sha256: '0'.repeat(64), rtp_packets: 50, rtcp_packets: 1, started_at: iso(a), ended_at: iso(b), end_reason: i < t.segments.length - 1 ? 'recorder-restart' : 'track-stopped', truncated: false })
        .execute();
    }
  }
  const events = [{ type: 'recording-on', details: { transcribe: s.transcribe } }, ...s.tracks.map((t) => ({ type: 'participant-joined', participant: t.participant, details: { name: t.participant } }))];
  for (const [ordinal, e] of events.entries()) {
    await db.insertInto('session_events').values({ session_id: s.id, ordinal, at: iso(s.startMs), type: e.type, participant_id: 'participant' in e ? e.participant : null, track_id: null, details: JSON.stringify(e.details) }).execute();
  }
  for (const name of s.artifacts) {
    const file = path.join(root, `${s.id}-${name}`);
    writeFileSync(file, `${s.id} ${name} ${randomBytes(64).toString('hex')}`);
    const stored = await storage.put(`sessions/${s.room}/${s.id}/${name}`, file);
    await db.insertInto('artifacts').values({ session_id: s.id, key: stored.key, kind: 'audio', participant_id: null, content_type: 'audio/ogg', bytes: stored.bytes, sha256: stored.sha256, storage: 'local', duration_seconds: null }).execute();
  }
}

describe('uncovered', () => {
  it('returns the parts of a span no interval covers', () => {
    expect(uncovered(0, 100, [])).toEqual([[0, 100]]);
    expect(uncovered(0, 100, [[10, 20], [15, 40], [60, 120]])).toEqual([[0, 10], [40, 60]]);
    expect(uncovered(0, 100, [[-5, 100]])).toEqual([]);
  });
});

describe.each(backends)('capture reconciliation ($name)', (backend: TestBackend) => {
  it.skipIf(!backend.available)('a deleted artifact, a changed one, a recorder gap, a missing transcript and unrecorded presence are exceptions; report as JSON and CSV; summary in the audit chain; also on its BullMQ schedule', { timeout: 90_000 }, async () => {
    const db = await backend.open();
    const storage = new LocalArtifactStorage(path.join(root, `artifacts-${backend.name}`));
    const now = Date.parse('2026-03-02T12:00:00Z');
    const t0 = now - 6 * 3_600_000;
    const server = await startAuditServer({ db, logger: createLogger({ level: 'silent' }), failedAuthPerMinute: 0, storage, now: () => new Date(now), reconcileGapSeconds: 5 });
    const workers: ReconciliationWorker[] = [];
    try {
      const officer = `Bearer ${(await createUserWithKey(db, { name: 'Officer', role: 'compliance_officer' })).apiKey}`;
      const admin = `Bearer ${(await createUserWithKey(db, { name: 'Admin', role: 'admin' })).apiKey}`;
      const auditor0 = `Bearer ${(await createUserWithKey(db, { name: 'Auditor 0', role: 'auditor' })).apiKey}`;
      const call = async (auth: string, method: string, p: string, body?: unknown) => {
        const res = await fetch(`${server.url}/api/v1${p}`, { method, headers: { authorization: auth, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
        const text = await res.text();
        return { status: res.status, type: res.headers.get('content-type') ?? '', text, json: text && res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : undefined };
      };
      // The regulated list: an admin manages it; an officer may not.
      expect((await call(admin, 'POST', '/capture/regulated', { kind: 'identity', value: 'rita', reason: 'registered rep' })).status).toBe(201);
      expect((await call(admin, 'POST', '/capture/regulated', { kind: 'identity', value: 'rita', reason: 'again' })).json.error.code).toBe('CONFLICT');
      expect((await call(admin, 'POST', '/capture/regulated', { kind: 'identity', value: '../x', reason: 'bad' })).status).toBe(400);
      expect((await call(officer, 'POST', '/capture/regulated', { kind: 'group', value: 'desk', reason: 'x' })).status).toBe(403);
      expect((await call(admin, 'POST', '/capture/regulated', { kind: 'group', value: 'desk', reason: 'trading desk' })).status).toBe(201);
      expect((await call(admin, 'PUT', '/supervision/groups/desk', { members: ['sam', 'vic'] })).status).toBe(200);
      expect((await call(auditor0, 'GET', '/capture/regulated')).json.subjects).toEqual([
        expect.objectContaining({ kind: 'group', value: 'desk', members: ['sam', 'vic'] }),
        expect.objectContaining({ kind: 'identity', value: 'rita', reason: 'registered rep' }),
      ]);

      // Recorded: rita from t0 to t0+120 s with a 20 s recorder gap; two of its three artifacts damaged afterwards.
      await seedSession(db, storage, { id: 's-gap', room: 'desk', startMs: t0, endMs: t0 + 121_000, status: 'done', transcriptStatus: 'done', transcribe: true, tracks: [{ track: 'rita-audio-1', participant: 'rita', segments: [[t0, t0 + 60_000], [t0 + 80_000, t0 + 120_000]] }], artifacts: ['rita.ogg', 'composite.mp4', 'transcript.json'] });
      await storage.delete('sessions/desk/s-gap/composite.mp4');
      writeFileSync(path.join(root, `artifacts-${backend.name}`, 'sessions/desk/s-gap/transcript.json'), 'tampered');
      // Transcription was asked for but the model was missing.
      await seedSession(db, storage, { id: 's-notx', room: 'desk', startMs: t0 + 200_000, endMs: t0 + 260_000, status: 'failed', transcriptStatus: 'MODEL_MISSING', transcribe: true, tracks: [{ track: 'otto-audio-1', participant: 'otto', segments: [[t0 + 200_000, t0 + 259_000]] }], artifacts: [] });
      // A session still being processed, ended minutes ago: not judged yet.
      await seedSession(db, storage, { id: 's-fresh', room: 'desk', startMs: now - 600_000, endMs: now - 300_000, status: 'failed', transcriptStatus: null, transcribe: true, tracks: [{ track: 'otto-audio-2', participant: 'otto', segments: [[now - 600_000, now - 300_000]] }], artifacts: [] });
      await db.updateTable('recording_sessions').set({ status: 'processing' }).where('id', '=', 's-fresh').execute();
      // Attendance (the SFU's): rita published 30 s before the recording began; sam published in a room with no recording at all; vic never published.
      await db
        .insertInto('regulated_attendance')
        .values([
          { room_id: 'desk', participant_id: 'rita', participant_name: 'Rita', joined_at: iso(t0 - 40_000), first_produced_at: iso(t0 - 30_000), left_at: iso(t0 + 123_000) },
          { room_id: 'lobby', participant_id: 'sam', participant_name: 'Sam', joined_at: iso(t0 + 1000), first_produced_at: iso(t0 + 2000), left_at: iso(t0 + 92_000) },
          { room_id: 'lobby', participant_id: 'vic', participant_name: 'Vic', joined_at: iso(t0 + 1000), first_produced_at: null, left_at: iso(t0 + 92_000) },
        ])
        .execute();

      // Mia published and left a room whose session is still being recorded: her tracks are not known until it is sealed.
      await db.insertInto('recording_sessions').values({ id: 's-live', room_id: 'floor', started_at: iso(t0), status: 'recording' }).execute();
      await db.insertInto('regulated_attendance').values({ room_id: 'floor', participant_id: 'mia', participant_name: 'Mia', joined_at: iso(t0 + 1000), first_produced_at: iso(t0 + 2000), left_at: iso(t0 + 60_000) }).execute();

      const started = await call(officer, 'POST', '/capture/reconciliations', {});
      expect(started.status).toBe(202);
      const id = started.json.id as string;
      expect(started.json.window).toEqual({ from: iso(now - 86_400_000), to: iso(now) });
      await expect.poll(async () => (await call(officer, 'GET', `/capture/reconciliations/${id}`)).json.run.status, { timeout: 20_000 }).toBe('done');
      const report = (await call(officer, 'GET', `/capture/reconciliations/${id}`)).json;
      const got = report.exceptions.map((e: any) => [e.kind, e.session ?? e.room, e.participant, e.artifact, e.from, e.to]);
      expect(got).toEqual(
        expect.arrayContaining([
          ['joined_not_recorded', 'desk', 'rita', null, iso(t0 - 30_000), iso(t0)],
          ['joined_not_recorded', 'lobby', 'sam', null, iso(t0 + 2000), iso(t0 + 92_000)],
          ['recorder_gap', 's-gap', 'rita', null, iso(t0 + 60_000), iso(t0 + 80_000)],
          ['artifact_missing', 's-gap', null, 'sessions/desk/s-gap/composite.mp4', null, null],
          ['hash_mismatch', 's-gap', null, 'sessions/desk/s-gap/transcript.json', null, null],
          ['not_transcribed', 's-notx', null, null, null, null],
        ]),
      );
      // Nothing else: rita's 3 s after the last segment is under the 5 s threshold, vic never published, s-fresh is pending.
      expect(got).toHaveLength(6);
      expect(report.run.summary).toMatchObject({ sessionsChecked: 3, artifactsChecked: 3, attendanceChecked: 4, sessionsPending: 1, attendancePending: 1, exceptions: { joined_not_recorded: 2, recorder_gap: 1, not_transcribed: 1, hash_mismatch: 1, artifact_missing: 1 } });
      const csv = await call(officer, 'GET', `/capture/reconciliations/${id}?format=csv`);
      expect(csv.type).toContain('text/csv');
      const lines = csv.text.trim().split('\r\n');
      expect(lines[0]).toBe('kind,room,session,participant,track,artifact,from,to,details');
      expect(lines).toHaveLength(7);
      expect(lines.some((l) => l.startsWith('artifact_missing,desk,s-gap,,,sessions/desk/s-gap/composite.mp4'))).toBe(true);
      // Auditors read reports but cannot run them.
      const auditor = `Bearer ${(await createUserWithKey(db, { name: 'Auditor', role: 'auditor' })).apiKey}`;
      expect((await call(auditor, 'GET', `/capture/reconciliations/${id}`)).status).toBe(200);
      expect((await call(auditor, 'POST', '/capture/reconciliations', {})).status).toBe(403);
      expect((await call(officer, 'POST', '/capture/reconciliations', { from: iso(now), to: iso(now - 1) })).json.error.code).toBe('BAD_REQUEST');

      const entries = await db.selectFrom('audit_log').select(['action', 'target_id', 'details']).where('action', 'in', ['reconciliation.run', 'reconciliation.request', 'capture.regulated.add']).orderBy('seq').execute();
      const run = entries.find((e) => e.action === 'reconciliation.run')!;
      expect(run.target_id).toBe(id);
      const details = typeof run.details === 'string' ? JSON.parse(run.details) : run.details;
      expect(details.exceptions).toEqual(report.run.summary.exceptions);
      expect(details.exceptionsSha256).toMatch(/^[0-9a-f]{64}$/);
      expect(entries.map((e) => e.action)).toEqual(expect.arrayContaining(['capture.regulated.add', 'reconciliation.request']));
      expect((await new AuditLog(db).verify()).ok).toBe(true);

      // The schedule: two workers, one scheduler; scheduled runs are written by 'capture-reconciler'.
      const prefix = `vbt-rec-${randomBytes(4).toString('hex')}`;
      for (let i = 0; i < 2; i++) {
        const w = new ReconciliationWorker({ db, storage, redisUrl: REDIS, queuePrefix: prefix, everyMs: 1000, gapSeconds: 5, logger: createLogger({ level: 'silent' }) });
        workers.push(w);
        await w.start();
      }
      expect(await workers[0]!.queue.getJobSchedulersCount()).toBe(1);
      await expect.poll(async () => (await db.selectFrom('reconciliation_runs').select('id').where('requested_by', '=', 'capture-reconciler').where('status', '=', 'done').execute()).length, { timeout: 15_000 }).toBeGreaterThanOrEqual(1);
      // Each scheduled run covers the interval that ended PROCESSING_GRACE_MS ago.
      const scheduled = await db.selectFrom('reconciliation_runs').select(['window_from', 'window_to', 'started_at']).where('requested_by', '=', 'capture-reconciler').execute();
      for (const r of scheduled) {
        expect(new Date(r.window_to).getTime() - new Date(r.window_from).getTime()).toBe(1000);
        expect(Math.abs(new Date(r.started_at).getTime() - PROCESSING_GRACE_MS - new Date(r.window_to).getTime())).toBeLessThan(5000);
      }
    } finally {
      await workers[0]?.unschedule();
      await workers[0]?.queue.obliterate({ force: true });
      for (const w of workers) await w.close();
      await server.close();
      await db.destroy();
    }
  });
});
