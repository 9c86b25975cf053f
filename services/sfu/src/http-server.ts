import { timingSafeEqual, createHash } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { WebSocketServer } from 'ws';
import type { ZodType } from 'zod';
import {
  CreateRoomBodySchema,
  DrainBodySchema,
  IngestBodySchema,
  MintTokenBodySchema,
  RoomIdSchema,
  SetRecordingBodySchema,
  UpdateRoomFlagsBodySchema,
} from '../../lib/contracts/room.ts';
import { VerbatimError } from '../../lib/errors.ts';
import { frameworkError } from '../../lib/http/framework-error.ts';
import { parseOrBadRequest } from '../../lib/http/parse-or-bad-request.ts';
import { buildMeetingPage } from './meeting-page.ts';
import { SignalingConnection } from './signaling-connection.ts';
import type { Sfu } from './sfu.ts';

const BODY_LIMIT = 64 * 1024;
const ADMIN_API_HINT = 'See the admin API section of README.md.';

export interface SfuHttpServer {
  app: FastifyInstance;
  url: string;
  close(): Promise<void>;
}

/**
 * The SFU's HTTP face: the admin API (bearer API secret, never sent to browsers), the
 * meeting page and its bundle, /metrics, /healthz, and the /ws signaling endpoint.
 */
