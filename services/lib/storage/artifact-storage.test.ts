import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { readdir, readFile, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { CreateBucketCommand, HeadObjectCommand, ListObjectVersionsCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type ConfigKey } from '../config.ts';
import { VerbatimError } from '../errors.ts';
import { LocalArtifactStorage, type ArtifactStorage } from './artifact-storage.ts';
import { S3ArtifactStorage } from './s3-storage.ts';
import { storageFromConfig } from './storage-from-config.ts';
import { radosgwUnavailable, startRadosgw, type Radosgw } from '../../../testing/radosgw.ts';

/**
 * One conformance suite, run against every ArtifactStorage backend: the embedded local directory, S3
 * against an s3rver (a fake S3 on 127.0.0.1) this file starts, and S3 against a real one, Ceph radosgw,
 * with an Object Lock bucket (signatures, checksums and versioning enforced). s3rver does not verify
 * SigV4 signatures or payload hashes and ignores x-amz-checksum-* headers; radosgw does.
 */

// s3rver ships no types; this is the part of its API the suite uses.
interface S3rverServer {
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
}
type S3rverCtor = new (opts: { address: string; port: number; silent: boolean; directory: string; resetOnClose?: boolean }) => S3rverServer;
const S3rver = createRequire(import.meta.url)('s3rver') as S3rverCtor;

const MiB = 1024 * 1024;
const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-storage-'));
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const small = { file: path.join(tmp, 'small.bin'), data: randomBytes(1234) };
const big = { file: path.join(tmp, 'big.bin'), data: randomBytes(20 * MiB) }; // 3 parts of 8 MiB
const other = { file: path.join(tmp, 'other.bin'), data: randomBytes(777) };
for (const f of [small, big, other]) writeFileSync(f.file, f.data);

// ---- the fake S3, shared by the S3 backends --------------------------------------------------------------

const S3_CREDS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' }; // s3rver's built-in account
let s3rver: S3rverServer | undefined;
let s3Endpoint = '';
/** Every request s3rver received, as "METHOD /path?query". */
const s3Requests: string[] = [];

async function startS3rver(): Promise<string> {
  if (s3rver) return s3Endpoint;
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: path.join(tmp, 's3rver') });
  const addr = await server.run();
  s3rver = server;
  (server as unknown as { httpServer: Server }).httpServer.on('request', (req) => s3Requests.push(`${req.method} ${req.url}`));
  s3Endpoint = `http://127.0.0.1:${addr.port}`;
  return s3Endpoint;
}

async function createBucket(bucket: string): Promise<void> {
  const client = new S3Client({ endpoint: s3Endpoint, region: 'us-east-1', forcePathStyle: true, credentials: S3_CREDS });
  try {
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
  } finally {
    client.destroy();
  }
}

afterAll(async () => {
  await s3rver?.close();
  await rm(tmp, { recursive: true, force: true });
});

// ---- the backends --------------------------------------------------------------------------------------

interface Backend {
  storage: ArtifactStorage;
  /** A fingerprint of everything the backend could have touched: unchanged means no I/O happened. */
  fingerprint(): Promise<string>;
  /** Reads what `locate` returned, the way a consumer would. */
  readLocated(location: string): Promise<Buffer>;
  /** Backend-specific proof that a large put went multipart (undefined: not applicable). */
  multipartRequests?(key: string): string[];
  close(): Promise<void>;
}

async function listTree(dir: string): Promise<string> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries
    .map((e) => path.join(e.parentPath, e.name))
    .sort()
    .join('\n');
}

async function s3Backend(bucket: string, make: (endpoint: string) => S3ArtifactStorage | ArtifactStorage): Promise<Backend> {
  const endpoint = await startS3rver();
  await createBucket(bucket);
  const storage = make(endpoint);
  return {
    storage,
    fingerprint: async () => String(s3Requests.length),
    readLocated: async (location) => {
      expect(location).toMatch(new RegExp(`^${endpoint}/${bucket}/.*X-Amz-Signature=`));
      const res = await fetch(location);
      expect(res.status).toBe(200);
      return Buffer.from(await res.arrayBuffer());
    },
    multipartRequests: (key) => s3Requests.filter((r) => r.startsWith(`PUT /${bucket}/${key}?`) && r.includes('partNumber=')),
    close: async () => (storage as S3ArtifactStorage).destroy(),
  };
}

