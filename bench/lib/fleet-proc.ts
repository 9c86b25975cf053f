import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { BotOptions } from '../../testing/bots/bot.ts';
import type { FleetMember, FleetReport } from '../../testing/bots/fleet.ts';
import { killNow, onCleanup, terminate } from './children.ts';
import { repoRoot } from './results.ts';

export interface FleetProc {
  pid: number;
  join(url: string, members: FleetMember[], opts?: BotOptions & { spreadMs?: number }): Promise<{ joined: number; failed: { name: string; error: string }[]; joinMs: number[] }>;
  reset(): Promise<void>;
  report(): Promise<{ report: FleetReport; cpuS: number }>;
  close(): Promise<void>;
}

/** testing/bots/fleet-process.ts as a child, pinned with taskset to `cpu` when given (its own core). */
export function startFleetProc(cpu: number | undefined): FleetProc {
  const entry = path.join(repoRoot, 'testing', 'bots', 'fleet-process.ts');
  const node = [process.execPath, '--import', 'tsx', entry];
  const child: ChildProcess = cpu === undefined ? spawn(node[0]!, node.slice(1), { cwd: repoRoot, stdio: ['pipe', 'pipe', 'inherit'] }) : spawn('taskset', ['-c', String(cpu), ...node], { cwd: repoRoot, stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! });
  const waiting: ((line: string) => void)[] = [];
  lines.on('line', (l) => waiting.shift()?.(l));
  const ask = <T>(cmd: unknown): Promise<T> =>
    new Promise((resolve, reject) => {
      waiting.push((l) => {
        const r = JSON.parse(l) as { ok: boolean; error?: string };
        if (r.ok) resolve(r as T);
        else reject(new Error(`bot fleet: ${r.error}`));
      });
      child.stdin!.write(`${JSON.stringify(cmd)}\n`);
    });
  const release = onCleanup(
    `bot fleet ${child.pid}`,
    async () => {
      await ask({ cmd: 'close' }).catch(() => {});
      await terminate(child, { graceMs: 3000 });
    },
    () => killNow(child),
  );
  return {
    pid: child.pid!,
    join: (url, members, opts) => ask({ cmd: 'join', url, members, opts }),
    reset: async () => void (await ask({ cmd: 'reset' })),
    report: () => ask({ cmd: 'report' }),
    close: release,
  };
}
