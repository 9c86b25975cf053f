import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import net from 'node:net';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * A second "host" on this machine for tests: a Linux network namespace joined to the root
 * namespace by a veth pair, both ends addressed in 198.18.0.0/15 (the benchmarking range, never
 * routed). A process started with exec() lives in the namespace: its own loopback and ports,
 * and it reaches the root namespace only at `hostAddress`. Needs root (CAP_NET_ADMIN).
 */
export interface Netns {
  name: string;
  /** The root namespace's end of the veth pair. */
  hostAddress: string;
  /** The namespace's end. */
  nsAddress: string;
  /** Starts a command inside the namespace. */
  spawn: (command: string, args: string[], opts?: SpawnOptions) => ChildProcess;
  /** Runs a command inside the namespace; resolves its stdout. */
  exec: (command: string, args: string[]) => Promise<string>;
  /** Deletes the namespace and the veth pair (idempotent). */
  delete: () => Promise<void>;
}

/** Why network namespaces cannot be made here, or undefined when they can (probed by making one). */
export async function netnsUnavailable(): Promise<string | undefined> {
  if (process.platform !== 'linux') return `network namespaces are Linux-only (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'creating network namespaces needs root';
  const name = `vbprobe-${randomBytes(3).toString('hex')}`;
  try {
    await run('ip', ['netns', 'add', name]);
  } catch (err) {
    return `ip netns add failed: ${(err as Error).message.split('\n')[0]}`;
  }
  await run('ip', ['netns', 'delete', name]).catch(() => {});
  return undefined;
}

/**
 * Makes a namespace with a veth pair: 198.18.<n>.1/30 in the root namespace, 198.18.<n>.2/30
 * inside (n picked at random among the ones no interface uses yet), loopback up inside.
 */
export async function createNetns(): Promise<Netns> {
  const id = randomBytes(4).toString('hex');
  const name = `vb-${id}`;
  const hostIf = `vbh${id}`;
  const nsIf = `vbn${id}`;
  const used = (await run('ip', ['-4', '-o', 'addr'])).stdout;
  let octet = randomInt(1, 255);
  for (let i = 0; i < 254 && used.includes(`198.18.${octet}.`); i++) octet = (octet % 254) + 1;
  const hostAddress = `198.18.${octet}.1`;
  const nsAddress = `198.18.${octet}.2`;
  let deleted = false;
  const del = async () => {
    if (deleted) return;
    deleted = true;
    // Deleting the namespace deletes its veth end, and with it the pair.
    await run('ip', ['netns', 'delete', name]).catch(() => {});
    await run('ip', ['link', 'delete', hostIf]).catch(() => {});
  };
  try {
    await run('ip', ['netns', 'add', name]);
    await run('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf]);
    await run('ip', ['link', 'set', nsIf, 'netns', name]);
    await run('ip', ['addr', 'add', `${hostAddress}/30`, 'dev', hostIf]);
    await run('ip', ['link', 'set', hostIf, 'up']);
    const inNs = (...args: string[]) => run('ip', ['netns', 'exec', name, ...args]);
    await inNs('ip', 'addr', 'add', `${nsAddress}/30`, 'dev', nsIf);
    await inNs('ip', 'link', 'set', nsIf, 'up');
    await inNs('ip', 'link', 'set', 'lo', 'up');
  } catch (err) {
    await del();
    throw err;
  }
  return {
    name,
    hostAddress,
    nsAddress,
    spawn: (command, args, opts = {}) => spawn('ip', ['netns', 'exec', name, command, ...args], opts),
    exec: async (command, args) => (await run('ip', ['netns', 'exec', name, command, ...args])).stdout,
    delete: del,
  };
}

/**
 * A TCP forwarder in this process: connections to listenHost:listenPort (0 = a free port) are
 * piped to target. Lets a process in a namespace reach a server that listens on 127.0.0.1 only.
 */
export async function tcpForward(listenHost: string, listenPort: number, target: { host: string; port: number }): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listenPort, listenHost, resolve);
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
