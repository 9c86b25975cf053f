import { createHash, timingSafeEqual } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import Fastify from 'fastify';
import { openConfiguredDatabase, type Db } from '../../../db/database.ts';
import type { Config } from '../../lib/config.ts';
import { EndSessionRequestSchema, SessionEventsRequestSchema, StartTrackRequestSchema } from '../../lib/contracts/recorder-control.ts';
import { VerbatimError, toVerbatimError } from '../../lib/errors.ts';
import { parseOrBadRequest } from '../../lib/http/parse-or-bad-request.ts';
import type { Logger } from '../../lib/logger.ts';
import { createRegistry } from '../../lib/metrics.ts';
import { loadOrCreateSecrets } from '../../lib/secrets.ts';
import { RecorderSupervisor } from './supervisor.ts';

const CONTROL_API_HINT = 'See services/lib/contracts/recorder-control.ts.';

export interface RunningRecorder {
  supervisor: RecorderSupervisor;
  url: string;
  close(): Promise<void>;
}

/** Starts the recorder: supervisor + workers, and its control API for SFUs. */
export async function startRecorder(config: Config, logger: Logger, opts: { db?: Db; redisUrl: string; queuePrefix?: string }): Promise<RunningRecorder> {
  const secrets = loadOrCreateSecrets(config.DATA_DIR, { apiSecret: config.SFU_API_SECRET, tokenSecret: config.SFU_TOKEN_SECRET, recorderSecret: config.RECORDER_SECRET });
  const ownDb = !opts.db;
  const db = opts.db ?? (await openConfiguredDatabase(config));
  const registry = createRegistry('recorder');
  const log = logger.child({ service: 'recorder' });
  const supervisor = new RecorderSupervisor({ config, db, logger: log, registry, redisUrl: opts.redisUrl, ...(opts.queuePrefix ? { queuePrefix: opts.queuePrefix } : {}) });
  await supervisor.start();

  const app = Fastify({ logger: false, bodyLimit: 1024 * 1024 });
  const keyHash = sha256(secrets.recorderSecret);
  app.setErrorHandler((err, _req, reply) => {
    const status = (err as { statusCode?: number }).statusCode;
    const e = err instanceof VerbatimError ? err : status && status < 500 ? new VerbatimError('BAD_REQUEST', (err as Error).message) : toVerbatimError(err);
    if (e.code === 'INTERNAL') log.error({ err }, 'recorder request failed');
    void reply.status(e.status).send({ error: e.toJSON() });
  });
  const auth = async (req: { headers: Record<string, string | string[] | undefined> }) => {
    const m = /^Bearer (.+)$/.exec(String(req.headers.authorization ?? ''));
    if (!m || !timingSafeEqual(sha256(m[1]!), keyHash)) throw new VerbatimError('UNAUTHORIZED', 'recorder control API needs "Authorization: Bearer <RECORDER_SECRET>"', { hint: 'Give the SFU and the recorder the same RECORDER_SECRET.' });
  };
  app.get('/v1/health', async () => supervisor.health());
  app.get('/metrics', async (_req, reply) => reply.header('content-type', registry.contentType).send(await registry.metrics()));
  app.register(async (api) => {
    api.addHook('onRequest', auth);
    api.post('/v1/tracks', async (req, reply) => reply.status(201).send(await supervisor.startTrack(parseOrBadRequest(StartTrackRequestSchema, req.body, 'body', CONTROL_API_HINT))));
    api.delete('/v1/sessions/:session/tracks/:track', async (req, reply) => {
      const p = req.params as { session: string; track: string };
      await supervisor.stopTrack(p.session, p.track);
      return reply.status(204).send();
    });
    api.post('/v1/sessions/:session/events', async (req, reply) => {
      const b = parseOrBadRequest(SessionEventsRequestSchema, req.body, 'body', CONTROL_API_HINT);
      supervisor.addEvents(b.room, (req.params as { session: string }).session, b.events);
      return reply.status(204).send();
    });
    api.post('/v1/sessions/:session/end', async (req) => {
      const b = parseOrBadRequest(EndSessionRequestSchema, req.body, 'body', CONTROL_API_HINT);
      return supervisor.endSession(b.room, (req.params as { session: string }).session, b.reason);
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

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}
