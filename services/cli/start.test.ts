import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openConfiguredDatabase } from '../../db/database.ts';
import { launchChromium } from '../../testing/browser.ts';
import { removeDataDir, tempDataDir } from '../../testing/data-dirs.ts';
import { descendantProcesses, processAlive as alive } from '../../testing/processes.ts';
import { fakeCameraY4m, speechWav } from '../../testing/media-fixtures.ts';

const descendants = (pid: number): number[] => [...descendantProcesses(pid).keys()];

function launch(dataDir: string): { child: ChildProcess; ready: Promise<string>; printed: Promise<string> } {
  const child = spawn(process.execPath, ['--import', 'tsx', 'services/cli/main.ts', 'start'], {
    env: { ...process.env, DATA_DIR: dataDir, SFU_PORT: '0', RECORDER_PORT: '0', AUDIT_PORT: '0', RECORDER_MIN_FREE_MB: '1', LOG_LEVEL: 'warn', REDIS_URL: '', DATABASE_URL: '' },
    stdio: ['ignore', 'pipe', 'inherit'],
    // Its own process group, like a terminal's foreground job: Ctrl-C goes to the whole group.
    detached: true,
  });
  let out = '';
  let printedResolve!: (s: string) => void;
  const printed = new Promise<string>((r) => (printedResolve = r));
  const ready = new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      const m = /Meeting page : (\S+)/.exec(out);
      if (m && out.includes('Press Ctrl-C')) {
        printedResolve(out);
        resolve(m[1]!);
      }
    });
    child.once('exit', (code) => reject(new Error(`npm start exited early (${code}): ${out}`)));
  });
  return { child, ready, printed };
}

const browsers: { close(): Promise<void> }[] = [];
const dataDirs: string[] = [];
afterAll(async () => {
  for (const b of browsers) await b.close();
  for (const d of dataDirs) removeDataDir(d);
});
const newDataDir = () => {
  const d = tempDataDir('verbatim-start-');
  dataDirs.push(d);
  return d;
};

describe('npm start on embedded defaults', () => {
  it('prints a join link that works, records, and stops cleanly on SIGINT with nothing left running', async () => {
    const dataDir = newDataDir();
    const { child, ready, printed } = launch(dataDir);
    const link = await ready;
    expect(link).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/meet\?token=/);
    // The first admin key printed at start opens the compliance API.
    const out = await printed;
    const key = /Admin key {4}: (vb_\S+)/.exec(out)![1]!;
    const compliance = /Compliance {3}: (\S+)\/api\/v1/.exec(out)![1]!;
    // The printed console URL serves the sign-in page.
    const consoleUrl = /Console {6}: (\S+)/.exec(out)![1]!;
    expect(consoleUrl).toBe(`${compliance}/console/`);
    const consolePage = await fetch(consoleUrl);
    expect(consolePage.status).toBe(200);
    expect(consolePage.headers.get('content-type')).toMatch(/text\/html/);
    expect((await fetch(`${compliance}/api/v1/audit?limit=1`, { headers: { authorization: `Bearer ${key}` } })).status).toBe(403); // admin is not an auditor
    expect((await fetch(`${compliance}/api/v1/keys`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'Olga', role: 'compliance_officer' }) })).status).toBe(201);
    const browser = await launchChromium({ video: fakeCameraY4m(), audio: speechWav() });
    browsers.push(browser);
    const page = await (await browser.newContext()).newPage();
    await page.goto(link);
    await page.waitForFunction(() => (window as any).verbatim?.state.phase === 'joined', undefined, { timeout: 30_000 });
    await page.click('#toggle-recording');
    await expect.poll(() => page.locator('#recording-banner').textContent(), { timeout: 10_000 }).toContain('being recorded');
    await new Promise((r) => setTimeout(r, 3000));
    await page.click('#leave');
    // The session is sealed, queued and transcoded inside the same launcher.
    const artifacts = path.join(dataDir, 'artifacts', 'sessions', 'demo');
    await expect.poll(() => existsSync(artifacts) && readdirSync(artifacts).some((s) => existsSync(path.join(artifacts, s, 'composite.mp4'))), { timeout: 90_000, interval: 500 }).toBe(true);

    const procs = descendants(child.pid!);
    expect(procs.length).toBeGreaterThan(3); // stage processes, mediasoup workers, recorder worker, redis and postgres with their guards
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    // A terminal's Ctrl-C: SIGINT to every process of the foreground group at once.
    process.kill(-child.pid!, 'SIGINT');
    expect(await exited).toBe(0);
    await expect.poll(() => procs.filter(alive), { timeout: 10_000 }).toEqual([]);

    // Data dir consistent: no open segment files, the database reopens with the session done.
    const recordings = path.join(dataDir, 'recordings', 'demo');
    for (const s of readdirSync(recordings)) {
      expect(readdirSync(path.join(recordings, s)).filter((f) => f.endsWith('.part'))).toEqual([]);
      expect(existsSync(path.join(recordings, s, 'manifest.json'))).toBe(true);
    }
    // The embedded PostgreSQL of the data dir, started again for this check (npm start has stopped it).
    const db = await openConfiguredDatabase({ DATA_DIR: dataDir });
    try {
      const rows = await db.selectFrom('recording_sessions').select(['status', 'room_id']).execute();
      expect(rows).toEqual([{ status: 'done', room_id: 'demo' }]);
    } finally {
      await db.destroy();
    }
  });

  it('kill -9 of the launcher leaves no redis-server, recorder or media workers behind', async () => {
    const dataDir = newDataDir();
    const { child, ready } = launch(dataDir);
    await ready;
    const procs = descendants(child.pid!);
    // The front process reruns the launcher in its own process group: kill that one, not just the front.
    const launcher = procs.find((p) => readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('services/cli/main.ts'))!;
    const inner = descendantProcesses(launcher);
    expect([...inner.values()].some((cmd) => cmd.startsWith('redis-server'))).toBe(true);
    process.kill(launcher, 'SIGKILL');
    // Named, so a process left behind says what it is.
    await expect.poll(() => [...inner].filter(([pid]) => alive(pid)).map(([pid, cmd]) => `${pid} ${cmd}`), { timeout: 15_000 }).toEqual([]);
    child.kill('SIGKILL');
  });
});
