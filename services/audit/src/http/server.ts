import type { AddressInfo } from 'node:net';
import { createHmac, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Kysely } from 'kysely';
import type { Database } from '../../../../db/schema.ts';
import { parseRoleMap, type Config } from '../../../lib/config.ts';
import { VerbatimError } from '../../../lib/errors.ts';
import { refusingFastify, routeOf } from '../../../lib/http/refusals.ts';
import { loadOrCreateSecrets } from '../../../lib/secrets.ts';
import { storageFromConfig } from '../../../lib/storage/storage-from-config.ts';
import { AuditLog } from '../audit-log.ts';
import { ApiKeyVerifier, ConsoleSessions, FailedAuthLimiter } from '../auth.ts';
import { registerConsole } from '../console/console-routes.ts';
import { ErasureJobs } from '../erasure-jobs.ts';
import { ExportJobs } from '../export-jobs.ts';
import { SupervisionRuns } from '../supervision/supervision-runs.ts';
import { artifactRetention, checkpointStoreFromConfig, checkpointVerifiersFromConfig } from '../checkpoint-setup.ts';
import { OidcRelyingParty, SSO_PATHS, type SsoOptions } from '../sso.ts';
import type { AuditServer, AuditServerOptions } from './audit-server-options.ts';
import { requestAuthenticator } from './authenticate.ts';
import { docsPage, openApiDocument } from './openapi.ts';
import { RequestAudit } from './request-audit.ts';
import { API_HINT, mountRouteTable } from './route-table.ts';
import { routeTable } from './routes/index.ts';

/**
 * The compliance service's HTTP API (v1). Every /api/v1 request carries
 * `Authorization: Bearer <API key>` (or the console's session cookie), is authorised against
 * the key's role, and leaves exactly one entry in the hash-chained audit trail (RequestAudit).
 * The OpenAPI document is generated from the same route table (GET /docs/json). Besides the
 * API: /healthz, /docs and the web console.
 */

export type { AuditServer, AuditServerOptions } from './audit-server-options.ts';

export const BODY_LIMIT = 64 * 1024;
/** Longer than any id of the API percent-encoded (an artifact id is up to 300 characters of a path): longer is 414. */
export const MAX_PARAM_LENGTH = 1024;
/** Each app's relying party, for startAuditServer to tell it the listening URL. */
const relyingParties = new WeakMap<FastifyInstance, OidcRelyingParty>();

