import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { removeDataDir, tempDataDir } from '../../testing/data-dirs.ts';
import { freePort, launchStart, portIsFree, type Launched } from '../../testing/launcher.ts';
import { processAlive } from '../../testing/processes.ts';

const dirs: string[] = [];
const newDir = () => {
  const d = tempDataDir('verbatim-supervise-');
  dirs.push(d);
  return d;
};
// Shared by the cases that need no fresh data dir (the first of them creates its database).
const warmDir = newDir();
const running: Launched[] = [];
afterAll(() => {
  for (const l of running) l.killAll();
  for (const d of dirs) removeDataDir(d);
});

const leftAlive = (l: Launched) => [...l.seen.entries()].filter(([pid]) => processAlive(pid)).map(([pid, cmd]) => `${pid} ${cmd}`);

/** Fixed-seed delays (mulberry32): "random" moments that are the same on every run. */
function seededDelays(seed: number, n: number, maxMs: number): number[] {
  let a = seed;
  const next = () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return Array.from({ length: n }, () => Math.round(next() * maxMs));
}

type Point = { name: string; line?: string; ms?: number; fresh?: boolean };
const POINTS: Point[] = [
  { name: 'at once', ms: 0 },
  { name: 'before Redis is up', line: 'starting the embedded Redis' },
  { name: 'while the PostgreSQL cluster is created (initdb)', line: 'starting the embedded PostgreSQL', fresh: true },
  { name: 'during migrations', line: 'running database migrations', fresh: true },
  { name: 'after "recorder listening", before "Press Ctrl-C"', line: 'recorder listening' },
  { name: 'after "SFU listening", before "Press Ctrl-C"', line: 'SFU listening' },
  ...seededDelays(12, 3, 20_000).map((ms) => ({ name: `after ${ms} ms`, ms })),
];

describe('npm start: Ctrl-C at any moment of start-up stops everything within seconds', () => {
  for (const point of POINTS) {
    it(point.name, { timeout: 180_000 }, async () => {
      const ports = { SFU_PORT: await freePort(), RECORDER_PORT: await freePort(), AUDIT_PORT: await freePort() };
      const l = launchStart(point.fresh ? newDir() : warmDir, { LOG_LEVEL: 'info', SFU_PORT: String(ports.SFU_PORT), RECORDER_PORT: String(ports.RECORDER_PORT), AUDIT_PORT: String(ports.AUDIT_PORT) });
      running.push(l);
      if (point.line) {
        await expect.poll(() => l.output().includes(`"msg":"${point.line}"`) || l.child.exitCode !== null, { timeout: 150_000, interval: 20 }).toBe(true);
        expect(l.child.exitCode, l.output()).toBeNull();
        // Still starting: the point is in start-up, not after it.
        expect(l.output()).not.toContain('Press Ctrl-C');
      } else {
        await new Promise((r) => setTimeout(r, point.ms));
      }
      const t = Date.now();
      l.interrupt();
      const code = await Promise.race([l.exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 15_000))]);
      const tookMs = Date.now() - t;
      expect(code, l.output().slice(-3000)).not.toBe('hung');
      // Our handlers ran once the launcher was past its first lines (before that, SIGINT's default action ends it).
      if (point.line) expect(code, l.output().slice(-3000)).toBe(0);
      expect(tookMs).toBeLessThan(10_000);
      await expect.poll(() => leftAlive(l), { timeout: 5000 }).toEqual([]);
      for (const [key, port] of Object.entries(ports)) expect(await portIsFree(port), `${key} ${port} still bound`).toBe(true);
    });
  }
});

describe('npm start: supervised stages', () => {
  it('kill -9 of the launcher itself (not only its front process): every stage, Redis and PostgreSQL go with it', { timeout: 240_000 }, async () => {
    const l = launchStart(warmDir);
    running.push(l);
    await l.ready;
    const launcher = [...l.seen.keys()].find((pid) => {
      try {
        return readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes('VERBATIM_OWN_PROCESS_GROUP=1') && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('services/cli/main.ts');
      } catch {
        return false;
      }
    })!;
    expect(launcher).toBeDefined();
    const cmds = [...l.seen.values()];
    for (const stage of ['sfu', 'recorder', 'transcode', 'audit']) expect(cmds.some((c) => c.includes(`services/${stage}/src/process.ts`))).toBe(true);
    expect(cmds.some((c) => c.includes('postgres -D'))).toBe(true);
    process.kill(launcher, 'SIGKILL');
    await l.exited;
    await expect.poll(() => leftAlive(l), { timeout: 30_000 }).toEqual([]);
  });

  it('a stage that keeps crashing is restarted on its port while the others serve, then reported: the launcher stops cleanly with exit code 1', { timeout: 240_000 }, async () => {
    const l = launchStart(warmDir, { STAGE_RESTART_MAX: '1', STAGE_RESTART_BACKOFF_MS: '100', STAGE_RESTART_WINDOW_MS: '600000' });
    running.push(l);
    const banner = await l.ready;
    const first = l.stagePid('audit')!;
    process.kill(first, 'SIGKILL');
    // Back on the same URL, a new process; the SFU answered all along.
    await expect
      .poll(
        async () => {
          const pid = l.stagePid('audit');
          const ok = await fetch(`${banner.complianceUrl}/healthz`).then((r) => r.ok, () => false);
          return pid !== undefined && pid !== first && ok;
        },
        { timeout: 60_000, interval: 200 },
      )
      .toBe(true);
    expect((await fetch(`${banner.sfuUrl}/healthz`)).status).toBe(200);
    expect(l.output()).toMatch(/stage exited unexpectedly \(killed by SIGKILL\); restarting it/);
    // A second crash within the window is one more than STAGE_RESTART_MAX=1 allows.
    process.kill(l.stagePid('audit')!, 'SIGKILL');
    const code = await Promise.race([l.exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 60_000))]);
    expect(code, l.output().slice(-3000)).toBe(1);
    expect(l.output()).toContain('error STAGE_FAILED: the audit stage crashed 2 times');
    await expect.poll(() => leftAlive(l), { timeout: 15_000 }).toEqual([]);
  });
});
