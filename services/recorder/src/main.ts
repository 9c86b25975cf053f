import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { FastifyReply, FastifyRequest, HTTPMethods } from 'fastify';
import type { z, ZodType } from 'zod';
import type { AuditEntryInput, AuditSink } from '../../lib/audit-sink.ts';
import { openConfiguredDatabase, type Db } from '../../../db/database.ts';
import type { Config } from '../../lib/config.ts';
import { RECORDER_CONTROL_ROUTES, helloMessage, type RecorderControlRoute, type StartTrackRequest } from '../../lib/contracts/recorder-control.ts';
import { SRTP_KEY_BYTES, tapKeyContext, unwrapTapKey } from '../../lib/rtp/srtp.ts';
import { VerbatimError } from '../../lib/errors.ts';
import { parseOrBadRequest } from '../../lib/http/parse-or-bad-request.ts';
import { refusingFastify, type RefusedRequest } from '../../lib/http/refusals.ts';
import { toStorable, toStorableJson } from '../../lib/contracts/storable-text.ts';
import type { Logger } from '../../lib/logger.ts';
import { createRegistry } from '../../lib/metrics.ts';
import { loadOrCreateSecrets } from '../../lib/secrets.ts';
import { RecorderRegistration } from './recorder-registration.ts';
import { RecorderSupervisor } from './supervisor.ts';
import type { ArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { storageFromConfig } from '../../lib/storage/storage-from-config.ts';

const CONTROL_API_HINT = 'See services/lib/contracts/recorder-control.ts.';
const BODY_LIMIT = 1024 * 1024;

type RouteSpec = { auth: boolean; params?: ZodType; body?: ZodType; query?: ZodType };
type Parsed<S, F extends 'params' | 'body' | 'query'> = S extends Record<F, infer T extends ZodType> ? z.output<T> : undefined;
type Spec<K extends RecorderControlRoute> = (typeof RECORDER_CONTROL_ROUTES)[K];
/** What a control route's handler gets: its path parameters, query and body, parsed by the route's schemas. */
type RouteInput<K extends RecorderControlRoute> = { params: Parsed<Spec<K>, 'params'>; query: Parsed<Spec<K>, 'query'>; body: Parsed<Spec<K>, 'body'> };

export interface RunningRecorder {
  supervisor: RecorderSupervisor;
  registration: RecorderRegistration;
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
export async function startRecorder(config: Config, logger: Logger, opts: { db?: Db; redisUrl: string; queuePrefix?: string; audit?: (db: Db) => AuditSink; storage?: (db: Db) => ArtifactStorage }): Promise<RunningRecorder> {
  const secrets = loadOrCreateSecrets(config.DATA_DIR, { apiSecret: config.SFU_API_SECRET, tokenSecret: config.SFU_TOKEN_SECRET, recorderSecret: config.RECORDER_SECRET });
  const ownDb = !opts.db;
  const db = opts.db ?? (await openConfiguredDatabase(config));
  const registry = createRegistry('recorder');
  const log = logger.child({ service: 'recorder' });
  // Raw segments go to the artifact storage (RECORDER_UPLOAD_RAW); the launcher passes one with Object Lock retention.
  const storage = config.RECORDER_UPLOAD_RAW === 'on' ? (opts.storage?.(db) ?? storageFromConfig(config, { db })) : undefined;
  // Stable per recordings directory: a recorder restarted on its disk takes its registry row back.
  const recorderId = config.RECORDER_ID ?? `${os.hostname()}-${sha256(path.resolve(config.RECORDINGS_DIR)).toString('hex').slice(0, 8)}`;
  const supervisor = new RecorderSupervisor({ config, db, logger: log, registry, redisUrl: opts.redisUrl, recorderId, ...(opts.queuePrefix ? { queuePrefix: opts.queuePrefix } : {}), ...(storage ? { storage } : {}) });
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
  const registration = new RecorderRegistration(
    db,
    { id: recorderId, instanceId: supervisor.instanceId, capacity: config.RECORDER_CAPACITY, recordingsDir: path.resolve(config.RECORDINGS_DIR), heartbeatMs: config.RECORDER_HEARTBEAT_MS, load: () => supervisor.health().tracks, uploads: () => supervisor.uploadBacklog() },
    log,
    registry,
  );
  const handlers: { [K in RecorderControlRoute]: (input: RouteInput<K>, reply: FastifyReply) => Promise<unknown> } = {
    'GET /v1/health': async ({ query }) => {
      const h = { ...supervisor.health(), recorderId, state: registration.state };
      // The caller's nonce, answered with the secret: an SFU places tracks only on a recorder that proves it holds it.
      return query.nonce ? { ...h, proof: createHmac('sha256', secrets.recorderSecret).update(helloMessage(query.nonce, recorderId, supervisor.instanceId)).digest('hex') } : h;
    },
    'GET /metrics': async (_input, reply) => reply.header('content-type', registry.contentType).send(await registry.metrics()),
    'POST /v1/tracks': async ({ body }, reply) => reply.status(201).send(await supervisor.startTrack(body, tapKey(secrets.recorderSecret, body))),
    'DELETE /v1/sessions/:session/tracks/:track': async ({ params }, reply) => {
      await supervisor.stopTrack(params.session, params.track);
      return reply.status(204).send();
    },
    'POST /v1/sessions/:session/events': async ({ params, body }, reply) => {
      await supervisor.addEvents(body.room, params.session, body.events);
      return reply.status(204).send();
    },
    'POST /v1/sessions/:session/end': async ({ params, body }) => supervisor.endSession(body.room, params.session, body.reason),
    'POST /v1/sessions/:session/release': async ({ params, body }) => supervisor.releaseSession(body.room, params.session),
    'POST /v1/drain': async ({ body }) => {
      await registration.setState(body.state);
      return { recorderId, state: body.state };
    },
    'GET /v1/dropped': async () => ({ dropped: await supervisor.droppedCounts() }),
    'GET /v1/stats': async ({ query }) => supervisor.stats({ resetLag: query.resetLag === '1' || query.resetLag === 'true' }),
  };
  for (const key of Object.keys(RECORDER_CONTROL_ROUTES) as RecorderControlRoute[]) {
    const spec: RouteSpec = RECORDER_CONTROL_ROUTES[key];
    const [method, url] = key.split(' ') as [HTTPMethods, string];
    app.route({
      method,
      url,
      ...(spec.auth ? { onRequest: auth } : {}),
      // Every input through its schema before it reaches the supervisor (and so the disk or the database).
      handler: (req, reply) => {
        const input = {
          params: spec.params ? parseOrBadRequest(spec.params, req.params, 'path', CONTROL_API_HINT) : undefined,
          query: spec.query ? parseOrBadRequest(spec.query, req.query ?? {}, 'query', CONTROL_API_HINT) : undefined,
          body: spec.body ? parseOrBadRequest(spec.body, req.body, 'body', CONTROL_API_HINT) : undefined,
        };
        return (handlers[key] as (input: unknown, reply: FastifyReply) => Promise<unknown>)(input, reply);
      },
    });
  }
  await app.listen({ host: config.RECORDER_HOST, port: config.RECORDER_PORT });
  const addr = app.server.address() as AddressInfo;
  const url = `http://${addr.address}:${addr.port}`;
  await registration.start(config.RECORDER_ADVERTISE_URL?.replace(/\/$/, '') ?? url);
  log.info({ url, recordingsDir: config.RECORDINGS_DIR, workers: config.RECORDER_WORKERS }, 'recorder listening');
  let closing: Promise<void> | undefined;
  return {
    supervisor,
    registration,
    url,
    close() {
      closing ??= (async () => {
        await registration.close();
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

/** The SRTP key of a tap, unwrapped with the shared secret for exactly this session and track. */
function tapKey(secret: string, req: StartTrackRequest): Buffer | undefined {
  if (!req.srtp) return undefined;
  const key = unwrapTapKey(secret, tapKeyContext(req.session, req.track), req.srtp.wrappedKey);
  if (!key || key.length !== SRTP_KEY_BYTES) {
    throw new VerbatimError('SRTP_KEY_INVALID', `the SRTP key of track ${req.track} does not unwrap with this recorder's secret`, { hint: 'Give the SFU and the recorder the same RECORDER_SECRET.' });
  }
  return key;
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}
