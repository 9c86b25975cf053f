import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chownSync, existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { z } from 'zod';
import { interruptedError as interrupted, VerbatimError } from './errors.ts';
import type { Logger } from './logger.ts';

/**
 * The embedded default database: a private PostgreSQL server (Debian's `postgresql`
 * package) on a cluster of our own, reachable only through a unix socket, so every stage
 * process of `npm start` shares one database. It is started behind a shell guard reading
 * our stdin, like the private redis-server: when the launcher dies, even by kill -9, the
 * pipe closes and the guard shuts PostgreSQL down, so no orphan survives.
 *
 * Where the cluster lives: DATA_DIR/postgres. PostgreSQL refuses to run as root, so as
 * root it runs as the `postgres` user; when that user cannot reach DATA_DIR (a DATA_DIR
 * under /root, or a 0700 temporary directory) the cluster goes to a directory of its own
 * under the postgres user's home and DATA_DIR/postgres-location.json records where.
 */

const DB_NAME = 'verbatim';
const DB_USER = 'verbatim';
/** Only names the socket file (.s.PGSQL.5432): nothing listens on TCP. */
const PORT = 5432;
/** Longest socket path the kernel accepts is 107 bytes; keep a margin. */
const MAX_SOCKET_PATH = 100;

const LocationSchema = z.object({ v: z.literal(1), clusterDir: z.string().min(1), dataDir: z.string() });
const LOCATION_FILE = 'postgres-location.json';

export interface EmbeddedPostgres {
  /** postgres://verbatim@localhost:5432/verbatim?host=<socket dir> */
  url: string;
  clusterDir: string;
  /** This call ran initdb (the cluster did not exist before). */
  created: boolean;
  /** The guard process (its child is the postmaster). */
  process: ChildProcess;
  /** Resolves when the server is gone, stopped or not. */
  exited: Promise<void>;
  stop(): Promise<void>;
}

interface RunAs {
  uid: number;
  gid: number;
  home: string;
}

/** Debian installs each major version under /usr/lib/postgresql/<n>/bin; a cluster needs its own major. */
function binDir(clusterDir?: string): string {
  const root = process.env.VERBATIM_POSTGRES_BIN_ROOT ?? '/usr/lib/postgresql';
  const wanted = clusterDir && existsSync(path.join(clusterDir, 'PG_VERSION')) ? readFileSync(path.join(clusterDir, 'PG_VERSION'), 'utf8').trim() : undefined;
  const versions = existsSync(root) ? readdirSync(root).filter((v) => existsSync(path.join(root, v, 'bin', 'postgres'))) : [];
  const pick = wanted ? versions.find((v) => v === wanted) : versions.sort((a, b) => Number(b) - Number(a))[0];
  if (!pick) {
    throw new VerbatimError('DATABASE_UNAVAILABLE', wanted ? `the embedded database was created by PostgreSQL ${wanted}, which is not installed under ${root}` : `PostgreSQL is not installed (no ${root}/<version>/bin/postgres)`, {
      hint: wanted ? `Install postgresql-${wanted} (apt-get install postgresql-${wanted}), or set DATABASE_URL.` : 'Run scripts/setup.sh (it installs the Debian postgresql package), or set DATABASE_URL to a PostgreSQL server.',
    });
  }
  return path.join(root, pick, 'bin');
}

/** As root: the postgres system user, which PostgreSQL runs as. */
function runAsUser(): RunAs | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'));
  if (!line) throw new VerbatimError('DATABASE_UNAVAILABLE', 'running as root, but there is no "postgres" user to run the embedded PostgreSQL as', { hint: 'Install the Debian postgresql package (it creates the user), run as a non-root user, or set DATABASE_URL.' });
  const f = line.split(':');
  return { uid: Number(f[2]), gid: Number(f[3]), home: f[5] || '/var/lib/postgresql' };
}

/** Whether `user` may traverse every directory down to `dir` (it must own a directory inside it). */
function canReach(user: RunAs, dir: string): boolean {
  return spawnSync('test', ['-x', dir], { uid: user.uid, gid: user.gid, stdio: 'ignore' }).status === 0;
}

