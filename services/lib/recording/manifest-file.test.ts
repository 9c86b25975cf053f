import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SESSION_MANIFEST_VERSION, type SessionManifest } from '../contracts/recording.ts';
import { VerbatimError } from '../errors.ts';
import { checkManifest, manifestPathOf, readManifest, writeManifestFile, writeSessionManifest } from './manifest-file.ts';
import { JOURNAL_FILE, MANIFEST_FILE } from './session-dir.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-manifest-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const manifest = (over: Partial<SessionManifest> = {}): SessionManifest => ({
  format: 'verbatim-session',
  version: SESSION_MANIFEST_VERSION,
  room: 'r',
  session: 's',
  startedAt: '2024-01-01T00:00:00.000Z',
  endedAt: '2024-01-01T00:01:00.000Z',
  endReason: 'ended',
  participants: [{ id: 'p', name: 'P', consent: { decision: 'granted', method: 'click', at: '2024-01-01T00:00:01.000Z' } }],
  tracks: [],
  gaps: [],
  events: [{ at: '2024-01-01T00:00:01.000Z', type: 'participant-joined', participant: 'p', details: { name: 'P' } }],
  dropped: { too_short: 2 },
  ...over,
});

function caught(fn: () => unknown): VerbatimError {
  try {
    fn();
  } catch (err) {
    return err as VerbatimError;
  }
  throw new Error('did not throw');
}

describe('manifest files', () => {
  it('writes the manifest as two-space JSON, atomically, with the SHA-256 of those bytes; reads it by directory or path', () => {
    const dir = mkdtempSync(path.join(tmp, 'w-'));
    const m = manifest();
    const written = writeSessionManifest(dir, m);
    const bytes = readFileSync(path.join(dir, MANIFEST_FILE));
    expect(written.path).toBe(path.join(dir, MANIFEST_FILE));
    expect(bytes.toString()).toBe(JSON.stringify(m, null, 2));
    expect(written.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    expect(readdirSync(dir)).toEqual([MANIFEST_FILE]); // no temp file left behind
    expect(readManifest(dir)).toEqual(m);
    expect(readManifest(written.path)).toEqual(m);
    expect(manifestPathOf(dir)).toBe(written.path);
    // Rewriting replaces it whole; a journal is the same shape under another name.
    writeSessionManifest(dir, manifest({ endReason: 'again' }));
    expect(readManifest(dir).endReason).toBe('again');
    writeManifestFile(path.join(dir, JOURNAL_FILE), manifest({ endedAt: null, endReason: null }));
    expect(readManifest(path.join(dir, JOURNAL_FILE)).endedAt).toBeNull();
  });

  it('refuses to write a manifest that breaks the schema', () => {
    const dir = mkdtempSync(path.join(tmp, 'bad-'));
    expect(() => writeSessionManifest(dir, { ...manifest(), version: 2 } as unknown as SessionManifest)).toThrow();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('missing, unreadable and invalid manifests are CORRUPT_MANIFEST with the reason; checkManifest lists schema issues', () => {
    const dir = mkdtempSync(path.join(tmp, 'r-'));
    const missing = caught(() => readManifest(dir));
    expect(missing).toBeInstanceOf(VerbatimError);
    expect(missing).toMatchObject({ code: 'CORRUPT_MANIFEST', status: 422, details: { reason: 'missing', file: path.join(dir, MANIFEST_FILE) } });
    expect(missing.hint).toMatch(/verbatim recording verify/);

    writeFileSync(path.join(dir, MANIFEST_FILE), '{"format": "verbatim-session", ');
    expect(caught(() => readManifest(dir))).toMatchObject({ code: 'CORRUPT_MANIFEST', details: { reason: 'unreadable' } });
    expect(checkManifest(dir)).toMatchObject({ ok: false, reason: 'unreadable', message: expect.stringMatching(/^not valid JSON/) });

    writeFileSync(path.join(dir, MANIFEST_FILE), JSON.stringify({ ...manifest(), version: 2, room: 7 }));
    expect(caught(() => readManifest(dir))).toMatchObject({ code: 'CORRUPT_MANIFEST', details: { reason: 'schema' } });
    const c = checkManifest(dir);
    expect(c.ok).toBe(false);
    expect(!c.ok && c.reason === 'schema' ? c.issues.map((i) => i.path.join('.')).sort() : []).toEqual(['room', 'version']);
  });
});
