import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import type { RecorderStats } from '../../services/recorder/src/supervisor.ts';
import { repoRoot } from './results.ts';
import { killNow, onCleanup, terminate } from './children.ts';

export const BENCH_RECORDER_SECRET = 'bench-recorder-secret-0123456789';
export const BENCH_DATABASE_URL = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
export const BENCH_REDIS_URL = process.env.BENCH_REDIS_URL ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

export type { RecorderStats };

export interface BenchRecorder {
  url: string;
  pid: number;
  dataDir: string;
  database: 'postgres' | 'pglite';
  api<T = unknown>(method: string, p: string, body?: unknown): Promise<T>;
  stats(resetLag?: boolean): Promise<RecorderStats>;
  /** Supervisor + worker pids (each worker followed by its recorder-rx on the native path). */
  pids(): Promise<number[]>;
  /** SIGTERM (the recorder seals its tracks), SIGKILL after a grace period; removes its data. */
  stop(): Promise<void>;
  /** SIGKILL at once (nothing to keep), then the same clean-up. */
  kill(): Promise<void>;
}

let pgReachable: Promise<boolean> | undefined;
/** Whether the bench Postgres answers (checked once per run, generous timeout for a loaded machine). */
export function postgresReachable(url = BENCH_DATABASE_URL): Promise<boolean> {
  pgReachable ??= (async () => {
    const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
    try {
      await c.connect();
      await c.query('select 1');
      return true;
    } catch {
      return false;
    } finally {
      await c.end().catch(() => {});
    }
  })();
  return pgReachable;
}

/** Drops a private Postgres schema (bench clean-up). */
export async function dropSchema(schema: string, url = BENCH_DATABASE_URL): Promise<void> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  try {
    await c.connect();
    await c.query(`drop schema if exists "${schema}" cascade`);
  } finally {
    await c.end().catch(() => {});
  }
}

/** Deletes every Redis key under a private queue prefix. */
export async function dropRedisPrefix(prefix: string, url = BENCH_REDIS_URL): Promise<void> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await r.connect();
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await r.del(...keys);
    } while (cursor !== '0');
  } finally {
    r.disconnect();
  }
}

/**
 * The recorder as its own process (services/recorder/src/process.ts, like `npm run
 * recorder`) in its own process group, on Redis with a private queue prefix and
 * Postgres in a private schema when reachable (else its embedded PGlite), data in a
 * temp dir. Everything is removed again by stop() or the bench's clean-up.
 */
