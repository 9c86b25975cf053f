import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectVersionsCommand,
  PutObjectRetentionCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../db/database.ts';
import { testBackends } from '../../../testing/databases.ts';
import { radosgwUnavailable, startRadosgw, type Radosgw } from '../../../testing/radosgw.ts';
import { loadConfig } from '../../lib/config.ts';
import { VerbatimError } from '../../lib/errors.ts';
import { artifactKey, rawSegmentKey } from '../../lib/storage/artifact-keys.ts';
import type { S3ArtifactStorage } from '../../lib/storage/s3-storage.ts';
import { storageFromConfig } from '../../lib/storage/storage-from-config.ts';
import { AuditLog } from './audit-log.ts';
import { CHECKPOINT_STORAGE_PREFIX, checkpointFileName, Ed25519CheckpointSigner, writeCheckpoint } from './audit-checkpoints.ts';
import { checkpointStoreFromConfig } from './checkpoint-setup.ts';
import { ErasureService, type SessionWork } from './erasure.ts';
import { legalHoldStorage, objectLockRetention, syncLegalHolds } from './object-lock.ts';

/**
 * WORM for real: Object Lock as the product configures it (S3_OBJECT_LOCK, retention dates from the
 * retention policies, legal holds from the holds), against Ceph radosgw, which enforces it. Raw
 * segments reach object storage with the recording tier's upload (issue 15, item 4); what is stored
 * there today (track segments, participant files, the composite, transcripts) is what this covers.
 */

const why = radosgwUnavailable();
const backends = why ? [] : await testBackends();
const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-worm-'));
const DAY = 86_400_000;
let rgw: Radosgw | undefined;
afterAll(async () => {
  await rgw?.stop();
  for (const b of backends) await b.cleanup();
  rmSync(tmp, { recursive: true, force: true });
});

const file = (name: string, bytes: Buffer) => {
  const f = path.join(tmp, name);
  writeFileSync(f, bytes);
  return f;
};
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
async function readAll(s: Readable | undefined): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s ?? []) chunks.push(Buffer.from(c as Uint8Array));
  return Buffer.concat(chunks);
}
async function rejection(p: Promise<unknown>): Promise<VerbatimError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'expected a rejection').toBeInstanceOf(VerbatimError);
  return err as VerbatimError;
}
/** The S3 error name of a raw call, or 'ok'. */
async function s3Outcome(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => 'ok',
    (e: unknown) => (e as Error).name,
  );
}

if (why) {
  describe('WORM storage against a real S3 server', () => {
    it.skip(`not run: ${why}`, () => {});
  });
}

