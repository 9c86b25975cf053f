import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openDatabase, type Db } from '../../db/database.ts';
import { configToEnv, type Config } from '../lib/config.ts';
import type { StageName } from '../lib/contracts/stage-ipc.ts';
import { startEmbeddedPostgres } from '../lib/embedded-postgres.ts';
import { interruptedError as interrupted, VerbatimError } from '../lib/errors.ts';
import type { Logger } from '../lib/logger.ts';
import { startEmbeddedRedis } from '../lib/redis.ts';
import { loadOrCreateMasterKey } from '../lib/crypto/master-key.ts';
import { loadOrCreateCheckpointKey, loadOrCreateSecrets } from '../lib/secrets.ts';
import { SupervisedStage, type StagePolicy, type StageSpec } from './stage-supervisor.ts';

export interface RunningStack {
  urls: { sfu: string; recorder: string; audit: string };
  /** The SFU admin API secret (configured, or generated once into DATA_DIR/secrets.json). */
  apiSecret: string;
  /** Set on the first start only: the first admin API key (shown once, never stored). */
  firstAdminKey: string | undefined;
  /** The launcher's own connection to the shared database. */
  db: Db;
  databaseUrl: string;
  redisUrl: string;
  /** What the stages want the operator to know (a missing Whisper model, say). */
  notes: string[];
  stages: Record<StageName, SupervisedStage>;
  /** Resolves when the stack cannot go on: a stage kept crashing, or the embedded database or Redis died. */
  failed: Promise<VerbatimError>;
  /** In order: the SFU ends its sessions, the recorder seals them, then the queue consumer and the stores. */
  stop(): Promise<void>;
}

const entry = (stage: string) => fileURLToPath(new URL(`../${stage}/src/process.ts`, import.meta.url));

/**
 * `npm start`: one launcher supervising each stage as its own process (crash isolation:
 * one stage's exception never takes down another). The launcher brings up the stores
 * (a private redis-server and PostgreSQL unless REDIS_URL / DATABASE_URL are set, both
 * dying with it even on kill -9), migrates the database once, then starts the stages with
 * the configuration in their environment: the recorder first (the SFU needs its URL), the
 * transcode worker and the compliance API meanwhile; once all are up, the first start's
 * admin key. A stage that exits unexpectedly is restarted on the same port while the
 * others keep serving.
 * `signal` interrupts start-up at any point; whatever was started is stopped again.
 */
