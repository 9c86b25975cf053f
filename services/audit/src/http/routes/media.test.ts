import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type Db } from '../../../../../db/database.ts';
import { DataKeys } from '../../../../lib/crypto/data-keys.ts';
import { masterKeyOf } from '../../../../lib/crypto/master-key.ts';
import { createLogger } from '../../../../lib/logger.ts';
import { EncryptedArtifactStorage } from '../../../../lib/storage/encrypted-storage.ts';
import { LocalArtifactStorage, type ArtifactStorage } from '../../../../lib/storage/artifact-storage.ts';
import { S3ArtifactStorage } from '../../../../lib/storage/s3-storage.ts';
import { createUserWithKey } from '../../key-lifecycle.ts';
import { startAuditServer, type AuditServer } from '../server.ts';

/**
 * The artifact content route reads every storage backend through the ArtifactStorage interface
 * (stat + getRange): the same requests against a local directory and an S3 bucket (s3rver on
 * 127.0.0.1) give the same bytes, statuses and headers; so does a local directory with encryption at
 * rest (4 KiB chunks, so the ranges below cross chunk boundaries and Range decrypts only some chunks).
 */

interface S3rverServer {
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
}
type S3rverCtor = new (opts: { address: string; port: number; silent: boolean; directory: string }) => S3rverServer;
const S3rver = createRequire(import.meta.url)('s3rver') as S3rverCtor;
const S3_CREDS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-media-route-'));
const MEDIA = randomBytes(70_000);
const files = { media: path.join(tmp, 'media.bin'), empty: path.join(tmp, 'empty.bin') };
writeFileSync(files.media, MEDIA);
writeFileSync(files.empty, Buffer.alloc(0));
let s3rver: S3rverServer | undefined;

afterAll(async () => {
  await s3rver?.close();
  rmSync(tmp, { recursive: true, force: true });
});

const backends: { name: string; make: (db: Db) => Promise<ArtifactStorage> }[] = [
  { name: 'local', make: async () => new LocalArtifactStorage(path.join(tmp, 'local')) },
  {
    name: 'local, encrypted',
    make: async (db) => new EncryptedArtifactStorage(new LocalArtifactStorage(path.join(tmp, 'local-encrypted')), new DataKeys(db, masterKeyOf(randomBytes(32))), { encryptWrites: true, chunkSize: 4096 }),
  },
  {
    name: 's3',
    async make() {
      s3rver = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: path.join(tmp, 's3rver') });
      const endpoint = `http://127.0.0.1:${(await s3rver.run()).port}`;
      const admin = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: S3_CREDS });
      await admin.send(new CreateBucketCommand({ Bucket: 'media-route' }));
      admin.destroy();
      return new S3ArtifactStorage({ bucket: 'media-route', region: 'us-east-1', endpoint, forcePathStyle: true, credentials: S3_CREDS });
    },
  },
];

describe.each(backends)('artifact content route on $name storage', ({ make }) => {
  let db: Db;
  let storage: ArtifactStorage;
  let server: AuditServer;
  let auth: string;
  const url = (id: string) => `${server.url}/api/v1/sessions/s1/artifacts/${encodeURIComponent(id)}/content`;
  const get = (id: string, range?: string) => fetch(url(id), { headers: { authorization: auth, ...(range ? { range } : {}) } });

  beforeAll(async () => {
    db = await openDatabase({});
    storage = await make(db);
    await db.insertInto('rooms').values({ id: 'board', name: 'board', flags: JSON.stringify({}), secret_hash: 'scrypt$x$y' }).execute();
    await db.insertInto('recording_sessions').values({ id: 's1', room_id: 'board', started_at: '2024-03-01T10:00:00Z', ended_at: '2024-03-01T10:01:00Z', status: 'done' }).execute();
    const artifact = (key: string, bytes: number, content_type: string) => ({ session_id: 's1', key, kind: 'composite', participant_id: null, content_type, bytes, sha256: 'a'.repeat(64), storage: storage.name, duration_seconds: 60 });
    // The session's key encrypts them where the storage encrypts; other storages ignore it.
    const encryptFor = { session: 's1', participant: null };
    await storage.put('sessions/board/s1/composite.mp4', files.media, 'video/mp4', { encryptFor });
    await storage.put('sessions/board/s1/empty.txt', files.empty, 'text/plain', { encryptFor });
    await db
      .insertInto('artifacts')
      .values([
        artifact('sessions/board/s1/composite.mp4', MEDIA.length, 'video/mp4'),
        artifact('sessions/board/s1/empty.txt', 0, 'text/plain'),
        // Recorded, but nothing was ever stored under the key.
        artifact('sessions/board/s1/lost.mkv', 1234, 'video/x-matroska'),
      ])
      .execute();
    auth = `Bearer ${(await createUserWithKey(db, { name: 'officer', role: 'compliance_officer' })).apiKey}`;
    server = await startAuditServer({ db, logger: createLogger({ level: 'silent' }), storage });
  });
  afterAll(async () => {
    await server?.close();
    await db?.destroy();
    (storage as Partial<S3ArtifactStorage> | undefined)?.destroy?.();
  });

  it('the whole artifact: 200, its bytes, Content-Length and Accept-Ranges', async () => {
    const res = await get('composite.mp4');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('video/mp4');
    expect(res.headers.get('content-length')).toBe(String(MEDIA.length));
    expect(res.headers.get('accept-ranges')).toBe('bytes');
    expect(res.headers.get('content-range')).toBeNull();
    const body = Buffer.from(await res.arrayBuffer());
    expect(createHash('sha256').update(body).digest('hex')).toBe(createHash('sha256').update(MEDIA).digest('hex'));
  });

  it.each([
    ['bytes=0-0', 0, 0],
    ['bytes=1000-1099', 1000, 1099],
    ['bytes=69990-', 69_990, 69_999],
    ['bytes=-25', 69_975, 69_999],
    ['bytes=65000-999999', 65_000, 69_999],
  ])('%s → 206 with exactly bytes %i-%i', async (range, start, end) => {
    const res = await get('composite.mp4', range);
    expect(res.status).toBe(206);
    expect(res.headers.get('content-range')).toBe(`bytes ${start}-${end}/${MEDIA.length}`);
    expect(res.headers.get('content-length')).toBe(String(end - start + 1));
    expect(Buffer.from(await res.arrayBuffer()).equals(MEDIA.subarray(start, end + 1))).toBe(true);
  });

  it('a range past the end → 416 with Content-Range bytes */size', async () => {
    const res = await get('composite.mp4', `bytes=${MEDIA.length}-`);
    expect(res.status).toBe(416);
    expect(res.headers.get('content-range')).toBe(`bytes */${MEDIA.length}`);
    expect((await res.json()).error.code).toBe('RANGE_NOT_SATISFIABLE');
  });

  it('an empty artifact: 200 with no bytes', async () => {
    const res = await get('empty.txt');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-length')).toBe('0');
    expect((await res.arrayBuffer()).byteLength).toBe(0);
  });

  it('recorded but missing from storage → 410 GONE with state missing', async () => {
    const res = await get('lost.mkv');
    expect(res.status).toBe(410);
    expect((await res.json()).error).toMatchObject({ code: 'GONE', details: { state: 'missing' } });
  });
});
