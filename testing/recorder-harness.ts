import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import pg from 'pg';
import { openConfiguredDatabase, openDatabase, type Db } from '../db/database.ts';
import { TRANSCODE_QUEUE } from '../services/lib/contracts/jobs.ts';
import { redisConnection } from '../services/lib/redis.ts';
import { TEST_DATABASE_URL } from './databases.ts';

export const TEST_RECORDER_SECRET = 'test-recorder-secret-0123456789';
const entry = fileURLToPath(new URL('../services/recorder/src/process.ts', import.meta.url));

export interface TestRecorder {
  url: string;
  dataDir: string;
  recordingsDir: string;
  child: ChildProcess;
  queuePrefix: string;
  redisUrl: string;
  /** Opens the database the recorder writes to (a Postgres schema, or the embedded PostgreSQL of its data dir). */
  openDb(): Promise<Db>;
  finalizeQueue(): Queue;
  api<T = any>(method: string, p: string, body?: unknown): Promise<{ status: number; body: T }>;
  stop(): Promise<void>;
  kill9(): void;
  /** Starts the recorder again on the same data dir (after kill9 or stop). */
  restart(): Promise<void>;
}

async function reachable(url: string): Promise<boolean> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1500 });
  try {
    await c.connect();
    return true;
  } catch {
    return false;
  } finally {
    await c.end().catch(() => {});
  }
}

/**
 * The recorder as a real separate process (so tests can kill -9 it), on Redis at
 * 127.0.0.1:6379 with a private queue prefix, and Postgres in a private schema when
 * available (else the embedded PostgreSQL of its data dir).
 */
export async function startTestRecorder(overrides: Record<string, string> = {}): Promise<TestRecorder> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'verbatim-rec-'));
  const queuePrefix = `vt${randomBytes(4).toString('hex')}`;
  const redisUrl = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
  const usePg = await reachable(TEST_DATABASE_URL);
  const schema = `r_${randomBytes(5).toString('hex')}`;
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    DATA_DIR: dataDir,
    RECORDER_PORT: '0',
    RECORDER_SECRET: TEST_RECORDER_SECRET,
    RECORDER_MIN_FREE_MB: '1',
    REDIS_URL: redisUrl,
    VERBATIM_QUEUE_PREFIX: queuePrefix,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'warn',
    ...(usePg ? { DATABASE_URL: TEST_DATABASE_URL, DATABASE_SCHEMA: schema } : {}),
    ...overrides,
  };
  const rec: TestRecorder = {
    url: '',
    dataDir,
    recordingsDir: path.join(dataDir, 'recordings'),
    child: undefined as unknown as ChildProcess,
    queuePrefix,
    redisUrl,
    async openDb() {
      return usePg ? openDatabase({ url: TEST_DATABASE_URL, schema }) : openConfiguredDatabase({ DATA_DIR: dataDir });
    },
    finalizeQueue() {
      return new Queue(TRANSCODE_QUEUE, { connection: redisConnection(redisUrl), prefix: queuePrefix });
    },
    async api(method, p, body) {
      const res = await fetch(`${rec.url}${p}`, {
        method,
        headers: { authorization: `Bearer ${TEST_RECORDER_SECRET}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : undefined };
    },
    async stop() {
      if (rec.child.exitCode !== null || rec.child.signalCode !== null) return;
      const exited = new Promise((r) => rec.child.once('exit', r));
      rec.child.kill('SIGTERM');
      await exited;
    },
    kill9() {
      // The whole process group: supervisor and its workers die at once, like a power cut.
      process.kill(-rec.child.pid!, 'SIGKILL');
    },
    async restart() {
      // Same control port, so the SFU finds it again at RECORDER_URL.
      env.RECORDER_PORT = new URL(rec.url).port;
      await spawnIt();
    },
  };
  const spawnIt = async () => {
    const child = fork(entry, [], { execArgv: ['--import', 'tsx'], env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], detached: true });
    rec.child = child;
    rec.url = await new Promise<string>((resolve, reject) => {
      child.on('message', (m: any) => m?.t === 'ready' && resolve(m.url));
      child.once('exit', (code) => reject(new Error(`recorder exited early with ${code}`)));
    });
  };
  await spawnIt();
  return rec;
}