export async function startStack(config: Config, logger: Logger, opts: { signal?: AbortSignal } = {}): Promise<RunningStack> {
  const signal = opts.signal ?? new AbortController().signal;
  const undo: (() => Promise<void>)[] = [];
  let closing = false;
  let fail!: (e: VerbatimError) => void;
  const failed = new Promise<VerbatimError>((r) => (fail = r));
  // A store or stage going away while we stop is expected, not a failure.
  const failNow = (e: VerbatimError) => {
    if (!closing) fail(e);
  };
  // Servers still coming up when start-up was interrupted: released as soon as they are up.
  const late: Promise<void>[] = [];
  const cleanUp = async () => {
    closing = true;
    // What is still coming up (migrations, say) gets a moment to finish before the stores under it go.
    await Promise.race([Promise.allSettled(late), new Promise((r) => setTimeout(r, 5000))]);
    for (const f of undo.splice(0).reverse()) await f().catch((err: unknown) => logger.error({ err }, 'stopping failed'));
    await Promise.allSettled(late.splice(0));
  };
  const untilAborted = <T>(p: Promise<T>, release: (v: T) => Promise<void>) => raceAbort(p, signal, release, late);
  try {
    checkAborted(signal);
    mkdirSync(config.DATA_DIR, { recursive: true });
    // Created here, once, so stages starting side by side never race to create it.
    const secrets = loadOrCreateSecrets(config.DATA_DIR, { apiSecret: config.SFU_API_SECRET, tokenSecret: config.SFU_TOKEN_SECRET, recorderSecret: config.RECORDER_SECRET });
    loadOrCreateCheckpointKey(config.DATA_DIR);
    // Made here, before the stages start, so every stage reads the same master key.
    loadOrCreateMasterKey(config);

    // The private Redis and PostgreSQL (unless configured) come up side by side.
    if (!config.REDIS_URL) logger.info('starting the embedded Redis');
    if (!config.DATABASE_URL) logger.info('starting the embedded PostgreSQL');
    const [redisStart, pgStart] = await Promise.allSettled([
      config.REDIS_URL ? undefined : untilAborted(startEmbeddedRedis(config.DATA_DIR), (r) => r.stop()),
      config.DATABASE_URL ? undefined : untilAborted(startEmbeddedPostgres(config.DATA_DIR, { logger, signal }), (p) => p.stop()),
    ]);
    const redis = redisStart.status === 'fulfilled' ? redisStart.value : undefined;
    const pg = pgStart.status === 'fulfilled' ? pgStart.value : undefined;
    if (redis) {
      undo.push(() => redis.stop());
      redis.process.once('exit', () => failNow(storeDied('Redis')));
    }
    if (pg) {
      undo.push(() => pg.stop());
      void pg.exited.then(() => failNow(storeDied('PostgreSQL')));
    }
    for (const r of [redisStart, pgStart]) if (r.status === 'rejected') throw r.reason;
    const redisUrl = config.REDIS_URL ?? redis!.url;
    const databaseUrl = config.DATABASE_URL ?? pg!.url;
    // Loaded only for a data dir that still needs it (the launcher stays small).
    if (pg && existsSync(path.join(config.DATA_DIR, 'pglite'))) {
      const { importPgliteDataDir } = await import('./pglite-import.ts');
      await untilAborted(importPgliteDataDir(config.DATA_DIR, pg.url, logger), async () => {});
    }

    logger.info('running database migrations');
    const db = await untilAborted(openDatabase({ url: databaseUrl, ...(config.DATABASE_SCHEMA ? { schema: config.DATABASE_SCHEMA } : {}) }), (d) => d.destroy());
    undo.push(() => db.destroy());
    checkAborted(signal);

    const policy: StagePolicy = {
      restartMax: config.STAGE_RESTART_MAX,
      windowMs: config.STAGE_RESTART_WINDOW_MS,
      backoffMs: config.STAGE_RESTART_BACKOFF_MS,
      stopGraceMs: config.STAGE_STOP_GRACE_MS,
      readyTimeoutMs: config.STAGE_READY_TIMEOUT_MS,
    };
    const env = { ...process.env, ...configToEnv(config), DATABASE_URL: databaseUrl, REDIS_URL: redisUrl };
    const stage = (spec: StageSpec) => {
      const s = new SupervisedStage(spec, policy, logger);
      s.on('failed', failNow);
      return s;
    };
    const recorder = stage({ name: 'recorder', entry: entry('recorder'), env: () => env, pinPortAs: 'RECORDER_PORT' });
    const sfu = stage({ name: 'sfu', entry: entry('sfu'), env: () => ({ ...env, RECORDER_URL: config.RECORDER_URL ?? recorder.url }), pinPortAs: 'SFU_PORT' });
    const transcode = stage({ name: 'transcode', entry: entry('transcode'), env: () => env });
    const audit = stage({ name: 'audit', entry: entry('audit'), env: () => env, pinPortAs: 'AUDIT_PORT' });
    const stages = { recorder, sfu, transcode, audit };
    const stopStages = async () => {
      for (const s of [sfu, audit, transcode, recorder]) s.retire();
      // The SFU first: it ends recording sessions while the recorder still runs to seal them.
      for (const s of [sfu, audit, transcode, recorder]) await s.stop('launcher stopping');
    };
    undo.push(stopStages);
    // The first start's admin key, printed once: its module loads while the stages start, the
    // key is made once they are all up (a start that failed would have made a key nobody saw).
    const needsAdmin = (await db.selectFrom('users').select('id').where('role', '=', 'admin').execute()).length === 0;
    const auditModule = needsAdmin ? import('../audit/index.ts') : undefined;
    auditModule?.catch(() => {});
    // One stage failing to start stops the others' starts at once.
    const starting = new AbortController();
    const abortStarts = () => starting.abort();
    signal.addEventListener('abort', abortStarts, { once: true });
    const starts = [recorder.start(starting.signal).then(() => sfu.start(starting.signal)), transcode.start(starting.signal), audit.start(starting.signal)];
    try {
      await Promise.all(starts);
    } catch (err) {
      starting.abort();
      await Promise.allSettled(starts);
      throw err;
    } finally {
      signal.removeEventListener('abort', abortStarts);
    }

    const firstAdminKey = auditModule ? (await (await auditModule).createUserWithKey(db, { name: 'admin', role: 'admin' })).apiKey : undefined;
    let stopping: Promise<void> | undefined;
    return {
      urls: { sfu: sfu.url!, recorder: recorder.url!, audit: audit.url! },
      apiSecret: secrets.apiSecret,
      firstAdminKey,
      db,
      databaseUrl,
      redisUrl,
      notes: [recorder, sfu, transcode, audit].flatMap((st) => st.notes),
      stages,
      failed,
      stop() {
        stopping ??= cleanUp();
        return stopping;
      },
    };
  } catch (err) {
    await cleanUp();
    throw signal.aborted ? interrupted() : err;
  }
}

/**
 * A call to the SFU admin API of a running stack; the parsed JSON body. `allow404`: a
 * missing resource answers undefined instead of throwing.
 */
export async function sfuAdmin(stack: Pick<RunningStack, 'urls' | 'apiSecret'>, method: string, p: string, body?: unknown, opts: { allow404?: boolean; signal?: AbortSignal } = {}): Promise<unknown> {
  const res = await fetch(`${stack.urls.sfu}/api/v1${p}`, {
    method,
    headers: { authorization: `Bearer ${stack.apiSecret}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    signal: opts.signal ? AbortSignal.any([opts.signal, AbortSignal.timeout(30_000)]) : AbortSignal.timeout(30_000),
  });
  if (res.status === 404 && opts.allow404) return undefined;
  const json = (await res.json()) as { error?: { code: string; message: string } };
  if (!res.ok) throw new VerbatimError('STAGE_FAILED', `SFU admin API ${method} ${p}: ${res.status} ${json.error?.code ?? ''} ${json.error?.message ?? ''}`, { hint: 'See the log lines above.' });
  return json;
}

function checkAborted(signal: AbortSignal): void {
  if (signal.aborted) throw interrupted();
}

function storeDied(what: string): VerbatimError {
  return new VerbatimError('DATABASE_UNAVAILABLE', `the embedded ${what} exited unexpectedly`, { hint: 'See its log lines above; the data is in DATA_DIR. Start again.' });
}

/**
 * Waits for `p` unless start-up is interrupted first; then rejects at once, and whatever
 * `p` still brings up is released when it is up (`late` tracks that, for the cleanup to await).
 */
function raceAbort<T>(p: Promise<T>, signal: AbortSignal, release: (v: T) => Promise<void>, late: Promise<void>[]): Promise<T> {
  const releaseLater = () => late.push(p.then(release, () => {}));
  if (signal.aborted) {
    releaseLater();
    return Promise.reject(interrupted());
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      releaseLater();
      reject(interrupted());
    };
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        if (!signal.aborted) resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}
