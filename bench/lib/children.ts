import type { ChildProcess } from 'node:child_process';

/**
 * Every child process and temp resource a bench starts is registered here, so that a
 * normal end, an exception or Ctrl-C all leave nothing running behind.
 */
type Cleanup = { name: string; async: () => Promise<void>; sync: () => void };
const cleanups: Cleanup[] = [];
let installed = false;

function install(): void {
  if (installed) return;
  installed = true;
  // Last resort on any exit path: synchronous kills only.
  process.on('exit', () => {
    for (const c of cleanups.splice(0).reverse()) {
      try {
        c.sync();
      } catch {
        // best effort
      }
    }
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      process.stderr.write(`\n[bench] ${sig}: stopping child processes\n`);
      void runCleanups().finally(() => process.exit(130));
    });
  }
}

/** Registers a cleanup; returns a function that runs it now (once) and unregisters it. */
export function onCleanup(name: string, asyncFn: () => Promise<void>, syncFn: () => void = () => {}): () => Promise<void> {
  install();
  const c: Cleanup = { name, async: asyncFn, sync: syncFn };
  cleanups.push(c);
  let done: Promise<void> | undefined;
  return () => {
    done ??= (async () => {
      const i = cleanups.indexOf(c);
      if (i >= 0) cleanups.splice(i, 1);
      await asyncFn();
    })();
    return done;
  };
}

/** Runs every registered cleanup, newest first. */
export async function runCleanups(): Promise<void> {
  for (const c of cleanups.splice(0).reverse()) {
    try {
      await withTimeout(c.async(), 15_000);
    } catch (err) {
      process.stderr.write(`[bench] cleanup ${c.name} failed: ${(err as Error).message}\n`);
      try {
        c.sync();
      } catch {
        // best effort
      }
    }
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    p.finally(() => clearTimeout(t)).then(resolve, reject);
  });
}

export function alive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** SIGTERM, then SIGKILL after graceMs; resolves when the process exited. group: the whole process group. */
export async function terminate(child: ChildProcess, opts: { graceMs?: number; group?: boolean } = {}): Promise<void> {
  if (!alive(child) || child.pid === undefined) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const kill = (sig: NodeJS.Signals) => {
    try {
      if (opts.group) process.kill(-child.pid!, sig);
      else child.kill(sig);
    } catch {
      // already gone
    }
  };
  kill('SIGTERM');
  const t = setTimeout(() => kill('SIGKILL'), opts.graceMs ?? 5000);
  await exited;
  clearTimeout(t);
  // A group may hold grandchildren that outlive the leader.
  if (opts.group) kill('SIGKILL');
}

export function killNow(child: ChildProcess, group = false): void {
  if (child.pid === undefined) return;
  try {
    if (group) process.kill(-child.pid, 'SIGKILL');
    else if (alive(child)) child.kill('SIGKILL');
  } catch {
    // already gone
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
