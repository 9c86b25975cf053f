import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './launcher.ts';
import { stopChild } from './processes.ts';

export const TURNSERVER_PATH = '/usr/bin/turnserver';

export interface Coturn {
  /** turn:127.0.0.1:<port>?transport=udp */
  url: string;
  /** Its log so far (allocations name the REST username). */
  log(): string;
  stop(): Promise<void>;
}

/** Why coturn cannot run here, or undefined. */
export function coturnUnavailable(): string | undefined {
  return existsSync(TURNSERVER_PATH) ? undefined : 'coturn is not installed (/usr/bin/turnserver): the set-up installs the Debian package coturn as root';
}

/**
 * coturn on 127.0.0.1 with the shared-secret REST scheme (use-auth-secret), as README's TURN
 * section configures it, except that relaying to loopback peers is allowed: the test SFU
 * listens on 127.0.0.1 (a production coturn keeps the default refusal).
 */
export async function startCoturn(secret: string): Promise<Coturn> {
  const why = coturnUnavailable();
  if (why) throw new Error(why);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'verbatim-coturn-'));
  const port = await freePort();
  const relayMin = 20_000 + Math.floor(Math.random() * 20_000);
  const child = spawn(
    TURNSERVER_PATH,
    [
      '-n',
      '--listening-ip=127.0.0.1',
      `--listening-port=${port}`,
      '--relay-ip=127.0.0.1',
      `--min-port=${relayMin}`,
      `--max-port=${relayMin + 200}`,
      '--use-auth-secret',
      `--static-auth-secret=${secret}`,
      '--realm=verbatim.test',
      '--fingerprint',
      '--no-tls',
      '--no-dtls',
      '--no-cli',
      '--no-tcp-relay',
      '--allow-loopback-peers',
      `--userdb=${path.join(dir, 'turndb')}`,
      `--pidfile=${path.join(dir, 'turnserver.pid')}`,
      '--log-file=stdout',
      '--simple-log',
      '--verbose',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-200_000)));
  child.stderr.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-200_000)));
  const deadline = Date.now() + 15_000;
  while (!/Total General servers|IPv4. UDP listener opened on : 127\.0\.0\.1:\d+/.test(out)) {
    if (child.exitCode !== null) throw new Error(`turnserver exited (${child.exitCode}): ${out.slice(-2000)}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`turnserver did not start: ${out.slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `turn:127.0.0.1:${port}?transport=udp`,
    log: () => out,
    async stop() {
      await stopChild(child, 3000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