/** Where the cluster of this data dir is, or will be created. */
export function embeddedPostgresDir(dataDir: string): string {
  const located = readLocation(dataDir);
  if (located) return located;
  const inside = path.join(dataDir, 'postgres');
  const user = runAsUser();
  if (!user || existsSync(path.join(inside, 'PG_VERSION'))) return inside;
  mkdirSync(dataDir, { recursive: true });
  if (canReach(user, dataDir)) return inside;
  // One directory per data dir, named by its real path so two data dirs never share a cluster.
  const real = realpathSync(dataDir);
  const id = createHash('sha256').update(real).digest('hex').slice(0, 16);
  return path.join(user.home, 'verbatim-clusters', `${path.basename(real).replace(/[^\w.-]/g, '_').slice(0, 32)}-${id}`);
}

function readLocation(dataDir: string): string | undefined {
  const file = path.join(dataDir, LOCATION_FILE);
  if (!existsSync(file)) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    raw = undefined;
  }
  const parsed = LocationSchema.safeParse(raw);
  if (!parsed.success) throw new VerbatimError('DATABASE_UNAVAILABLE', `${file} is not a valid embedded database location`, { hint: 'Restore it from a backup of the data dir, or delete it to create a new, empty database.' });
  return parsed.data.clusterDir;
}

/** The embedded cluster exists (initdb has run) for this data dir. */
export function embeddedPostgresExists(dataDir: string): boolean {
  return existsSync(path.join(embeddedPostgresDir(dataDir), 'PG_VERSION'));
}

function socketDir(clusterDir: string): string {
  if (path.join(clusterDir, `.s.PGSQL.${PORT}`).length <= MAX_SOCKET_PATH) return clusterDir;
  // A deep data dir: the socket goes to a short directory of ours, named after the cluster.
  return path.join('/tmp', `verbatim-pg-${createHash('sha256').update(clusterDir).digest('hex').slice(0, 12)}`);
}

function urlFor(sockDir: string): string {
  return `postgres://${DB_USER}@localhost:${PORT}/${DB_NAME}?host=${encodeURIComponent(sockDir)}`;
}

/** A server already running on this data dir's cluster (another launcher, or a CLI command): its URL. */
export function runningEmbeddedPostgres(dataDir: string): { url: string; pid: number } | undefined {
  const clusterDir = embeddedPostgresDir(dataDir);
  const pidFile = path.join(clusterDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return undefined;
  // postmaster.pid: pid, data dir, start time, port, socket dir, listen address, shmem key, status.
  const lines = readFileSync(pidFile, 'utf8').split('\n');
  const pid = Number(lines[0]);
  const sock = lines[4]?.trim();
  if (!pid || !sock || !alive(pid) || !existsSync(path.join(sock, `.s.PGSQL.${PORT}`))) return undefined;
  return { url: urlFor(sock), pid };
}

/** A live postmaster (after a crash the pid in postmaster.pid may belong to another program by now). */
function alive(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('postgres');
  } catch {
    return false;
  }
}

/** Runs a PostgreSQL tool to completion without blocking the event loop (a Ctrl-C meanwhile is still handled). */
function run(bin: string, args: string[], user: RunAs | undefined, what: string, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { ...(user ? { uid: user.uid, gid: user.gid, cwd: user.home } : {}), stdio: ['ignore', 'pipe', 'pipe'], ...(signal ? { signal, killSignal: 'SIGKILL' as const } : {}) });
    let output = '';
    child.stdout.on('data', (d) => (output = (output + d).slice(-4000)));
    child.stderr.on('data', (d) => (output = (output + d).slice(-4000)));
    child.once('error', (err) => reject(signal?.aborted ? interrupted() : new VerbatimError('DATABASE_UNAVAILABLE', `${what} failed: ${err.message}`, { hint: 'Is the Debian postgresql package installed?' })));
    child.once('exit', (code) => {
      if (code === 0) resolve();
      else if (signal?.aborted) reject(interrupted());
      else reject(new VerbatimError('DATABASE_UNAVAILABLE', `${what} failed: ${output.trim()}`, { hint: 'See the message above; the embedded database lives in the directory it names.' }));
    });
  });
}

