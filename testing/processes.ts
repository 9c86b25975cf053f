import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';

/** Live descendants of a process, read from /proc: pid → command line (for "nothing left running" checks). */
export function descendantProcesses(root: number): Map<number, string> {
  const children = new Map<number, number[]>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(d)]);
    } catch {
      // exited meanwhile
    }
  }
  const out = new Map<number, string>();
  const walk = (p: number) => {
    for (const c of children.get(p) ?? []) {
      try {
        out.set(c, readFileSync(`/proc/${c}/cmdline`, 'utf8').replace(/\0/g, ' ').trim());
      } catch {
        continue;
      }
      walk(c);
    }
  };
  walk(root);
  return out;
}

/** Running (a zombie waiting for its parent counts as gone). */
export const processAlive = (pid: number): boolean => {
  try {
    return existsSync(`/proc/${pid}`) && !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ');
  } catch {
    return false;
  }
};

/** SIGTERM, then SIGKILL if it is still running after `graceMs`; resolves once it has exited. */
export async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}