const backends: { name: string; make: () => Promise<Backend> }[] = [
  {
    name: 'local',
    make: async () => {
      const parent = mkdtempSync(path.join(tmp, 'local-'));
      const storage = new LocalArtifactStorage(path.join(parent, 'root'));
      return {
        storage,
        // `parent` also holds where a traversing key such as ../x would land.
        fingerprint: () => listTree(parent),
        readLocated: async (location) => {
          expect(path.isAbsolute(location)).toBe(true);
          return readFile(location);
        },
        close: async () => {},
      };
    },
  },
  {
    // Built from configuration exactly as the transcode worker builds it.
    name: 's3',
    make: () =>
      s3Backend('verbatim-conformance', (endpoint) =>
        storageFromConfig(
          loadConfig({
            env: {},
            overrides: {
              DATA_DIR: tmp,
              STORAGE_BACKEND: 's3',
              S3_ENDPOINT: endpoint,
              S3_BUCKET: 'verbatim-conformance',
              S3_ACCESS_KEY_ID: S3_CREDS.accessKeyId,
              S3_SECRET_ACCESS_KEY: S3_CREDS.secretAccessKey,
              S3_FORCE_PATH_STYLE: 'true',
            },
          }),
        ),
      ),
  },
  {
    // Same, sending x-amz-checksum-sha256 with every part: proves s3rver tolerates the headers, not that it checks them.
    name: 's3 (serverChecksums)',
    make: () =>
      s3Backend(
        'verbatim-conformance-ck',
        (endpoint) => new S3ArtifactStorage({ bucket: 'verbatim-conformance-ck', region: 'us-east-1', endpoint, forcePathStyle: true, credentials: S3_CREDS, serverChecksums: true }),
      ),
  },
];

// The real S3 server: an Object Lock bucket (versioned), built from configuration with S3_OBJECT_LOCK.
const noRadosgw = radosgwUnavailable();
let rgw: Radosgw | undefined;
afterAll(async () => {
  await rgw?.stop();
});
if (!noRadosgw) {
  backends.push({
    name: 's3 (radosgw, Object Lock bucket)',
    make: async () => {
      rgw = await startRadosgw();
      const bucket = 'verbatim-worm-conformance';
      const credentials = { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey };
      const client = new S3Client({ endpoint: rgw.endpoint, region: 'us-east-1', forcePathStyle: true, credentials });
      await client.send(new CreateBucketCommand({ Bucket: bucket, ObjectLockEnabledForBucket: true }));
      const storage = storageFromConfig(
        loadConfig({
          env: {},
          overrides: { DATA_DIR: tmp, STORAGE_BACKEND: 's3', S3_ENDPOINT: rgw.endpoint, S3_BUCKET: bucket, S3_ACCESS_KEY_ID: credentials.accessKeyId, S3_SECRET_ACCESS_KEY: credentials.secretAccessKey, S3_FORCE_PATH_STYLE: 'true', S3_OBJECT_LOCK: 'GOVERNANCE' },
        }),
      );
      const endpoint = rgw.endpoint;
      return {
        storage,
        // Every version and delete marker in the bucket: unchanged means nothing was written or deleted.
        fingerprint: async () => {
          const res = await client.send(new ListObjectVersionsCommand({ Bucket: bucket }));
          return JSON.stringify([...(res.Versions ?? []), ...(res.DeleteMarkers ?? [])].map((v) => [v.Key, v.VersionId]));
        },
        readLocated: async (location) => {
          expect(location).toMatch(new RegExp(`^${endpoint}/${bucket}/.*X-Amz-Signature=`));
          const res = await fetch(location);
          expect(res.status).toBe(200);
          return Buffer.from(await res.arrayBuffer());
        },
        close: async () => {
          (storage as S3ArtifactStorage).destroy();
          client.destroy();
        },
      };
    },
  });
}
if (noRadosgw) {
  describe('ArtifactStorage conformance: s3 (radosgw)', () => {
    it.skip(`not run: ${noRadosgw}`, () => {});
  });
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c as Uint8Array));
  return Buffer.concat(chunks);
}

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'expected a rejection').toBeInstanceOf(VerbatimError);
  expect((err as VerbatimError).code).toBe(code);
}