/** Builds the app without listening (tests may inject). */
export function buildAuditApp(opts: AuditServerOptions): FastifyInstance {
  const { db, logger } = opts;
  const log = new AuditLog(db);
  const verifier = new ApiKeyVerifier(db, opts.now ? { now: opts.now } : {});
  const sessionSecret = opts.sessionSecret ?? randomBytes(32);
  const sessions = new ConsoleSessions(db, verifier, {
    secret: sessionSecret,
    ...(opts.sessionTtlMs !== undefined ? { ttlMs: opts.sessionTtlMs } : {}),
    ...(opts.now ? { now: opts.now } : {}),
  });
  const limiter = new FailedAuthLimiter({ limit: opts.failedAuthPerMinute ?? 10, windowMs: 60_000, ...(opts.now ? { now: opts.now } : {}) });
  const audit = new RequestAudit(log, logger);
  const setPrincipal = audit.setPrincipal.bind(audit);
  // Every refusal, wherever it happens (before routing included), is answered with a code and audited once.
  const app = refusingFastify({ bodyLimit: BODY_LIMIT, maxParamLength: MAX_PARAM_LENGTH, hint: API_HINT, logger, record: (r, e) => audit.refused(r, e) }, { trustProxy: opts.trustProxy ?? false });
  // An empty JSON body is no body (POST /audit/verify needs none); anything else goes to Fastify's own
  // parser, with its prototype-poisoning checks.
  const json = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    if (body === '') return done(null, undefined);
    return json(req, body as string, done);
  });
  const erasure =
    opts.storage && opts.recordingsDir
      ? new ErasureJobs({
          db,
          storage: opts.storage,
          audit: log,
          recordingsDir: opts.recordingsDir,
          workDir: opts.workDir ?? path.join(opts.recordingsDir, '..', 'erasure-work'),
          logger: opts.logger,
          redisUrl: opts.redisUrl,
          queuePrefix: opts.queuePrefix,
          ...(opts.now ? { now: opts.now } : {}),
        })
      : undefined;
  // This process works through queued erasure requests (and resumes interrupted ones) while it serves.
  if (erasure && opts.redisUrl) app.addHook('onReady', () => erasure.start());
  if (erasure) app.addHook('onClose', () => erasure.close());
  const sso = opts.sso ? new OidcRelyingParty(db, opts.sso, createHmac('sha256', sessionSecret).update('verbatim sso flow v1').digest(), opts.now) : undefined;
  if (sso) relyingParties.set(app, sso);
  let exportJobs: ExportJobs | undefined;
  const exports = (): ExportJobs => {
    if (!opts.storage || !opts.exportsDir) {
      throw new VerbatimError('INTERNAL', 'the compliance API was started without storage and an exports directory: exports are unavailable', { hint: 'Pass storage and exportsDir to startAuditServer (npm start does), or use `verbatim export create`.' });
    }
    exportJobs ??= new ExportJobs({ db, storage: opts.storage, auditLog: log, dir: opts.exportsDir, logger: opts.logger });
    return exportJobs;
  };
  // Policy runs over stored transcripts are jobs on the supervision queue; this process works through them.
  const supervision = opts.redisUrl ? new SupervisionRuns({ db, redisUrl: opts.redisUrl, queuePrefix: opts.queuePrefix, logger: opts.logger }) : undefined;
  if (supervision) app.addHook('onReady', () => supervision.start());
  if (supervision) app.addHook('onClose', () => supervision.close());
  const table = routeTable({ db, log, options: opts, now: () => opts.now?.() ?? new Date(), verifier, sessions, limiter, setPrincipal, erasure, sso, exports, supervision });
  const authenticate = requestAuthenticator({ verifier, sessions, limiter, setPrincipal });
  const doc = openApiDocument(table);
  app.get('/healthz', async () => ({ ok: true }));
  app.get('/docs', async (_req, reply) => reply.type('text/html; charset=utf-8').send(docsPage(doc)));
  app.get('/docs/json', async () => doc);
  // The web console (public page; all its data comes from /api/v1 with the session cookie).
  registerConsole(app, { sso: sso !== undefined });
  app.register(
    async (api) => {
      // Only routes that say so take a form (the IdP's back-channel logout posts one).
      const formRoutes = new Set(table.filter((r) => r.bodyType === 'application/x-www-form-urlencoded').map((r) => `/api/v1${r.url}`));
      api.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (req, body, done) => {
        if (!formRoutes.has(routeOf(req))) return done(new VerbatimError('UNSUPPORTED_MEDIA_TYPE', 'this route takes application/json', { hint: API_HINT }), undefined);
        done(null, Object.fromEntries(new URLSearchParams(body as string)));
      });
      mountRouteTable(api, table, audit, authenticate);
    },
    { prefix: '/api/v1' },
  );
  return app;
}

/**
 * The options the launcher derives from the configuration: the console session key (derived from
 * the persisted token secret, so sign-ins survive a restart without another secret to manage) and
 * the artifact storage.
 */