describe.each(backends)('WORM storage against a real S3 server (radosgw, $name)', (backend) => {
  let db: Db;
  let client: S3Client;
  let storage: S3ArtifactStorage;
  const bucket = `worm-${backend.name}`;
  const original = randomBytes(4096);
  const replacement = randomBytes(1000);

  beforeAll(async () => {
    rgw ??= await startRadosgw();
    db = await backend.open();
    client = new S3Client({ endpoint: rgw.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey } });
    await client.send(new CreateBucketCommand({ Bucket: bucket, ObjectLockEnabledForBucket: true }));
    // As the compliance API builds it (services/audit/src/http/server.ts): retention dates from the policies.
    const config = loadConfig({
      env: {},
      overrides: { DATA_DIR: tmp, STORAGE_BACKEND: 's3', S3_ENDPOINT: rgw.endpoint, S3_BUCKET: bucket, S3_ACCESS_KEY_ID: rgw.accessKeyId, S3_SECRET_ACCESS_KEY: rgw.secretAccessKey, S3_FORCE_PATH_STYLE: 'true', S3_OBJECT_LOCK: 'COMPLIANCE' },
    });
    storage = storageFromConfig(config, { retainUntil: objectLockRetention(db) }) as S3ArtifactStorage;
    // A session kept 30 days by its tag's policy (Object Lock until then), and one with no expiring policy.
    await db.insertInto('retention_policies').values({ name: 'worm-30d', scope: 'tag', media_days: 30, transcript_days: 30, raw_days: 30 }).execute();
    await db
      .insertInto('recording_sessions')
      .values([
        { id: 'locked', room_id: 'r', started_at: new Date(Date.now() - 3_600_000), ended_at: new Date(Date.now() - 60_000), status: 'done', retention_tags: JSON.stringify(['worm-30d']) },
        { id: 'held', room_id: 'r', started_at: new Date(Date.now() - 3_600_000), ended_at: new Date(Date.now() - 60_000), status: 'done' },
      ])
      .execute();
    await db.insertInto('session_participants').values([{ session_id: 'locked', participant_id: 'p-alice', name: 'Alice', consent_decision: 'granted', consent_method: 'click' }]).execute();
  });
  afterAll(async () => {
    storage?.destroy();
    client?.destroy();
    await db?.destroy();
  });

  const lockedKey = artifactKey('r', 'locked', 'tracks/ta-0.ogg');

  it('a locked track segment cannot be deleted (COMPLIANCE, not even with the governance bypass), its retention not shortened, its version not overwritten', async () => {
    const stored = await storage.put(lockedKey, file('original.ogg', original), 'audio/ogg');
    expect(stored.sha256).toBe(sha256(original));
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: lockedKey }));
    expect(head.ObjectLockMode).toBe('COMPLIANCE');
    const ended = (await db.selectFrom('recording_sessions').select('ended_at').where('id', '=', 'locked').executeTakeFirstOrThrow()).ended_at!;
    expect(Math.abs(head.ObjectLockRetainUntilDate!.getTime() - (new Date(ended).getTime() + 30 * DAY))).toBeLessThan(1000);
    const v1 = head.VersionId!;

    const err = await rejection(storage.delete(lockedKey));
    expect(err.code).toBe('OBJECT_RETAINED');
    expect(err.message).toContain(`COMPLIANCE until ${head.ObjectLockRetainUntilDate!.toISOString()}`);
    expect(sha256(await readAll(await storage.getStream(lockedKey)))).toBe(sha256(original));

    // The bucket itself refuses, whatever the client asks for.
    expect(await s3Outcome(client.send(new DeleteObjectCommand({ Bucket: bucket, Key: lockedKey, VersionId: v1, BypassGovernanceRetention: true })))).toBe('AccessDenied');
    expect(await s3Outcome(client.send(new PutObjectRetentionCommand({ Bucket: bucket, Key: lockedKey, VersionId: v1, Retention: { Mode: 'COMPLIANCE', RetainUntilDate: new Date(Date.now() + DAY) }, ChecksumAlgorithm: 'SHA256' })))).toBe('AccessDenied');
    expect(await s3Outcome(client.send(new PutObjectRetentionCommand({ Bucket: bucket, Key: lockedKey, VersionId: v1, Retention: { Mode: 'GOVERNANCE', RetainUntilDate: head.ObjectLockRetainUntilDate! }, ChecksumAlgorithm: 'SHA256' })))).toBe('AccessDenied');

    // Writing the key again makes a new version; the locked one keeps its bytes and its lock.
    await storage.put(lockedKey, file('replacement.ogg', replacement), 'audio/ogg');
    expect(sha256(await readAll(await storage.getStream(lockedKey)))).toBe(sha256(replacement));
    const old = await client.send(new GetObjectCommand({ Bucket: bucket, Key: lockedKey, VersionId: v1 }));
    expect(sha256(await readAll(old.Body as Readable))).toBe(sha256(original));
    expect(old.ObjectLockMode).toBe('COMPLIANCE');
    const again = await rejection(storage.delete(lockedKey));
    expect(again.code).toBe('OBJECT_RETAINED');
    // Both versions are locked (the new one got the same retention), and both are still there.
    expect((err.details as { locks: string[] }).locks).toHaveLength(1);
    expect((again.details as { locks: string[] }).locks).toHaveLength(2);
    const versions = await client.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: lockedKey }));
    expect((versions.Versions ?? []).map((v) => v.VersionId).sort()).toContain(v1);
    expect(versions.DeleteMarkers ?? []).toEqual([]);
  });

  it('a legal hold blocks deletion until it is released; then every version goes', async () => {
    const key = artifactKey('r', 'held', 'composite.mp4');
    await storage.put(key, file('composite.mp4', original), 'video/mp4');
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    expect(head.ObjectLockRetainUntilDate).toBeUndefined(); // no expiring policy: no retention date
    await db.insertInto('artifacts').values({ session_id: 'held', key, kind: 'composite', participant_id: null, content_type: 'video/mp4', bytes: original.length, sha256: sha256(original), storage: 's3', duration_seconds: 3 }).execute();
    await db.insertInto('legal_holds').values({ id: 'h1', case_id: 'CASE-1', reason: 'litigation', scope_type: 'session', scope_value: 'held', frozen_session_ids: '[]', placed_by: 'test', placed_at: new Date() }).execute();
    const holdStorage = legalHoldStorage(storage)!;
    expect(await syncLegalHolds(db, holdStorage, ['held'])).toMatchObject({ set: [key], failed: [] });

    const err = await rejection(storage.delete(key));
    expect(err.code).toBe('OBJECT_RETAINED');
    expect(err.message).toContain('legal hold ON');
    expect(await storage.exists(key)).toBe(true);

    await db.updateTable('legal_holds').set({ released_at: new Date(), released_by: 'test' }).where('id', '=', 'h1').execute();
    expect(await syncLegalHolds(db, holdStorage, ['held'])).toMatchObject({ cleared: [key], failed: [] });
    await storage.delete(key);
    expect(await storage.exists(key)).toBe(false);
    // Gone for real: no version left behind a delete marker.
    const versions = await client.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: key }));
    expect([...(versions.Versions ?? []), ...(versions.DeleteMarkers ?? [])]).toEqual([]);
  });

  it('GDPR erasure of media the bucket keeps: the session fails with OBJECT_RETAINED naming the date, nothing is half-deleted, and the audit entry says so', async () => {
    const key = artifactKey('r', 'locked', 'participants/p-alice.mkv');
    const stored = await storage.put(key, file('alice.mkv', original), 'video/x-matroska');
    await db.insertInto('artifacts').values({ session_id: 'locked', key, kind: 'participant-av', participant_id: 'p-alice', content_type: 'video/x-matroska', bytes: stored.bytes, sha256: stored.sha256, storage: 's3', duration_seconds: 3 }).execute();
    await db.insertInto('transcript_segments').values({ session_id: 'locked', seq: 0, participant_id: 'p-alice', speaker: 'Alice', start_seconds: 0, end_seconds: 1, text: 'hello', language: 'en' }).execute();
    const audit = new AuditLog(db);
    const service = new ErasureService({ db, storage, audit, recordingsDir: path.join(tmp, 'recordings'), workDir: tmp });
    const req = { id: `er-${backend.name}`, participant: 'p-alice', reason: 'data subject request', actor: { type: 'user' as const, id: 'officer' } };
    const works: SessionWork[] = [{ session: 'locked', step: 'erase' }];
    // As the erasure job runs the step (erasure-jobs.ts).
    await service.erase(req, works, 0).catch((err: unknown) => service.failed(req, works, 0, err));
    await service.auditSession(req, works, 0);

    const outcome = works[0]!.outcome!;
    expect(outcome).toMatchObject({ session: 'locked', state: 'failed', code: 'OBJECT_RETAINED' });
    expect(outcome.note).toMatch(/COMPLIANCE until \d{4}-/);
    // The step is one transaction: the rows stay with the media the bucket keeps.
    expect(await db.selectFrom('artifacts').select('key').where('key', '=', key).execute()).toHaveLength(1);
    expect(await db.selectFrom('transcript_segments').select('seq').where('session_id', '=', 'locked').where('participant_id', '=', 'p-alice').execute()).toHaveLength(1);
    expect(await storage.exists(key)).toBe(true);
    const entry = await db.selectFrom('audit_log').selectAll().where('action', '=', 'erasure.failed').where('target_id', '=', 'locked').executeTakeFirstOrThrow();
    const details = (typeof entry.details === 'string' ? JSON.parse(entry.details) : entry.details) as Record<string, unknown>;
    expect(details).toMatchObject({ request: req.id, participant: 'p-alice', state: 'failed', code: 'OBJECT_RETAINED' });
    expect(await audit.verify()).toMatchObject({ ok: true });
  });

  it('an audit checkpoint in the bucket is kept for AUDIT_CHECKPOINT_RETAIN_DAYS: someone with the storage credentials cannot remove it to roll the anchor back', async () => {
    const config = loadConfig({
      env: {},
      overrides: { DATA_DIR: path.join(tmp, `anchor-${backend.name}`), STORAGE_BACKEND: 's3', S3_ENDPOINT: rgw!.endpoint, S3_BUCKET: bucket, S3_ACCESS_KEY_ID: rgw!.accessKeyId, S3_SECRET_ACCESS_KEY: rgw!.secretAccessKey, S3_FORCE_PATH_STYLE: 'true', S3_OBJECT_LOCK: 'COMPLIANCE', AUDIT_CHECKPOINT_RETAIN_DAYS: 30 },
    });
    // As the audit stage builds it: the directory copy and the bucket copy, retention from the config.
    const store = checkpointStoreFromConfig(config, db);
    const { privateKey } = generateKeyPairSync('ed25519');
    await new AuditLog(db).append({ action: 'test.anchor', actor: { type: 'service', id: 'test' } });
    const doc = (await writeCheckpoint(db, store, new Ed25519CheckpointSigner(String(privateKey.export({ type: 'pkcs8', format: 'pem' })))))!;
    const key = `${CHECKPOINT_STORAGE_PREFIX}${checkpointFileName(doc.seq)}`;
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    expect(head.ObjectLockMode).toBe('COMPLIANCE');
    expect(Math.abs(head.ObjectLockRetainUntilDate!.getTime() - (Date.now() + 30 * DAY))).toBeLessThan(60_000);
    const err = await rejection(store.storage!.delete(key));
    expect(err.code).toBe('OBJECT_RETAINED');
    expect(await s3Outcome(client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key, VersionId: head.VersionId!, BypassGovernanceRetention: true })))).toBe('AccessDenied');
    expect(await store.storage!.exists(key)).toBe(true);
    (store.storage as S3ArtifactStorage).destroy();
  });

  it('a raw segment the recorder uploaded is locked for the raw retention period, and a legal hold on its session holds it too', async () => {
    // Locked: the 'locked' session's tag keeps raw media 30 days.
    const key = rawSegmentKey('r', 'locked', 'mic-0.vrtp');
    await storage.put(key, file('mic-0.vrtp', original), 'application/octet-stream');
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    expect(head.ObjectLockMode).toBe('COMPLIANCE');
    const ended = (await db.selectFrom('recording_sessions').select('ended_at').where('id', '=', 'locked').executeTakeFirstOrThrow()).ended_at!;
    expect(Math.abs(head.ObjectLockRetainUntilDate!.getTime() - (new Date(ended).getTime() + 30 * DAY))).toBeLessThan(1000);
    expect((await rejection(storage.delete(key))).code).toBe('OBJECT_RETAINED');
    expect(sha256(await readAll(await storage.getStream(key)))).toBe(sha256(original));

    // Uploaded while its session was still recording: no end, no retention; the recorder sets it at the seal.
    const early = rawSegmentKey('r', 'still-recording', 'mic-0.vrtp');
    await db.insertInto('recording_sessions').values({ id: 'still-recording', room_id: 'r', started_at: new Date(Date.now() - 60_000), status: 'recording', retention_tags: JSON.stringify(['worm-30d']) }).execute();
    await storage.put(early, file('early-mic-0.vrtp', original), 'application/octet-stream');
    expect((await client.send(new HeadObjectCommand({ Bucket: bucket, Key: early }))).ObjectLockRetainUntilDate).toBeUndefined();
    expect(await storage.applyRetention(early)).toBeUndefined();
    const sealedAt = new Date();
    await db.updateTable('recording_sessions').set({ ended_at: sealedAt, status: 'sealed' }).where('id', '=', 'still-recording').execute();
    expect((await storage.applyRetention(early))?.getTime()).toBe(sealedAt.getTime() + 30 * DAY);
    const sealedHead = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: early }));
    expect(sealedHead.ObjectLockMode).toBe('COMPLIANCE');
    expect((await rejection(storage.delete(early))).code).toBe('OBJECT_RETAINED');

    // Held: the 'held' session has no expiring policy; its raw segment is recorded in track_segments.
    const heldKey = rawSegmentKey('r', 'held', 'mic-0.vrtp');
    await storage.put(heldKey, file('held-mic-0.vrtp', original), 'application/octet-stream');
    await db.insertInto('tracks').values({ session_id: 'held', track_id: 'mic', participant_id: 'p-bob', kind: 'audio', codec: '{}' }).execute();
    const at = new Date();
    await db
      .insertInto('track_segments')
      .values({ session_id: 'held', track_id: 'mic', segment: 0, file: 'mic-0.vrtp', ssrc: 1, bytes: original.length, sha256: sha256(original), rtp_packets: 1, rtcp_packets: 0, started_at: at, ended_at: at, end_reason: 'session-ended', truncated: false, stored_key: heldKey, stored_at: at })
      .execute();
    await db.insertInto('legal_holds').values({ id: 'h-raw', case_id: 'CASE-R', reason: 'litigation', scope_type: 'session', scope_value: 'held', frozen_session_ids: '[]', placed_by: 'test', placed_at: new Date() }).execute();
    const holdStorage = legalHoldStorage(storage)!;
    expect((await syncLegalHolds(db, holdStorage, ['held'])).set).toContain(heldKey);
    const err = await rejection(storage.delete(heldKey));
    expect(err.code).toBe('OBJECT_RETAINED');
    expect(err.message).toContain('legal hold ON');
    await db.updateTable('legal_holds').set({ released_at: new Date(), released_by: 'test' }).where('id', '=', 'h-raw').execute();
    expect((await syncLegalHolds(db, holdStorage, ['held'])).cleared).toContain(heldKey);
    await storage.delete(heldKey);
    expect(await storage.exists(heldKey)).toBe(false);
  });
});
