import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../db/database.ts';
import { testBackends, type TestBackend } from '../../../testing/databases.ts';
import { SESSION_MANIFEST_VERSION, type SessionManifest } from '../../lib/contracts/recording.ts';
import { rawSegmentKey } from '../../lib/storage/artifact-keys.ts';
import { LocalArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { AuditLog } from './audit-log.ts';
import { ErasureService, type SessionWork } from './erasure.ts';
import { objectLockRetention } from './object-lock.ts';
import { DAY_MS, LegalHolds, RetentionSweeper } from './retention.ts';

/**
 * Raw media in object storage (issue 15 item 4): a session's raw segments uploaded by the recorder
 * (RECORDER_UPLOAD_RAW, local files removed) are deleted by retention and by erasure exactly as the
 * local files are, kept by legal holds, and locked by S3 Object Lock for the raw retention period.
 */
const backends = await testBackends();
const backend = backends.find((b) => b.name === 'postgres' && b.available) ?? backends.find((b) => b.name === 'pglite')!;
const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-rawret-'));
const dbs: Db[] = [];
const toCleanup: TestBackend[] = [...backends];
afterAll(async () => {
  for (const db of dbs) await db.destroy().catch(() => {});
  for (const b of toCleanup) await b.cleanup();
  rmSync(tmp, { recursive: true, force: true });
});

const NOW = new Date('2026-06-01T00:00:00Z');
const daysAgo = (d: number) => new Date(NOW.getTime() - d * DAY_MS);
const officer = { type: 'user' as const, id: 'officer-1' };

/** A database of its own for each test (a Postgres schema or a PGlite directory). */
async function setup(name: string) {
  const fresh = (await testBackends()).find((b) => b.name === backend.name)!;
  toCleanup.push(fresh);
  const db = await fresh.open();
  dbs.push(db);
  const root = path.join(tmp, name);
  return { db, root, storage: new LocalArtifactStorage(path.join(root, 'artifacts')), recordingsDir: path.join(root, 'recordings'), audit: new AuditLog(db) };
}

/**
 * A sealed session whose participants' raw segments were uploaded and removed from the recorder's
 * disk: only the manifest (recording each copy) is left locally, as the recorder leaves it.
 */
async function uploadedSession(env: Awaited<ReturnType<typeof setup>>, id: string, room: string, endedDaysAgo: number, who: string[]): Promise<Record<string, string>> {
  const dir = path.join(env.recordingsDir, room, id);
  mkdirSync(dir, { recursive: true });
  const at = daysAgo(endedDaysAgo).toISOString();
  const keys: Record<string, string> = {};
  const tracks: SessionManifest['tracks'] = [];
  for (const p of who) {
    const file = `${p}-mic-0.vrtp`;
    const src = path.join(env.root, `${id}-${file}`);
    writeFileSync(src, `raw audio of ${p} in ${id}`);
    const key = rawSegmentKey(room, id, file);
    const stored = await env.storage.put(key, src);
    keys[p] = key;
    tracks.push({
      track: `${p}-mic`,
      participant: p,
      kind: 'audio',
      codec: { mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 100, parameters: {} },
      headerExtensions: [],
      segments: [{ segment: 0, file, ssrc: 1, startedAt: at, startedAtUs: 0, endedAt: at, endReason: 'session-ended', bytes: stored.bytes, sha256: stored.sha256, rtpPackets: 1, rtcpPackets: 0, firstArrivalUs: 1, lastArrivalUs: 2, truncated: false, stored: { key, at } }],
    });
  }
  const manifest: SessionManifest = {
    format: 'verbatim-session',
    version: SESSION_MANIFEST_VERSION,
    room,
    session: id,
    startedAt: at,
    endedAt: at,
    endReason: 'test',
    participants: who.map((p) => ({ id: p, name: p, consent: { decision: 'granted' } })),
    tracks,
    gaps: [],
    events: [],
    dropped: {},
  };
  const text = JSON.stringify(manifest, null, 2);
  writeFileSync(path.join(dir, 'manifest.json'), text);
  const { db } = env;
  await db
    .insertInto('recording_sessions')
    .values({ id, room_id: room, started_at: at, ended_at: at, status: 'done', manifest_path: path.join(dir, 'manifest.json'), manifest_sha256: createHash('sha256').update(text).digest('hex') })
    .execute();
  await db.insertInto('session_participants').values(who.map((p) => ({ session_id: id, participant_id: p, name: p, consent_decision: 'granted', consent_method: 'click' }))).execute();
  await db.insertInto('tracks').values(tracks.map((t) => ({ session_id: id, track_id: t.track, participant_id: t.participant, kind: 'audio', codec: '{}' }))).execute();
  await db
    .insertInto('track_segments')
    .values(
      tracks.map((t) => {
        const s = t.segments[0]!;
        return { session_id: id, track_id: t.track, segment: 0, file: s.file, ssrc: 1, bytes: s.bytes, sha256: s.sha256, rtp_packets: 1, rtcp_packets: 0, started_at: at, ended_at: at, end_reason: 'session-ended', truncated: false, stored_key: s.stored!.key, stored_at: at };
      }),
    )
    .execute();
  return keys;
}

describe(`stored raw segments under retention, holds, erasure and Object Lock (${backend.name})`, () => {
  it('retention deletes an expired session\'s stored raw copies (tombstoned) and keeps a held session\'s', async () => {
    const env = await setup('retention');
    const { db, storage } = env;
    await db.insertInto('retention_policies').values({ name: 'standard', scope: 'default', media_days: null, transcript_days: null, raw_days: 5 }).execute();
    const expired = await uploadedSession(env, 'expired', 'r1', 20, ['alice']);
    const held = await uploadedSession(env, 'held', 'r1', 20, ['bob']);
    // An upload the database never heard of (the recorder died before recording it) is under the session's raw prefix.
    const stray = rawSegmentKey('r1', 'expired', 'alice-mic-1.vrtp');
    writeFileSync(path.join(env.root, 'stray.vrtp'), 'stray');
    await storage.put(stray, path.join(env.root, 'stray.vrtp'));
    await new LegalHolds(db, env.audit).place({ caseId: 'CASE-9', reason: 'litigation', scopeType: 'session', scopeValue: 'held', placedBy: officer });

    const res = await new RetentionSweeper({ db, storage, audit: env.audit, recordingsDir: env.recordingsDir, now: () => NOW }).sweep();
    expect(res.deleted.map((d) => `${d.sessionId}|${d.kind}`)).toEqual(['expired|raw']);
    expect(res.skippedHeld).toEqual([]);
    expect(await storage.exists(expired.alice!)).toBe(false);
    expect(await storage.exists(stray)).toBe(false);
    expect(await storage.exists(held.bob!)).toBe(true);
    expect(existsSync(path.join(env.recordingsDir, 'r1', 'expired'))).toBe(false);
    expect(existsSync(path.join(env.recordingsDir, 'r1', 'held', 'manifest.json'))).toBe(true);
    const tombs = await db.selectFrom('tombstones').select(['kind', 'item']).where('session_id', '=', 'expired').execute();
    expect(tombs.filter((t) => !t.item.startsWith(env.recordingsDir)).map((t) => [t.kind, t.item]).sort()).toEqual([['raw', expired.alice!], ['raw', stray]].sort());
  });

  it("erasure deletes the participant's stored raw copies and no one else's; a hold restricts it and keeps them", async () => {
    const env = await setup('erasure');
    const { db, storage } = env;
    const keys = await uploadedSession(env, 'meeting', 'r2', 1, ['alice', 'bob']);
    const heldKeys = await uploadedSession(env, 'held-meeting', 'r2', 1, ['alice']);
    await new LegalHolds(db, env.audit).place({ caseId: 'CASE-7', reason: 'custodian', scopeType: 'session', scopeValue: 'held-meeting', placedBy: officer });
    const erasure = new ErasureService({ db, storage, audit: env.audit, recordingsDir: env.recordingsDir, workDir: path.join(env.root, 'work'), now: () => NOW });
    const req = { id: 'req-1', participant: 'alice', reason: 'Art. 17 request', actor: officer };

    const works: SessionWork[] = [
      { session: 'meeting', step: 'erase' },
      { session: 'held-meeting', step: 'erase' },
    ];
    await erasure.erase(req, works, 0);
    expect(works[0]!.step).toBe('raw');
    expect(works[0]!.erased!.rawKeys).toEqual([keys.alice]);
    // Nothing stored is deleted before the raw step (a crash in between resumes there).
    expect(await storage.exists(keys.alice!)).toBe(true);
    await erasure.eraseRaw(req, works, 0);
    expect(await storage.exists(keys.alice!)).toBe(false);
    expect(await storage.exists(keys.bob!)).toBe(true);
    const tombs = await db.selectFrom('tombstones').select(['kind', 'item', 'erasure_request']).where('session_id', '=', 'meeting').execute();
    expect(tombs).toContainEqual({ kind: 'raw', item: keys.alice, erasure_request: 'req-1' });
    expect(tombs.some((t) => t.item === keys.bob)).toBe(false);
    // A rerun of the raw step finds nothing more to delete or tombstone.
    await erasure.eraseRaw(req, works, 0);
    expect((await db.selectFrom('tombstones').select('item').where('item', '=', keys.alice!).execute()).length).toBe(1);

    await erasure.erase(req, works, 1);
    expect(works[1]).toMatchObject({ step: 'audit', outcome: { state: 'restricted' } });
    expect(await storage.exists(heldKeys.alice!)).toBe(true);
  });

  it('Object Lock gives a stored raw segment the raw retention period of its session', async () => {
    const env = await setup('lock');
    const { db } = env;
    await db.insertInto('retention_policies').values({ name: 'standard', scope: 'default', media_days: 30, transcript_days: 90, raw_days: 7 }).execute();
    const keys = await uploadedSession(env, 'locked', 'r3', 1, ['alice']);
    const retainUntil = objectLockRetention(db);
    const ended = daysAgo(1).getTime();
    expect((await retainUntil(keys.alice!))?.getTime()).toBe(ended + 7 * DAY_MS);
    expect((await retainUntil('sessions/r3/locked/composite.mp4'))?.getTime()).toBe(ended + 30 * DAY_MS);
  });
});
