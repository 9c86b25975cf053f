import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buffer } from 'node:stream/consumers';
import { CreateBucketCommand, GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../db/database.ts';
import { testBackends } from '../../../testing/databases.ts';
import { radosgwUnavailable, startRadosgw, type Radosgw } from '../../../testing/radosgw.ts';
import { sampleHeader } from '../../../testing/recording-fixtures.ts';
import { loadConfig } from '../../lib/config.ts';
import { parseHeader } from '../../lib/crypto/envelope.ts';
import { encodeFileHeader, encodeRecord, RecordType } from '../../lib/recording/vrtp-format.ts';
import { readSegment } from '../../lib/recording/segment-source.ts';
import { artifactKey, rawSegmentKey } from '../../lib/storage/artifact-keys.ts';
import type { EncryptedArtifactStorage } from '../../lib/storage/encrypted-storage.ts';
import { storageFromConfig } from '../../lib/storage/storage-from-config.ts';
import { segmentParticipant, uploadSegment } from '../../recorder/index.ts';
import { AuditLog } from './audit-log.ts';
import { ErasureService, type SessionWork } from './erasure.ts';
import { exportArchive, verifyArchive } from './export.ts';
import { objectLockRetention } from './object-lock.ts';

/**
 * Crypto-shredding on a bucket that refuses deletes (issue 10 item 4): Ceph radosgw with S3 Object
 * Lock in COMPLIANCE mode, storage built as the product builds it with ENCRYPTION_AT_REST=on. An
 * encrypted session exports and verifies; erasing one participant then destroys their data keys (and
 * the session-wide one), the bucket keeps their objects, those no longer decrypt, and everyone
 * else's still do. The erasure's audit entry names the destroyed keys and the shredded objects.
 */

const why = radosgwUnavailable();
const backends = why ? [] : await testBackends();
const backend = backends.find((b) => b.name === 'postgres' && b.available) ?? backends[0];
const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-shred-'));
let rgw: Radosgw | undefined;
afterAll(async () => {
  await rgw?.stop();
  for (const b of backends) await b.cleanup();
  rmSync(tmp, { recursive: true, force: true });
});

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const file = (name: string, bytes: Buffer) => {
  const f = path.join(tmp, 'in', name);
  mkdirSync(path.dirname(f), { recursive: true });
  writeFileSync(f, bytes);
  return f;
};

if (!backend) {
  describe('crypto-shredding on WORM storage', () => {
    it.skip(`not run: ${why}`, () => {});
  });
} else {
  describe(`crypto-shredding on WORM storage (radosgw COMPLIANCE, ${backend.name})`, () => {
    let db: Db;
    let client: S3Client;
    let storage: EncryptedArtifactStorage;
    const bucket = 'shred';
    const S = 'sess-shred';
    const people = [
      { id: 'p-alice', track: 'ta', media: randomBytes(300_000), words: 'alice says the secret' },
      { id: 'p-bob', track: 'tb', media: randomBytes(200_000), words: 'bob says hello' },
    ];
    const raw = new Map<string, { key: string; bytes: Buffer }>();
    const composite = randomBytes(100_000);

    beforeAll(async () => {
      rgw = await startRadosgw();
      db = await backend.open();
      client = new S3Client({ endpoint: rgw.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey } });
      await client.send(new CreateBucketCommand({ Bucket: bucket, ObjectLockEnabledForBucket: true }));
      const config = loadConfig({
        env: {},
        overrides: {
          DATA_DIR: path.join(tmp, 'data'),
          ENCRYPTION_AT_REST: 'on',
          STORAGE_BACKEND: 's3',
          S3_ENDPOINT: rgw.endpoint,
          S3_BUCKET: bucket,
          S3_ACCESS_KEY_ID: rgw.accessKeyId,
          S3_SECRET_ACCESS_KEY: rgw.secretAccessKey,
          S3_FORCE_PATH_STYLE: 'true',
          S3_OBJECT_LOCK: 'COMPLIANCE',
        },
      });
      // As the transcode worker and recorder build it (their process.ts): Object Lock dates from the policies, data keys in the database.
      storage = storageFromConfig(config, { retainUntil: objectLockRetention(db), db }) as EncryptedArtifactStorage;
      await db.insertInto('retention_policies').values({ name: 'worm-30d', scope: 'tag', media_days: 30, transcript_days: 30, raw_days: 30 }).execute();
      const at = new Date(Date.now() - 60_000);
      await db.insertInto('recording_sessions').values({ id: S, room_id: 'r', started_at: new Date(Date.now() - 3_600_000), ended_at: at, status: 'done', retention_tags: JSON.stringify(['worm-30d']) }).execute();
      await db.insertInto('session_participants').values(people.map((p) => ({ session_id: S, participant_id: p.id, name: p.id, consent_decision: 'granted', consent_method: 'click' }))).execute();
      await db.insertInto('tracks').values(people.map((p) => ({ session_id: S, track_id: p.track, participant_id: p.id, kind: 'audio' as const, codec: '{}' }))).execute();
      for (const [i, p] of people.entries()) {
        // Their participant file, as transcode stores it (session-stages.ts upload): under their key.
        const key = artifactKey('r', S, `participants/${p.id}.mkv`);
        const stored = await storage.put(key, file(`${p.id}.mkv`, p.media), 'video/x-matroska', { encryptFor: { session: S, participant: p.id } });
        await db.insertInto('artifacts').values({ session_id: S, key, kind: 'participant-av', participant_id: p.id, content_type: 'video/x-matroska', bytes: stored.bytes, sha256: stored.sha256, storage: 's3', duration_seconds: 3, key_id: stored.keyId! }).execute();
        await db.insertInto('transcript_segments').values({ session_id: S, seq: i, participant_id: p.id, speaker: p.id, start_seconds: i, end_seconds: i + 1, text: p.words, language: 'en' }).execute();
        // Their raw segment, as the recorder uploads it (segment-uploader.ts): under the key of the participant its header names.
        const header = sampleHeader({ room: 'r', session: S, track: p.track, participant: { id: p.id, name: p.id } });
        const bytes = Buffer.concat([encodeFileHeader(header), ...Array.from({ length: 300 }, (_, n) => encodeRecord(RecordType.RTP, 1_000_000 + n * 20_000, randomBytes(120)))]);
        const local = file(`${p.track}-0.vrtp`, bytes);
        const rawKey = rawSegmentKey('r', S, `${p.track}-0.vrtp`);
        const keyId = await uploadSegment(storage, rawKey, local, { bytes: bytes.length, sha256: sha256(bytes) }, { encryptFor: { session: S, participant: await segmentParticipant(local) } });
        expect(keyId).toBe(stored.keyId);
        raw.set(p.id, { key: rawKey, bytes });
        await db
          .insertInto('track_segments')
          .values({ session_id: S, track_id: p.track, segment: 0, file: `${p.track}-0.vrtp`, ssrc: 1, bytes: bytes.length, sha256: sha256(bytes), rtp_packets: 300, rtcp_packets: 0, started_at: at, ended_at: at, end_reason: 'session-ended', truncated: false, stored_key: rawKey, stored_at: at, key_id: keyId! })
          .execute();
      }
      // Session-wide: the composite and a transcript file, under the session key.
      for (const [name, kind, type, body] of [
        ['composite.mp4', 'composite', 'video/mp4', composite],
        ['transcript.txt', 'transcript-txt', 'text/plain', Buffer.from(people.map((p) => p.words).join('\n'))],
      ] as const) {
        const key = artifactKey('r', S, name);
        const stored = await storage.put(key, file(name, body), type, { encryptFor: { session: S, participant: null } });
        await db.insertInto('artifacts').values({ session_id: S, key, kind, participant_id: null, content_type: type, bytes: stored.bytes, sha256: stored.sha256, storage: 's3', duration_seconds: 3, key_id: stored.keyId! }).execute();
      }
    }, 120_000);
    afterAll(async () => {
      storage?.destroy();
      client?.destroy();
      await db?.destroy();
    });

    const aliceAv = () => artifactKey('r', S, 'participants/p-alice.mkv');
    const bobAv = () => artifactKey('r', S, 'participants/p-bob.mkv');
    /** The object's bytes as the bucket holds them (no decryption). */
    const storedBytes = async (key: string) => Buffer.from(await (await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToByteArray());

    it('the encrypted session is stored as envelopes, exports with its plaintext and the archive verifies', async () => {
      const s = await storedBytes(aliceAv());
      const h = parseHeader(s);
      expect(h && h !== 'short' ? h.keyId : undefined).toMatch(/^dk_/);
      expect(s.includes(people[0]!.media.subarray(5000, 5032))).toBe(false);
      const audit = new AuditLog(db);
      const out = path.join(tmp, 'export.tar');
      const res = await exportArchive({ db, storage, auditLog: audit, selection: { sessionIds: [S] }, out, actor: { type: 'user', id: 'officer' } });
      expect(res.sessionIds).toEqual([S]);
      const v = await verifyArchive(out);
      expect(v).toMatchObject({ ok: true, problems: [] });
      const tar = readFileSync(out);
      // The plaintext (not the envelope) went into the archive.
      for (const p of people) expect(tar.includes(p.media.subarray(1000, 1064))).toBe(true);
      expect(tar.includes(composite.subarray(0, 64))).toBe(true);
    });

    it("after erasure of a participant the bucket keeps their objects, they no longer decrypt, and the others' still do", async () => {
      const alice = people[0]!;
      const bob = people[1]!;
      const aliceKeyId = await storage.keyIdOf(aliceAv());
      const sessionKeyId = await storage.keyIdOf(artifactKey('r', S, 'composite.mp4'));
      const audit = new AuditLog(db);
      const service = new ErasureService({ db, storage, audit, recordingsDir: path.join(tmp, 'recordings'), workDir: path.join(tmp, 'work') });
      const req = { id: 'er-shred', participant: alice.id, reason: 'data subject request', actor: { type: 'user' as const, id: 'officer' } };
      const works: SessionWork[] = [{ session: S, step: 'erase' }];
      // The steps as the erasure job runs them (erasure-jobs.ts); no manifest here, so the composite is dropped rather than re-rendered.
      await service.erase(req, works, 0);
      await service.eraseRaw(req, works, 0);
      await service.rebuildTranscripts(req, works, 0);
      const plan = service.compositePlan(works[0]!);
      expect(plan.kind).toBe('drop');
      if (plan.kind === 'drop') await service.dropComposite(req, works, 0, plan.why, plan.note);
      await service.auditSession(req, works, 0);

      const o = works[0]!.outcome!;
      expect(o.state).toBe('erased');
      expect(o.deleted!.keysDestroyed).toEqual([aliceKeyId, sessionKeyId].sort());
      expect([...o.deleted!.shredded!].sort()).toEqual([aliceAv(), raw.get(alice.id)!.key].sort());

      // The bucket refused every delete: Alice's objects are all still there, byte for byte envelopes...
      for (const key of [aliceAv(), raw.get(alice.id)!.key, artifactKey('r', S, 'composite.mp4')]) {
        expect(await storage.exists(key)).toBe(true);
        expect(parseHeader(await storedBytes(key))).toBeTypeOf('object');
      }
      // ...and none of them decrypts any more, whole, ranged or as a raw segment.
      await expect(storage.getStream(aliceAv())).rejects.toMatchObject({ code: 'KEY_DESTROYED' });
      await expect(storage.getRange(aliceAv(), 100_000, 100_100)).rejects.toMatchObject({ code: 'KEY_DESTROYED' });
      await expect(storage.getStream(artifactKey('r', S, 'composite.mp4'))).rejects.toMatchObject({ code: 'KEY_DESTROYED' });
      const a = raw.get(alice.id)!;
      const entry = (r: { key: string; bytes: Buffer }, track: string) => ({ file: `${track}-0.vrtp`, bytes: r.bytes.length, sha256: sha256(r.bytes), stored: { key: r.key, at: new Date().toISOString() } });
      const src = { dir: path.join(tmp, 'recordings', 'r', S), room: 'r', session: S, storage };
      await expect(readSegment(src, entry(a, alice.track))).rejects.toMatchObject({ code: 'KEY_DESTROYED' });
      // Bob's media and raw segment still decrypt to exactly what was stored.
      expect((await buffer(await storage.getStream(bobAv()))).equals(bob.media)).toBe(true);
      expect((await buffer(await storage.getRange(bobAv(), 70_000, 70_999))).equals(bob.media.subarray(70_000, 71_000))).toBe(true);
      expect((await readSegment(src, entry(raw.get(bob.id)!, bob.track))).equals(raw.get(bob.id)!.bytes)).toBe(true);
      // The rebuilt transcript is under a new session key and holds only Bob's words.
      const transcriptKey = artifactKey('r', S, 'transcript.txt');
      const newSessionKey = await storage.keyIdOf(transcriptKey);
      expect(newSessionKey).not.toBe(sessionKeyId);
      const text = (await buffer(await storage.getStream(transcriptKey))).toString();
      expect(text).toContain(bob.words);
      expect(text).not.toContain('secret');
      const row = await db.selectFrom('artifacts').select('key_id').where('key', '=', transcriptKey).executeTakeFirstOrThrow();
      expect(row.key_id).toBe(newSessionKey);

      // The audit entry records the shredding.
      const e = await db.selectFrom('audit_log').selectAll().where('action', '=', 'erasure.delete').where('target_id', '=', S).executeTakeFirstOrThrow();
      const details = (typeof e.details === 'string' ? JSON.parse(e.details) : e.details) as { deleted: { keysDestroyed: string[]; shredded: string[] } };
      expect(details.deleted.keysDestroyed).toEqual([aliceKeyId, sessionKeyId].sort());
      expect(details.deleted.shredded).toContain(aliceAv());
      expect(await audit.verify()).toMatchObject({ ok: true });
      const keyRows = await db.selectFrom('data_keys').selectAll().where('id', 'in', [aliceKeyId!, sessionKeyId!]).execute();
      expect(keyRows.every((k) => k.wrapped_key === null && k.destroyed_at !== null)).toBe(true);
    });
  });
}
