import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

describe('set-up is cached', () => {
  it('a second run reuses the cached mediasoup worker instead of rebuilding it', () => {
    const toolchain = JSON.parse(readFileSync('.cache/toolchain.json', 'utf8')) as { mediasoupWorkerBin: string };
    const before = statSync(toolchain.mediasoupWorkerBin);
    const out = execFileSync('bash', ['scripts/build-mediasoup-worker.sh'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim().split('\n');
    expect(out.at(-1)).toBe(toolchain.mediasoupWorkerBin);
    const after = statSync(toolchain.mediasoupWorkerBin);
    expect(after.ino).toBe(before.ino);
    expect(after.mtimeMs).toBe(before.mtimeMs);
    // The worker lives outside node_modules, so `npm ci` cannot wipe it.
    expect(toolchain.mediasoupWorkerBin).not.toContain('node_modules');
  });

  it('the whole set-up is a no-op when nothing changed', () => {
    const stamp = readFileSync('node_modules/.verbatim-install-stamp', 'utf8');
    const res = spawnSync('bash', ['scripts/setup.sh'], { encoding: 'utf8' });
    expect(res.status).toBe(0);
    // Nothing installed, nothing built: set-up logs only when it does work.
    expect(res.stderr).toBe('');
    expect(readFileSync('node_modules/.verbatim-install-stamp', 'utf8')).toBe(stamp);
  });
});
