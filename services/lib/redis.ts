import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';

/**
 * Redis connection options for BullMQ from REDIS_URL: redis://host:port/db or
 * unix:///path/to/redis.sock (the embedded default's socket).
 */
export function redisConnection(url: string): { host?: string; port?: number; path?: string; db?: number; password?: string; maxRetriesPerRequest: null } {
  if (url.startsWith('unix://')) return { path: url.slice('unix://'.length), maxRetriesPerRequest: null };
  const u = new URL(url);
  return {
    host: u.hostname,
    port: Number(u.port || 6379),
    ...(u.pathname.length > 1 ? { db: Number(u.pathname.slice(1)) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    maxRetriesPerRequest: null,
  };
}

/**
 * A private redis-server on a unix socket in the data dir, for machines without Redis.
 * It is started behind a tiny shell guard reading our stdin: when this process dies,
 * even by kill -9, the pipe closes and the guard stops redis, so no orphan is left.
 */
export async function startEmbeddedRedis(dataDir: string): Promise<{ url: string; process: ChildProcess; stop(): Promise<void> }> {
  const dir = path.join(dataDir, 'redis');
  mkdirSync(dir, { recursive: true });
  const sock = path.join(dir, 'redis.sock');
  const args = ['--port', '0', '--unixsocket', sock, '--unixsocketperm', '700', '--dir', dir, '--appendonly', 'yes', '--save', '""', '--daemonize', 'no'];
  const guard = `redis-server ${args.join(' ')} & pid=$!; trap 'kill $pid 2>/dev/null' EXIT TERM INT; cat >/dev/null; kill $pid 2>/dev/null; wait $pid`;
  const child = spawn('bash', ['-c', guard], { stdio: ['pipe', 'ignore', 'inherit'] });
  const deadline = Date.now() + 10_000;
  while (!existsSync(sock)) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`embedded redis-server did not start (socket ${sock})`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `unix://${sock}`,
    process: child,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.stdin?.end();
      await exited;
    },
  };
}
