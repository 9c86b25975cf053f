import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

/** Clock ticks per second of /proc/<pid>/stat times (getconf CLK_TCK, 100 on Linux). */
export const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

const PAGE_SIZE = (() => {
  try {
    return Number(execFileSync('getconf', ['PAGESIZE'], { encoding: 'utf8' }).trim()) || 4096;
  } catch {
    return 4096;
  }
})();

/** Fields after the command name in /proc/<pid>/stat (the name may hold spaces and parens). */
export function parseStat(text: string): string[] {
  return text.slice(text.lastIndexOf(')') + 2).trim().split(/\s+/);
}

/** utime + stime of a process (all its threads) in seconds; undefined once it is gone. */
export function cpuSeconds(pid: number): number | undefined {
  try {
    const f = parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    // After "(comm)": state(0) ppid(1) ... utime(11) stime(12)
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return undefined;
  }
}

/** Resident set size in bytes (statm resident pages). */
export function rssBytes(pid: number): number | undefined {
  try {
    const resident = Number(readFileSync(`/proc/${pid}/statm`, 'utf8').split(' ')[1]);
    return resident * PAGE_SIZE;
  } catch {
    return undefined;
  }
}

export function sumDefined(xs: (number | undefined)[]): number {
  return xs.reduce<number>((a, x) => a + (x ?? 0), 0);
}

/** CPU seconds of a set of processes; a process that exited keeps its last reading. */
export class CpuMeter {
  private readonly last = new Map<number, number>();
  constructor(private readonly pids: number[]) {}
  read(): number {
    let total = 0;
    for (const pid of this.pids) {
      const v = cpuSeconds(pid);
      if (v !== undefined) this.last.set(pid, v);
      total += this.last.get(pid) ?? 0;
    }
    return total;
  }
}

/** Direct children of a process (Linux /proc/<pid>/task/<tid>/children). */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (text) out.push(...text.split(/\s+/).map(Number));
    }
  } catch {
    // gone
  }
  return out;
}

/** UDP counters from /proc/net/snmp (host-wide: other processes add noise). */
export function udpCounters(): Record<string, number> {
  const lines = readFileSync('/proc/net/snmp', 'utf8').split('\n').filter((l) => l.startsWith('Udp:'));
  const names = lines[0]!.split(/\s+/).slice(1);
  const values = lines[1]!.split(/\s+/).slice(1).map(Number);
  return Object.fromEntries(names.map((n, i) => [n, values[i]!]));
}

export function diffCounters(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.keys(after).map((k) => [k, after[k]! - (before[k] ?? 0)]));
}
