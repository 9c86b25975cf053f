import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../db/database.ts';
import { testBackends } from '../../../testing/databases.ts';
import { ffprobe } from '../../../testing/media-fixtures.ts';
import { writeToneSession } from '../../../testing/synthetic-session.ts';
import { startTestTranscodeWorker, type TestTranscodeWorker } from '../../../testing/transcode-worker.ts';
import { AuditLog, createUserWithKey, exportArchive, startAuditServer, verifyArchive, type AuditServer } from '../../audit/index.ts';
import type { SessionManifest } from '../../lib/contracts/recording.ts';
import { DataKeys } from '../../lib/crypto/data-keys.ts';
import { parseHeader } from '../../lib/crypto/envelope.ts';
import { masterKeyOf } from '../../lib/crypto/master-key.ts';
import { createLogger } from '../../lib/logger.ts';
import { LocalArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { EncryptedArtifactStorage } from '../../lib/storage/encrypted-storage.ts';
import { SessionStore } from '../../recorder/index.ts';

/**
 * An encrypted session end to end: a real transcode worker (ffmpeg) finalizes a sealed two-person
 * recording into storage with encryption at rest (4 KiB chunks, so seeks cross chunk boundaries); every artifact lands as an envelope under its
 * participant's key (session-wide files under the session key), the compliance API plays the
 * composite with seeking (Range answers the right bytes, the whole file probes as MP4), and the
 * session exports into an archive that verifies.
 */

const backends = await testBackends();
const backend = backends.find((b) => b.name === 'postgres' && b.available) ?? backends[0]!;
const ROOM = 'r';
const SESSION = 'sess-enc';
const root = mkdtempSync(path.join(os.tmpdir(), 'verbatim-enc-finalize-'));
afterAll(async () => {
  for (const b of backends) await b.cleanup();
  rmSync(root, { recursive: true, force: true });
});

function recordSession(recordingsDir: string): { manifestPath: string; manifest: SessionManifest; sha: string } {
  return writeToneSession({
    recordingsDir,
    scratch: root,
    room: ROOM,
    session: SESSION,
    speakers: [
      { id: 'p-alice', name: 'Alice', track: 'ta', dtx: [[1, 2.6]] },
      { id: 'p-bob', name: 'Bob', track: 'tb', dtx: [[0, 1.5]] },
    ],
  });
}

describe(`an encrypted session: finalize, play with seeking, export (${backend.name})`, () => {
  let db: Db;
  let storage: EncryptedArtifactStorage;
  let transcode: TestTranscodeWorker;
  let server: AuditServer;
  let auth: string;
  const store = path.join(root, 'artifacts');

  beforeAll(async () => {
    db = await backend.open();
    storage = new EncryptedArtifactStorage(new LocalArtifactStorage(store), new DataKeys(db, masterKeyOf(randomBytes(32))), { encryptWrites: true, chunkSize: 4096 });
    await db.insertInto('rooms').values({ id: ROOM, name: ROOM, flags: JSON.stringify({}), secret_hash: 'scrypt$x$y' }).execute();
    const rec = recordSession(path.join(root, 'recordings'));
    await new SessionStore(db).registerSealed(rec.manifest, rec.manifestPath, rec.sha);
    transcode = await startTestTranscodeWorker({ db, storage, workDir: path.join(root, 'work') });
    for (const deadline = Date.now() + 90_000; ; await new Promise((r) => setTimeout(r, 200))) {
      const s = await db.selectFrom('recording_sessions').select(['status', 'error_code', 'error_message']).where('id', '=', SESSION).executeTakeFirstOrThrow();
      if (s.status === 'done') break;
      if (s.status === 'failed' || Date.now() > deadline) throw new Error(`the session was not finalized: ${s.status} ${s.error_code ?? ''} ${s.error_message ?? ''}`);
    }
    auth = `Bearer ${(await createUserWithKey(db, { name: 'officer', role: 'compliance_officer' })).apiKey}`;
    server = await startAuditServer({ db, logger: createLogger({ level: 'silent' }), storage });
  }, 120_000);
  afterAll(async () => {
    await server?.close();
    await transcode?.close();
    await db?.destroy();
  });

  it('every artifact is stored as an envelope under its participant key (the session key for session-wide files)', async () => {
    const arts = await db.selectFrom('artifacts').selectAll().where('session_id', '=', SESSION).execute();
    expect(arts.map((a) => a.kind)).toEqual(expect.arrayContaining(['composite', 'participant-av', 'track']));
    const keys = new Map((await db.selectFrom('data_keys').selectAll().where('session_id', '=', SESSION).execute()).map((k) => [k.id, k]));
    for (const a of arts) {
      expect(a.key_id, a.key).toMatch(/^dk_/);
      expect(keys.get(a.key_id!)!.participant_id, a.key).toBe(a.participant_id);
      const h = parseHeader(readFileSync(path.join(store, a.key)));
      expect(h && h !== 'short' ? h.keyId : undefined, a.key).toBe(a.key_id);
    }
    // Alice's, Bob's and the session's.
    expect(new Set(arts.map((a) => a.key_id)).size).toBe(3);
  });

  it('the composite plays from the API with seeking: Range answers exactly the bytes asked for, the whole file is the recorded MP4', async () => {
    const row = await db.selectFrom('artifacts').selectAll().where('session_id', '=', SESSION).where('kind', '=', 'composite').executeTakeFirstOrThrow();
    const url = `${server.url}/api/v1/sessions/${SESSION}/artifacts/composite.mp4/content`;
    const whole = await fetch(url, { headers: { authorization: auth } });
    expect(whole.status).toBe(200);
    const body = Buffer.from(await whole.arrayBuffer());
    expect(body.length).toBe(Number(row.bytes));
    expect(createHash('sha256').update(body).digest('hex')).toBe(row.sha256);
    const f = path.join(root, 'played.mp4');
    writeFileSync(f, body);
    expect(Number(ffprobe(f).format.duration)).toBeGreaterThan(2.5);
    // Seeks as a <video> does: a tail probe, a jump into the middle across chunk boundaries (4 KiB chunks here).
    const mid = Math.floor(body.length / 2);
    expect(body.length).toBeGreaterThan(3 * 4096);
    for (const [range, start, end] of [
      [`bytes=${body.length - 100}-`, body.length - 100, body.length - 1],
      [`bytes=${mid - 5000}-${mid + 3000}`, mid - 5000, mid + 3000],
      ['bytes=0-1', 0, 1],
    ] as const) {
      const res = await fetch(url, { headers: { authorization: auth, range } });
      expect(res.status, range).toBe(206);
      expect(res.headers.get('content-range')).toBe(`bytes ${start}-${Math.min(end, body.length - 1)}/${body.length}`);
      expect(Buffer.from(await res.arrayBuffer()).equals(body.subarray(start, Math.min(end, body.length - 1) + 1)), range).toBe(true);
    }
  });

  it('exports with the decrypted media and the archive verifies', async () => {
    const out = path.join(root, 'export.tar');
    await exportArchive({ db, storage, auditLog: new AuditLog(db), selection: { sessionIds: [SESSION] }, out, actor: { type: 'user', id: 'officer' } });
    const v = await verifyArchive(out);
    expect(v).toMatchObject({ ok: true, problems: [] });
    expect(v.files).toBeGreaterThan(3);
  });
});