describe.each(backends)('ArtifactStorage conformance: $name', ({ make }) => {
  let b: Backend;
  beforeAll(async () => {
    b = await make();
  });
  afterAll(async () => {
    await b?.close();
  });

  const smallKey = 'sessions/s1/audio/small.bin';
  const bigKey = 'sessions/s1/video/big.mp4';

  it('put returns the bytes and SHA-256 of the file, small and multipart-sized', async () => {
    const s = await b.storage.put(smallKey, small.file, 'application/octet-stream');
    expect(s).toEqual({ key: smallKey, bytes: small.data.length, sha256: sha256(small.data) });
    const l = await b.storage.put(bigKey, big.file, 'video/mp4');
    expect(l).toEqual({ key: bigKey, bytes: big.data.length, sha256: sha256(big.data) });
    const parts = b.multipartRequests?.(bigKey);
    if (parts) expect(parts.length).toBe(3); // 8 + 8 + 4 MiB
    if (b.multipartRequests) expect(b.multipartRequests(smallKey)).toEqual([]); // one PUT
  });

  it('exists: true for stored keys, false for absent keys and bare prefixes', async () => {
    expect(await b.storage.exists(smallKey)).toBe(true);
    expect(await b.storage.exists(bigKey)).toBe(true);
    expect(await b.storage.exists('sessions/s1/audio/missing.bin')).toBe(false);
    expect(await b.storage.exists('sessions/s1')).toBe(false);
  });

  it('list gives the keys under a folder prefix, nested ones included, sorted; an absent folder is empty', async () => {
    expect(await b.storage.list('sessions/s1/')).toEqual([smallKey, bigKey].sort());
    expect(await b.storage.list('sessions/s1/audio')).toEqual([smallKey]);
    expect(await b.storage.list('sessions/none/')).toEqual([]);
    // A folder is a whole path segment, not a string prefix.
    expect(await b.storage.list('sessions/s1/aud')).toEqual([]);
  });

  it('getStream returns the identical bytes', async () => {
    expect((await readAll(await b.storage.getStream(smallKey))).equals(small.data)).toBe(true);
    const got = await readAll(await b.storage.getStream(bigKey));
    expect(got.length).toBe(big.data.length);
    expect(sha256(got)).toBe(sha256(big.data));
  });

  it('getStream of an absent key rejects with BAD_REQUEST', async () => {
    await expectCode(b.storage.getStream('sessions/s1/audio/missing.bin'), 'BAD_REQUEST');
    await expectCode(b.storage.getStream('sessions/s1'), 'BAD_REQUEST');
  });

  it('stat gives the stored size; undefined for absent keys and bare prefixes', async () => {
    expect(await b.storage.stat(smallKey)).toEqual({ bytes: small.data.length });
    expect(await b.storage.stat(bigKey)).toEqual({ bytes: big.data.length });
    expect(await b.storage.stat('sessions/s1/audio/missing.bin')).toBeUndefined();
    expect(await b.storage.stat('sessions/s1')).toBeUndefined();
  });

  it('getRange returns exactly the bytes asked for (inclusive end), across multipart part boundaries; an end past the last byte reads to the end', async () => {
    const cases: [typeof small, number, number][] = [
      [small, 0, 0],
      [small, 100, 199],
      [small, small.data.length - 1, small.data.length - 1],
      [small, 1000, 10_000],
      [big, 8 * MiB - 10, 8 * MiB + 9], // the first part boundary
      [big, 16 * MiB - 1, 30 * MiB],
    ];
    for (const [f, start, end] of cases) {
      const key = f === small ? smallKey : bigKey;
      const got = await readAll(await b.storage.getRange(key, start, end));
      const want = f.data.subarray(start, end + 1);
      expect(got.length, `${key} ${start}-${end}`).toBe(want.length);
      expect(got.equals(want), `${key} ${start}-${end}`).toBe(true);
    }
  });

  it('getRange: a start at or past the end → RANGE_NOT_SATISFIABLE with the size; an absent key → BAD_REQUEST; bad bounds → BAD_REQUEST before any I/O', async () => {
    for (const start of [small.data.length, small.data.length + 100]) {
      const err = await b.storage.getRange(smallKey, start, start + 10).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(VerbatimError);
      expect((err as VerbatimError).code).toBe('RANGE_NOT_SATISFIABLE');
      expect((err as VerbatimError).details).toEqual({ size: small.data.length });
    }
    await expectCode(b.storage.getRange('sessions/s1/audio/missing.bin', 0, 10), 'BAD_REQUEST');
    await expectCode(b.storage.getRange('sessions/s1', 0, 10), 'BAD_REQUEST');
    const before = await b.fingerprint();
    for (const [start, end] of [[-1, 5], [5, 4], [0.5, 3], [Number.NaN, 1], [0, Number.POSITIVE_INFINITY]] as const) {
      await expectCode(b.storage.getRange(smallKey, start, end), 'BAD_REQUEST');
    }
    expect(await b.fingerprint()).toBe(before);
  });

  it('locate returns something a consumer can read the identical bytes from', async () => {
    const got = await b.readLocated(await b.storage.locate(bigKey));
    expect(got.length).toBe(big.data.length);
    expect(sha256(got)).toBe(sha256(big.data));
    expect((await b.readLocated(await b.storage.locate(smallKey))).equals(small.data)).toBe(true);
  });

  it('putting the same file under the same key again is idempotent; different content replaces it', async () => {
    const again = await b.storage.put(smallKey, small.file, 'application/octet-stream');
    expect(again).toEqual({ key: smallKey, bytes: small.data.length, sha256: sha256(small.data) });
    expect((await readAll(await b.storage.getStream(smallKey))).equals(small.data)).toBe(true);

    const key = 'sessions/s1/replace.bin';
    await b.storage.put(key, small.file, 'application/octet-stream');
    const replaced = await b.storage.put(key, other.file, 'application/octet-stream');
    expect(replaced).toEqual({ key, bytes: other.data.length, sha256: sha256(other.data) });
    expect((await readAll(await b.storage.getStream(key))).equals(other.data)).toBe(true);
  });

  it('delete removes the artifact; deleting again is a no-op', async () => {
    await b.storage.delete(smallKey);
    expect(await b.storage.exists(smallKey)).toBe(false);
    await expectCode(b.storage.getStream(smallKey), 'BAD_REQUEST');
    await expectCode(b.storage.getRange(smallKey, 0, 10), 'BAD_REQUEST');
    expect(await b.storage.stat(smallKey)).toBeUndefined();
    await b.storage.delete(smallKey);
    expect(await b.storage.exists(bigKey)).toBe(true); // only the one key went
  });

  it.each(['../x', '/abs', 'a//b', 'a/./b', '', 'a/../b', '..', 'a/', 'a\\b', 'a b'])('key %j is rejected with BAD_REQUEST before any I/O', async (key) => {
    const before = await b.fingerprint();
    await expectCode(b.storage.put(key, small.file, 'application/octet-stream'), 'BAD_REQUEST');
    await expectCode(b.storage.locate(key), 'BAD_REQUEST');
    await expectCode(b.storage.exists(key), 'BAD_REQUEST');
    await expectCode(b.storage.delete(key), 'BAD_REQUEST');
    await expectCode(b.storage.getStream(key), 'BAD_REQUEST');
    await expectCode(b.storage.getRange(key, 0, 10), 'BAD_REQUEST');
    await expectCode(b.storage.stat(key), 'BAD_REQUEST');
    expect(await b.fingerprint()).toBe(before);
  });
});

