import { execFile, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { createNetns, tcpForward, type Netns } from './netns.ts';

const run = promisify(execFile);
const repoRoot = path.resolve(import.meta.dirname, '..');

/**
 * Hosts for multi-host tests: each a network namespace (testing/netns.ts) whose processes also get
 * a private mount namespace in which the other hosts' data directories are covered by an empty tmpfs,
 * so a host reads another host's recordings only through the network (object storage), as on
 * separate machines. Postgres, Redis and the S3 server stay in the root namespace and are reached
 * through TCP forwarders on each host's veth address.
 */
export interface TestHost {
  name: string;
  ns: Netns;
  /** This host's own directory (DATA_DIR). */
  dataDir: string;
  /** The address other hosts and the root namespace reach this host at. */
  address: string;
  /** host:port of the shared services as seen from inside this host. */
  services: Record<string, string>;
  /** Starts a Node entry point inside the host (IPC channel kept): resolves on its `{t: 'ready'}` message. */
  start(entry: string, env: Record<string, string>): Promise<{ child: ChildProcess; ready: Record<string, unknown> }>;
  /** kill -9 of every process in the host's namespace: the host is gone. */
  killAll(): Promise<number>;
}

export interface TestCluster {
  hosts: TestHost[];
  close(): Promise<void>;
}

/**
 * `names` hosts under `root` (one data directory each), each reaching `services` (name → port on
 * 127.0.0.1 in the root namespace) at its own veth address.
 */
export async function createCluster(root: string, names: string[], services: Record<string, number>): Promise<TestCluster> {
  const hosts: TestHost[] = [];
  const closers: (() => Promise<void>)[] = [];
  const children: ChildProcess[] = [];
  const dirs = names.map((n) => path.join(root, n));
  for (const d of dirs) mkdirSync(d, { recursive: true });
  try {
    for (const [i, name] of names.entries()) {
      const ns = await createNetns();
      closers.push(() => ns.delete());
      const seen: Record<string, string> = {};
      for (const [svc, port] of Object.entries(services)) {
        const fwd = await tcpForward(ns.hostAddress, 0, { host: '127.0.0.1', port });
        closers.push(() => fwd.close());
        seen[svc] = `${ns.hostAddress}:${fwd.port}`;
      }
      const others = dirs.filter((_, j) => j !== i);
      const host: TestHost = {
        name,
        ns,
        dataDir: dirs[i]!,
        address: ns.nsAddress,
        services: seen,
        start(entry, env) {
          // Private mounts: the other hosts' directories are empty here.
          const script = `${others.map((d) => `mount -t tmpfs tmpfs '${d}' && `).join('')}exec '${process.execPath}' --import tsx '${path.join(repoRoot, entry)}'`;
          const child = ns.spawn('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script], { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
          children.push(child);
          return new Promise((resolve, reject) => {
            child.on('message', (m: { t?: string }) => m?.t === 'ready' && resolve({ child, ready: m }));
            child.once('exit', (code, signal) => reject(new Error(`${entry} on ${name} exited (${code ?? signal}) before it was ready`)));
          });
        },
        async killAll() {
          const pids = (await run('ip', ['netns', 'pids', ns.name])).stdout.split('\n').filter(Boolean).map(Number);
          for (const pid of pids) {
            try {
              process.kill(pid, 'SIGKILL');
            } catch {
              // already gone
            }
          }
          return pids.length;
        },
      };
      hosts.push(host);
    }
  } catch (err) {
    for (const c of closers.reverse()) await c().catch(() => {});
    throw err;
  }
  return {
    hosts,
    async close() {
      for (const h of hosts) await h.killAll().catch(() => 0);
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
      for (const c of closers.reverse()) await c().catch(() => {});
    },
  };
}
