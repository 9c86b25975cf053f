import { readFileSync } from 'node:fs';

/** Soft open-file limit of this process (Linux), or undefined where unknown. */
export function openFileLimit(): number | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const soft = line?.split(/\s{2,}/)[1];
    return soft === 'unlimited' ? Number.POSITIVE_INFINITY : soft ? Number(soft) : undefined;
  } catch {
    return undefined;
  }
}

/** Each WebRTC transport holds sockets: a low limit fails joins under load, so say how to fix it. */
export function fdLimitWarning(min: number): string | undefined {
  const limit = openFileLimit();
  if (limit === undefined || limit >= min) return undefined;
  return `open-file limit is ${limit}, below the recommended ${min}: large meetings will fail with EMFILE. Fix: run "ulimit -n 65536" before starting, or set LimitNOFILE=65536 in the systemd unit (or nofile in /etc/security/limits.conf). Set SFU_MIN_FD_LIMIT to change this check.`;
}
