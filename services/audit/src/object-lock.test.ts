import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { S3Client } from '@aws-sdk/client-s3';
import { afterAll, describe, expect, it } from 'vitest';
import { testBackends } from '../../../testing/databases.ts';
import { S3ArtifactStorage } from '../../lib/storage/s3-storage.ts';
import { legalHoldStorage, objectLockRetention, sessionsInScope, syncLegalHolds } from './object-lock.ts';

/**
 * s3rver has no Object Lock, so these check the HTTP requests the AWS SDK builds for an Object
 * Lock bucket (headers, query, body), answered by a recording request handler instead of a
 * server. Nothing here proves a real S3 endpoint accepts them.
 */
interface Sent {
  method: string;
  path: string;
  query: Record<string, unknown>;
  headers: Record<string, string>;
  body: string;
}

async function bodyText(body: unknown): Promise<string> {
  if (body === undefined || body === null) return '';
  if (typeof body === 'string') return body;
  if (body instanceof Uint8Array) return Buffer.from(body).toString('utf8');
  if (body instanceof Readable) {
    const chunks: Buffer[] = [];
    for await (const c of body) chunks.push(Buffer.from(c as Buffer));
    return Buffer.concat(chunks).toString('utf8');
  }
  return typeof body === 'string' ? body : JSON.stringify(body);
}

function recordingClient(sent: Sent[], stored: { bytes: number; sha256: string }): S3Client {
  return new S3Client({
    region: 'us-east-1',
    endpoint: 'http://s3.invalid:9000',
    forcePathStyle: true,
    credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret' },
    requestHandler: {
      async handle(req: { method: string; path: string; query?: Record<string, unknown>; headers: Record<string, string>; body?: unknown }) {
        sent.push({ method: req.method, path: req.path, query: req.query ?? {}, headers: req.headers, body: await bodyText(req.body) });
        const headers: Record<string, string> = req.method === 'HEAD' ? { 'content-length': String(stored.bytes), 'x-amz-meta-sha256': stored.sha256 } : {};
        return { response: { statusCode: 200, headers, body: Readable.from([]) } };
      },
    } as never,
  });
}

const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-objlock-'));
const backends = (await testBackends()).filter((b) => b.name === 'pglite');
afterAll(async () => {
  for (const b of backends) await b.cleanup();
  rmSync(tmp, { recursive: true, force: true });
});