export async function startHttpServer(sfu: Sfu): Promise<SfuHttpServer> {
  const cfg = sfu.config;
  const app = Fastify({ logger: false, bodyLimit: BODY_LIMIT });
  const page = await buildMeetingPage();

  app.setErrorHandler((err, req, reply) => {
    const e = frameworkError(err, BODY_LIMIT);
    if (e.code === 'INTERNAL') sfu.logger.error({ err, url: req.url }, 'request failed');
    void reply.status(e.status).send({ error: e.toJSON() });
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).send({ error: { code: 'NOT_FOUND', message: `no route ${req.method} ${req.url}` } });
  });

  const apiKeyHash = sha256(sfu.deps.secrets.apiSecret);
  const admin = async (req: FastifyRequest) => {
    const header = req.headers.authorization ?? '';
    const m = /^Bearer (.+)$/.exec(header);
    if (!m) throw new VerbatimError('UNAUTHORIZED', 'admin API needs "Authorization: Bearer <SFU_API_SECRET>"', { hint: 'The API secret is in DATA_DIR/secrets.json or SFU_API_SECRET.' });
    if (!timingSafeEqual(sha256(m[1]!), apiKeyHash)) throw new VerbatimError('UNAUTHORIZED', 'wrong API secret', { hint: 'Use SFU_API_SECRET (or apiSecret in DATA_DIR/secrets.json).' });
  };
  const body = <T>(schema: ZodType<T>, req: FastifyRequest): T => parseOrBadRequest(schema, req.body ?? {}, 'body', ADMIN_API_HINT);
  const roomId = (req: FastifyRequest): string => parseOrBadRequest(RoomIdSchema, (req.params as { id: string }).id, 'room id', ADMIN_API_HINT);

  app.get('/healthz', async () => ({ ok: true, draining: sfu.draining, workers: sfu.pool.size, rooms: sfu.rooms.size }));
  app.get('/metrics', async (_req, reply) => {
    void reply.header('content-type', sfu.deps.registry.contentType);
    return sfu.deps.registry.metrics();
  });
  app.get('/', async (_req, reply) => reply.redirect('/meet'));
  app.get('/meet', async (_req, reply) => reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').send(page.html));
  app.get('/assets/meeting.js', async (_req, reply) => reply.type('text/javascript; charset=utf-8').header('cache-control', 'no-cache').send(page.js));

  app.register(async (api) => {
    api.addHook('onRequest', admin);
    api.get('/rooms', async () => ({ rooms: await sfu.store.list() }));
    api.post('/rooms', async (req, reply) => {
      const b = body(CreateRoomBodySchema, req);
      const { room, roomSecret } = await sfu.createRoom(b);
      return reply.status(201).send({ room, roomSecret });
    });
    api.get('/rooms/:id', async (req) => ({ room: await sfu.getRoomInfo(roomId(req)) }));
    api.patch('/rooms/:id', async (req) => ({ flags: await sfu.updateFlags(roomId(req), body(UpdateRoomFlagsBodySchema, req)) }));
    api.delete('/rooms/:id', async (req, reply) => {
      await sfu.closeRoom(roomId(req));
      return reply.status(204).send();
    });
    api.put('/rooms/:id/recording', async (req) => {
      const id = roomId(req);
      await sfu.setRecording(id, body(SetRecordingBodySchema, req).enabled, { admin: true });
      return { room: await sfu.getRoomInfo(id) };
    });
    api.post('/rooms/:id/tokens', async (req, reply) => {
      const id = roomId(req);
      const b = body(MintTokenBodySchema, req);
      const info = await sfu.getRoomInfo(id);
      if (info.closedAt) throw new VerbatimError('ROOM_CLOSED', `room ${id} is closed`, { hint: 'Create a new room.' });
      const { token, expiresAt } = sfu.mintToken(id, b.identity, b.name, b.ttlMinutes);
      return reply.status(201).send({ token, expiresAt, joinUrl: `${publicUrl}/meet?token=${encodeURIComponent(token)}` });
    });
    api.get('/rooms/:id/peers', async (req) => {
      const room = sfu.rooms.get(roomId(req));
      return { peers: room ? room.listPeers() : [] };
    });
    api.get('/rooms/:id/stats', async (req) => {
      const id = roomId(req);
      const room = sfu.rooms.get(id);
      if (!room) throw new VerbatimError('ROOM_NOT_FOUND', `room ${id} is not open on this SFU`, { hint: 'Stats exist only while participants are in the room.' });
      return { room: id, workerPid: room.worker.pid, recording: room.recording, ...(await room.stats()) };
    });
    api.post('/rooms/:id/ingest', async (req, reply) => {
      const b = body(IngestBodySchema, req);
      return reply.status(201).send(await sfu.ingest(roomId(req), b.identity, b.name, b.tracks));
    });
    api.get('/workers', async () => ({ workers: await sfu.pool.usage() }));
    api.post('/drain', async (req) => {
      sfu.setDraining(body(DrainBodySchema, req).enabled);
      return { draining: sfu.draining };
    });
  }, { prefix: '/api/v1' });

  const wss = new WebSocketServer({ noServer: true, maxPayload: cfg.SFU_MAX_MESSAGE_BYTES * 16 });
  const connections = new Set<SignalingConnection>();
  app.server.on('upgrade', (req, socket, head) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/ws') {
      socket.end('HTTP/1.1 404 Not Found\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const conn = new SignalingConnection(sfu, ws, req.socket.remoteAddress ?? 'unknown');
      connections.add(conn);
      ws.on('close', () => connections.delete(conn));
    });
  });

  // Keepalive: ping every third of the timeout; a session silent past it is closed
  // (its identity may reclaim within the reclaim window).
  const timeout = cfg.SFU_SESSION_TIMEOUT_MS;
  const keepalive = setInterval(() => {
    const now = Date.now();
    for (const c of connections) {
      if (now - c.lastSeen > timeout) c.close(4001, 'SESSION_TIMEOUT');
    }
    for (const ws of wss.clients) if (ws.readyState === ws.OPEN) ws.ping();
  }, Math.max(250, Math.floor(timeout / 3)));

  await app.listen({ host: cfg.SFU_HOST, port: cfg.SFU_PORT });
  const addr = app.server.address() as AddressInfo;
  const url = `http://${addr.address.includes(':') ? `[${addr.address}]` : addr.address}:${addr.port}`;
  const publicUrl = cfg.SFU_PUBLIC_URL ?? url;

  return {
    app,
    url,
    async close() {
      clearInterval(keepalive);
      for (const ws of wss.clients) ws.terminate();
      wss.close();
      await app.close();
    },
  };
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}
