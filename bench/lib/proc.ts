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

/** Process state letter from /proc/<pid>/stat (R running, S sleeping, D disk wait...). */
export function procState(pid: number): string | undefined {
  try {
    return parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8'))[0];
  } catch {
    return undefined;
  }
}

function meminfoKb(text: string, key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/** Total stall µs from /proc/pressure/io ("some" line); undefined without PSI. */
export function ioPressureSomeUs(): number | undefined {
  try {
    const m = /^some .*total=(\d+)/m.exec(readFileSync('/proc/pressure/io', 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

export interface ProcSample {
  samples: number;
  /** Share of samples in each state, e.g. { R: 0.6, S: 0.3, D: 0.1 }. */
  states: Record<string, number>;
  maxDirtyMb: number;
  maxWritebackMb: number;
  /** Host-wide I/O pressure: share of wall time some task stalled on I/O. */
  ioStallPct: number | null;
}

/**
 * Samples a process's scheduler state and the host's dirty page cache every
 * intervalMs: tells CPU-bound (R) from blocked on disk writeback (D) from idle (S).
 */
export function sampleProcess(pid: number, intervalMs = 100): { stop(): ProcSample } {
  const states: Record<string, number> = {};
  let n = 0;
  let maxDirty = 0;
  let maxWb = 0;
  const io0 = ioPressureSomeUs();
  const t0 = performance.now();
  const timer = setInterval(() => {
    const st = procState(pid);
    if (st) {
      states[st] = (states[st] ?? 0) + 1;
      n++;
    }
    try {
      const mi = readFileSync('/proc/meminfo', 'utf8');
      maxDirty = Math.max(maxDirty, meminfoKb(mi, 'Dirty'));
      maxWb = Math.max(maxWb, meminfoKb(mi, 'Writeback'));
    } catch {
      // no /proc/meminfo
    }
  }, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      const io1 = ioPressureSomeUs();
      const wallUs = (performance.now() - t0) * 1000;
      return {
        samples: n,
        states: Object.fromEntries(Object.entries(states).map(([k, v]) => [k, Math.round((v / Math.max(1, n)) * 1000) / 1000])),
        maxDirtyMb: Math.round(maxDirty / 1024),
        maxWritebackMb: Math.round(maxWb / 1024),
        ioStallPct: io0 !== undefined && io1 !== undefined ? Math.round(((io1 - io0) / wallUs) * 1000) / 10 : null,
      };
    },
  };
}