describe('S3 Object Lock (request parameters only)', () => {
  it('an upload carries the Object Lock mode and the retention end, with a SHA-256 checksum as S3 requires', async () => {
    const file = path.join(tmp, 'composite.mp4');
    writeFileSync(file, 'not really a video');
    const stored = { bytes: 18, sha256: createHash('sha256').update('not really a video').digest('hex') };
    const sent: Sent[] = [];
    const until = new Date('2031-05-01T00:00:00.000Z');
    const storage = new S3ArtifactStorage({ bucket: 'vault', region: 'us-east-1', client: recordingClient(sent, stored), objectLock: { mode: 'COMPLIANCE', retainUntil: async () => until } });
    await storage.put('sessions/r/s1/composite.mp4', file, 'video/mp4');
    const put = sent.find((r) => r.method === 'PUT')!;
    expect(put.path).toBe('/vault/sessions/r/s1/composite.mp4');
    expect(put.headers['x-amz-object-lock-mode']).toBe('COMPLIANCE');
    expect(new Date(put.headers['x-amz-object-lock-retain-until-date']!).toISOString()).toBe(until.toISOString());
    expect(put.headers['x-amz-checksum-sha256'] ?? put.headers['x-amz-sdk-checksum-algorithm']).toBeTruthy();
    expect(put.headers['x-amz-meta-sha256']).toBe(stored.sha256);

    // No retention date (keep forever / not ended): no lock headers.
    sent.length = 0;
    const open = new S3ArtifactStorage({ bucket: 'vault', region: 'us-east-1', client: recordingClient(sent, stored), objectLock: { mode: 'GOVERNANCE', retainUntil: () => undefined } });
    await open.put('sessions/r/s1/composite.mp4', file, 'video/mp4');
    expect(sent.find((r) => r.method === 'PUT')!.headers['x-amz-object-lock-mode']).toBeUndefined();
    expect(legalHoldStorage(open)).toBeDefined();
    expect(legalHoldStorage(new S3ArtifactStorage({ bucket: 'vault', region: 'us-east-1', client: recordingClient([], stored) }))).toBeUndefined();
  });

  it.skipIf(backends.length === 0)('retention end per policy; hold place/release sets and clears the legal-hold flag on every artifact of the covered sessions', async () => {
    const db = await backends[0]!.open();
    try {
      await db.insertInto('rooms').values({ id: 'fin', name: 'fin', flags: JSON.stringify({ retentionPolicy: 'fin-7y' }), secret_hash: 'x' }).execute();
      await db
        .insertInto('retention_policies')
        .values([
          { name: 'fin-7y', scope: 'room', media_days: 2555, transcript_days: 365, raw_days: 30 },
          { name: 'base', scope: 'default', media_days: 90, transcript_days: 90, raw_days: 7 },
        ])
        .execute();
      await db
        .insertInto('recording_sessions')
        .values([
          { id: 's1', room_id: 'fin', started_at: '2024-01-01T09:00:00Z', ended_at: '2024-01-01T10:00:00Z', status: 'done' },
          { id: 's2', room_id: 'fin', started_at: '2024-02-01T09:00:00Z', ended_at: null, status: 'recording' },
        ])
        .execute();
      const retain = objectLockRetention(db);
      // The longest applicable retention wins: the room's 7 years for media, 365 days for transcripts.
      expect((await retain('sessions/fin/s1/composite.mp4'))!.toISOString()).toBe(new Date(Date.parse('2024-01-01T10:00:00Z') + 2555 * 86_400_000).toISOString());
      expect((await retain('sessions/fin/s1/transcript.json'))!.toISOString()).toBe('2024-12-31T10:00:00.000Z');
      expect(await retain('sessions/fin/s2/composite.mp4')).toBeUndefined(); // not ended yet
      expect(await retain('elsewhere/x.mp4')).toBeUndefined();

      await db
        .insertInto('artifacts')
        .values(['composite.mp4', 'transcript.json'].map((f) => ({ session_id: 's1', key: `sessions/fin/s1/${f}`, kind: f.startsWith('transcript') ? 'transcript-json' : 'composite', participant_id: null, content_type: 'x', bytes: 1, sha256: 'a'.repeat(64), storage: 's3', duration_seconds: null })))
        .execute();
      const sent: Sent[] = [];
      const storage = legalHoldStorage(new S3ArtifactStorage({ bucket: 'vault', region: 'us-east-1', client: recordingClient(sent, { bytes: 0, sha256: '' }), objectLock: { mode: 'COMPLIANCE', retainUntil: () => undefined } }))!;
      await db.insertInto('legal_holds').values({ id: 'h1', case_id: 'C', reason: 'r', scope_type: 'room', scope_value: 'fin', placed_by: 'user:x' }).execute();
      const scope = await sessionsInScope(db, { scopeType: 'room', scopeValue: 'fin', frozenSessionIds: [] });
      expect(scope.sort()).toEqual(['s1', 's2']);
      const on = await syncLegalHolds(db, storage, scope);
      expect(on).toEqual({ set: ['sessions/fin/s1/composite.mp4', 'sessions/fin/s1/transcript.json'], cleared: [], failed: [] });
      expect(sent.map((r) => `${r.method} ${r.path} ${Object.keys(r.query).join(',')}`)).toEqual(['PUT /vault/sessions/fin/s1/composite.mp4 legal-hold', 'PUT /vault/sessions/fin/s1/transcript.json legal-hold']);
      expect(sent[0]!.body).toMatch(/<LegalHold[^>]*><Status>ON<\/Status><\/LegalHold>/);

      sent.length = 0;
      await db.updateTable('legal_holds').set({ released_at: new Date(), released_by: 'user:x' }).where('id', '=', 'h1').execute();
      const off = await syncLegalHolds(db, storage, scope);
      expect(off.cleared).toHaveLength(2);
      expect(sent.every((r) => /<Status>OFF<\/Status>/.test(r.body))).toBe(true);
    } finally {
      await db.destroy();
    }
  });
});