/** initdb into a scratch directory renamed into place, so a crash halfway leaves nothing half-made. */
async function initCluster(dataDir: string, clusterDir: string, user: RunAs | undefined, signal?: AbortSignal): Promise<void> {
  const bin = binDir();
  const scratch = `${clusterDir}.initdb`;
  rmSync(scratch, { recursive: true, force: true });
  const outside = clusterDir !== path.join(dataDir, 'postgres');
  mkdirSync(path.dirname(clusterDir), { recursive: true, mode: 0o700 });
  mkdirSync(scratch, { mode: 0o700 });
  if (user) {
    // The parent is DATA_DIR itself (left as it is) or our directory in the postgres user's home.
    if (outside) chownSync(path.dirname(clusterDir), user.uid, user.gid);
    chownSync(scratch, user.uid, user.gid);
  }
  // Trust over the socket only: the socket directory is the cluster's own (0700) and nothing listens on TCP.
  try {
    await run(path.join(bin, 'initdb'), ['-D', scratch, '-U', DB_USER, '-A', 'trust', '-E', 'UTF8', '--locale=C.UTF-8', '--data-checksums', '--no-instructions'], user, 'initdb of the embedded database', signal);
  } catch (err) {
    rmSync(scratch, { recursive: true, force: true });
    throw err;
  }
  renameSync(scratch, clusterDir);
  if (outside) {
    const file = path.join(dataDir, LOCATION_FILE);
    writeFileSync(`${file}.tmp`, JSON.stringify({ v: 1, clusterDir, dataDir: realpathSync(dataDir) }, null, 2));
    renameSync(`${file}.tmp`, file);
  }
}

/**
 * Starts the data dir's PostgreSQL (creating the cluster on first use) and the `verbatim`
 * database in it. Refuses when a server already runs on that cluster: one owner at a time.
 */
export async function startEmbeddedPostgres(dataDir: string, opts: { logger?: Logger; signal?: AbortSignal } = {}): Promise<EmbeddedPostgres> {
  const user = runAsUser();
  const clusterDir = embeddedPostgresDir(dataDir);
  const created = !existsSync(path.join(clusterDir, 'PG_VERSION'));
  if (created) await initCluster(dataDir, clusterDir, user, opts.signal);
  if (opts.signal?.aborted) throw interrupted();
  const other = runningEmbeddedPostgres(dataDir);
  if (other) {
    throw new VerbatimError('DATABASE_UNAVAILABLE', `the embedded database of ${dataDir} is already running (postgres pid ${other.pid})`, {
      hint: 'Another Verbatim (npm start, or a CLI command) is using this data dir; stop it first, or use another DATA_DIR.',
    });
  }
  const sockDir = socketDir(clusterDir);
  if (sockDir !== clusterDir) {
    mkdirSync(sockDir, { recursive: true, mode: 0o700 });
    if (user) chownSync(sockDir, user.uid, user.gid);
  }
  const postgres = path.join(binDir(clusterDir), 'postgres');
  const args = ['-D', clusterDir, '-k', sockDir, '-p', String(PORT), '-c', 'listen_addresses=', '-c', 'unix_socket_permissions=0700', '-c', 'max_connections=200', '-c', 'shared_buffers=32MB'];
  // The watcher (explicit <&0: a background job would get /dev/null) waits for our stdin to
  // close, then asks for a fast shutdown (SIGINT: clients disconnected, a clean checkpoint),
  // QUIT after 15 s if it hangs. SIGINT is repeated every 0.5 s: bash starts a background job
  // with SIGINT ignored, and a postmaster stopped before it installed its own handler (a
  // Ctrl-C right at start-up) would lose a single one. The guard itself waits on the
  // postmaster, so its exit also says when PostgreSQL died on its own.
  const guard = [
    `${postgres} ${args.map(shellQuote).join(' ')} & pid=$!`,
    '{ cat >/dev/null; for i in $(seq 150); do [ $((i % 5)) = 1 ] && kill -INT $pid 2>/dev/null; kill -0 $pid 2>/dev/null || exit 0; sleep 0.1; done; kill -QUIT $pid 2>/dev/null; } <&0 &',
    'wait $pid',
  ].join('\n');
  // detached: a Ctrl-C to the launcher's process group must not stop the database before the stages.
  const child = spawn('bash', ['-c', guard], { stdio: ['pipe', 'ignore', 'pipe'], detached: true, ...(user ? { uid: user.uid, gid: user.gid, cwd: user.home } : {}) });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr = (stderr + d).slice(-4000);
    for (const line of d.split('\n').filter(Boolean)) {
      if (/\b(FATAL|PANIC)\b/.test(line)) opts.logger?.error({ component: 'postgres' }, line);
      else if (/\b(ERROR|WARNING)\b/.test(line)) opts.logger?.warn({ component: 'postgres' }, line);
      else opts.logger?.debug({ component: 'postgres' }, line);
    }
  });
  const url = urlFor(sockDir);
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.stdin?.end();
    await exited;
  };
  try {
    await waitUntilAccepting(clusterDir, child, () => stderr, opts.signal);
    await ensureDatabase(sockDir);
  } catch (err) {
    await stop();
    throw err;
  }
  opts.logger?.info({ clusterDir, created }, 'embedded PostgreSQL ready');
  return { url, clusterDir, created, process: child, exited, stop };
}