export function auditServerOptionsFromConfig(
  config: Config,
  db?: Kysely<Database>,
): Pick<AuditServerOptions, 'sessionSecret' | 'storage' | 'recordingsDir' | 'workDir' | 'failedAuthPerMinute' | 'exportsDir' | 'redisUrl' | 'keyRotationGraceHours' | 'sso' | 'checkpoints' | 'reconcileGapSeconds' | 'recorderDeadAfterMs'> {
  const secrets = loadOrCreateSecrets(config.DATA_DIR, { apiSecret: config.SFU_API_SECRET, tokenSecret: config.SFU_TOKEN_SECRET, recorderSecret: config.RECORDER_SECRET });
  const storage = storageFromConfig(config, db ? { retainUntil: artifactRetention(config, db), db } : {});
  return {
    sessionSecret: createHmac('sha256', secrets.tokenSecret).update('verbatim console session v1').digest(),
    storage,
    ...(db ? { checkpoints: { store: checkpointStoreFromConfig(config, db, storage), verifiers: checkpointVerifiersFromConfig(config) } } : {}),
    recordingsDir: config.RECORDINGS_DIR,
    workDir: path.join(config.DATA_DIR, 'erasure-work'),
    exportsDir: path.join(config.DATA_DIR, 'exports'),
    failedAuthPerMinute: config.AUDIT_FAILED_AUTH_PER_MIN,
    keyRotationGraceHours: config.AUDIT_KEY_ROTATION_GRACE_HOURS,
    reconcileGapSeconds: config.RECONCILE_GAP_SECONDS,
    recorderDeadAfterMs: config.RECORDER_DEAD_AFTER_MS,
    // Erasure jobs run on this Redis and queue composite re-renders to the transcode workers on it.
    redisUrl: config.REDIS_URL,
    ...(config.OIDC_ISSUER_URL ? { sso: ssoOptionsFromConfig(config) } : {}),
  };
}

/** The OIDC_* settings (validated by loadConfig) as the relying party's options; reads OIDC_CLIENT_SECRET_FILE. */
export function ssoOptionsFromConfig(config: Config): SsoOptions {
  let clientSecret = config.OIDC_CLIENT_SECRET;
  if (config.OIDC_CLIENT_SECRET_FILE) {
    try {
      clientSecret = readFileSync(config.OIDC_CLIENT_SECRET_FILE, 'utf8').trim();
    } catch (err) {
      throw new VerbatimError('CONFIG_INVALID', `cannot read OIDC_CLIENT_SECRET_FILE ${config.OIDC_CLIENT_SECRET_FILE}: ${(err as Error).message}`, { hint: 'Point OIDC_CLIENT_SECRET_FILE at a readable file holding the client secret.' });
    }
    if (!clientSecret) throw new VerbatimError('CONFIG_INVALID', `OIDC_CLIENT_SECRET_FILE ${config.OIDC_CLIENT_SECRET_FILE} is empty`, { hint: 'Write the client secret into it.' });
  }
  const base = config.AUDIT_PUBLIC_URL;
  const redirectUrl = config.OIDC_REDIRECT_URL ?? (base ? new URL(SSO_PATHS.callback, base).href : undefined);
  return {
    issuer: config.OIDC_ISSUER_URL!,
    clientId: config.OIDC_CLIENT_ID!,
    ...(clientSecret !== undefined ? { clientSecret } : {}),
    ...(redirectUrl ? { redirectUrl } : {}),
    scopes: config.OIDC_SCOPES,
    groupsClaim: config.OIDC_GROUPS_CLAIM,
    roleMap: parseRoleMap(config.OIDC_ROLE_MAP!),
  };
}

export async function startAuditServer(opts: AuditServerOptions): Promise<AuditServer> {
  const app = buildAuditApp(opts);
  await app.listen({ host: opts.host ?? '127.0.0.1', port: opts.port ?? 0 });
  const addr = app.server.address() as AddressInfo;
  const url = `http://${addr.address.includes(':') ? `[${addr.address}]` : addr.address}:${addr.port}`;
  // Without a configured redirect URL, SSO redirects back to where this server listens.
  relyingParties.get(app)?.setBaseUrl(url);
  opts.logger.info({ url }, 'compliance API listening');
  return { app, url, close: () => app.close() };
}