// ---- S3 specifics the conformance suite cannot express ---------------------------------------------------

describe('S3ArtifactStorage', () => {
  const bucket = 'verbatim-s3-specifics';
  let endpoint: string;
  let raw: S3Client;
  beforeAll(async () => {
    endpoint = await startS3rver();
    await createBucket(bucket);
    raw = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: S3_CREDS });
  });
  afterAll(() => raw?.destroy());

  /** A client that records the headers of every request and may tamper with them. */
  function recordingClient(tamper?: (headers: Record<string, string>) => void) {
    const client = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: S3_CREDS, requestChecksumCalculation: 'WHEN_REQUIRED' });
    const seen: { query: Record<string, unknown>; headers: Record<string, string> }[] = [];
    client.middlewareStack.add(
      (next) => async (args) => {
        const req = args.request as { query: Record<string, unknown>; headers: Record<string, string> };
        tamper?.(req.headers);
        seen.push({ query: { ...req.query }, headers: { ...req.headers } });
        return next(args);
      },
      { step: 'finalizeRequest', name: 'recordHeaders' },
    );
    return { client, seen };
  }

  it('records the SHA-256 as x-amz-meta-sha256 and the content type, for single and multipart uploads', async () => {
    const s3 = new S3ArtifactStorage({ bucket, region: 'us-east-1', endpoint, forcePathStyle: true, credentials: S3_CREDS });
    for (const [key, f, type] of [['m/small.bin', small, 'audio/ogg'], ['m/big.mp4', big, 'video/mp4']] as const) {
      await s3.put(key, f.file, type);
      const head = await raw.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
      expect(head.Metadata?.sha256).toBe(sha256(f.data));
      expect(head.ContentLength).toBe(f.data.length);
      expect(head.ContentType).toBe(type);
    }
    s3.destroy();
  });

  it('put fails when the object the server kept does not carry the recorded SHA-256', async () => {
    const { client } = recordingClient((h) => {
      delete h['x-amz-meta-sha256'];
    });
    const s3 = new S3ArtifactStorage({ bucket, region: 'us-east-1', client });
    await expectCode(s3.put('m/tampered.bin', small.file, 'application/octet-stream'), 'INTERNAL');
    client.destroy();
  });

  it('getRange slices the bytes itself when the server ignores Range (answers 200 with the whole object)', async () => {
    const s3 = new S3ArtifactStorage({ bucket, region: 'us-east-1', endpoint, forcePathStyle: true, credentials: S3_CREDS });
    await s3.put('r/small.bin', small.file, 'application/octet-stream');
    s3.destroy();
    let removed = 0;
    const { client } = recordingClient((h) => {
      for (const name of Object.keys(h)) {
        if (name.toLowerCase() !== 'range') continue;
        delete h[name];
        removed++;
      }
    });
    const blind = new S3ArtifactStorage({ bucket, region: 'us-east-1', client });
    expect((await readAll(await blind.getRange('r/small.bin', 10, 19))).equals(small.data.subarray(10, 20))).toBe(true);
    expect((await readAll(await blind.getRange('r/small.bin', 1200, 5000))).equals(small.data.subarray(1200))).toBe(true);
    await expectCode(blind.getRange('r/small.bin', small.data.length, small.data.length + 1), 'RANGE_NOT_SATISFIABLE');
    expect(removed).toBe(3); // every read went without its Range header
    client.destroy();
  });

  it('Object Lock options are sent with the upload (s3rver ignores them: retention itself is NOT tested)', async () => {
    const until = new Date(Date.now() + 86_400_000);
    const { client, seen } = recordingClient();
    const s3 = new S3ArtifactStorage({ bucket, region: 'us-east-1', client, objectLock: { mode: 'COMPLIANCE', retainUntil: (k) => (k.startsWith('locked/') ? until : undefined) } });
    await s3.put('locked/big.mp4', big.file, 'video/mp4');
    const create = seen.find((r) => 'uploads' in r.query);
    expect(create?.headers['x-amz-object-lock-mode']).toBe('COMPLIANCE');
    expect(new Date(create?.headers['x-amz-object-lock-retain-until-date'] ?? '').getTime()).toBe(until.getTime());
    const parts = seen.filter((r) => 'partNumber' in r.query);
    expect(parts).toHaveLength(3);
    // S3 refuses Object Lock uploads without a checksum: every part carries one.
    for (const p of parts) expect(p.headers['x-amz-checksum-sha256']).toMatch(/^[A-Za-z0-9+/]{43}=$/);

    seen.length = 0;
    await s3.put('unlocked/small.bin', small.file, 'application/octet-stream');
    expect(seen[0]?.headers['x-amz-object-lock-mode']).toBeUndefined();
    expect(seen[0]?.headers['x-amz-checksum-sha256']).toBe(createHash('sha256').update(small.data).digest('base64'));
    client.destroy();
  });
});

