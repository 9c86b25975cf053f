import type { ChildProcess, SpawnOptions } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { stopChild } from './processes.ts';
import { TEST_API_SECRET, TEST_TOKEN_SECRET } from './sfu-harness.ts';

/** A second SFU host: the real SFU process (services/sfu/src/process.ts), e.g. in a network namespace. */
export interface SfuHostProcess {
  url: string;
  child: ChildProcess;
  /** The tail of its stdout and stderr (pino JSON lines), for failure messages. */
  log(): string;
  /** Its admin API with the test secret. */
  admin(method: string, p: string, body?: unknown): Promise<{ status: number; body: any }>;
  stop(): Promise<void>;
}

/**
 * Starts services/sfu/src/process.ts with `spawn` (a Netns's spawn runs it in the namespace) on
 * address:port with the test secrets and `env` (DATABASE_URL, cluster settings...); resolves
 * once its /healthz answers.
 */
export async function startSfuHostProcess(opts: {
  spawn: (command: string, args: string[], o: SpawnOptions) => ChildProcess;
  address: string;
  port: number;
  env: Record<string, string | undefined>;
  timeoutMs?: number;
}): Promise<SfuHostProcess> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'verbatim-sfu-host-'));
  const child = opts.spawn(process.execPath, ['--import', 'tsx', 'services/sfu/src/process.ts'], {
    env: {
      PATH: process.env.PATH,
      DATA_DIR: dataDir,
      SFU_HOST: opts.address,
      SFU_PORT: String(opts.port),
      SFU_RTC_LISTEN_IP: opts.address,
      SFU_WORKERS: '1',
      SFU_API_SECRET: TEST_API_SECRET,
      SFU_TOKEN_SECRET: TEST_TOKEN_SECRET,
      LOG_LEVEL: 'info',
      ...(process.env.MEDIASOUP_WORKER_BIN ? { MEDIASOUP_WORKER_BIN: process.env.MEDIASOUP_WORKER_BIN } : {}),
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  for (const s of [child.stdout!, child.stderr!]) s.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-20_000)));
  const url = `http://${opts.address}:${opts.port}`;
  const stop = async () => {
    await stopChild(child, 5000);
    rmSync(dataDir, { recursive: true, force: true });
  };
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  while (!(await fetch(`${url}/healthz`).then((r) => r.ok, () => false))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`the SFU host at ${url} did not come up (exit ${child.exitCode}):\n${log.slice(-4000)}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    url,
    child,
    log: () => log,
    async admin(method, p, body) {
      const res = await fetch(`${url}/api/v1${p}`, { method, headers: { authorization: `Bearer ${TEST_API_SECRET}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}) });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : undefined };
    },
    stop,
  };
}
