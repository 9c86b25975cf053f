import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { removeDataDir } from '../../testing/data-dirs.ts';
import { descendantProcesses as descendants, processAlive as alive } from '../../testing/processes.ts';
import { TEST_PHRASE } from '../transcode/index.ts';
import { CAST, runDemo } from './demo.ts';


const dataDir = mkdtempSync(path.join(os.tmpdir(), 'verbatim-demo-test-'));
const cliDataDir = mkdtempSync(path.join(os.tmpdir(), 'verbatim-demo-cli-test-'));
afterAll(() => {
  // With the embedded PostgreSQL's cluster when, as root, it lives outside the data dir.
  removeDataDir(dataDir);
  removeDataDir(cliDataDir);
});

describe('npm run demo', () => {
  it('records a three-person meeting, leaves the decliner out, places the late joiner, and finds the consenting speakers by search', { timeout: 420_000 }, async () => {
    // esbuild's service (the meeting page bundle) lives as long as this worker: not ours to stop.
    const before = new Set(descendants(process.pid).keys());
    const seen = new Map<number, string>();
    const sampler = setInterval(() => {
      for (const [pid, cmd] of descendants(process.pid)) if (!before.has(pid) && !cmd.includes('esbuild')) seen.set(pid, cmd);
    }, 250);
    const lines: string[] = [];
    const result = await (async () => {
      try {
        return await runDemo({
          dataDir,
          env: { ...process.env, DATABASE_URL: '', REDIS_URL: '' },
          overrides: { SFU_PORT: 0, RECORDER_PORT: 0, AUDIT_PORT: 0, RECORDER_MIN_FREE_MB: 1, SFU_WORKERS: 1 },
          // Deterministic text whatever model this machine has: the generated fixed-phrase model.
          model: 'generated',
          out: (l) => lines.push(l),
        });
      } finally {
        clearInterval(sampler);
      }
    })();
    const printed = lines.join('\n');

    expect(result.ok, printed).toBe(true);
    expect(result.session.status).toBe('done');
    expect(result.session.transcriptStatus).toBe('done');
    expect(result.query).toBe(`"${TEST_PHRASE}"`);
    // The output says plainly that the text is fixed, not the speech.
    expect(printed).toContain(`always the fixed phrase "${TEST_PHRASE}", NOT the words spoken`);

    const by = (id: string) => result.participants.find((p) => p.identity === id)!;
    // The decliner is in the session record as declined, with no tracks, artifacts or hits.
    expect(by('carol')).toMatchObject({ consent: 'declined', tracks: 0, startsAt: null });
    expect(result.artifacts.filter((a) => a.participant === 'carol')).toEqual([]);
    const manifestFile = path.join(dataDir, 'recordings', result.room, result.sessionId, 'manifest.json');
    const manifest = JSON.parse(readFileSync(manifestFile, 'utf8')) as { tracks: { participant: string }[] };
    expect(manifest.tracks.map((t) => t.participant).sort()).toEqual(['alice', 'alice', 'bob', 'bob']);
    expect(readdirSync(path.dirname(manifestFile)).filter((f) => f.startsWith('carol'))).toEqual([]);

    // The audited consent log (read with an auditor key) has each answer, in this session.
    expect(result.consentLog.map((e) => [e.participant, e.decision, e.method, e.session]).sort()).toEqual([
      ['alice', 'granted', 'click', result.sessionId],
      ['bob', 'granted', 'click', result.sessionId],
      ['carol', 'declined', 'click', result.sessionId],
    ]);

    // The late joiner starts >= 9.5 s into the session, in the recording and in the transcript.
    const late = CAST.find((c) => c.joinAfter > 0)!;
    expect(by(late.identity).startsAt!).toBeGreaterThanOrEqual(9.5);
    const lateHits = result.hits.filter((h) => h.participant === late.identity);
    expect(lateHits.length).toBeGreaterThan(0);
    expect(Math.min(...lateHits.map((h) => h.start))).toBeGreaterThanOrEqual(9.5);

    // The search found every consenting participant, and only them.
    expect([...new Set(result.hits.map((h) => h.participant))].sort()).toEqual(['alice', 'bob']);
    for (const h of result.hits) expect(h.snippet.toLowerCase()).toContain('*verbatim*');
    expect(result.artifacts.some((a) => a.kind === 'composite' && a.key.endsWith('composite.mp4'))).toBe(true);
    expect(result.consoleUrl).toBe(`${result.auditUrl}/console/sessions/${result.sessionId}`);
    expect(printed).toContain(`Console   : ${result.consoleUrl}`);

    // Clean shutdown: every process the demo started (Chromium, mediasoup, recorder worker, redis) is gone.
    const started = [...seen.keys()];
    expect(started.some((p) => seen.get(p)!.startsWith('redis-server'))).toBe(true);
    expect(started.some((p) => /chrom/i.test(seen.get(p)!))).toBe(true);
    await expect.poll(() => started.filter(alive).map((p) => `${p} ${seen.get(p)}`), { timeout: 15_000 }).toEqual([]);
  });

  it('Ctrl-C in a terminal (SIGINT to the whole process group) stops the demo cleanly: recording sealed, nothing left running', { timeout: 120_000 }, async () => {
    // detached: the CLI leads its own group here, as a terminal's foreground job does.
    const child = spawn(process.execPath, ['--import', 'tsx', 'services/cli/main.ts', 'demo', '--data-dir', cliDataDir], {
      detached: true,
      env: { ...process.env, DATABASE_URL: '', REDIS_URL: '', RECORDER_MIN_FREE_MB: '1', SFU_WORKERS: '1', WHISPER_MODEL: path.join(cliDataDir, 'no-model.bin') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    let exitCode: number | null | undefined;
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r((exitCode = code))));
    let seen = new Map<number, string>();
    try {
      await expect.poll(() => /Alice joined/.test(out) || exitCode !== undefined, { timeout: 90_000, interval: 250 }).toBe(true);
      expect(exitCode, `${out}\n${err}`).toBeUndefined();
      seen = descendants(child.pid!);
      expect([...seen.values()].some((c) => c.includes('mediasoup-worker'))).toBe(true);
      process.kill(-child.pid!, 'SIGINT');
      expect(await exited, `${out}\n${err}`).toBe(1);
    } finally {
      // A failed run must not leave the demo behind (its inner process leads its own group).
      const kill = (pid: number) => {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      };
      for (const pid of [...descendants(child.pid!).keys()].reverse()) kill(pid);
      if (exitCode === undefined) kill(-child.pid!);
    }
    expect(err).toContain('demo interrupted');
    // The session Alice was recorded in is sealed: a manifest, no open segment files.
    const roomDir = path.join(cliDataDir, 'recordings');
    const sessions = readdirSync(roomDir).flatMap((r) => readdirSync(path.join(roomDir, r)).map((s) => path.join(roomDir, r, s)));
    expect(sessions).toHaveLength(1);
    expect(readdirSync(sessions[0]!).filter((f) => f.endsWith('.part'))).toEqual([]);
    expect(existsSync(path.join(sessions[0]!, 'manifest.json'))).toBe(true);
    await expect.poll(() => [...seen.keys()].filter(alive).map((p) => `${p} ${seen.get(p)}`), { timeout: 15_000 }).toEqual([]);
  });
});
