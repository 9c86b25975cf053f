import { createHash, timingSafeEqual } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { FastifyRequest } from 'fastify';
import type { ZodType } from 'zod';
import type { AuditEntryInput, AuditSink } from '../../lib/audit-sink.ts';
import { openConfiguredDatabase, type Db } from '../../../db/database.ts';
import type { Config } from '../../lib/config.ts';
import { EndSessionRequestSchema, SessionEventsRequestSchema, SessionParamsSchema, StartTrackRequestSchema, TrackParamsSchema } from '../../lib/contracts/recorder-control.ts';
import { VerbatimError } from '../../lib/errors.ts';
import { parseOrBadRequest } from '../../lib/http/parse-or-bad-request.ts';
import { refusingFastify, type RefusedRequest } from '../../lib/http/refusals.ts';
import { toStorable, toStorableJson } from '../../lib/contracts/storable-text.ts';
import type { Logger } from '../../lib/logger.ts';
import { createRegistry } from '../../lib/metrics.ts';
import { loadOrCreateSecrets } from '../../lib/secrets.ts';
import { RecorderSupervisor } from './supervisor.ts';

const CONTROL_API_HINT = 'See services/lib/contracts/recorder-control.ts.';
const BODY_LIMIT = 1024 * 1024;

export interface RunningRecorder {
  supervisor: RecorderSupervisor;
  url: string;
  close(): Promise<void>;
}

/**
 * Starts the recorder: supervisor + workers, and its control API for SFUs. `audit` is the audit
 * trail refused control requests are written to (a bad secret, ids that could leave
 * RECORDINGS_DIR, malformed bodies, a sealed session), as the SFU writes its own: the launcher
 * passes the compliance service's writer. Served control requests are not audited: the SFU
 * audits the recording changes they carry, and the session's timeline records them.
 */
export async function startRecorder(config: Config, logger: Logger, opts: { db?: Db; redisUrl: string; queuePrefix?: string; audit?: (db: Db) => AuditSink }): Promise<RunningRecorder> {
  const secrets = loadOrCreateSecrets(config.DATA_DIR, { apiSecret: config.SFU_API_SECRET, tokenSecret: config.SFU_TOKEN_SECRET, recorderSecret: config.RECORDER_SECRET });
  const ownDb = !opts.db;
  const db = opts.db ?? (await openConfiguredDatabase(config));
  const registry = createRegistry('recorder');
  const log = logger.child({ service: 'recorder' });
  const supervisor = new RecorderSupervisor({ config, db, logger: log, registry, redisUrl: opts.redisUrl, ...(opts.queuePrefix ? { queuePrefix: opts.queuePrefix } : {}) });
  await supervisor.start();

  const keyHash = sha256(secrets.recorderSecret);
  const audit = opts.audit?.(db);
  /** Requests that carried the secret: their refusals name the caller as the recorder's client. */
  const authenticated = new WeakSet<FastifyRequest>();
  const app = refusingFastify({
    bodyLimit: BODY_LIMIT,
    maxParamLength: 256,
    hint: CONTROL_API_HINT,
    logger: log,
    record: async (r, e) => {
      // Capacity and failures (5xx) are not refusals of the request: the log has them.
      if (e.status >= 500) return e;
      // Without an audit trail the log is the only evidence.
      log[audit ? 'debug' : 'warn']({ method: r.method, route: r.route, code: e.code, client: r.clientAddress }, 'recorder control request refused');
      await audit?.append(refusalEntry(r, e, r.req !== undefined && authenticated.has(r.req))).catch((err: unknown) => log.error({ err, route: r.route, code: e.code }, 'could not audit a refused recorder control request'));
      return e;
    },
  });
  const auth = async (req: FastifyRequest) => {
    const m = /^Bearer (.+)$/.exec(String(req.headers.authorization ?? ''));
    if (!m || !timingSafeEqual(sha256(m[1]!), keyHash)) throw new VerbatimError('UNAUTHORIZED', 'recorder control API needs "Authorization: Bearer <RECORDER_SECRET>"', { hint: 'Give the SFU and the recorder the same RECORDER_SECRET.' });
    authenticated.add(req);
  };
  const params = <T>(schema: ZodType<T>, req: FastifyRequest): T => parseOrBadRequest(schema, req.params, 'path', CONTROL_API_HINT);
  app.get('/v1/health', async () => supervisor.health());
  app.get('/metrics', async (_req, reply) => reply.header('content-type', registry.contentType).send(await registry.metrics()));
  app.register(async (api) => {
    api.addHook('onRequest', auth);
    api.post('/v1/tracks', async (req, reply) => reply.status(201).send(await supervisor.startTrack(parseOrBadRequest(StartTrackRequestSchema, req.body, 'body', CONTROL_API_HINT))));
    api.delete('/v1/sessions/:session/tracks/:track', async (req, reply) => {
      const p = params(TrackParamsSchema, req);
      await supervisor.stopTrack(p.session, p.track);
      return reply.status(204).send();
    });
    api.post('/v1/sessions/:session/events', async (req, reply) => {
      const { session } = params(SessionParamsSchema, req);
      const b = parseOrBadRequest(SessionEventsRequestSchema, req.body, 'body', CONTROL_API_HINT);
      await supervisor.addEvents(b.room, session, b.events);
      return reply.status(204).send();
    });
    api.post('/v1/sessions/:session/end', async (req) => {
      const { session } = params(SessionParamsSchema, req);
      const b = parseOrBadRequest(EndSessionRequestSchema, req.body, 'body', CONTROL_API_HINT);
      return supervisor.endSession(b.room, session, b.reason);
    });
    api.get('/v1/dropped', async () => ({ dropped: await supervisor.droppedCounts() }));
    api.get('/v1/stats', async (req) => supervisor.stats({ resetLag: ['1', 'true'].includes(String((req.query as { resetLag?: string }).resetLag)) }));
  });
  await app.listen({ host: config.RECORDER_HOST, port: config.RECORDER_PORT });
  const addr = app.server.address() as AddressInfo;
  const url = `http://${addr.address}:${addr.port}`;
  log.info({ url, recordingsDir: config.RECORDINGS_DIR, workers: config.RECORDER_WORKERS }, 'recorder listening');
  let closing: Promise<void> | undefined;
  return {
    supervisor,
    url,
    close() {
      closing ??= (async () => {
        await app.close();
        await supervisor.close();
        if (ownDb) await db.destroy();
      })();
      return closing;
    },
  };
}

/** The audit entry of a refused control request: who (the secret's holder, or anyone), which route, which code. */
function refusalEntry(r: RefusedRequest, e: VerbatimError, authenticated: boolean): AuditEntryInput {
  return {
    action: e.status === 401 ? 'auth.denied' : 'request.rejected',
    actor: authenticated ? { type: 'service', id: 'recorder-client' } : { type: 'anonymous' },
    target: { type: 'recorder_route', id: r.method ? `${r.method} ${r.route}` : r.route || null },
    details: { service: 'recorder', status: e.status, code: e.code, message: toStorable(e.message, 500), ...(e.details !== undefined ? { error: toStorableJson(e.details) } : {}), ...(r.req ? {} : { stage: 'before-routing' }) },
    clientAddress: r.clientAddress ? toStorable(r.clientAddress, 100) : null,
  };
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}
