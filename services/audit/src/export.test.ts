import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../db/database.ts';
import { testBackends, type TestBackend } from '../../../testing/databases.ts';
import { LocalArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { AuditLog } from './audit-log.ts';
import { runExportCommand } from './export-cli.ts';
import { exportArchive, tarHeader, verifyArchive, type ExportProgress, type Manifest } from './export.ts';
import { LegalHolds } from './retention.ts';

const backends = await testBackends();
const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-export-'));
const toClose: Db[] = [];
afterAll(async () => {
  for (const db of toClose) await db.destroy().catch(() => {});
  for (const b of backends) await b.cleanup();
  rmSync(tmp, { recursive: true, force: true });
});

const officer = { type: 'user' as const, id: 'officer-1' };
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** An independent ustar reader for the tests: path → data. */
function readTar(buf: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (let pos = 0; pos + 512 <= buf.length; ) {
    const h = buf.subarray(pos, pos + 512);
    if (h.every((b) => b === 0)) break;
    const str = (o: number, n: number) => h.subarray(o, o + n).toString('utf8').replace(/\0.*$/s, '');
    const name = str(0, 100);
    const prefix = str(345, 155);
    const size = parseInt(str(124, 12).trim(), 8);
    out.set(prefix ? `${prefix}/${name}` : name, Buffer.from(buf.subarray(pos + 512, pos + 512 + size)));
    pos += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}

function tarAvailable(): boolean {
  try {
    execFileSync('tar', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

async function seed(db: Db, storage: LocalArtifactStorage, id: string, room: string, participant: string) {
  await db.insertInto('rooms').values({ id: room, name: room, flags: '{}', secret_hash: 'x' }).execute();
  await db
    .insertInto('recording_sessions')
    .values({ id, room_id: room, started_at: new Date('2026-01-01T10:00:00Z'), ended_at: new Date('2026-01-01T11:00:00Z'), status: 'done' })
    .execute();
  await db.insertInto('session_participants').values({ session_id: id, participant_id: participant, name: participant, consent_decision: 'granted', consent_method: 'click' }).execute();
  const media: Record<string, Buffer> = {};
  for (const [name, kind, body] of [
    ['composite.mp4', 'composite', Buffer.from(`composite of ${id} `.repeat(300))],
    [`${participant}.opus`, 'audio', Buffer.from(`audio of ${participant} in ${id}`)],
  ] as const) {
    const src = path.join(tmp, `${id}-${name}`);
    writeFileSync(src, body);
    const key = `sessions/${room}/${id}/${name}`;
    const stored = await storage.put(key, src);
    await db.insertInto('artifacts').values({ session_id: id, key, kind, participant_id: null, content_type: 'application/octet-stream', bytes: stored.bytes, sha256: stored.sha256, storage: 'local' }).execute();
    media[`media/${id}/${name}`] = body;
  }
  await db
    .insertInto('transcript_segments')
    .values([
      { session_id: id, seq: 0, participant_id: participant, speaker: participant, start_seconds: 0, end_seconds: 1.5, text: `hello from ${id}`, language: 'en' },
      { session_id: id, seq: 1, participant_id: participant, speaker: participant, start_seconds: 2, end_seconds: 3, text: 'second line', language: 'en' },
    ])
    .execute();
  await db
    .insertInto('consent_events')
    .values([
      { room_id: room, session_id: id, participant_id: participant, participant_name: participant, policy: 'ask', decision: 'granted', method: 'click', client_info: '{}', created_at: new Date('2026-01-01T10:05:00Z') },
      // A room event during the session, not yet tied to it.
      { room_id: room, session_id: null, participant_id: 'late', participant_name: 'Late', policy: 'ask', decision: 'declined', method: 'click', client_info: '{}', created_at: new Date('2026-01-01T10:30:00Z') },
      // A room event long after the session: not part of it.
      { room_id: room, session_id: null, participant_id: 'later', participant_name: 'Later', policy: 'ask', decision: 'granted', method: 'click', client_info: '{}', created_at: new Date('2026-03-01T10:30:00Z') },
    ])
    .execute();
  return media;
}

describe.each(backends)('e-discovery export ($name)', (backend: TestBackend) => {
  it.skipIf(!backend.available)('exports a hold, verifies, detects tampering and truncation, audits itself, and the CLI reports it', async () => {
    const db = await backend.open();
    toClose.push(db);
    const root = path.join(tmp, backend.name);
    const storage = new LocalArtifactStorage(path.join(root, 'artifacts'));
    const audit = new AuditLog(db);
    const holds = new LegalHolds(db, audit);

    const media = await seed(db, storage, 'held', 'room-a', 'alice');
    await seed(db, storage, 'other', 'room-b', 'bob');
    await audit.append({ action: 'session.view', actor: officer, target: { type: 'session', id: 'held' } });
    await audit.append({ action: 'session.view', actor: officer, target: { type: 'session', id: 'other' } });
    await audit.append({ action: 'session.download', actor: officer, target: { type: 'session', id: 'held' }, details: { what: 'composite' } });
    const hold = await holds.place({ caseId: 'CASE-9', reason: 'litigation', scopeType: 'session', scopeValue: 'held', placedBy: officer });
    const headBefore = (await audit.head())!;

    const out = path.join(root, 'case-9.tar');
    const progress: ExportProgress[] = [];
    const res = await exportArchive({ db, storage, auditLog: audit, selection: { holdId: hold.id }, out, actor: officer, onProgress: (p) => progress.push(p) });
    expect(res.sessionIds).toEqual(['held']);
    expect(readdirSync(root).filter((f) => f.includes('.partial'))).toEqual([]);

    // Exactly the held session's files, manifest last.
    const buf = readFileSync(out);
    expect(buf.length % 512).toBe(0);
    const files = readTar(buf);
    const names = [...files.keys()];
    expect(names.at(-1)).toBe('manifest.json');
    expect([...names].sort()).toEqual(
      ['audit.json', 'consent/held.json', 'manifest.json', 'media/held/alice.opus', 'media/held/composite.mp4', 'transcripts/held.json', 'transcripts/held.txt', 'transcripts/held.vtt'].sort(),
    );
    if (tarAvailable()) expect(execFileSync('tar', ['-tf', out], { encoding: 'utf8' }).trim().split('\n').sort()).toEqual([...names].sort());
    for (const [p, body] of Object.entries(media)) expect(files.get(p)!.equals(body)).toBe(true);
    expect(files.get('transcripts/held.txt')!.toString()).toBe('[00:00:00.000] alice: hello from held\n[00:00:02.000] alice: second line\n');
    expect(files.get('transcripts/held.vtt')!.toString()).toContain('00:00:00.000 --> 00:00:01.500\n<v alice>hello from held');
    expect(JSON.parse(files.get('transcripts/held.json')!.toString()).segments).toHaveLength(2);
    const consent = JSON.parse(files.get('consent/held.json')!.toString()) as { events: { participant_id: string }[] };
    expect(consent.events.map((e) => e.participant_id)).toEqual(['alice', 'late']);
    const auditJson = JSON.parse(files.get('audit.json')!.toString()) as { head: { seq: number; hash: string }; entries: { action: string; target_id: string }[] };
    expect(auditJson.entries.map((e) => [e.action, e.target_id])).toEqual([
      ['session.view', 'held'],
      ['session.download', 'held'],
    ]);
    expect(auditJson.head).toEqual(headBefore);

    const manifest = JSON.parse(files.get('manifest.json')!.toString()) as Manifest;
    expect(manifest.version).toBe(1);
    expect(manifest.selection).toEqual({ holdId: hold.id });
    expect(manifest.auditHead).toEqual(headBefore);
    expect(manifest.files.map((f) => f.path).sort()).toEqual(names.filter((n) => n !== 'manifest.json').sort());
    for (const f of manifest.files) {
      expect(f.sha256).toBe(sha(files.get(f.path)!));
      expect(f.bytes).toBe(files.get(f.path)!.length);
    }

    // Progress: one callback per file, bytes monotone up to the total.
    expect(progress).toHaveLength(names.length);
    expect(progress.at(-1)!.bytesDone).toBe(progress.at(-1)!.bytesTotal);
    expect(progress.at(-1)!.bytesTotal).toBe(manifest.files.reduce((n, f) => n + f.bytes, 0));
    for (let i = 1; i < progress.length; i++) expect(progress[i]!.bytesDone).toBeGreaterThanOrEqual(progress[i - 1]!.bytesDone);

    // The export is audited and the chain still verifies.
    const good = await verifyArchive(out);
    expect(good).toMatchObject({ ok: true, problems: [] });
    expect(good.manifestSha256).toBe(sha(files.get('manifest.json')!));
    const entries = await audit.entries();
    const exp = entries.at(-1)!;
    expect(exp).toMatchObject({ action: 'export.create', actor_type: 'user', actor_id: 'officer-1', seq: headBefore.seq + 1 });
    expect(exp.details).toMatchObject({ fileCount: names.length, manifestSha256: good.manifestSha256 });
    expect((await audit.verify()).ok).toBe(true);

    // CLI verify: ok.
    let stdout = '';
    const cliOut = (s: string) => void (stdout += s);
    expect(await runExportCommand(['verify', out], cliOut, { err: () => {} })).toBe(0);
    expect(stdout).toMatch(/^OK: 8 file\(s\)/);

    // One flipped byte inside one file's data: exactly that path mismatches.
    const tampered = path.join(root, 'tampered.tar');
    const t = Buffer.from(buf);
    const at = t.indexOf(Buffer.from('audio of alice in held'));
    expect(at).toBeGreaterThan(0);
    t[at + 3] = t[at + 3]! ^ 0x01;
    writeFileSync(tampered, t);
    const bad = await verifyArchive(tampered);
    expect(bad.ok).toBe(false);
    expect(bad.problems.map((p) => [p.path, p.code])).toEqual([['media/held/alice.opus', 'SHA256_MISMATCH']]);
    stdout = '';
    expect(await runExportCommand(['verify', tampered, '--json'], cliOut, { err: () => {} })).toBe(1);
    expect(JSON.parse(stdout)).toMatchObject({ ok: false, problems: [{ path: 'media/held/alice.opus', code: 'SHA256_MISMATCH' }] });

    // Truncated: in the middle of a file, and exactly at a block boundary (manifest and end marker gone).
    const cut = path.join(root, 'cut.tar');
    writeFileSync(cut, buf);
    truncateSync(cut, buf.indexOf(Buffer.from('composite of held')) + 700);
    const cutRes = await verifyArchive(cut);
    expect(cutRes.ok).toBe(false);
    expect(cutRes.problems).toContainEqual(expect.objectContaining({ code: 'TRUNCATED', path: 'media/held/composite.mp4' }));
    expect(cutRes.problems).toContainEqual(expect.objectContaining({ code: 'MANIFEST_INVALID', path: 'manifest.json' }));
    writeFileSync(cut, buf.subarray(0, buf.length - 1024));
    const tail = await verifyArchive(cut);
    expect(tail.ok).toBe(false);
    expect(tail.problems.map((p) => p.code)).toEqual(['TRUNCATED']);
    expect(await runExportCommand(['verify', cut], () => {}, { err: () => {} })).toBe(1);

    // An extra file appended before the end marker is UNLISTED; one removed is MISSING.
    const extra = readTar(buf);
    const rebuilt = (m: Map<string, Buffer>) => {
      const parts: Buffer[] = [];
      for (const [p, d] of m) parts.push(tarHeader(p, d.length, new Date()), d, Buffer.alloc((512 - (d.length % 512)) % 512));
      parts.push(Buffer.alloc(1024));
      return Buffer.concat(parts);
    };
    extra.set('notes/planted.txt', Buffer.from('planted'));
    extra.delete('consent/held.json');
    const edited = path.join(root, 'edited.tar');
    writeFileSync(edited, rebuilt(extra));
    expect((await verifyArchive(edited)).problems.map((p) => [p.path, p.code]).sort()).toEqual([
      ['consent/held.json', 'MISSING'],
      ['notes/planted.txt', 'UNLISTED'],
    ]);

    // CLI usage errors.
    expect(await runExportCommand(['verify'], () => {}, { err: () => {} })).toBe(2);
    expect(await runExportCommand(['verify', path.join(root, 'nope.tar')], () => {}, { err: () => {} })).toBe(2);
    expect(await runExportCommand(['create', '--out', path.join(root, 'x.tar')], () => {}, { err: () => {} })).toBe(2);
    expect(await runExportCommand([], () => {}, { err: () => {} })).toBe(2);

    // CLI create by sessions, with a progress bar; both sessions, and audited again.
    let stderr = '';
    const both = path.join(root, 'both.tar');
    expect(await runExportCommand(['create', '--session', 'held', '--session', 'other', '--out', both], () => {}, { db, storage, err: (s) => void (stderr += s) })).toBe(0);
    expect(stderr).toContain('100%');
    expect(existsSync(both)).toBe(true);
    const bothFiles = readTar(readFileSync(both));
    expect(bothFiles.has('media/other/bob.opus') && bothFiles.has('media/held/alice.opus')).toBe(true);
    expect(await runExportCommand(['verify', both], () => {}, { err: () => {} })).toBe(0);
    expect((await audit.entries()).filter((e) => e.action === 'export.create')).toHaveLength(2);
    expect((await audit.verify()).ok).toBe(true);

    // CLI create by a transcript query: only the sessions whose words match.
    const byQuery = path.join(root, 'query.tar');
    expect(await runExportCommand(['create', '--query', '"hello from held"', '--out', byQuery], () => {}, { db, storage, err: () => {} })).toBe(0);
    const queryFiles = readTar(readFileSync(byQuery));
    expect(queryFiles.has('media/held/alice.opus')).toBe(true);
    expect([...queryFiles.keys()].some((k) => k.includes('/other/'))).toBe(false);
    expect(JSON.parse(queryFiles.get('manifest.json')!.toString()).selection).toEqual({ query: '"hello from held"' });
    expect(await runExportCommand(['create', '--query', 'x', '--hold', 'h', '--out', byQuery], () => {}, { err: () => {} })).toBe(2);

    // An artifact altered in storage fails the export (and leaves no archive behind).
    writeFileSync(await storage.locate('sessions/room-b/other/bob.opus'), 'altered audio of bob in other');
    await expect(exportArchive({ db, storage, auditLog: audit, selection: { sessionIds: ['other'] }, out: path.join(root, 'o.tar'), actor: officer })).rejects.toMatchObject({ code: 'INTERNAL' });
    expect(readdirSync(root).filter((f) => f.startsWith('o.tar'))).toEqual([]);
    await expect(exportArchive({ db, storage, auditLog: audit, selection: { sessionIds: ['missing'] }, out: path.join(root, 'm.tar'), actor: officer })).rejects.toMatchObject({ code: 'SESSION_NOT_FOUND' });
  });
});