/**
 * postmaster.pid says "ready" once the server accepts connections (probing earlier only
 * logs FATAL lines); a file left by a crashed server is older than this start.
 */
async function waitUntilAccepting(clusterDir: string, child: ChildProcess, stderr: () => string, signal?: AbortSignal): Promise<void> {
  const startedSec = Math.floor(Date.now() / 1000) - 1;
  const deadline = Date.now() + 60_000;
  const pidFile = path.join(clusterDir, 'postmaster.pid');
  for (;;) {
    if (signal?.aborted) throw interrupted();
    if (child.exitCode !== null) {
      throw new VerbatimError('DATABASE_UNAVAILABLE', `the embedded PostgreSQL exited during start-up: ${stderr().trim().split('\n').slice(-3).join(' | ')}`, { hint: 'See the PostgreSQL message; the cluster is in the directory it names.' });
    }
    let status = '';
    try {
      const lines = readFileSync(pidFile, 'utf8').split('\n');
      if (Number(lines[2]) >= startedSec) status = lines[7]?.trim() ?? '';
    } catch {
      // not written yet
    }
    if (status === 'ready') return;
    if (Date.now() > deadline) throw new VerbatimError('DATABASE_UNAVAILABLE', `the embedded PostgreSQL did not become ready within 60 s (status "${status}")`, { hint: 'The machine may be overloaded; try again.' });
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function ensureDatabase(sockDir: string): Promise<void> {
  const c = new pg.Client({ host: sockDir, port: PORT, user: DB_USER, database: 'postgres' });
  await c.connect();
  try {
    const { rowCount } = await c.query('select 1 from pg_database where datname = $1', [DB_NAME]);
    if (!rowCount) await c.query(`create database ${DB_NAME}`);
  } finally {
    await c.end();
  }
}

/**
 * Deletes a data dir's cluster kept outside it (as root, see above); the caller removes
 * the data dir itself. For tests and for operators retiring a data dir.
 */
export function removeEmbeddedPostgres(dataDir: string): void {
  if (!existsSync(dataDir)) return;
  const clusterDir = embeddedPostgresDir(dataDir);
  if (clusterDir === path.join(dataDir, 'postgres')) return;
  rmSync(clusterDir, { recursive: true, force: true });
  rmSync(`${clusterDir}.initdb`, { recursive: true, force: true });
}

function shellQuote(s: string): string {
  return /^[\w./=-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
