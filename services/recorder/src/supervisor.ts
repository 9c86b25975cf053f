import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, statfsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Db } from '../../../db/database.ts';
import type { Config } from '../../lib/config.ts';
import { SESSION_FINALIZE_JOB, TRANSCODE_QUEUE, finalizeJobId, type SessionFinalizePayload } from '../../lib/contracts/jobs.ts';
import { IPC_VERSION, ToSupervisorSchema, type ToSupervisor, type ToWorker } from '../../lib/contracts/recorder-ipc.ts';
import { RECORDER_CONTROL_VERSION, type RecorderHealth, type StartTrackRequest, type StartTrackResponse, type TimelineEvent } from '../../lib/contracts/recorder-control.ts';
import { VerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { redisConnection } from '../../lib/redis.ts';
import { MANIFEST_FILE, findUnsealedSessionDirs, sessionDirOf } from '../../lib/recording/session-dir.ts';
import { PoolSessions } from './pool-sessions.ts';
import { RecordingSession } from './recording-session.ts';
import { SegmentUploader, type UploadBacklog } from './segment-uploader.ts';
import type { ArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { SessionStore } from './session-store.ts';

const workerEntry = fileURLToPath(new URL('./recorder-worker.ts', import.meta.url));

interface WorkerHandle {
  index: number;
  child: ChildProcess;
  tracks: number;
  ready: Promise<void>;
}

type WorkerStatsMessage = Extract<ToSupervisor, { t: 'stats' }>;

/** GET /v1/stats: per-process CPU (µs since start), RSS and worker event-loop lag. */
export interface RecorderStats {
  supervisor: { pid: number; cpu: { userUs: number; systemUs: number }; rssBytes: number };
  workers: {
    index: number;
    pid: number | null;
    tracks: number;
    received: number;
    stored: number;
    dropped: Record<string, number>;
    cpu: NonNullable<WorkerStatsMessage['cpu']> | null;
    rssBytes: number | null;
    lag: NonNullable<WorkerStatsMessage['lag']> | null;
    /** The worker's recorder-rx process, on the native receive path. */
    rx: NonNullable<WorkerStatsMessage['rx']> | null;
  }[];
  /** Raw segments waiting for their upload to storage (RECORDER_UPLOAD_RAW=on), else null. */
  uploads: UploadBacklog | null;
}

export interface SupervisorDeps {
  config: Config;
  db: Db;
  logger: Logger;
  registry: Registry;
  redisUrl: string;
  queuePrefix?: string;
  /** Where sealed raw segments are uploaded with RECORDER_UPLOAD_RAW=on (segment-uploader.ts). */
  storage?: ArtifactStorage;
  /** This recorder's id in the pool registry (default: its instance id). */
  recorderId?: string;
}

/**
 * The recorder's main process: hands tracks to worker processes (each with its own
 * slice of the UDP port range), keeps each session's journal, and on session end
 * writes the manifest, registers the session in the database and queues
 * `session.finalize`. Packets never pass through this process.
 */
export class RecorderSupervisor {
  readonly instanceId = randomBytes(8).toString('hex');
  private readonly workers: WorkerHandle[] = [];
  private readonly sessions = new Map<string, RecordingSession>();
  /** Sessions whose first request is opening them. */
  private readonly opening = new Map<string, Promise<RecordingSession>>();
  /** Sessions being sealed. */
  private readonly ending = new Set<string>();
  private readonly pending = new Map<string, { resolve: (m: ToSupervisor) => void }>();
  private readonly dropped: Record<string, number> = {};
  private readonly queue: Queue;
  private readonly store: SessionStore;
  /** The session state every recorder of the pool can seal from (migration 0014). */
  private readonly pool: PoolSessions;
  private readonly metrics;
  /** Set when a write hit ENOSPC: no new tracks until free space is back above the threshold. */
  private diskFull = false;
  private statsTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Raw media to object storage (issue 15 item 4): each sealed segment, queued as it is sealed. */
  private readonly uploader: SegmentUploader | undefined;

  constructor(private readonly deps: SupervisorDeps) {
    this.store = new SessionStore(deps.db);
    this.pool = new PoolSessions(deps.db, deps.recorderId ?? this.instanceId, deps.config.RECORDER_DEAD_AFTER_MS, deps.logger, deps.storage);
    this.queue = new Queue(TRANSCODE_QUEUE, { connection: redisConnection(deps.redisUrl), ...(deps.queuePrefix ? { prefix: deps.queuePrefix } : {}) });
    const registers = [deps.registry];
    this.metrics = {
      tracks: new Gauge({ name: 'verbatim_recorder_tracks', help: 'Tracks being recorded', registers }),
      dropped: new Counter({ name: 'verbatim_recorder_dropped_packets_total', help: 'Datagrams dropped at recorder ports', labelNames: ['reason'], registers }),
      stored: new Gauge({ name: 'verbatim_recorder_stored_packets', help: 'Packets stored by live tracks', registers }),
      refused: new Counter({ name: 'verbatim_recorder_refused_tracks_total', help: 'Track starts refused', labelNames: ['code'], registers }),
      sessionsSealed: new Counter({ name: 'verbatim_recorder_sessions_sealed_total', help: 'Sessions sealed and queued', registers }),
      freeBytes: new Gauge({ name: 'verbatim_recorder_free_bytes', help: 'Free bytes on the recordings filesystem', registers }),
    };
    if (deps.config.RECORDER_UPLOAD_RAW === 'on') {
      if (!deps.storage) throw new VerbatimError('CONFIG_INVALID', 'RECORDER_UPLOAD_RAW=on but the recorder was given no artifact storage', { hint: 'Start it with storage (npm start and the recorder process do), or set RECORDER_UPLOAD_RAW=off.' });
      const { config, logger, registry, redisUrl, queuePrefix, storage, db } = deps;
      const openSession = (id: string) => this.sessions.get(id);
      this.uploader = new SegmentUploader({ storage, db, logger: logger.child({ component: 'upload' }), registry, redisUrl, queuePrefix, recordingsDir: config.RECORDINGS_DIR, retryMs: config.RECORDER_UPLOAD_RETRY_MS, openSession });
    }
  }

  get config(): Config {
    return this.deps.config;
  }

  async start(): Promise<void> {
    mkdirSync(this.config.RECORDINGS_DIR, { recursive: true });
    for (const dir of findUnsealedSessionDirs(this.config.RECORDINGS_DIR)) {
      const s = RecordingSession.recover(dir);
      // Sealed by another recorder of the pool while this one was down: not this recorder's to reopen.
      const row = await this.store.sessionRow(s.id).catch(() => undefined);
      if (row && row.status !== 'recording') {
        s.retireJournal();
        this.deps.logger.warn({ room: s.room, session: s.id }, 'an interrupted session was sealed by another recorder meanwhile: journal retired');
        continue;
      }
      this.sessions.set(s.id, s);
      this.deps.logger.warn({ room: s.room, session: s.id }, 'recovered an interrupted recording session');
    }
    await this.uploader?.start();
    const n = this.config.RECORDER_WORKERS;
    const span = Math.floor((this.config.RECORDER_MAX_PORT - this.config.RECORDER_MIN_PORT + 1) / n);
    for (let i = 0; i < n; i++) this.spawnWorker(i, this.config.RECORDER_MIN_PORT + i * span, this.config.RECORDER_MIN_PORT + (i + 1) * span - 1);
    await Promise.all(this.workers.map((w) => w.ready));
    this.statsTimer = setInterval(() => this.broadcast({ t: 'stats', v: IPC_VERSION }), 1000);
    this.statsTimer.unref();    // In the background: a large archive must not hold up recording.
    this.store.backfillTimelines().then(
      (n) => n > 0 && this.deps.logger.info({ sessions: n }, 'stored the timelines of sessions sealed before session_events existed'),
      (err: unknown) => this.deps.logger.warn({ err }, 'could not backfill session timelines'),
    );
  }

  private spawnWorker(index: number, minPort: number, maxPort: number): void {
    const child = fork(workerEntry, [], {
      execArgv: ['--import', 'tsx'],
      env: {
        ...process.env,
        RECORDER_WORKER_IP: this.config.RECORDER_RTP_IP,
        RECORDER_WORKER_MIN_PORT: String(minPort),
        RECORDER_WORKER_MAX_PORT: String(maxPort),
        RECORDER_WORKER_MAX_PACKET_BYTES: String(this.config.RECORDER_MAX_PACKET_BYTES),
        RECORDER_WORKER_FSYNC_MS: String(this.config.RECORDER_FSYNC_INTERVAL_MS),
        RECORDER_WORKER_SEGMENT_SECONDS: String(this.config.RECORDER_SEGMENT_SECONDS),
        RECORDER_WORKER_RX: this.config.RECORDER_RX,
        RECORDER_WORKER_RX_BIN: this.config.RECORDER_RX_BIN ?? '',
        RECORDER_WORKER_RX_DRAIN_MS: String(this.config.RECORDER_RX_DRAIN_MS),
      },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    let readyResolve!: () => void;
    const handle: WorkerHandle = { index, child, tracks: 0, ready: new Promise((r) => (readyResolve = r)) };
    this.workers[index] = handle;
    child.on('message', (raw) => {
      const parsed = ToSupervisorSchema.safeParse(raw);
      if (!parsed.success) return this.deps.logger.error({ issues: parsed.error.issues }, 'bad IPC message from recorder worker');
      const m = parsed.data;
      if (m.t === 'ready') return readyResolve();
      this.onWorkerMessage(handle, m);
    });
    child.on('exit', (code, signal) => {
      if (this.closed) return;
      this.deps.logger.error({ worker: index, code, signal }, 'recorder worker exited; restarting it');
      // Its tracks are gone: their files stay readable; the SFU re-attaches on health change.
      for (const s of this.sessions.values()) s.openTracks.clear();
      this.spawnWorker(index, minPort, maxPort);
    });
  }

  private onWorkerMessage(w: WorkerHandle, m: ToSupervisor): void {
    switch (m.t) {
      case 'started':
      case 'startFailed':
        this.pending.get(`${m.session}/${m.track}`)?.resolve(m);
        return;
      case 'sealed': {
        const s = this.sessions.get(m.session);
        if (!m.trackOpen) w.tracks = Math.max(0, w.tracks - 1);
        if (m.entry.truncated && m.entry.truncatedReason === 'ENOSPC') {
          this.diskFull = true;
          this.deps.logger.error({ session: m.session, track: m.track }, 'disk full while recording: segment closed and marked truncated');
          s?.addEvents([{ at: new Date().toISOString(), type: 'track-failed', track: m.track, details: { code: 'DISK_FULL' } }]);
        }
        s?.addSegment(m.track, this.pool.sealedSegment(s, m.track, m.entry), m.trackOpen);
        s?.saveJournal();
        if (s) this.uploader?.enqueueSealed(s, m.track, m.entry).catch((err: unknown) => this.deps.logger.error({ err, session: m.session, track: m.track }, 'could not queue the raw segment upload; it is queued again on restart'));
        this.pending.get(`sealed:${m.session}/${m.track}`)?.resolve(m);
        return;
      }
      case 'stats': {
        for (const [reason, n] of Object.entries(m.dropped)) {
          const key = `${w.index}:${reason}`;
          const prev = this.workerDropped.get(key) ?? 0;
          if (n > prev) {
            this.metrics.dropped.inc({ reason }, n - prev);
            this.dropped[reason] = (this.dropped[reason] ?? 0) + (n - prev);
            this.workerDropped.set(key, n);
          }
        }
        this.lastStats.set(w.index, m);
        this.metrics.tracks.set([...this.lastStats.values()].reduce((a, s) => a + s.tracks, 0));
        this.metrics.stored.set([...this.lastStats.values()].reduce((a, s) => a + s.stored, 0));
        return;
      }
    }
  }
  private readonly workerDropped = new Map<string, number>();
  private readonly lastStats = new Map<number, Extract<ToSupervisor, { t: 'stats' }>>();

  /** Drop counters as last reported by the workers (refreshed every second). */
  async droppedCounts(): Promise<Record<string, number>> {
    await this.refreshStats();
    return { ...this.dropped };
  }

  /**
   * Per-process resources and event-loop lag (GET /v1/stats). Worker lag percentiles
   * cover the time since the worker started or the last call with resetLag.
   */
  async stats(opts: { resetLag?: boolean } = {}): Promise<RecorderStats> {
    await this.refreshStats(opts.resetLag === true);
    const cpu = process.cpuUsage();
    return {
      supervisor: { pid: process.pid, cpu: { userUs: cpu.user, systemUs: cpu.system }, rssBytes: process.memoryUsage.rss() },
      workers: this.workers.map((w) => {
        const s = this.lastStats.get(w.index);
        return {
          index: w.index,
          pid: w.child.pid ?? null,
          tracks: s?.tracks ?? 0,
          received: s?.received ?? 0,
          stored: s?.stored ?? 0,
          dropped: { ...(s?.dropped ?? {}) },
          cpu: s?.cpu ?? null,
          rssBytes: s?.rssBytes ?? null,
          lag: s?.lag ?? null,
          rx: s?.rx ?? null,
        };
      }),
      uploads: this.uploader?.backlog() ?? null,
    };
  }

  private async refreshStats(resetLag = false): Promise<void> {
    const before = new Map(this.lastStats);
    this.broadcast({ t: 'stats', v: IPC_VERSION, ...(resetLag ? { resetLag } : {}) });
    const deadline = Date.now() + 2000;
    while (Date.now() < deadline && this.workers.some((w) => this.lastStats.get(w.index) === before.get(w.index))) {
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  private broadcast(m: ToWorker): void {
    for (const w of this.workers) if (w.child.connected) w.child.send(m);
  }

  freeBytes(): number {
    const s = statfsSync(this.config.RECORDINGS_DIR);
    const free = s.bavail * s.bsize;
    this.metrics.freeBytes.set(free);
    return free;
  }

  /** The raw-upload backlog; null where raw upload is off. */
  uploadBacklog(): UploadBacklog | null {
    return this.uploader?.backlog() ?? null;
  }

  health(): RecorderHealth {
    const free = this.freeBytes();
    const min = this.config.RECORDER_MIN_FREE_MB * 1024 * 1024;
    const accepting = free >= min && !this.closed;
    // After a real ENOSPC, wait for clearly more room than the threshold (hysteresis),
    // or tracks would flap between refused and failing.
    if (this.diskFull && free >= Math.max(2 * min, min + 64 * 1024 * 1024)) this.diskFull = false;
    return { v: RECORDER_CONTROL_VERSION, ok: !this.closed, instanceId: this.instanceId, acceptingTracks: accepting && !this.diskFull, freeBytes: free, tracks: this.workers.reduce((a, w) => a + w.tracks, 0) };
  }

  /**
   * The open session of a request, opened on its first track or event. A session that was sealed
   * stays sealed: its directory holds a manifest (or the database says it ended, also when
   * retention already removed the directory), and nothing reopens a journal there.
   */
  private async session(req: { room: string; session: string }): Promise<RecordingSession> {
    const open = this.sessions.get(req.session) ?? (await this.opening.get(req.session));
    if (open) {
      if (open.room !== req.room) throw new VerbatimError('BAD_REQUEST', `session ${req.session} belongs to room ${open.room}`, { hint: 'Session ids are unique per room.' });
      if (open.endedAt || this.ending.has(req.session)) throw sessionEnded(req.session);
      return open;
    }
    // One opening per session id: concurrent first requests must not make two journals.
    const opening = this.openSession(req).finally(() => this.opening.delete(req.session));
    this.opening.set(req.session, opening);
    return opening;
  }

  private async openSession(req: { room: string; session: string }): Promise<RecordingSession> {
    const dir = sessionDirWithin(this.config.RECORDINGS_DIR, req.room, req.session);
    if (existsSync(path.join(dir, MANIFEST_FILE))) throw sessionEnded(req.session);
    const row = await this.store.sessionRow(req.session).catch((err: unknown) => {
      // The disk is the evidence that matters while recording: a database hiccup must not stop new sessions.
      this.deps.logger.warn({ err, room: req.room, session: req.session }, 'could not look the session up in the database; going by the disk');
      return undefined;
    });
    if (row && row.room !== req.room) throw new VerbatimError('BAD_REQUEST', `session ${req.session} belongs to room ${row.room}`, { hint: 'Session ids are unique per room.' });
    if (row && row.status !== 'recording') throw sessionEnded(req.session);
    mkdirSync(dir, { recursive: true });
    const s = new RecordingSession(dir, req.room, req.session, new Date().toISOString());
    // A session another recorder of the pool opened (this one takes over or holds replicas) has started already.
    if (!row) this.pool.events(s, [{ at: s.startedAt, type: 'session-started', details: {} }]);
    this.sessions.set(req.session, s);
    s.saveJournal();
    this.store.markRecording(req.room, req.session, s.startedAt).catch((err: unknown) => this.deps.logger.error({ err, session: req.session }, 'failed to register recording session'));
    return s;
  }

  /** `srtpKey`: the tap's SRTP master key and salt, already unwrapped (main.ts); the worker decrypts with it. */
  async startTrack(req: StartTrackRequest, srtpKey?: Buffer): Promise<StartTrackResponse> {
    const log = this.deps.logger.child({ room: req.room, session: req.session, track: req.track });
    const health = this.health();
    if (!health.acceptingTracks) {
      this.metrics.refused.inc({ code: 'DISK_FULL' });
      log.error({ freeBytes: health.freeBytes }, 'refusing new track: disk full');
      throw new VerbatimError('DISK_FULL', `recorder disk has ${Math.round(health.freeBytes / 1e6)} MB free, below RECORDER_MIN_FREE_MB=${this.config.RECORDER_MIN_FREE_MB}`, {
        hint: 'Free space on the recordings disk (or move old sessions to storage); recording resumes for new tracks by itself.',
      });
    }
    if (health.tracks >= this.config.RECORDER_CAPACITY) {
      this.metrics.refused.inc({ code: 'RECORDER_FULL' });
      throw new VerbatimError('RECORDER_UNAVAILABLE', `recorder is at RECORDER_CAPACITY=${this.config.RECORDER_CAPACITY} tracks`, { hint: 'SFUs place the track on another recorder of the pool; add recorders or raise RECORDER_CAPACITY.' });
    }
    const s = await this.session(req);
    if (!isPlainName(req.track)) throw new VerbatimError('BAD_REQUEST', `track id ${JSON.stringify(req.track)} cannot name a file`, { hint: 'Track ids match services/lib/contracts/recorder-control.ts RECORDER_ID_RE.' });
    if (s.openTracks.has(req.track)) await this.stopTrack(req.session, req.track, 'restarted');
    const segment = await this.pool.placeTrack(s, req, s.addTrack(req));
    const w = [...this.workers].sort((a, b) => a.tracks - b.tracks)[0]!;
    const key = `${req.session}/${req.track}`;
    const reply = await new Promise<ToSupervisor>((resolve) => {
      this.pending.set(key, { resolve });
      w.child.send({ t: 'start', v: IPC_VERSION, req, dir: s.dir, segment, ...(srtpKey ? { srtpKey: srtpKey.toString('base64') } : {}) } satisfies ToWorker);
    }).finally(() => this.pending.delete(key));
    if (reply.t === 'startFailed') {
      s.openTracks.delete(req.track);
      this.metrics.refused.inc({ code: reply.code });
      throw new VerbatimError(reply.code === 'DISK_FULL' ? 'DISK_FULL' : 'RECORDER_UNAVAILABLE', `recorder could not start track ${req.track}: ${reply.message}`, { hint: 'Check the recorder logs and port range.' });
    }
    if (reply.t !== 'started') throw new Error('unexpected worker reply');
    w.tracks++;
    s.saveJournal();
    log.info({ rtpPort: reply.rtpPort, segment }, 'track recording');
    return { v: RECORDER_CONTROL_VERSION, ip: this.config.RECORDER_RTP_IP, rtpPort: reply.rtpPort, rtcpPort: reply.rtcpPort, segment };
  }

  async stopTrack(sessionId: string, track: string, reason = 'stopped'): Promise<void> {
    const s = this.sessions.get(sessionId);
    if (!s || !s.openTracks.has(track)) return;
    const key = `sealed:${sessionId}/${track}`;
    const sealed = new Promise<ToSupervisor>((resolve) => this.pending.set(key, { resolve }));
    this.broadcast({ t: 'stop', v: IPC_VERSION, session: sessionId, track, reason });
    await Promise.race([sealed, new Promise((r) => setTimeout(r, 5000))]);
    this.pending.delete(key);
    s.openTracks.delete(track);
  }

  async addEvents(room: string, sessionId: string, events: TimelineEvent[]): Promise<void> {
    const s = await this.session({ room, session: sessionId });
    this.pool.events(s, events);
    s.saveJournal();
  }

  /**
   * A pool recorder lets go of a session without sealing it: the SFU moved its tracks away, or the
   * session is sealed by another recorder. Its tracks are sealed here and their segments are in the
   * database (the sealer takes them from this directory or storage); the journal is retired.
   */
  async releaseSession(room: string, sessionId: string): Promise<{ released: boolean }> {
    const s = this.sessions.get(sessionId);
    if (!s || s.room !== room || this.ending.has(sessionId)) return { released: false };
    this.ending.add(sessionId);
    try {
      for (const track of [...s.openTracks]) await this.stopTrack(sessionId, track, 'released');
      s.saveJournal();
      await this.pool.forget(sessionId, { clear: false });
      s.retireJournal();
      this.sessions.delete(sessionId);
      this.deps.logger.info({ room, session: sessionId }, 'session released to the pool: another recorder seals it');
      return { released: true };
    } finally {
      this.ending.delete(sessionId);
    }
  }

  /** Seals every track, writes the manifest, registers the session, queues session.finalize. */
  async endSession(room: string, sessionId: string, reason: string): Promise<{ manifestPath: string }> {
    const s = this.sessions.get(sessionId);
    if (s && s.room === room && this.ending.has(sessionId)) throw sessionEnded(sessionId);
    if (!s || s.room !== room) {
      if (existsSync(path.join(sessionDirWithin(this.config.RECORDINGS_DIR, room, sessionId), MANIFEST_FILE))) throw sessionEnded(sessionId);
      // Pool: a session other recorders recorded (its first one is gone) is sealed here from the database.
      const row = s ? undefined : await this.store.sessionRow(sessionId).catch(() => undefined);
      if (row?.room === room && row.status === 'recording' && (await this.pool.held(sessionId))) return this.endSession(room, (await this.session({ room, session: sessionId })).id, reason);
      throw new VerbatimError('ROOM_NOT_FOUND', `no open recording session ${sessionId} in room ${room}`, { hint: 'It may have ended already.' });
    }
    // From here on the session takes no new tracks or events: it is being sealed.
    this.ending.add(sessionId);
    try {
      return await this.seal(s, reason);
    } finally {
      this.ending.delete(sessionId);
    }
  }

  private async seal(s: RecordingSession, reason: string): Promise<{ manifestPath: string }> {
    const { room, id: sessionId } = s;
    // A seal that failed part way (the database was down) is retried by ending the session again.
    if (!s.endedAt) {
      for (const track of [...s.openTracks]) await this.stopTrack(sessionId, track, 'session-ended');
      s.endedAt = new Date().toISOString();
      s.endReason = reason;
      s.addEvents([{ at: s.endedAt, type: 'session-ended', details: { reason } }]);
    }
    await this.pool.fold(s);
    const { path: manifestPath, sha256 } = s.writeManifest(await this.droppedCounts());
    const manifest = s.manifest();
    await this.store.registerSealed(manifest, manifestPath, sha256);
    await this.uploader?.publishManifest(room, sessionId, manifestPath);
    void this.uploader?.sealed(manifest);
    const payload: SessionFinalizePayload = { v: 1, room, session: sessionId, manifestPath, manifestSha256: sha256 };
    await this.queue.add(SESSION_FINALIZE_JOB, payload, { jobId: finalizeJobId(sessionId), attempts: 5, backoff: { type: 'exponential', delay: 5000 }, removeOnComplete: 1000 });
    this.sessions.delete(sessionId);
    await this.pool.forget(sessionId, { clear: true });
    this.metrics.sessionsSealed.inc();
    this.deps.logger.info({ room, session: sessionId, manifestPath }, 'session sealed and queued for transcoding');
    return { manifestPath };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.statsTimer);
    for (const s of this.sessions.values()) for (const t of [...s.openTracks]) this.broadcast({ t: 'stop', v: IPC_VERSION, session: s.id, track: t, reason: 'recorder-shutdown' });
    await Promise.all(
      this.workers.map(
        (w) =>
          new Promise<void>((resolve) => {
            if (w.child.exitCode !== null) return resolve();
            w.child.once('exit', () => resolve());
            w.child.disconnect();
          }),
      ),
    );
    await this.uploader?.close();
    await this.queue.close();
  }
}

function sessionEnded(session: string): VerbatimError {
  return new VerbatimError('SESSION_ENDED', `recording session ${session} has ended (sealed): it takes no more tracks or events`, { hint: 'Start a new session id.', details: { session } });
}

/** A name that stays one path segment: no separator, not "." or "..", no NUL. */
function isPlainName(name: string): boolean {
  return name.length > 0 && name !== '.' && name !== '..' && !/[/\\\0]/.test(name);
}

/**
 * The session's directory, checked to be exactly RECORDINGS_DIR/<room>/<session>. The control API's
 * schemas already refuse ids that could leave it; this holds wherever else an id comes from.
 */
function sessionDirWithin(recordingsDir: string, room: string, session: string): string {
  const root = path.resolve(recordingsDir);
  const dir = path.resolve(sessionDirOf(root, room, session));
  if (!isPlainName(room) || !isPlainName(session) || dir !== path.join(root, room, session) || path.relative(root, dir).split(path.sep).length !== 2) {
    throw new VerbatimError('BAD_REQUEST', `room ${JSON.stringify(room)} / session ${JSON.stringify(session)} do not name a directory inside RECORDINGS_DIR`, {
      hint: 'Room and session ids match services/lib/contracts/recorder-control.ts RECORDER_ID_RE.',
    });
  }
  return dir;
}
