import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import { Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Db } from '../../../db/database.ts';
import { RECORDER_UPLOAD_QUEUE, SEGMENT_UPLOAD_JOB, SegmentUploadPayloadSchema, segmentUploadJobId, type SegmentUploadPayload, type SegmentUploadResult } from '../../lib/contracts/jobs.ts';
import type { SegmentEntry, SessionManifest } from '../../lib/contracts/recording.ts';
import { VerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { checkManifest, writeSessionManifest } from '../../lib/recording/manifest-file.ts';
import { JOURNAL_FILE, MANIFEST_FILE, sessionDirOf } from '../../lib/recording/session-dir.ts';
import { redisConnection } from '../../lib/redis.ts';
import { rawManifestKey, rawSegmentKey } from '../../lib/storage/artifact-keys.ts';
import { sha256File, type ArtifactStorage, type PutOptions } from '../../lib/storage/artifact-storage.ts';
import { parseHeader } from '../../lib/recording/vrtp-format.ts';
import type { RecordingSession } from './recording-session.ts';

/** A storage with S3 Object Lock (S3ArtifactStorage). */
interface RetentionStorage {
  readonly objectLockEnabled: boolean;
  applyRetention(key: string): Promise<Date | undefined>;
}

/** What the recorder tells the console and GET /v1/stats about raw uploads. */
export interface UploadBacklog {
  /** Sealed segments on this recorder's disk waiting for their upload (queued or retrying). */
  segments: number;
  bytes: number;
  uploaded: number;
  /** Upload attempts that failed (storage unreachable, read-back mismatch); each is retried. */
  failedAttempts: number;
  lastError: string | null;
  /** When the oldest segment still waiting was queued (ISO), null when none waits. */
  oldestQueuedAt: string | null;
}

export interface SegmentUploaderDeps {
  storage: ArtifactStorage;
  db: Db;
  logger: Logger;
  registry: Registry;
  redisUrl: string;
  queuePrefix?: string | undefined;
  recordingsDir: string;
  /** RECORDER_UPLOAD_RETRY_MS: first retry delay; doubles per attempt up to 60 times it. */
  retryMs: number;
  /** The session if this recorder has it open (its journal records the upload). */
  openSession(session: string): RecordingSession | undefined;
}

const MAX_BACKOFF_FACTOR = 60;
/** Uploads retry until storage takes them: recording goes on locally meanwhile (RECORDER_MIN_FREE_MB bounds it). */
const ATTEMPTS = 1_000_000;

/**
 * Copies each sealed raw segment to artifact storage (issue 15 item 4): a `segment.upload` job per
 * segment on this host's own queue (only this host has the file), which uploads it under its raw key,
 * reads it back and checks its SHA-256 against the manifest's, records the copy in the session's
 * journal (open) or manifest and track_segments (sealed), and only then removes the local file. A
 * storage outage leaves the segments on disk and the jobs retrying; the backlog is a metric and part
 * of GET /v1/stats. On start, every sealed segment on disk without a recorded copy is queued again
 * (after a crash, or a Redis that lost its jobs).
 */
export class SegmentUploader {
  private readonly queue: Queue;
  private worker: Worker | undefined;
  /** Job id → bytes of the segments this process knows to be waiting. */
  /** Job id → bytes and when it was queued (ms); a Map keeps queueing order, so the first is the oldest. */
  private readonly pending = new Map<string, { bytes: number; at: number }>();
  private pendingBytes = 0;
  private uploaded = 0;
  private failedAttempts = 0;
  private lastError: string | null = null;
  private readonly metrics;
  private closed = false;
  /** The manifest publication in progress per session (publishManifest). */
  private readonly publishing = new Map<string, Promise<void>>();

  constructor(private readonly deps: SegmentUploaderDeps) {
    const connection = redisConnection(deps.redisUrl);
    this.queue = new Queue(uploadQueueName(deps.recordingsDir), { connection, ...(deps.queuePrefix ? { prefix: deps.queuePrefix } : {}) });
    const registers = [deps.registry];
    this.metrics = {
      segments: new Gauge({ name: 'verbatim_recorder_upload_backlog_segments', help: 'Sealed raw segments waiting for their upload to storage', registers }),
      bytes: new Gauge({ name: 'verbatim_recorder_upload_backlog_bytes', help: 'Bytes of sealed raw segments waiting for their upload to storage', registers }),
      uploaded: new Counter({ name: 'verbatim_recorder_uploaded_segments_total', help: 'Raw segments uploaded, checked and removed from local disk', registers }),
      failures: new Counter({ name: 'verbatim_recorder_upload_failures_total', help: 'Raw segment upload attempts that failed (retried)', registers }),
    };
  }

  /** Starts the worker and queues every sealed segment on disk that has no recorded stored copy. */
  async start(): Promise<void> {
    const { deps } = this;
    this.worker = new Worker(uploadQueueName(deps.recordingsDir), (job: Job) => this.process(job), {
      connection: redisConnection(deps.redisUrl),
      ...(deps.queuePrefix ? { prefix: deps.queuePrefix } : {}),
      concurrency: 2,
      settings: { backoffStrategy: (attemptsMade: number) => Math.min(deps.retryMs * 2 ** Math.max(0, attemptsMade - 1), deps.retryMs * MAX_BACKOFF_FACTOR) },
    });
    this.worker.on('failed', (job, err) => {
      this.failedAttempts++;
      this.lastError = err.message;
      this.metrics.failures.inc();
      const final = job !== undefined && (err.name === 'UnrecoverableError' || job.attemptsMade >= (job.opts.attempts ?? 1));
      if (final && job?.id) this.settle(job.id);
      // A storage outage fails every attempt of every segment: warn on the 1st, 2nd, 4th, 8th... attempt of each.
      const attempts = job?.attemptsMade ?? 1;
      const level = final ? 'error' : (attempts & (attempts - 1)) === 0 ? 'warn' : 'debug';
      deps.logger[level]({ err, job: job?.id, attempts }, final ? 'raw segment upload given up' : 'raw segment upload failed; it is retried');
    });
    this.worker.on('error', (err) => deps.logger.warn({ err }, 'raw upload worker error'));
    for (const p of pendingOnDisk(deps.recordingsDir)) await this.enqueue(p);
  }

  /** Queues one sealed segment's upload (idempotent per session and file). */
  async enqueue(p: SegmentUploadPayload): Promise<void> {
    const jobId = segmentUploadJobId(p.session, p.file);
    if (!this.pending.has(jobId)) {
      this.pending.set(jobId, { bytes: p.bytes, at: Date.now() });
      this.pendingBytes += p.bytes;
    }
    this.updateGauges();
    await this.queue.add(SEGMENT_UPLOAD_JOB, SegmentUploadPayloadSchema.parse(p), {
      jobId,
      attempts: ATTEMPTS,
      backoff: { type: 'custom' },
      removeOnComplete: true,
      removeOnFail: true,
    });
  }

  /** Queues a segment the recorder just sealed. */
  enqueueSealed(s: Pick<RecordingSession, 'room' | 'id' | 'dir'>, track: string, entry: SegmentEntry): Promise<void> {
    return this.enqueue({ v: 1, room: s.room, session: s.id, track, segment: entry.segment, file: entry.file, dir: s.dir, bytes: entry.bytes, sha256: entry.sha256 });
  }

  backlog(): UploadBacklog {
    const oldest = this.pending.values().next().value;
    return {
      segments: this.pending.size,
      bytes: this.pendingBytes,
      uploaded: this.uploaded,
      failedAttempts: this.failedAttempts,
      lastError: this.lastError,
      oldestQueuedAt: oldest ? new Date(oldest.at).toISOString() : null,
    };
  }

  private settle(jobId: string): void {
    this.pendingBytes -= this.pending.get(jobId)?.bytes ?? 0;
    this.pending.delete(jobId);
    this.updateGauges();
  }

  private updateGauges(): void {
    const b = this.backlog();
    this.metrics.segments.set(b.segments);
    this.metrics.bytes.set(b.bytes);
  }

  private async process(job: Job): Promise<SegmentUploadResult> {
    const parsed = SegmentUploadPayloadSchema.safeParse(job.data);
    if (!parsed.success) throw new UnrecoverableError(`BAD_PAYLOAD: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
    const p = parsed.data;
    const log = this.deps.logger.child({ room: p.room, session: p.session, track: p.track, segment: p.segment });
    const file = path.join(p.dir, p.file);
    const key = rawSegmentKey(p.room, p.session, p.file);
    let keyId: string | undefined;
    if (!existsSync(file)) {
      // Gone from disk: uploaded by an earlier attempt that died before finishing, or deleted (retention, erasure).
      const stored = await this.deps.storage.stat(key);
      if (!stored || stored.bytes !== p.bytes) throw new UnrecoverableError(`NOT_FOUND: ${file} is gone and storage has no copy of it`);
      keyId = await (this.deps.storage as Partial<{ keyIdOf(k: string): Promise<string | undefined> }>).keyIdOf?.(key);
    } else {
      const t0 = Date.now();
      // Encrypted (ENCRYPTION_AT_REST) with the data key of the participant the segment's header names.
      keyId = await uploadSegment(this.deps.storage, key, file, p, { encryptFor: { session: p.session, participant: await segmentParticipant(file) } });
      log.debug({ key, bytes: p.bytes, ms: Date.now() - t0, keyId }, 'raw segment uploaded and read back');
    }
    const at = new Date().toISOString();
    const recorded = await this.record(p, { key, at, ...(keyId ? { keyId } : {}) });
    if (recorded === 'retry') throw new Error(`session ${p.session} is being sealed: its upload is recorded once the manifest is written`);
    if (recorded === 'unknown') {
      // The manifest no longer lists it (erased since it was sealed): the copy must not outlive the erasure.
      await this.deps.storage.delete(key);
      throw new UnrecoverableError(`NOT_FOUND: session ${p.session} no longer lists segment ${p.file}; its stored copy was deleted`);
    }
    if (recorded === 'recorded') await rm(file, { force: true });
    this.uploaded++;
    this.metrics.uploaded.inc();
    if (job.id) this.settle(job.id);
    log.info({ key, bytes: p.bytes, removedLocal: recorded === 'recorded' }, 'raw segment stored');
    return { v: 1, key, at, bytes: p.bytes };
  }

  /**
   * Records the stored copy where the session's state is: the open session's journal, or the sealed
   * manifest and its rows. 'kept': neither is here (the local file then stays: nothing says it moved).
   */
  private async record(p: SegmentUploadPayload, stored: NonNullable<SegmentEntry['stored']>): Promise<'recorded' | 'retry' | 'unknown' | 'kept'> {
    const open = this.deps.openSession(p.session);
    if (open && open.dir === p.dir) {
      if (open.endedAt) return 'retry';
      if (!open.markStored(p.track, p.segment, stored)) return 'unknown';
      open.saveJournal();
      return 'recorded';
    }
    const manifestPath = path.join(p.dir, MANIFEST_FILE);
    const c = checkManifest(manifestPath);
    if (!c.ok) return existsSync(path.join(p.dir, JOURNAL_FILE)) ? 'retry' : 'kept';
    const m: SessionManifest = c.manifest;
    const entry = m.tracks.find((t) => t.track === p.track)?.segments.find((s) => s.segment === p.segment && s.file === p.file);
    if (!entry) return 'unknown';
    if (entry.sha256 !== p.sha256) throw new UnrecoverableError(`CORRUPT_RECORDING: segment ${p.file} in the manifest has another SHA-256 than the one uploaded`);
    entry.stored = stored;
    const { sha256 } = writeSessionManifest(p.dir, m);
    await this.publishManifest(m.room, m.session, manifestPath);
    await this.deps.db.transaction().execute(async (trx) => {
      await trx.updateTable('track_segments').set({ stored_key: stored.key, stored_at: stored.at, key_id: stored.keyId ?? null }).where('session_id', '=', p.session).where('track_id', '=', p.track).where('segment', '=', p.segment).execute();
      // The manifest's hash follows its rewrite, as after an erasure.
      await trx.updateTable('recording_sessions').set({ manifest_sha256: sha256, updated_at: new Date() }).where('id', '=', p.session).where('manifest_path', '=', manifestPath).execute();
    });
    return 'recorded';
  }

  /**
   * The sealed manifest goes next to the raw segments (rawManifestKey), again after every rewrite, so a
   * transcode host that does not share this recorder's disk reads the session from storage alone. A
   * failed put is logged: the next rewrite publishes it again, and transcode retries until it is there.
   */
  async publishManifest(room: string, session: string, manifestPath: string): Promise<void> {
    // One put at a time per session, each of the manifest as it is when its turn comes (uploads
    // recorded in parallel rewrite it): the last put is the latest manifest.
    const prev = this.publishing.get(session) ?? Promise.resolve();
    const next = prev.then(async () => {
      const key = rawManifestKey(room, session);
      const snapshot = `${manifestPath}.publish-${process.pid}`;
      try {
        await writeFile(snapshot, await readFile(manifestPath));
        await this.deps.storage.put(key, snapshot, 'application/json');
      } catch (err) {
        this.deps.logger.error({ err, session, key }, 'could not publish the session manifest to storage');
      } finally {
        await rm(snapshot, { force: true });
      }
    });
    this.publishing.set(session, next);
    await next;
    if (this.publishing.get(session) === next) this.publishing.delete(session);
  }


  /**
   * The session was sealed: with S3 Object Lock, its segments stored while it was recording (when no
   * retention end was known) get their retention now, as segments stored from here on get it on upload.
   */
  async sealed(m: SessionManifest): Promise<void> {
    const storage: ArtifactStorage & Partial<RetentionStorage> = this.deps.storage;
    if (storage.objectLockEnabled !== true || typeof storage.applyRetention !== 'function') return;
    for (const t of m.tracks) {
      for (const s of t.segments) {
        if (!s.stored) continue;
        await storage.applyRetention(s.stored.key).catch((err: unknown) => this.deps.logger.error({ err, session: m.session, key: s.stored!.key }, 'could not set the Object Lock retention of a stored raw segment'));
      }
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.worker?.close();
    await this.queue.close();
  }
}

/**
 * Uploads one raw segment and reads it back: the stored bytes must have the manifest's size and
 * SHA-256 (the local file is checked first, so a file corrupted on disk is never stored as the
 * recording). Throws on any mismatch; the caller retries.
 */
export async function uploadSegment(storage: ArtifactStorage, key: string, file: string, expect: { bytes: number; sha256: string }, opts?: PutOptions): Promise<string | undefined> {
  const st = await stat(file);
  if (st.size !== expect.bytes) throw new UnrecoverableError(`CORRUPT_RECORDING: ${file} is ${st.size} bytes, the manifest says ${expect.bytes}`);
  // With encryption the read-back below decrypts: the stored envelope must give back the manifest's bytes.
  const { keyId } = await storage.put(key, file, 'application/octet-stream', opts);
  const h = createHash('sha256');
  let n = 0;
  for await (const c of await storage.getStream(key)) {
    h.update(c as Buffer);
    n += (c as Buffer).length;
  }
  const got = h.digest('hex');
  if (n === expect.bytes && got === expect.sha256) return keyId;
  // Only on a mismatch is the local file hashed too: a file that is itself not the sealed one is never retried.
  if ((await sha256File(file)).sha256 !== expect.sha256) {
    await storage.delete(key);
    throw new UnrecoverableError(`CORRUPT_RECORDING: ${file} does not match its manifest SHA-256; kept on disk for forensics, not stored`);
  }
  throw new VerbatimError('INTERNAL', `stored copy ${key} reads back as ${n} bytes, sha256 ${got}; the manifest says ${expect.bytes} bytes, sha256 ${expect.sha256}`, {
    hint: 'The local file is kept and the upload retried.',
  });
}

/** The participant a sealed segment belongs to, from its file header (verbatim-rtp v1). */
export async function segmentParticipant(file: string): Promise<string> {
  const fh = await open(file, 'r');
  try {
    const fixed = Buffer.alloc(14);
    await fh.read(fixed, 0, 14, 0);
    const len = fixed.readUInt32BE(10);
    const buf = Buffer.alloc(Math.min(14 + len + 4, 1024 * 1024));
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return parseHeader(buf.subarray(0, bytesRead), file).header.participant.id;
  } catch (err) {
    // A sealed segment whose header does not parse was damaged on disk: never stored as the recording.
    throw new UnrecoverableError(`CORRUPT_RECORDING: ${file}: ${(err as Error).message}; kept on disk for forensics, not stored`);
  } finally {
    await fh.close();
  }
}

/** This host's upload queue: only the host that recorded a segment has its file. */
export function uploadQueueName(recordingsDir: string): string {
  return `${RECORDER_UPLOAD_QUEUE}-${createHash('sha256').update(`${hostname()}\0${path.resolve(recordingsDir)}`).digest('hex').slice(0, 12)}`;
}

/** Sealed segments on disk whose journal or manifest records no stored copy. */
export function pendingOnDisk(recordingsDir: string): SegmentUploadPayload[] {
  const out: SegmentUploadPayload[] = [];
  for (const room of safeReaddir(recordingsDir)) {
    for (const session of safeReaddir(path.join(recordingsDir, room))) {
      const dir = sessionDirOf(recordingsDir, room, session);
      const c = checkManifest(existsSync(path.join(dir, MANIFEST_FILE)) ? path.join(dir, MANIFEST_FILE) : path.join(dir, JOURNAL_FILE));
      if (!c.ok) continue;
      for (const t of c.manifest.tracks) {
        for (const s of t.segments) {
          if (s.stored || !existsSync(path.join(dir, s.file))) continue;
          out.push({ v: 1, room: c.manifest.room, session: c.manifest.session, track: t.track, segment: s.segment, file: s.file, dir, bytes: s.bytes, sha256: s.sha256 });
        }
      }
    }
  }
  return out;
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