export async function startBenchRecorder(env: Record<string, string> = {}): Promise<BenchRecorder> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'verbatim-bench-rec-'));
  const queuePrefix = `vb${randomBytes(4).toString('hex')}`;
  const schema = `bench_${randomBytes(5).toString('hex')}`;
  const usePg = await postgresReachable();
  const childEnv: Record<string, string> = {
    ...(process.env as Record<string, string>),
    DATA_DIR: dataDir,
    RECORDER_HOST: '127.0.0.1',
    RECORDER_PORT: '0',
    RECORDER_SECRET: BENCH_RECORDER_SECRET,
    RECORDER_MIN_FREE_MB: '1',
    RECORDER_WORKERS: '1',
    REDIS_URL: BENCH_REDIS_URL,
    VERBATIM_QUEUE_PREFIX: queuePrefix,
    LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn',
    ...(usePg ? { DATABASE_URL: BENCH_DATABASE_URL, DATABASE_SCHEMA: schema } : {}),
    ...env,
  };
  const entry = path.join(repoRoot, 'services', 'recorder', 'src', 'process.ts');
  const child: ChildProcess = fork(entry, [], { execArgv: ['--import', 'tsx'], env: childEnv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], detached: true, cwd: repoRoot });
  const cleanupFiles = async () => {
    rmSync(dataDir, { recursive: true, force: true });
    await dropRedisPrefix(queuePrefix).catch(() => {});
    if (usePg) await dropSchema(schema).catch(() => {});
  };
  const release = onCleanup(
    `recorder ${child.pid}`,
    async () => {
      await terminate(child, { group: true, graceMs: 8000 });
      await cleanupFiles();
    },
    () => {
      killNow(child, true);
      rmSync(dataDir, { recursive: true, force: true });
    },
  );
  const url = await new Promise<string>((resolve, reject) => {
    child.on('message', (m: { t?: string; url: string } | undefined) => m?.t === 'ready' && resolve(m.url));
    child.once('exit', (code) => reject(new Error(`recorder exited early with ${code}`)));
  });
  const api = async <T>(method: string, p: string, body?: unknown): Promise<T> => {
    const res = await fetch(`${url}${p}`, {
      method,
      headers: { authorization: `Bearer ${BENCH_RECORDER_SECRET}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`recorder ${method} ${p}: ${res.status} ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  };
  const rec: BenchRecorder = {
    url,
    pid: child.pid!,
    dataDir,
    database: usePg ? 'postgres' : 'pglite',
    api,
    stats: (resetLag = false) => api<RecorderStats>('GET', `/v1/stats${resetLag ? '?resetLag=1' : ''}`),
    async pids() {
      const s = await rec.stats();
      return [s.supervisor.pid, ...s.workers.flatMap((w) => [w.pid, w.rx?.pid ?? null]).filter((p): p is number => p !== null)];
    },
    stop: release,
    async kill() {
      killNow(child, true);
      await release();
    },
  };
  return rec;
}

let trackSeq = 0;
let sessionSeq = 0;

export interface RecorderTrack {
  room: string;
  session: string;
  track: string;
  kind: 'audio' | 'video';
  ssrc: number;
  payloadType: number;
  rtpPort: number;
  rtcpPort: number;
}

/** POST /v1/tracks for one track of the given kind (Opus PT 111 / VP8 PT 96). */
export async function startTrack(rec: BenchRecorder, room: string, session: string, kind: 'audio' | 'video'): Promise<RecorderTrack> {
  const n = ++trackSeq;
  const track = `${kind[0]}${n}`;
  const ssrc = (0x10000000 + n * 7919) >>> 0;
  const payloadType = kind === 'audio' ? 111 : 96;
  const codec = kind === 'audio' ? { mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType, parameters: {} } : { mimeType: 'video/VP8', clockRate: 90000, payloadType, parameters: {} };
  const participant = `p${Math.ceil(n / 2)}`;
  const res = await rec.api<{ rtpPort: number; rtcpPort: number }>('POST', '/v1/tracks', {
    v: 1,
    room,
    session,
    track,
    participant: { id: participant, name: `Participant ${participant}` },
    kind,
    codec,
    ssrc,
    headerExtensions: [],
    consent: { decision: 'granted', method: 'pre-accepted' },
  });
  return { room, session, track, kind, ssrc, payloadType, rtpPort: res.rtpPort, rtcpPort: res.rtcpPort };
}

/**
 * Starts many tracks, a few requests in flight at once, spread over sessions of at
 * most `perSession` tracks (rooms of a realistic size: the recorder rewrites a
 * session's journal on every track start).
 */
export async function startTracks(rec: BenchRecorder, roomPrefix: string, kinds: ('audio' | 'video')[], opts: { perSession?: number; concurrency?: number } = {}): Promise<RecorderTrack[]> {
  const perSession = opts.perSession ?? 50;
  const sessions = Array.from({ length: Math.ceil(kinds.length / perSession) }, () => {
    const k = ++sessionSeq;
    return { room: `${roomPrefix}-${k}`, session: `bench-${Date.now().toString(36)}-${k}` };
  });
  const out = new Array<RecorderTrack>(kinds.length);
  let next = 0;
  const concurrency = opts.concurrency ?? 8;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, kinds.length) }, async () => {
      while (next < kinds.length) {
        const i = next++;
        const s = sessions[Math.floor(i / perSession)]!;
        out[i] = await startTrack(rec, s.room, s.session, kinds[i]!);
      }
    }),
  );
  return out;
}

/** Ends every session these tracks belong to (seals their tracks, writes manifests). */
export async function endSessions(rec: BenchRecorder, tracks: RecorderTrack[]): Promise<void> {
  const seen = new Map<string, string>();
  for (const t of tracks) seen.set(t.session, t.room);
  for (const [session, room] of seen) await rec.api('POST', `/v1/sessions/${session}/end`, { v: 1, room, reason: 'bench' });
}