describe('storageFromConfig', () => {
  const cfg = (overrides: Partial<Record<ConfigKey, unknown>>) =>
    loadConfig({ env: {}, overrides: { DATA_DIR: tmp, ...overrides } });

  it('local by default, in STORAGE_DIR', () => {
    const s = storageFromConfig(cfg({}));
    expect(s.name).toBe('local');
    expect(s).toBeInstanceOf(LocalArtifactStorage);
  });

  it.each([
    [{ S3_ENDPOINT: 'http://127.0.0.1:9', S3_ACCESS_KEY_ID: 'a', S3_SECRET_ACCESS_KEY: 'b' }, 'S3_BUCKET'],
    [{ S3_ENDPOINT: 'http://127.0.0.1:9', S3_BUCKET: 'b' }, 'S3_ACCESS_KEY_ID'],
    [{ S3_BUCKET: 'b', S3_ACCESS_KEY_ID: 'a' }, 'S3_SECRET_ACCESS_KEY'],
    [{ S3_BUCKET: 'b', S3_SECRET_ACCESS_KEY: 'a' }, 'S3_ACCESS_KEY_ID'],
    [{ S3_ENDPOINT: 'not a url', S3_BUCKET: 'b', S3_ACCESS_KEY_ID: 'a', S3_SECRET_ACCESS_KEY: 'b' }, 'S3_ENDPOINT'],
  ])('s3 with %j fails with CONFIG_INVALID naming %s', (overrides, key) => {
    let err: unknown;
    try {
      storageFromConfig(cfg({ STORAGE_BACKEND: 's3', ...overrides }));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(VerbatimError);
    expect((err as VerbatimError).code).toBe('CONFIG_INVALID');
    expect((err as VerbatimError).message).toContain(key);
  });

  it('s3 against AWS may leave both keys unset (default credential chain)', () => {
    const s = storageFromConfig(cfg({ STORAGE_BACKEND: 's3', S3_BUCKET: 'b' }));
    expect(s.name).toBe('s3');
    (s as S3ArtifactStorage).destroy();
  });
});
