import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { descendantProcesses } from './processes.ts';

/** `npm start` as a test runs it: the CLI in a process group of its own, like a terminal's foreground job. */
export interface Launched {
  child: ChildProcess;
  /** Everything printed so far (stdout and stderr). */
  output(): string;
  /** The banner, once "Press Ctrl-C" is printed. */
  ready: Promise<Banner>;
  exited: Promise<number | null>;
  /** Every process ever seen below the CLI (sampled every 100 ms, so short-lived ones count too). */
  seen: Map<number, string>;
  /** The live process of a stage (its services/<stage>/src/process.ts). */
  stagePid(stage: 'sfu' | 'recorder' | 'transcode' | 'audit'): number | undefined;
  /** Ctrl-C in a terminal: SIGINT to the whole foreground group. */
  interrupt(): void;
  /** Last resort after a failed test: SIGKILL to everything seen. */
  killAll(): void;
}

export interface Banner {
  meetingUrl: string;
  sfuUrl: string;
  apiSecret: string;
  recorderUrl: string;
  complianceUrl: string;
  adminKey: string | undefined;
}

export function launchStart(dataDir: string, env: Record<string, string> = {}): Launched {
  const child = spawn(process.execPath, ['--import', 'tsx', 'services/cli/main.ts', 'start'], {
    env: { ...process.env, DATA_DIR: dataDir, SFU_PORT: '0', RECORDER_PORT: '0', AUDIT_PORT: '0', RECORDER_MIN_FREE_MB: '1', SFU_WORKERS: '1', LOG_LEVEL: 'warn', REDIS_URL: '', DATABASE_URL: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let out = '';
  const seen = new Map<number, string>();
  const sample = () => {
    for (const [pid, cmd] of descendantProcesses(child.pid!)) seen.set(pid, cmd);
  };
  const sampler = setInterval(sample, 100);
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      clearInterval(sampler);
      resolve(code);
    }),
  );
  const ready = new Promise<Banner>((resolve, reject) => {
    const onData = (d: Buffer) => {
      out += d.toString();
      if (!out.includes('Press Ctrl-C')) return;
      const m = (re: RegExp) => re.exec(out)?.[1];
      resolve({
        meetingUrl: m(/Meeting page : (\S+)/)!,
        sfuUrl: m(/Admin API {4}: (\S+)\/api\/v1/)!,
        apiSecret: m(/Authorization: Bearer (\S+)\)/)!,
        recorderUrl: m(/Recorder {5}: (\S+)/)!,
        complianceUrl: m(/Compliance {3}: (\S+)\/api\/v1/)!,
        adminKey: m(/Admin key {4}: (vb_\S+)/),
      });
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    void exited.then((code) => reject(new Error(`npm start exited (${code}) before it was ready:\n${out}`)));
  });
  ready.catch(() => {});
  return {
    child,
    output: () => out,
    ready,
    exited,
    seen,
    stagePid(stage) {
      sample();
      for (const [pid, cmd] of descendantProcesses(child.pid!)) if (cmd.includes(`services/${stage}/src/process.ts`)) return pid;
      return undefined;
    },
    interrupt() {
      process.kill(-child.pid!, 'SIGINT');
    },
    killAll() {
      sample();
      for (const pid of [child.pid!, ...seen.keys()]) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    },
  };
}

/** A TCP port free right now on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** Whether a TCP port can be bound on 127.0.0.1 (nothing holds it). */
export function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}
