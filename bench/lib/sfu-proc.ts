import { randomBytes } from 'node:crypto';
import { onCleanup } from './children.ts';
import { BENCH_DATABASE_URL, BENCH_RECORDER_SECRET, dropSchema, postgresReachable } from './recorder-proc.ts';

export interface BenchSfu {
  url: string;
  workerPids: number[];
  admin<T = unknown>(method: string, p: string, body?: unknown): Promise<T>;
  close(): Promise<void>;
}

/**
 * The SFU the way testing/sfu-harness.ts starts it (in this process, one
 * mediasoup worker), tapping recorded rooms into the recorder at recorderUrl; its
 * database is Postgres in a private schema when reachable, else PGlite in a temp dir.
 */
export async function startBenchSfu(recorderUrl: string): Promise<BenchSfu> {
  const { startTestSfu } = await import('../../testing/sfu-harness.ts');
  const usePg = await postgresReachable();
  const schema = `bench_sfu_${randomBytes(4).toString('hex')}`;
  const sfu = await startTestSfu({
    overrides: {
      SFU_WORKERS: 1,
      RECORDER_URL: recorderUrl,
      RECORDER_SECRET: BENCH_RECORDER_SECRET,
      LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn',
      ...(usePg ? { DATABASE_URL: BENCH_DATABASE_URL, DATABASE_SCHEMA: schema } : {}),
    },
  });
  const workerPids = sfu.running.sfu.pool.pids();
  const close = onCleanup(
    'sfu',
    async () => {
      await sfu.close();
      if (usePg) await dropSchema(schema).catch(() => {});
    },
    () => {
      for (const pid of workerPids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    },
  );
  return {
    url: sfu.url,
    workerPids,
    async admin<T = unknown>(method: string, p: string, body?: unknown): Promise<T> {
      const r = await sfu.admin(method, p, body);
      if (r.status >= 300) throw new Error(`SFU ${method} ${p}: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body as T;
    },
    close,
  };
}
