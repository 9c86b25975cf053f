import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import type { Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { WebSocketServer } from 'ws';
import { VerbatimError } from '../../lib/errors.ts';
import { frameworkError } from '../../lib/http/framework-error.ts';
import { registerAdminApi } from './admin-api.ts';
import { AdminRequestAudit, storable } from './admin-request-audit.ts';
import { buildMeetingPage } from './meeting-page.ts';
import { CASCADE_PATH } from './cascade-protocol.ts';
import { SignalingConnection } from './signaling-connection.ts';
import type { Sfu } from './sfu.ts';

const BODY_LIMIT = 64 * 1024;
/** Longest path parameter (room ids are at most 64 chars); a longer one is 414. */
const MAX_PARAM_LENGTH = 200;
const REQUEST_ID_HEADER = 'x-request-id';

export interface SfuHttpServer {
  app: FastifyInstance;
  url: string;
  close(): Promise<void>;
}

/**
 * The SFU's HTTP face: the admin API (admin-api.ts), the meeting page and its bundle,
 * /metrics, /healthz, and the /ws signaling endpoint. Whatever it refuses, including what
 * Fastify and Node refuse before routing (bad URL encoding, 414, 431, a malformed request, a
 * bad WebSocket upgrade), answers `{error: {code, message}}` with an x-request-id and is one
 * audit entry (admin-request-audit.ts).
 */
export async function startHttpServer(sfu: Sfu): Promise<SfuHttpServer> {
  const cfg = sfu.config;
  const audit = new AdminRequestAudit(sfu.deps.audit, sfu.deps.secrets.apiSecret, sfu.logger.child({ component: 'admin-audit' }));

  const refuse = async (req: FastifyRequest, reply: FastifyReply, e: VerbatimError) => {
    if (e.code === 'INTERNAL') sfu.logger.error({ err: e.cause ?? e, url: storable(req.url, 300) }, 'request failed');
    await audit.refused(req, e);
    return reply.status(e.status).header(REQUEST_ID_HEADER, req.id).send({ error: e.toJSON() });
  };

  const app = Fastify({
    logger: false,
    bodyLimit: BODY_LIMIT,
    genReqId: () => randomUUID(),
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // Refusals Fastify makes before routing come here instead of its own plain-JSON answers.
    frameworkErrors: (err, req, reply) => {
      const e =
        err.code === 'FST_ERR_MAX_PARAM_LENGTH'
          ? new VerbatimError('URI_TOO_LONG', `a path segment is longer than ${MAX_PARAM_LENGTH} characters`, { hint: 'Room ids are at most 64 characters.' })
          : err.code === 'FST_ERR_BAD_URL'
            ? new VerbatimError('BAD_REQUEST', 'the URL is not validly percent-encoded', { hint: 'Encode path segments with encodeURIComponent.' })
            : frameworkError(err, BODY_LIMIT);
      refuse(req, reply, e).catch((err: unknown) => sfu.logger.error({ err }, 'answering a refused request failed'));
    },
    // Requests Node's HTTP parser refuses (oversized headers, malformed request lines) never
    // reach Fastify: answered and audited here on the raw socket.
    clientErrorHandler: (err: NodeJS.ErrnoException, socket: Socket) => {
      if (err.code === 'ECONNRESET' || socket.destroyed) return;
      const e =
        err.code === 'HPE_HEADER_OVERFLOW'
          ? new VerbatimError('HEADERS_TOO_LARGE', 'request headers are larger than the server accepts', { hint: 'Send fewer or shorter headers.' })
          : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
            ? new VerbatimError('REQUEST_TIMEOUT', 'the request was not received in time', { hint: 'Send the whole request promptly.' })
            : new VerbatimError('BAD_REQUEST', `malformed HTTP request (${storable(String(err.code ?? 'parse error'), 40)})`, { hint: 'Send a well-formed HTTP/1.1 request.' });
      audit
        .refusedRaw({ method: '-', path: '-', clientAddress: socket.remoteAddress ?? null }, e)
        .then((id) => rawAnswer(socket, e, id))
        .catch((error: unknown) => sfu.logger.error({ err: error }, 'answering a refused request failed'));
    },
  });
  const page = await buildMeetingPage();

  app.addHook('onRequest', async (req, reply) => {
    void reply.header(REQUEST_ID_HEADER, req.id);
  });
  app.setErrorHandler((err, req, reply) => refuse(req, reply, frameworkError(err, BODY_LIMIT)));
  app.setNotFoundHandler((req, reply) =>
    refuse(req, reply, new VerbatimError('NOT_FOUND', `no route ${storable(req.method, 20)} ${storable(req.url.split('?')[0]!, 200)}`, { hint: 'See the admin API section of README.md.' })),
  );

  app.get('/healthz', async () => ({ ok: true, draining: sfu.draining, workers: sfu.pool.size, rooms: sfu.rooms.size }));
  app.get('/metrics', async (_req, reply) => {
    void reply.header('content-type', sfu.deps.registry.contentType);
    return sfu.deps.registry.metrics();
  });
  app.get('/', async (_req, reply) => reply.redirect('/meet'));
  app.get('/meet', async (_req, reply) => reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').send(page.html));
  app.get('/assets/meeting.js', async (_req, reply) => reply.type('text/javascript; charset=utf-8').header('cache-control', 'no-cache').send(page.js));

  let publicUrl = '';
  registerAdminApi(app, sfu, audit, () => publicUrl);

  const wss = new WebSocketServer({ noServer: true, maxPayload: cfg.SFU_MAX_MESSAGE_BYTES * 16 });
  const connections = new Set<SignalingConnection>();
  const refuseRaw = (req: { method?: string | undefined; url?: string | undefined; headers: Record<string, string | string[] | undefined>; socket: Socket }, socket: Socket, e: VerbatimError) => {
    const authorization = typeof req.headers.authorization === 'string' ? req.headers.authorization : undefined;
    void audit
      .refusedRaw({ method: storable(req.method ?? '-', 20), path: storable((req.url ?? '').split('?')[0]!, 200), clientAddress: req.socket.remoteAddress ?? null, authorization }, e)
      .then((id) => rawAnswer(socket, e, id))
      .catch((err: unknown) => sfu.logger.error({ err }, 'answering a refused upgrade failed'));
  };
  // A bad handshake on /ws (wrong method, missing key, bad version...) is refused here, audited.
  wss.on('wsClientError', (err, socket, req) => refuseRaw(req, socket as Socket, new VerbatimError('BAD_REQUEST', `WebSocket handshake refused: ${storable(err.message, 200)}`, { hint: 'Connect with a WebSocket client to /ws.' })));
  // Node hands CONNECT (proxy tunnels) to a 'connect' listener and drops the socket without one:
  // refused here like any other request, so it too is answered and audited.
  app.server.on('connect', (req, socket: Socket) => refuseRaw(req, socket, new VerbatimError('BAD_REQUEST', 'CONNECT is not supported: this is not a proxy', { hint: 'See the admin API section of README.md.' })));
  app.server.on('upgrade', (req, socket: Socket, head) => {
    const path = (req.url ?? '').split('?')[0];
    const cascade = CASCADE_PATH.exec(path ?? '');
    if (cascade) {
      // Host-to-host: only the cluster's hosts, with SFU_CLUSTER_SECRET; never a participant.
      const secret = cfg.SFU_CLUSTER_SECRET;
      if (!sfu.cascade || !secret) {
        refuseRaw(req, socket, new VerbatimError('NOT_FOUND', 'this SFU is not part of a cluster', { hint: 'Set SFU_CLUSTER_SECRET on every host of the cluster.' }));
        return;
      }
      if (!bearerMatches(req.headers.authorization, secret)) {
        refuseRaw(req, socket, new VerbatimError('UNAUTHORIZED', 'the host-to-host link needs "Authorization: Bearer <SFU_CLUSTER_SECRET>"', { hint: 'Every host of the cluster shares SFU_CLUSTER_SECRET.' }));
        return;
      }
      const host = typeof req.headers['x-verbatim-host'] === 'string' ? storable(req.headers['x-verbatim-host'], 200) : 'unknown';
      const roomId = cascade[1]!;
      wss.handleUpgrade(req, socket, head, (ws) => {
        sfu.cascade!.accept(ws, roomId, host);
        sfu.deps.audit
          .append({ action: 'cascade.link', actor: { type: 'service', id: `sfu:${host}` }, target: { type: 'room', id: roomId }, clientAddress: req.socket.remoteAddress ?? null, details: { host } })
          .catch((err: unknown) => sfu.logger.error({ err }, 'could not write the audit entry'));
      });
      return;
    }
    if (path !== '/ws') {
      refuseRaw(req, socket, new VerbatimError('NOT_FOUND', 'WebSocket upgrades are served only at /ws', { hint: 'Connect the signaling client to /ws.' }));
      return;
    }
    try {
      wss.handleUpgrade(req, socket, head, (ws) => {
        const conn = new SignalingConnection(sfu, ws, req.socket.remoteAddress ?? 'unknown');
        connections.add(conn);
        ws.on('close', () => connections.delete(conn));
      });
    } catch (err) {
      sfu.logger.error({ err }, 'WebSocket upgrade failed');
      socket.destroy();
    }
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
  publicUrl = cfg.SFU_PUBLIC_URL ?? url;

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

/** A constant-time check of a bearer header against the shared secret. */
function bearerMatches(header: string | undefined, secret: string): boolean {
  const m = /^Bearer (.+)$/.exec(header ?? '');
  if (!m) return false;
  const a = createHash('sha256').update(m[1]!).digest();
  const b = createHash('sha256').update(secret).digest();
  return timingSafeEqual(a, b);
}

/** An error answer written straight to a socket Fastify never got a request from. */
function rawAnswer(socket: Socket, e: VerbatimError, requestId: string): void {
  if (socket.destroyed) return;
  if (!socket.writable) return void socket.destroy();
  const body = JSON.stringify({ error: e.toJSON() });
  socket.end(`HTTP/1.1 ${e.status} ${statusText(e.status)}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${REQUEST_ID_HEADER}: ${requestId}\r\nConnection: close\r\n\r\n${body}`);
  // A client that never reads must not hold the socket open.
  setTimeout(() => socket.destroy(), 5000).unref();
}

function statusText(status: number): string {
  return ({ 400: 'Bad Request', 404: 'Not Found', 408: 'Request Timeout', 431: 'Request Header Fields Too Large' } as Record<number, string>)[status] ?? 'Error';
}
