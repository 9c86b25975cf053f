import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { testBackends, type TestBackend } from '../../../../testing/databases.ts';
import { ffprobe } from '../../../../testing/media-fixtures.ts';
import { createLogger } from '../../../lib/logger.ts';
import { LocalArtifactStorage } from '../../../lib/storage/artifact-storage.ts';
import { AuditLog } from '../audit-log.ts';
import { exportArchive, verifyArchive, type Manifest } from '../export.ts';
import { startAuditServer } from '../http/server.ts';
import { createUserWithKey } from '../key-lifecycle.ts';
import { redactionSpans, redactText, spanTimes, TONE_HZ } from './redaction.ts';

const backends = await testBackends();
const root = mkdtempSync(path.join(os.tmpdir(), 'verbatim-redaction-'));
afterAll(async () => {
  for (const b of backends) await b.cleanup();
  rmSync(root, { recursive: true, force: true });
});

const ffmpeg = (...args: string[]) => execFileSync('ffmpeg', ['-v', 'error', '-y', ...args]);

/** Goertzel power of one frequency in a block of samples. */
function goertzel(x: Float32Array, from: number, n: number, freq: number, rate: number): number {
  const k = 2 * Math.cos((2 * Math.PI * freq) / rate);
  let s1 = 0;
  let s2 = 0;
  for (let i = from; i < from + n; i++) {
    const s0 = x[i]! + k * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  return s1 * s1 + s2 * s2 - k * s1 * s2;
}

/** Where the tone is: the 5 ms blocks in which TONE_HZ carries more power than the speech stand-in (300 Hz), as [first, last end] seconds. */
function toneSpan(file: string): { from: number; to: number; blocks: number } {
  const rate = 16000;
  const raw = execFileSync('ffmpeg', ['-v', 'error', '-i', file, '-map', '0:a', '-ac', '1', '-ar', String(rate), '-f', 'f32le', '-']);
  const x = new Float32Array(raw.buffer, raw.byteOffset, raw.length / 4);
  const n = rate / 200;
  let first = -1;
  let last = -1;
  let blocks = 0;
  for (let b = 0; (b + 1) * n <= x.length; b++) {
    if (goertzel(x, b * n, n, TONE_HZ, rate) > 4 * goertzel(x, b * n, n, 300, rate)) {
      if (first < 0) first = b;
      last = b;
      blocks++;
    }
  }
  return { from: first * (n / rate), to: (last + 1) * (n / rate), blocks };
}

const TEXT = 'my card is 4111 1111 1111 1111 thanks, call me later';
// Word timing as whisper-cli -ojf gives it (session seconds).
const WORDS = [
  { text: 'my', start: 0.5, end: 0.8 },
  { text: 'card', start: 0.8, end: 1.3 },
  { text: 'is', start: 1.3, end: 1.6 },
  { text: '4111', start: 2.0, end: 2.6 },
  { text: '1111', start: 2.7, end: 3.2 },
  { text: '1111', start: 3.3, end: 3.8 },
  { text: '1111', start: 3.9, end: 4.5 },
  { text: 'thanks,', start: 4.6, end: 5.1 },
  { text: 'call', start: 5.3, end: 5.6 },
  { text: 'me', start: 5.6, end: 5.8 },
  { text: 'later', start: 5.8, end: 6.4 },
];

describe('redaction spans', () => {
  it('detector hits become labels; their time comes from the words said; without words, the segment', () => {
    const spans = redactionSpans(TEXT, [{ start: TEXT.indexOf('call'), end: TEXT.indexOf('call') + 4, label: 'MARKED' }]);
    expect(redactText(TEXT, spans)).toBe('my card is [CARD NUMBER] thanks, [MARKED] me later');
    expect(spanTimes(TEXT, WORDS, spans[0]!, { start: 0.5, end: 6.4 })).toEqual({ from: 2.0, to: 4.5, exact: true });
    expect(spanTimes(TEXT, WORDS, spans[1]!, { start: 0.5, end: 6.4 })).toEqual({ from: 5.3, to: 5.6, exact: true });
    expect(spanTimes(TEXT, null, spans[0]!, { start: 0.5, end: 6.4 })).toEqual({ from: 0.5, to: 6.4, exact: false });
  });
});

describe.each(backends)('redacted views and exports ($name)', (backend: TestBackend) => {
  it.skipIf(!backend.available)('transcripts and snippets show the label unless revealed (audited); a redacted export has the tone exactly over the span in the composite and the participant file, and the label in its text', { timeout: 120_000 }, async () => {
    const db = await backend.open();
    const dir = path.join(root, backend.name);
    mkdirSync(dir, { recursive: true });
    const storage = new LocalArtifactStorage(path.join(dir, 'artifacts'));
    const server = await startAuditServer({ db, logger: createLogger({ level: 'silent' }), failedAuthPerMinute: 0, storage });
    try {
      // Media on the session timeline: a 300 Hz stand-in for speech, 8 s; a composite (H.264 + AAC stereo) and the participant's 16 kHz WAV; and a stream-copied participant file.
      const wav = path.join(dir, 'p.wav');
      ffmpeg('-f', 'lavfi', '-i', 'sine=frequency=300:sample_rate=16000:duration=8', '-af', 'volume=0.5', '-c:a', 'pcm_s16le', wav);
      const mp4 = path.join(dir, 'composite.mp4');
      ffmpeg('-f', 'lavfi', '-i', 'testsrc=size=160x120:rate=10:duration=8', '-f', 'lavfi', '-i', 'sine=frequency=300:sample_rate=48000:duration=8', '-ac', '2', '-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p', '-c:a', 'aac', '-shortest', mp4);
      const mkv = path.join(dir, 'p.mkv');
      ffmpeg('-i', wav, '-c:a', 'libopus', mkv);
      await db.insertInto('recording_sessions').values({ id: 'red-1', room_id: 'desk', started_at: '2026-03-01T10:00:00Z', ended_at: '2026-03-01T10:00:08Z', status: 'done', transcript_status: 'done' }).execute();
      const stored = path.join(dir, 'transcript.txt');
      writeFileSync(stored, `[00:00:00.500] Pat: ${TEXT}\n`);
      for (const [file, kind, participant] of [[mp4, 'composite', null], [wav, 'participant-wav', 'p'], [mkv, 'participant-av', 'p'], [stored, 'transcript-txt', null]] as const) {
        const stored = await storage.put(`sessions/desk/red-1/${path.basename(file)}`, file);
        await db.insertInto('artifacts').values({ session_id: 'red-1', key: stored.key, kind, participant_id: participant, content_type: 'application/octet-stream', bytes: stored.bytes, sha256: stored.sha256, storage: 'local', duration_seconds: 8 }).execute();
      }
      await db.insertInto('transcript_segments').values({ session_id: 'red-1', seq: 0, participant_id: 'p', speaker: 'Pat', start_seconds: 0.5, end_seconds: 6.4, text: TEXT, language: 'en', words: JSON.stringify(WORDS) }).execute();

      const officer = `Bearer ${(await createUserWithKey(db, { name: 'Officer', role: 'compliance_officer' })).apiKey}`;
      const auditor = `Bearer ${(await createUserWithKey(db, { name: 'Auditor', role: 'auditor' })).apiKey}`;
      const get = async (auth: string, p: string, body?: unknown) => {
        const res = await fetch(`${server.url}/api/v1${p}`, { method: body ? 'POST' : 'GET', headers: { authorization: auth, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}) });
        return { status: res.status, json: (await res.json()) };
      };
      // An officer marks "call" as well.
      const marked = await get(officer, '/sessions/red-1/redactions', { seq: 0, start: TEXT.indexOf('call'), end: TEXT.indexOf('call') + 4, label: 'OFF CHANNEL' });
      expect(marked.status).toBe(201);
      expect(marked.json).toMatchObject({ from: 5.3, to: 5.6, exact: true });
      expect((await get(officer, '/sessions/red-1/redactions', { seq: 0, start: 40, end: 999, label: 'X' })).json.error.code).toBe('BAD_REQUEST');

      const plain = (await get(officer, '/sessions/red-1/transcript')).json;
      expect(plain.segments[0].text).toBe('my card is [CARD NUMBER] thanks, [OFF CHANNEL] me later');
      expect(plain.redacted).toBe(true);
      const snippet = (await get(officer, '/search?q=card')).json;
      expect(snippet.hits[0].snippet).toContain('[CARD NUMBER]');
      expect(snippet.hits[0].snippet).not.toContain('4111');
      expect(snippet.redactedHits).toBe(1);
      const revealed = (await get(officer, '/sessions/red-1/transcript?reveal=true')).json;
      expect(revealed.segments[0].text).toBe(TEXT);
      expect((await get(officer, '/search?q=card&reveal=true')).json.hits[0].snippet).toContain('4111');
      // Auditors may not reveal (nor read transcripts at all).
      expect((await get(auditor, '/sessions/red-1/transcript?reveal=true')).status).toBe(403);
      const actions = (await db.selectFrom('audit_log').select('action').orderBy('seq').execute()).map((r) => r.action);
      expect(actions).toEqual(expect.arrayContaining(['redaction.mark', 'transcript.view', 'search', 'transcript.reveal', 'search.reveal']));
      expect(actions.filter((a) => a === 'transcript.reveal')).toHaveLength(1);

      // The redacted export.
      const out = path.join(dir, 'export.tar');
      const res = await exportArchive({ db, storage, auditLog: new AuditLog(db), selection: { sessionIds: ['red-1'], redacted: true }, out, actor: { type: 'user', id: 'officer' } });
      expect((await verifyArchive(out)).ok).toBe(true);
      const x = path.join(dir, 'x');
      mkdirSync(x);
      execFileSync('tar', ['-xf', out, '-C', x]);
      const manifest = JSON.parse(readFileSync(path.join(x, 'manifest.json'), 'utf8')) as Manifest;
      expect(manifest.redaction!.spans.map((s) => [s.label, s.from, s.to, s.exact])).toEqual([['CARD NUMBER', 2.0, 4.5, true], ['OFF CHANNEL', 5.3, 5.6, true]]);
      // The stream-copied participant file cannot be toned exactly: withheld, and said so.
      // So is the stored transcript file (its text is in clear; the redacted one is under transcripts/).
      expect(manifest.redaction!.withheld.map((w) => w.key).sort()).toEqual(['sessions/desk/red-1/p.mkv', 'sessions/desk/red-1/transcript.txt']);
      expect(manifest.files.map((f) => f.path).filter((f) => f.startsWith('media/')).sort()).toEqual(['media/red-1/composite.mp4', 'media/red-1/p.wav']);

      // The tone sits exactly over the spans' words: measured on the decoded PCM (Goertzel, 5 ms blocks).
      for (const f of ['composite.mp4', 'p.wav']) {
        const file = path.join(x, 'media/red-1', f);
        const tone = toneSpan(file);
        expect(tone.from, `${f} tone starts`).toBeCloseTo(2.0, 1);
        expect(Math.abs(tone.from - 2.0), `${f} tone start ${tone.from}`).toBeLessThanOrEqual(0.01);
        expect(Math.abs(tone.to - 5.6), `${f} tone end ${tone.to}`).toBeLessThanOrEqual(0.01);
        // Two spans: card number 2.0-4.5 s and the marked word 5.3-5.6 s; speech (300 Hz) in between.
        expect(tone.blocks * 0.005, `${f} toned seconds`).toBeCloseTo(2.5 + 0.3, 1);
        expect(ffprobe(file).format.duration).toMatch(/^8\.|^7\.9/);
      }
      expect(toneSpan(wav).blocks, 'the original is untouched').toBe(0);
      const json = readFileSync(path.join(x, 'transcripts/red-1.json'), 'utf8');
      const txt = readFileSync(path.join(x, 'transcripts/red-1.txt'), 'utf8');
      expect(txt).toContain('my card is [CARD NUMBER] thanks, [OFF CHANNEL] me later');
      for (const t of [json, txt, readFileSync(path.join(x, 'transcripts/red-1.vtt'), 'utf8')]) expect(t).not.toMatch(/4111|1111|call/);
      expect(JSON.parse(json).segments[0].words.map((w: { text: string }) => w.text)).toEqual(['my', 'card', 'is', '[CARD NUMBER]', 'thanks,', '[OFF CHANNEL]', 'me', 'later']);
      const entry = await db.selectFrom('audit_log').select('details').where('action', '=', 'export.create').executeTakeFirstOrThrow();
      expect(typeof entry.details === 'string' ? JSON.parse(entry.details) : entry.details).toMatchObject({ redacted: true, redactedSpans: 2, withheld: 2, manifestSha256: res.manifestSha256 });
    } finally {
      await server.close();
      await db.destroy();
    }
  });
});
