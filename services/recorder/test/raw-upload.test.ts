import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SessionManifestSchema, type SessionManifest } from '../../lib/contracts/recording.ts';
import { readSegment } from '../../lib/recording/segment-source.ts';
import { parseRecording } from '../../lib/recording/vrtp-format.ts';
import { rawSegmentKey } from '../../lib/storage/artifact-keys.ts';
import { startTestRecorder, type TestRecorder } from '../../../testing/recorder-harness.ts';
import { loadConfig } from '../../lib/config.ts';
import { storageFromConfig } from '../../lib/storage/storage-from-config.ts';
import { startS3rver, type TestS3 } from '../../../testing/s3rver.ts';

/**
 * Raw media in object storage (issue 15 item 4), on the recorder process itself: with
 * RECORDER_UPLOAD_RAW=on and 1 s segments, each sealed segment is uploaded to S3 (s3rver), read
 * back against its SHA-256, recorded in the journal / manifest / track_segments and removed from
 * disk. With S3 down recording goes on, the backlog grows (metric and GET /v1/stats), and it drains
 * when S3 is back.
 */
const SSRC = 0x5eed;
const PT = 100;
const BUCKET = 'verbatim-raw-upload';
const ROOM = 'room-up';
const SESSION = 'sess-up';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-rawup-'));
const s3Dir = path.join(tmp, 's3rver');
let s3: TestS3;
let rec: TestRecorder;
beforeAll(async () => {
  s3 = await startS3rver(s3Dir);
  await s3.storage(BUCKET);
  rec = await startTestRecorder({ ...s3.env(BUCKET), RECORDER_UPLOAD_RAW: 'on', RECORDER_SEGMENT_SECONDS: '1', RECORDER_UPLOAD_RETRY_MS: '100' });
});
afterAll(async () => {
  await rec?.stop();
  await s3?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

function rtp(seq: number): Buffer {
  const b = Buffer.alloc(160, 7);
  b[0] = 0x80;
  b[1] = PT;
  b.writeUInt16BE(seq & 0xffff, 2);
  b.writeUInt32BE((seq * 960) >>> 0, 4);
  b.writeUInt32BE(SSRC, 8);
  return b;
}

/** A sender at 50 packets/s, as an Opus track: the recorder's timed rotation needs packets to seal on. */
function sender(port: number) {
  const s = dgram.createSocket('udp4');
  let seq = 0;
  return {
    async sendFor(ms: number) {
      const end = Date.now() + ms;
      while (Date.now() < end) {
        await new Promise<void>((r) => s.send(rtp(seq++), port, '127.0.0.1', () => r()));
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    sent: () => seq,
    close: () => s.close(),
  };
}

const dirOf = () => path.join(rec.recordingsDir, ROOM, SESSION);
const journal = (): SessionManifest => SessionManifestSchema.parse(JSON.parse(readFileSync(path.join(dirOf(), 'session.json'), 'utf8')));
const localSegments = () => readdirSync(dirOf()).filter((f) => f.endsWith('.vrtp'));
const uploads = async () => (await rec.api('GET', '/v1/stats')).body.uploads as { segments: number; bytes: number; uploaded: number; failedAttempts: number };
const metric = async (name: string) => {
  const text = await fetch(`${rec.url}/metrics`).then((r) => r.text());
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
};

describe('raw segments to object storage', () => {
  it('uploads each sealed segment, checks it, removes it locally; with S3 down the backlog grows and drains when it is back', async () => {
    const started = await rec.api('POST', '/v1/tracks', {
      v: 1,
      room: ROOM,
      session: SESSION,
      track: 'mic',
      participant: { id: 'alice', name: 'Alice' },
      kind: 'audio',
      codec: { mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: PT, parameters: {} },
      ssrc: SSRC,
      headerExtensions: [],
      consent: { decision: 'granted', method: 'click' },
    });
    expect(started.status, JSON.stringify(started.body)).toBe(201);
    const tx = sender(started.body.rtpPort);

    // Storage up: segments are stored while the session records, and recorded in its journal.
    await tx.sendFor(2500);
    await expect.poll(() => journal().tracks[0]!.segments.filter((s) => s.stored).length, { timeout: 15_000 }).toBeGreaterThanOrEqual(1);
    const storedEarly = journal().tracks[0]!.segments.filter((s) => s.stored);
    for (const s of storedEarly) {
      expect(s.stored!.key).toBe(rawSegmentKey(ROOM, SESSION, s.file));
      expect(existsSync(path.join(dirOf(), s.file)), s.file).toBe(false);
    }

    // Storage down: recording goes on locally, the backlog grows.
    await s3.stop();
    await tx.sendFor(3000);
    await expect.poll(async () => (await uploads()).segments, { timeout: 15_000 }).toBeGreaterThanOrEqual(2);
    const down = await uploads();
    expect(down.bytes).toBeGreaterThan(0);
    await expect.poll(async () => (await uploads()).failedAttempts, { timeout: 15_000 }).toBeGreaterThan(0);
    expect(await metric('verbatim_recorder_upload_backlog_segments')).toBeGreaterThanOrEqual(2);
    expect(await metric('verbatim_recorder_upload_backlog_bytes')).toBeGreaterThan(0);
    // The registry row carries it with the heartbeat, for the console (GET /api/v1/recorders).
    const registryDb = await rec.openDb();
    const row = () => registryDb.selectFrom('recorders').selectAll().executeTakeFirstOrThrow();
    await expect.poll(async () => (await row()).upload_backlog_segments, { timeout: 5_000 }).toBeGreaterThanOrEqual(2);
    expect(Number((await row()).upload_backlog_bytes)).toBeGreaterThan(0);
    expect((await row()).upload_oldest_at).not.toBeNull();
    const waiting = journal().tracks[0]!.segments.filter((s) => !s.stored);
    expect(waiting.length).toBeGreaterThanOrEqual(2);
    for (const s of waiting) expect(localSegments()).toContain(s.file);

    // Storage back (same port, same objects): the backlog drains.
    s3 = await startS3rver(s3Dir, s3.port);
    // Read as the product reads: through the storage the configuration builds (it decrypts what
    // encryption at rest stored, with the recorder's master key and data keys).
    const keysDb = await rec.openDb();
    const storage = storageFromConfig(loadConfig({ env: { ...s3.env(BUCKET), DATA_DIR: rec.dataDir } }), { db: keysDb });
    await tx.sendFor(600);
    const end = await rec.api('POST', `/v1/sessions/${SESSION}/end`, { v: 1, room: ROOM, reason: 'test' });
    expect(end.status, JSON.stringify(end.body)).toBe(200);
    await expect.poll(async () => (await uploads()).segments, { timeout: 30_000 }).toBe(0);
    expect(await metric('verbatim_recorder_upload_backlog_segments')).toBe(0);
    expect(await metric('verbatim_recorder_upload_backlog_bytes')).toBe(0);
    await expect.poll(async () => (await row()).upload_backlog_segments, { timeout: 5_000 }).toBe(0);
    expect((await row()).upload_oldest_at).toBeNull();
    await registryDb.destroy();
    tx.close();

    // The sealed manifest records every copy; no raw file is left on the recorder's disk.
    const manifestPath = path.join(dirOf(), 'manifest.json');
    await expect.poll(() => SessionManifestSchema.parse(JSON.parse(readFileSync(manifestPath, 'utf8'))).tracks[0]!.segments.every((s) => s.stored), { timeout: 15_000 }).toBe(true);
    const manifestText = readFileSync(manifestPath, 'utf8');
    const manifest = SessionManifestSchema.parse(JSON.parse(manifestText));
    const segs = manifest.tracks[0]!.segments;
    expect(segs.length).toBeGreaterThanOrEqual(5);
    expect(localSegments()).toEqual([]);
    expect((await uploads()).uploaded).toBe(segs.length);

    // Each stored copy is the sealed segment (size and SHA-256), and every packet sent is in one of them.
    let packets = 0;
    for (const s of segs) {
      expect(s.stored!.key).toBe(rawSegmentKey(ROOM, SESSION, s.file));
      const buf = await readSegment({ dir: dirOf(), room: ROOM, session: SESSION, storage }, s);
      packets += parseRecording(buf, s.file).records.length;
    }
    expect(packets).toBe(tx.sent());
    await keysDb.destroy();

    // The database follows the manifest: the stored keys, and the hash of the rewritten manifest.
    const db = await rec.openDb();
    try {
      const rows = await db.selectFrom('track_segments').select(['file', 'stored_key', 'stored_at']).where('session_id', '=', SESSION).orderBy('segment').execute();
      expect(rows.map((r) => [r.file, r.stored_key])).toEqual(segs.map((s) => [s.file, s.stored!.key]));
      expect(rows.every((r) => r.stored_at !== null)).toBe(true);
      const row = await db.selectFrom('recording_sessions').select(['manifest_sha256']).where('id', '=', SESSION).executeTakeFirstOrThrow();
      expect(row.manifest_sha256).toBe(createHash('sha256').update(manifestText).digest('hex'));
    } finally {
      await db.destroy();
    }
  });
});
