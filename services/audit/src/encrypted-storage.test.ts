import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buffer } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../db/database.ts';
import { testBackends } from '../../../testing/databases.ts';
import { sampleHeader } from '../../../testing/recording-fixtures.ts';
import { runKeysCommand } from './keys-cli.ts';
import { segmentParticipant, uploadSegment } from '../../recorder/index.ts';
import { loadConfig } from '../../lib/config.ts';
import { DataKeys, destroyDataKeys } from '../../lib/crypto/data-keys.ts';
import { parseHeader } from '../../lib/crypto/envelope.ts';
import { loadOrCreateMasterKey, MASTER_KEY_FILE } from '../../lib/crypto/master-key.ts';
import { encodeFileHeader, encodeRecord, RecordType } from '../../lib/recording/vrtp-format.ts';
import { openSegment, readSegment } from '../../lib/recording/segment-source.ts';
import { rawSegmentKey } from '../../lib/storage/artifact-keys.ts';
import { LocalArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { EncryptedArtifactStorage } from '../../lib/storage/encrypted-storage.ts';
import { storageFromConfig } from '../../lib/storage/storage-from-config.ts';

/**
 * Encryption at rest end to end on local storage and a real database: what lands on disk is an
 * envelope under the participant's data key, every read (whole, ranged, raw segments through
 * segment-source) gets the plaintext back, destroying a participant's keys makes exactly their
 * objects unreadable, and master-key rotation re-wraps the keys without touching the objects.
 */

const backends = await testBackends();
const backend = backends.find((b) => b.name === 'postgres' && b.available) ?? backends[0]!;
const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-enc-storage-'));
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const file = (name: string, bytes: Buffer) => {
  const f = path.join(tmp, 'in', name);
  mkdirSync(path.dirname(f), { recursive: true });
  writeFileSync(f, bytes);
  return f;
};

describe(`encrypted artifact storage (${backend.name})`, () => {
  let db: Db;
  let storage: EncryptedArtifactStorage;
  const root = path.join(tmp, 'artifacts');
  const config = () => loadConfig({ env: {}, overrides: { DATA_DIR: path.join(tmp, 'data'), STORAGE_BACKEND: 'local', STORAGE_DIR: root, ENCRYPTION_AT_REST: 'on' } });
  const alice = randomBytes(200_000);
  const bob = randomBytes(150_000);
  const aliceKey = 'sessions/r/s1/participants/p-alice.mkv';
  const bobKey = 'sessions/r/s1/participants/p-bob.mkv';
  let rawEntry: Parameters<typeof readSegment>[1] | undefined;

  beforeAll(async () => {
    db = await backend.open();
    // As the product builds it (storage-from-config.ts): the master key generated once into DATA_DIR.
    storage = storageFromConfig(config(), { db }) as EncryptedArtifactStorage;
    expect(storage).toBeInstanceOf(EncryptedArtifactStorage);
  });
  afterAll(async () => {
    await db?.destroy();
    for (const b of backends) await b.cleanup();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('stores an envelope under the participant key; whole reads, sizes and ranges give the plaintext back', async () => {
    const a = await storage.put(aliceKey, file('alice.mkv', alice), 'video/x-matroska', { encryptFor: { session: 's1', participant: 'p-alice' } });
    const b = await storage.put(bobKey, file('bob.mkv', bob), 'video/x-matroska', { encryptFor: { session: 's1', participant: 'p-bob' } });
    expect(a).toMatchObject({ key: aliceKey, bytes: alice.length, sha256: sha256(alice) });
    expect(a.keyId).toMatch(/^dk_/);
    expect(b.keyId).not.toBe(a.keyId);
    // The same scope reuses its key.
    const again = await storage.put(`${aliceKey}.2`, file('alice2', Buffer.from('x')), 'text/plain', { encryptFor: { session: 's1', participant: 'p-alice' } });
    expect(again.keyId).toBe(a.keyId);

    const onDisk = readFileSync(path.join(root, aliceKey));
    const h = parseHeader(onDisk);
    expect(h && h !== 'short' ? h.keyId : undefined).toBe(a.keyId);
    expect(onDisk.includes(alice.subarray(1000, 1032))).toBe(false);
    const row = await db.selectFrom('data_keys').selectAll().where('id', '=', a.keyId!).executeTakeFirstOrThrow();
    expect(row).toMatchObject({ session_id: 's1', participant_id: 'p-alice', destroyed_at: null });
    // Only wrapped: the data key's bytes are nowhere in the row.
    expect(Buffer.from(row.wrapped_key!).length).toBe(60);

    expect(await storage.stat(aliceKey)).toEqual({ bytes: alice.length });
    expect((await buffer(await storage.getStream(aliceKey))).equals(alice)).toBe(true);
    for (const [s, e] of [[0, 0], [65_535, 65_536], [70_000, 140_000], [199_990, 500_000]] as const) {
      expect((await buffer(await storage.getRange(aliceKey, s, e))).equals(alice.subarray(s, Math.min(e, alice.length - 1) + 1))).toBe(true);
    }
    await expect(storage.getRange(aliceKey, alice.length, alice.length + 5)).rejects.toMatchObject({ code: 'RANGE_NOT_SATISFIABLE', details: { size: alice.length } });
    await expect(storage.locate(aliceKey)).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    expect(await storage.keyIdOf(aliceKey)).toBe(a.keyId);

    // No scope (audit checkpoints), or ENCRYPTION_AT_REST=off: stored as given, read as is.
    const clear = Buffer.from('{"checkpoint":1}');
    expect((await storage.put('audit-checkpoints/c1.json', file('c1.json', clear), 'application/json')).keyId).toBeUndefined();
    expect(readFileSync(path.join(root, 'audit-checkpoints/c1.json')).equals(clear)).toBe(true);
    expect((await buffer(await storage.getStream('audit-checkpoints/c1.json'))).equals(clear)).toBe(true);
    const off = new EncryptedArtifactStorage(new LocalArtifactStorage(root), new DataKeys(db, loadOrCreateMasterKey(config())), { encryptWrites: false });
    await off.put('sessions/r/s1/clear.txt', file('clear.txt', clear), 'text/plain', { encryptFor: { session: 's1', participant: null } });
    expect(readFileSync(path.join(root, 'sessions/r/s1/clear.txt')).equals(clear)).toBe(true);
    // ...and with it off, what was stored encrypted still reads.
    expect((await buffer(await off.getStream(aliceKey))).equals(alice)).toBe(true);
  });

  it('raw segments: the uploader encrypts with the participant of the segment header; segment-source reads and checks them decrypted', async () => {
    const dir = path.join(tmp, 'recordings', 'r', 's1');
    mkdirSync(dir, { recursive: true });
    const header = sampleHeader({ room: 'r', session: 's1', track: 'ta', participant: { id: 'p-alice', name: 'Alice' } });
    const records = Array.from({ length: 400 }, (_, i) => encodeRecord(RecordType.RTP, 1_000_000 + i * 20_000, randomBytes(160)));
    const bytes = Buffer.concat([encodeFileHeader(header), ...records]);
    const local = path.join(dir, 'ta-0.vrtp');
    writeFileSync(local, bytes);
    expect(await segmentParticipant(local)).toBe('p-alice');
    const key = rawSegmentKey('r', 's1', 'ta-0.vrtp');
    const keyId = await uploadSegment(storage, key, local, { bytes: bytes.length, sha256: sha256(bytes) }, { encryptFor: { session: 's1', participant: await segmentParticipant(local) } });
    expect(keyId).toBe(await storage.keyIdOf(aliceKey));
    rmSync(local);
    expect(existsSync(local)).toBe(false);
    const entry = { file: 'ta-0.vrtp', bytes: bytes.length, sha256: sha256(bytes), stored: { key, at: new Date().toISOString(), keyId: keyId! } };
    rawEntry = entry;
    const src = { dir, room: 'r', session: 's1', storage };
    expect((await readSegment(src, entry)).equals(bytes)).toBe(true);
    expect((await buffer(await openSegment(src, entry, 5000))).equals(bytes.subarray(5000))).toBe(true);
    expect(readFileSync(path.join(root, key)).includes(bytes.subarray(0, 64))).toBe(false);
  });

  it('master-key rotation re-wraps every data key; the stored objects are untouched and still decrypt', async () => {
    const c = config();
    const keyFile = path.join(c.DATA_DIR, MASTER_KEY_FILE);
    const before = readFileSync(keyFile, 'utf8');
    const oldId = loadOrCreateMasterKey(c).id;
    const objectBefore = readFileSync(path.join(root, aliceKey));
    const out: string[] = [];
    expect(await runKeysCommand(['rotate-master', '--json'], (s) => out.push(s), { db, config: c })).toBe(0);
    const r = JSON.parse(out.join('')) as { from: string; to: string; rewrapped: number };
    expect(r.from).toBe(oldId);
    expect(r.rewrapped).toBe(2);
    expect(readFileSync(keyFile, 'utf8')).not.toBe(before);
    expect(loadOrCreateMasterKey(c).id).toBe(r.to);
    const rows = await db.selectFrom('data_keys').select('master_key_id').execute();
    expect(new Set(rows.map((x) => x.master_key_id))).toEqual(new Set([r.to]));
    expect(readFileSync(path.join(root, aliceKey)).equals(objectBefore)).toBe(true);
    // A process that started before the rotation re-reads the key file; a fresh one reads it at start.
    expect((await buffer(await storage.getStream(aliceKey))).equals(alice)).toBe(true);
    const fresh = storageFromConfig(c, { db });
    expect((await buffer(await fresh.getStream(bobKey))).equals(bob)).toBe(true);
    // A process holding only the old key (no file to re-read) is refused with a code, not garbage.
    const stale = new EncryptedArtifactStorage(new LocalArtifactStorage(root), new DataKeys(db, { id: oldId, key: Buffer.from(before.trim(), 'base64') }), { encryptWrites: true });
    await expect(stale.getStream(aliceKey)).rejects.toMatchObject({ code: 'MASTER_KEY_MISMATCH' });
    const entry = await db.selectFrom('audit_log').selectAll().where('action', '=', 'master-key.rotate').executeTakeFirstOrThrow();
    expect(typeof entry.details === 'string' ? JSON.parse(entry.details) : entry.details).toMatchObject({ from: oldId, to: r.to, rewrapped: 2 });
  });

  it("destroying a participant's keys (crypto-shredding) makes only their objects unreadable; a new write gets a new key", async () => {
    const aliceId = await storage.keyIdOf(aliceKey);
    expect(await destroyDataKeys(db, 's1', 'p-alice')).toEqual([aliceId]);
    await expect(storage.getStream(aliceKey)).rejects.toMatchObject({ code: 'KEY_DESTROYED', status: 410 });
    await expect(storage.getRange(aliceKey, 0, 10)).rejects.toMatchObject({ code: 'KEY_DESTROYED' });
    // Their raw segment too (same participant key), which transcode would read through segment-source.
    await expect(readSegment({ dir: path.join(tmp, 'recordings', 'r', 's1'), room: 'r', session: 's1', storage }, rawEntry!)).rejects.toMatchObject({ code: 'KEY_DESTROYED' });
    expect((await buffer(await storage.getStream(bobKey))).equals(bob)).toBe(true);
    const row = await db.selectFrom('data_keys').selectAll().where('id', '=', aliceId!).executeTakeFirstOrThrow();
    expect(row.wrapped_key).toBeNull();
    expect(row.destroyed_at).not.toBeNull();
    const next = await storage.put(`${aliceKey}.new`, file('a3', Buffer.from('new')), 'text/plain', { encryptFor: { session: 's1', participant: 'p-alice' } });
    expect(next.keyId).not.toBe(aliceId);
  });
});
