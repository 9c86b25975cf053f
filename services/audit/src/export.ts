import { createHash, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { sql } from 'kysely';
import type { Db } from '../../../db/database.ts';
import { VerbatimError } from '../../lib/errors.ts';
import { FluentFfmpegRunner, type FfmpegRunner } from '../../lib/media/ffmpeg-runner.ts';
import type { ArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { transcriptFiles, transcriptFromRows, type SpeakerSegment } from '../../lib/transcript/transcript-files.ts';
import { redactableMedia, redactMedia, redactText, sessionRedactions, type TimedSpan } from './supervision/redaction.ts';
import type { AuditEntryInput, AuditHead, AuditLog, AuditRecord } from './audit-log.ts';
import { holdCovers } from './retention.ts';

/**
 * E-discovery export: one ustar .tar holding, per selected session,
 *
 *   media/<session>/<artifact file>     every stored artifact, streamed from storage
 *   transcripts/<session>.json|.vtt|.txt from transcript_segments
 *   consent/<session>.json              the consent events of the session (and of its room while it ran)
 *   audit.json                          the audit entries targeting the sessions, with the chain head
 *   manifest.json                       last: every other file's path, bytes and SHA-256
 *
 * Every export is audited ('export.create', with the manifest's SHA-256), so an archive's
 * manifest can be tied back to the hash-chained trail; verifyArchive() recomputes every
 * file's hash against the manifest.
 */

/**
 * A legal hold's sessions, named sessions, or every session whose transcript matches a query (websearch syntax).
 * redacted: transcripts show labels for redacted spans and the media a tone over them (supervision/redaction.ts).
 */
export type ExportSelection = ({ holdId: string } | { sessionIds: string[] } | { query: string }) & { redacted?: boolean };

export interface ExportProgress {
  /** The file just written. */
  path: string;
  filesDone: number;
  filesTotal: number;
  bytesDone: number;
  bytesTotal: number;
}

export interface ExportOptions {
  db: Db;
  storage: ArtifactStorage;
  auditLog: AuditLog;
  selection: ExportSelection;
  out: string;
  actor: NonNullable<AuditEntryInput['actor']>;
  onProgress?: (p: ExportProgress) => void;
  now?: () => Date;
  /** The export's id (manifest, audit target); a fresh UUID when not given. */
  exportId?: string;
  /** Renders redacted media (selection.redacted); default ffmpeg through fluent-ffmpeg. */
  ffmpeg?: FfmpegRunner;
}

export interface ManifestFile {
  path: string;
  bytes: number;
  sha256: string;
}

export interface Manifest {
  version: 1;
  exportId: string;
  createdAt: string;
  selection: ExportSelection;
  sessionIds: string[];
  files: ManifestFile[];
  auditHead: AuditHead | null;
  /** A redacted export: every span replaced (text label, audio tone), and the media left out because it could not be redacted exactly. */
  redaction?: { spans: (Omit<TimedSpan, 'start' | 'end' | 'source'> & { session: string; source: string })[]; withheld: { session: string; key: string; reason: string }[] };
}

export interface ExportResult {
  path: string;
  exportId: string;
  sessionIds: string[];
  files: number;
  bytes: number;
  manifestSha256: string;
  audit: { seq: number; hash: string };
}

// ---------------------------------------------------------------- ustar

const BLOCK = 512;
const OCTAL_SIZE_MAX = 8 ** 11 - 1;

function writeString(buf: Buffer, offset: number, length: number, value: string): void {
  const bytes = Buffer.from(value, 'utf8');
  if (bytes.length > length) throw new VerbatimError('INTERNAL', `tar header field too long: "${value}"`);
  bytes.copy(buf, offset);
}

function writeOctal(buf: Buffer, offset: number, length: number, value: number): void {
  writeString(buf, offset, length, `${value.toString(8).padStart(length - 1, '0')}\0`);
}

/** Splits a path into ustar prefix (≤155 bytes) and name (≤100 bytes) at a slash. */
function splitName(p: string): { prefix: string; name: string } {
  if (Buffer.byteLength(p) <= 100) return { prefix: '', name: p };
  for (let i = p.lastIndexOf('/'); i > 0; i = p.lastIndexOf('/', i - 1)) {
    const prefix = p.slice(0, i);
    const name = p.slice(i + 1);
    if (Buffer.byteLength(prefix) <= 155 && Buffer.byteLength(name) <= 100 && name.length > 0) return { prefix, name };
  }
  throw new VerbatimError('BAD_REQUEST', `archive path too long for ustar: "${p}"`, { hint: 'Paths are limited to 255 bytes (155 prefix + 100 name).' });
}

export function tarHeader(p: string, size: number, mtime: Date): Buffer {
  const h = Buffer.alloc(BLOCK);
  const { prefix, name } = splitName(p);
  writeString(h, 0, 100, name);
  writeOctal(h, 100, 8, 0o644);
  writeOctal(h, 108, 8, 0);
  writeOctal(h, 116, 8, 0);
  if (size <= OCTAL_SIZE_MAX) writeOctal(h, 124, 12, size);
  else {
    // GNU base-256 for sizes ≥ 8 GiB.
    let v = BigInt(size);
    for (let i = 135; i > 124; i--) {
      h[i] = Number(v & 0xffn);
      v >>= 8n;
    }
    h[124] = 0x80;
  }
  writeOctal(h, 136, 12, Math.floor(mtime.getTime() / 1000));
  h.fill(0x20, 148, 156);
  h[156] = 0x30; // '0' regular file
  writeString(h, 257, 6, 'ustar\0');
  writeString(h, 263, 2, '00');
  writeString(h, 265, 32, 'verbatim');
  writeString(h, 297, 32, 'verbatim');
  writeString(h, 345, 155, prefix);
  let sum = 0;
  for (const b of h) sum += b;
  writeString(h, 148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  return h;
}

function padding(size: number): Buffer {
  const rem = size % BLOCK;
  return Buffer.alloc(rem === 0 ? 0 : BLOCK - rem);
}

// ---------------------------------------------------------------- selection

/**
 * Refuses a selection that names a legal hold or sessions that do not exist (404), so a request
 * for one is answered at once instead of accepted and failed later.
 */
export async function checkExportSelection(db: Db, selection: ExportSelection): Promise<void> {
  if ('sessionIds' in selection) await knownSessions(db, selection.sessionIds);
  if ('holdId' in selection) await knownHold(db, selection.holdId);
}

async function knownSessions(db: Db, sessionIds: string[]): Promise<string[]> {
  const ids = [...new Set(sessionIds)];
  if (ids.length === 0) throw new VerbatimError('BAD_REQUEST', 'export: no sessions selected', { hint: 'Name at least one session, or a legal hold.' });
  const found = new Set((await db.selectFrom('recording_sessions').select('id').where('id', 'in', ids).execute()).map((r) => r.id));
  const missing = ids.filter((id) => !found.has(id));
  if (missing.length) throw new VerbatimError('SESSION_NOT_FOUND', `export: no session ${missing.slice(0, 20).join(', ')}${missing.length > 20 ? ` and ${missing.length - 20} more` : ''}`, { hint: 'Check the session ids.', details: { missing: missing.slice(0, 20) } });
  return ids.sort();
}

async function knownHold(db: Db, holdId: string) {
  const hold = await db.selectFrom('legal_holds').selectAll().where('id', '=', holdId).executeTakeFirst();
  if (!hold) throw new VerbatimError('NOT_FOUND', `export: no legal hold ${holdId}`, { hint: 'List the legal holds to find its id.', details: { hold: holdId } });
  return hold;
}

async function resolveSessions(db: Db, selection: ExportSelection): Promise<string[]> {
  if ('sessionIds' in selection) return knownSessions(db, selection.sessionIds);
  if ('query' in selection) {
    // The query is resolved once, here: the manifest records it and the session list it matched.
    const rows = await db
      .selectFrom('transcript_segments')
      .select('session_id')
      .distinct()
      .where(sql<boolean>`tsv @@ websearch_to_tsquery('english', ${selection.query})`)
      .execute();
    const ids = rows.map((r) => r.session_id).sort();
    if (ids.length === 0) throw new VerbatimError('BAD_REQUEST', `export: no transcript matches "${selection.query}"`, { hint: 'Try the query in search first; an export needs at least one matching session.' });
    return ids;
  }
  const hold = await knownHold(db, selection.holdId);
  const frozen = Array.isArray(hold.frozen_session_ids) ? hold.frozen_session_ids.map(String) : (JSON.parse(String(hold.frozen_session_ids ?? '[]')) as string[]);
  const rh = { id: hold.id, scopeType: hold.scope_type, scopeValue: hold.scope_value, frozenSessionIds: frozen, releasedAt: hold.released_at };
  const sessions = await db.selectFrom('recording_sessions').select(['id', 'room_id']).execute();
  const participants = new Map<string, string[]>();
  if (rh.scopeType === 'participant') {
    const add = (rows: { session_id: string; participant_id: string }[]) => {
      for (const r of rows) participants.set(r.session_id, [...(participants.get(r.session_id) ?? []), r.participant_id]);
    };
    const pid = rh.scopeValue;
    add(await db.selectFrom('session_participants').select(['session_id', 'participant_id']).where('participant_id', '=', pid).execute());
    add(await db.selectFrom('tracks').select(['session_id', 'participant_id']).where('participant_id', '=', pid).execute());
    add(await db.selectFrom('transcript_segments').select(['session_id', 'participant_id']).distinct().where('participant_id', '=', pid).execute());
  }
  return sessions
    .filter((s) => holdCovers(rh, { id: s.id, roomId: s.room_id, participants: participants.get(s.id) ?? [] }))
    .map((s) => s.id)
    .sort();
}

// ---------------------------------------------------------------- export

interface Entry {
  path: string;
  bytes: number;
  /** In-memory content, the artifact to stream (with its recorded hash), or a local file (a redacted copy). */
  data?: Buffer;
  artifact?: { key: string; sha256: string };
  file?: string;
}

const SAFE_SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._@-]*$/;

function safeSegment(s: string, what: string): string {
  if (!SAFE_SEGMENT.test(s)) throw new VerbatimError('BAD_REQUEST', `export: ${what} "${s}" cannot be an archive path segment`);
  return s;
}

function json(v: unknown): Buffer {
  return Buffer.from(`${JSON.stringify(v, null, 2)}\n`, 'utf8');
}

async function allAuditEntries(log: AuditLog): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  for (let after = 0; ; ) {
    const page = await log.entries({ afterSeq: after, limit: 1000 });
    out.push(...page);
    if (page.length < 1000) return out;
    after = page.at(-1)!.seq;
  }
}

interface Redacting {
  storage: ArtifactStorage;
  ffmpeg: FfmpegRunner;
  workDir: string;
  spans: NonNullable<Manifest['redaction']>['spans'];
  withheld: NonNullable<Manifest['redaction']>['withheld'];
}

async function planEntries(db: Db, log: AuditLog, sessionIds: string[], now: Date, redacting?: Redacting): Promise<{ entries: Entry[]; auditHead: AuditHead | null }> {
  const entries: Entry[] = [];
  if (sessionIds.length === 0) return { entries, auditHead: await log.head() };
  const sessions = await db.selectFrom('recording_sessions').select(['id', 'room_id', 'started_at', 'ended_at']).where('id', 'in', sessionIds).orderBy('id').execute();
  const artifacts = await db.selectFrom('artifacts').selectAll().where('session_id', 'in', sessionIds).orderBy('session_id').orderBy('key').execute();
  const redactions = new Map<string, Awaited<ReturnType<typeof sessionRedactions>>>();
  if (redacting) for (const s of sessions) redactions.set(s.id, await sessionRedactions(db, s.id));
  for (const s of sessions) {
    const sid = safeSegment(s.id, 'session id');
    const used = new Set<string>();
    for (const a of artifacts.filter((x) => x.session_id === s.id)) {
      // The key's part after the session id (else its last segment); keys are validated storage paths.
      const parts = a.key.split('/');
      const at = parts.lastIndexOf(s.id);
      let rel = at >= 0 && at < parts.length - 1 ? parts.slice(at + 1).join('/') : parts.at(-1)!;
      if (used.has(rel)) rel = a.key;
      used.add(rel);
      const entry: Entry = { path: `media/${sid}/${rel}`, bytes: Number(a.bytes), artifact: { key: a.key, sha256: a.sha256 } };
      if (!redacting) {
        entries.push(entry);
        continue;
      }
      // The composite carries everyone; a participant's files only that participant.
      const timed = redactions.get(s.id)!.timed.filter((t) => a.participant_id === null || t.participant === a.participant_id);
      if (timed.length === 0) entries.push(entry);
      else if (!redactableMedia(a.kind, a.key)) {
        const reason = a.kind.startsWith('transcript-')
          ? 'the stored transcript file holds the redacted spans in clear; the redacted transcript is under transcripts/'
          : `a ${a.kind} file is not on the session timeline, so its redacted spans cannot be toned exactly`;
        redacting.withheld.push({ session: s.id, key: a.key, reason });
      } else {
        const file = path.join(redacting.workDir, `${redacting.spans.length}-${entries.length}${path.extname(a.key)}`);
        await redactMedia(redacting.ffmpeg, await redacting.storage.locate(a.key), file, timed);
        await checkSource(redacting.storage, a.key, a.sha256);
        entries.push({ path: entry.path, bytes: (await stat(file)).size, file });
      }
    }
  }
  for (const s of sessions) {
    const rows = await db.selectFrom('transcript_segments').selectAll().where('session_id', '=', s.id).orderBy('seq').execute();
    const parsed = transcriptFromRows(rows, 'und');
    const language = parsed.language;
    let segments = parsed.segments;
    if (redacting) {
      const r = redactions.get(s.id)!;
      segments = segments.map((g, i) => redactSegment(g, r.segments[i]!.spans, r.timed.filter((t) => t.seq === r.segments[i]!.seq)));
      redacting.spans.push(...r.timed.map(({ start: _s, end: _e, ...t }) => ({ ...t, session: s.id })));
    }
    for (const f of transcriptFiles(s.id, language, segments)) {
      const data = Buffer.from(f.body, 'utf8');
      entries.push({ path: `transcripts/${s.id}.${f.ext}`, bytes: data.length, data });
    }
  }
  for (const s of sessions) {
    // The session's own events, and the room's events not tied to a session while it ran.
    const end = s.ended_at ?? now;
    const rows = await db
      .selectFrom('consent_events')
      .selectAll()
      .where((eb) =>
        eb.or([
          eb('session_id', '=', s.id),
          eb.and([eb('session_id', 'is', null), eb('room_id', '=', s.room_id), eb('created_at', '>=', s.started_at), eb('created_at', '<=', end)]),
        ]),
      )
      .orderBy('created_at')
      .orderBy('id')
      .execute();
    const data = json({ version: 1, session: s.id, room: s.room_id, events: rows.map((r) => ({ ...r, id: Number(r.id), created_at: new Date(r.created_at).toISOString() })) });
    entries.push({ path: `consent/${s.id}.json`, bytes: data.length, data });
  }
  const wanted = new Set(sessionIds);
  const all = await allAuditEntries(log);
  const auditHead = all.length ? { seq: all.at(-1)!.seq, hash: all.at(-1)!.hash } : null;
  const extract = all.filter((e) => e.target_type === 'session' && e.target_id !== null && wanted.has(e.target_id));
  const data = json({ version: 1, head: auditHead, sessionIds, entries: extract });
  entries.push({ path: 'audit.json', bytes: data.length, data });
  return { entries, auditHead };
}

/** A segment as a redacted export shows it: labels in the text, and the redacted words replaced by one label word each. */
function redactSegment(g: SpeakerSegment, spans: Parameters<typeof redactText>[1], timed: readonly TimedSpan[]): SpeakerSegment {
  if (spans.length === 0) return g;
  const out: SpeakerSegment = { ...g, text: redactText(g.text, spans) };
  if (g.words) {
    const keep = g.words.filter((w) => !timed.some((t) => w.start < t.to && t.from < w.end));
    out.words = [...keep, ...timed.map((t) => ({ text: `[${t.label}]`, start: t.from, end: t.to }))].sort((a, b) => a.start - b.start);
  }
  return out;
}

/** The stored original must still be what was registered before a redacted copy is made of it. */
async function checkSource(storage: ArtifactStorage, key: string, sha256: string): Promise<void> {
  const h = createHash('sha256');
  for await (const chunk of await storage.getStream(key)) h.update(chunk as Buffer);
  if (h.digest('hex') !== sha256) {
    throw new VerbatimError('INTERNAL', `export: artifact ${key} in storage does not match its database record (SHA-256 differs)`, {
      hint: 'The stored artifact was altered or damaged; preserve it as evidence and restore it from backup before exporting.',
    });
  }
}

async function writeAll(fh: FileHandle, buf: Buffer): Promise<void> {
  let off = 0;
  while (off < buf.length) off += (await fh.write(buf, off, buf.length - off)).bytesWritten;
}

export async function exportArchive(opts: ExportOptions): Promise<ExportResult> {
  const now = opts.now?.() ?? new Date();
  const sessionIds = await resolveSessions(opts.db, opts.selection);
  const workDir = opts.selection.redacted ? await mkdtemp(`${opts.out}.redact-`) : undefined;
  const redacting: Redacting | undefined = workDir ? { storage: opts.storage, ffmpeg: opts.ffmpeg ?? new FluentFfmpegRunner(), workDir, spans: [], withheld: [] } : undefined;
  try {
    return await writeArchive(opts, now, sessionIds, redacting);
  } finally {
    if (workDir) await rm(workDir, { recursive: true, force: true });
  }
}

async function writeArchive(opts: ExportOptions, now: Date, sessionIds: string[], redacting: Redacting | undefined): Promise<ExportResult> {
  const { entries, auditHead } = await planEntries(opts.db, opts.auditLog, sessionIds, now, redacting);
  const bytesTotal = entries.reduce((n, e) => n + e.bytes, 0);
  const exportId = opts.exportId ?? randomUUID();
  const partial = `${opts.out}.${process.pid}.partial`;
  const fh = await open(partial, 'wx');
  const files: ManifestFile[] = [];
  let bytesDone = 0;
  try {
    for (const e of entries) {
      await writeAll(fh, tarHeader(e.path, e.bytes, now));
      const hash = createHash('sha256');
      let written = 0;
      if (e.data) {
        hash.update(e.data);
        await writeAll(fh, e.data);
        written = e.data.length;
      } else {
        const stream: Readable = e.file ? createReadStream(e.file) : await opts.storage.getStream(e.artifact!.key);
        for await (const chunk of stream) {
          const b = chunk as Buffer;
          written += b.length;
          if (written > e.bytes) {
            stream.destroy();
            break;
          }
          hash.update(b);
          await writeAll(fh, b);
        }
      }
      const sha256 = hash.digest('hex');
      if (written !== e.bytes || (e.artifact && sha256 !== e.artifact.sha256)) {
        throw new VerbatimError('INTERNAL', `export: artifact ${e.artifact?.key ?? e.path} in storage does not match its database record (${written === e.bytes ? 'SHA-256 differs' : `${written} bytes read, ${e.bytes} recorded`})`, {
          hint: 'The stored artifact was altered or damaged; preserve it as evidence and restore it from backup before exporting.',
        });
      }
      await writeAll(fh, padding(e.bytes));
      files.push({ path: e.path, bytes: e.bytes, sha256 });
      bytesDone += e.bytes;
      opts.onProgress?.({ path: e.path, filesDone: files.length, filesTotal: entries.length + 1, bytesDone, bytesTotal });
    }
    const manifest: Manifest = { version: 1, exportId, createdAt: now.toISOString(), selection: opts.selection, sessionIds, files, auditHead, ...(redacting ? { redaction: { spans: redacting.spans, withheld: redacting.withheld } } : {}) };
    const mbuf = json(manifest);
    const manifestSha256 = createHash('sha256').update(mbuf).digest('hex');
    await writeAll(fh, tarHeader('manifest.json', mbuf.length, now));
    await writeAll(fh, mbuf);
    await writeAll(fh, padding(mbuf.length));
    await writeAll(fh, Buffer.alloc(BLOCK * 2));
    await fh.sync();
    await fh.close();
    opts.onProgress?.({ path: 'manifest.json', filesDone: entries.length + 1, filesTotal: entries.length + 1, bytesDone, bytesTotal });
    const audit = await opts.auditLog.append({
      action: 'export.create',
      actor: opts.actor,
      target: { type: 'export', id: exportId },
      details: { fileCount: files.length + 1, manifestSha256, selection: opts.selection, sessionIds, bytes: bytesTotal, archive: path.basename(opts.out), ...(redacting ? { redacted: true, redactedSpans: redacting.spans.length, withheld: redacting.withheld.length } : {}) },
    });
    await rename(partial, opts.out);
    return { path: opts.out, exportId, sessionIds, files: files.length + 1, bytes: bytesTotal, manifestSha256, audit: { seq: audit.seq, hash: audit.hash } };
  } catch (err) {
    await fh.close().catch(() => {});
    await rm(partial, { force: true });
    throw err;
  }
}

// ---------------------------------------------------------------- verify

export type ProblemCode = 'SHA256_MISMATCH' | 'MISSING' | 'UNLISTED' | 'MANIFEST_INVALID' | 'TRUNCATED';

export interface ArchiveProblem {
  path: string;
  code: ProblemCode;
  message: string;
}

export interface VerifyArchiveResult {
  ok: boolean;
  problems: ArchiveProblem[];
  files: number;
  /** SHA-256 of manifest.json as stored: compare with the 'export.create' audit entry. */
  manifestSha256: string | null;
  manifest: Manifest | null;
}

function readString(h: Buffer, offset: number, length: number): string {
  const raw = h.subarray(offset, offset + length);
  const end = raw.indexOf(0);
  return raw.subarray(0, end < 0 ? length : end).toString('utf8');
}

function readSize(h: Buffer): number | null {
  if (h[124]! & 0x80) {
    let v = 0n;
    for (let i = 125; i < 136; i++) v = (v << 8n) | BigInt(h[i]!);
    return Number(v);
  }
  const s = readString(h, 124, 12).trim();
  return /^[0-7]+$/.test(s) ? parseInt(s, 8) : null;
}

function checksumOk(h: Buffer): boolean {
  const stored = readString(h, 148, 8).trim();
  if (!/^[0-7]+$/.test(stored)) return false;
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
  return parseInt(stored, 8) === sum;
}

function parseManifest(buf: Buffer): Manifest | null {
  try {
    const m = JSON.parse(buf.toString('utf8')) as Manifest;
    if (m === null || typeof m !== 'object' || m.version !== 1 || !Array.isArray(m.files)) return null;
    for (const f of m.files as unknown[]) {
      const x = f as ManifestFile;
      if (x === null || typeof x !== 'object' || typeof x.path !== 'string' || !Number.isSafeInteger(x.bytes) || typeof x.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(x.sha256)) return null;
    }
    return m;
  } catch {
    return null;
  }
}

/** Reads the tar sequentially and holds every file to manifest.json (bytes and SHA-256). */
export async function verifyArchive(archive: string): Promise<VerifyArchiveResult> {
  const fh = await open(archive, 'r').catch((err: NodeJS.ErrnoException) => {
    throw new VerbatimError('BAD_REQUEST', `cannot read archive ${archive}: ${err.code ?? err.message}`, { hint: 'Check the archive path.' });
  });
  const problems: ArchiveProblem[] = [];
  const seen = new Map<string, { bytes: number; sha256: string }>();
  let manifestBuf: Buffer | null = null;
  let ended = false;
  try {
    const total = (await fh.stat()).size;
    const header = Buffer.alloc(BLOCK);
    const chunk = Buffer.alloc(1 << 20);
    let pos = 0;
    while (pos + BLOCK <= total) {
      await fh.read(header, 0, BLOCK, pos);
      pos += BLOCK;
      if (header.every((b) => b === 0)) {
        ended = true;
        break;
      }
      const name = readString(header, 0, 100);
      const prefix = readString(header, 345, 155);
      const p = prefix ? `${prefix}/${name}` : name;
      const size = readSize(header);
      if (!checksumOk(header) || size === null) {
        problems.push({ path: p || `(header at byte ${pos - BLOCK})`, code: 'TRUNCATED', message: `damaged tar header at byte ${pos - BLOCK}; the rest of the archive cannot be read` });
        break;
      }
      const type = String.fromCharCode(header[156]!);
      const regular = type === '0' || type === '\0';
      if (pos + size > total) {
        problems.push({ path: p, code: 'TRUNCATED', message: `${p} is cut short: ${total - pos} of ${size} bytes present` });
        pos = total;
        break;
      }
      if (regular) {
        const hash = createHash('sha256');
        const isManifest = p === 'manifest.json';
        const parts: Buffer[] = [];
        for (let left = size, off = pos; left > 0; ) {
          const n = Math.min(left, chunk.length);
          const { bytesRead } = await fh.read(chunk, 0, n, off);
          if (bytesRead <= 0) break;
          hash.update(chunk.subarray(0, bytesRead));
          if (isManifest) parts.push(Buffer.from(chunk.subarray(0, bytesRead)));
          left -= bytesRead;
          off += bytesRead;
        }
        if (isManifest) {
          if (manifestBuf) problems.push({ path: p, code: 'MANIFEST_INVALID', message: 'the archive holds more than one manifest.json' });
          manifestBuf = Buffer.concat(parts);
        } else if (seen.has(p)) {
          problems.push({ path: p, code: 'UNLISTED', message: `${p} appears more than once in the archive` });
        } else {
          seen.set(p, { bytes: size, sha256: hash.digest('hex') });
        }
      }
      pos += size + padding(size).length;
    }
    if (!ended && !problems.some((x) => x.code === 'TRUNCATED')) {
      problems.push({ path: '(end of archive)', code: 'TRUNCATED', message: 'the archive ends without its end-of-archive marker: it was cut short' });
    }
  } finally {
    await fh.close();
  }
  const manifestSha256 = manifestBuf ? createHash('sha256').update(manifestBuf).digest('hex') : null;
  const manifest = manifestBuf ? parseManifest(manifestBuf) : null;
  if (!manifest) {
    problems.push({ path: 'manifest.json', code: 'MANIFEST_INVALID', message: manifestBuf ? 'manifest.json is not a valid version 1 manifest' : 'the archive holds no manifest.json' });
    return { ok: false, problems, files: seen.size, manifestSha256, manifest: null };
  }
  const truncated = new Set(problems.filter((x) => x.code === 'TRUNCATED').map((x) => x.path));
  const listed = new Set<string>();
  for (const f of manifest.files) {
    listed.add(f.path);
    const got = seen.get(f.path);
    if (!got) {
      if (!truncated.has(f.path)) problems.push({ path: f.path, code: 'MISSING', message: `${f.path} is listed in the manifest but not in the archive` });
    } else if (got.sha256 !== f.sha256 || got.bytes !== f.bytes) {
      problems.push({ path: f.path, code: 'SHA256_MISMATCH', message: `${f.path}: ${got.bytes} bytes with SHA-256 ${got.sha256}; the manifest says ${f.bytes} bytes, ${f.sha256}` });
    }
  }
  for (const p of seen.keys()) {
    if (!listed.has(p)) problems.push({ path: p, code: 'UNLISTED', message: `${p} is in the archive but not in the manifest` });
  }
  return { ok: problems.length === 0, problems, files: seen.size + 1, manifestSha256, manifest };
}
