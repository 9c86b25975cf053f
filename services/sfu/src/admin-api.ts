import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ZodType } from 'zod';
import {
  CreateRoomBodySchema,
  DrainBodySchema,
  IngestBodySchema,
  MintTokenBodySchema,
  PromoteBodySchema,
  RoomIdSchema,
  SetRecordingBodySchema,
  UpdateRoomFlagsBodySchema,
} from '../../lib/contracts/room.ts';
import { VerbatimError } from '../../lib/errors.ts';
import { parseOrBadRequest } from '../../lib/http/parse-or-bad-request.ts';
import type { AdminRequestAudit } from './admin-request-audit.ts';
import type { Sfu } from './sfu.ts';

const ADMIN_API_HINT = 'See the admin API section of README.md.';

/**
 * The SFU admin API under /api/v1 (bearer SFU_API_SECRET, never sent to browsers). Each route
 * ends in exactly one audit entry (see AdminRequestAudit): the change's own, or the route's note.
 */
export function registerAdminApi(app: FastifyInstance, sfu: Sfu, audit: AdminRequestAudit, publicUrl: () => string): void {
  const body = <T>(schema: ZodType<T>, req: FastifyRequest): T => parseOrBadRequest(schema, req.body ?? {}, 'body', ADMIN_API_HINT);
  const roomId = (req: FastifyRequest): string => parseOrBadRequest(RoomIdSchema, (req.params as { id: string }).id, 'room id', ADMIN_API_HINT);
  const room = (id: string) => ({ type: 'room', id });

  app.register(
    async (api) => {
      api.addHook('onRequest', async (req) => {
        const header = req.headers.authorization;
        if (!header || !/^Bearer (.+)$/.test(header)) {
          throw new VerbatimError('UNAUTHORIZED', 'admin API needs "Authorization: Bearer <SFU_API_SECRET>"', { hint: 'The API secret is in DATA_DIR/secrets.json or SFU_API_SECRET.' });
        }
        if (!audit.isAdmin(header)) throw new VerbatimError('UNAUTHORIZED', 'wrong API secret', { hint: 'Use SFU_API_SECRET (or apiSecret in DATA_DIR/secrets.json).' });
      });

      api.get('/rooms', async (req) => {
        const rooms = await sfu.store.list();
        await audit.succeeded(req, { action: 'room.list', details: { count: rooms.length } });
        return { rooms };
      });
      api.post('/rooms', async (req, reply) => {
        const b = body(CreateRoomBodySchema, req);
        const { room: created, roomSecret } = await sfu.createRoom(b, audit.contextOf(req));
        return reply.status(201).send({ room: created, roomSecret });
      });
      api.get('/rooms/:id', async (req) => {
        const id = roomId(req);
        const info = await sfu.getRoomInfo(id);
        await audit.succeeded(req, { action: 'room.read', target: room(id) });
        return { room: info };
      });
      api.patch('/rooms/:id', async (req) => {
        const id = roomId(req);
        return { flags: await sfu.updateFlags(id, body(UpdateRoomFlagsBodySchema, req), audit.contextOf(req)) };
      });
      api.delete('/rooms/:id', async (req, reply) => {
        await sfu.closeRoom(roomId(req), audit.contextOf(req));
        return reply.status(204).send();
      });
      api.put('/rooms/:id/recording', async (req) => {
        const id = roomId(req);
        await sfu.setRecording(id, body(SetRecordingBodySchema, req).enabled, { admin: true }, audit.contextOf(req));
        return { room: await sfu.getRoomInfo(id) };
      });
      api.post('/rooms/:id/tokens', async (req, reply) => {
        const id = roomId(req);
        const b = body(MintTokenBodySchema, req);
        const info = await sfu.getRoomInfo(id);
        if (info.closedAt) throw new VerbatimError('ROOM_CLOSED', `room ${id} is closed`, { hint: 'Create a new room.' });
        const { token, expiresAt, jti } = sfu.mintToken(id, b.identity, b.name, b.ttlMinutes, b.role === 'host');
        await audit.succeeded(req, { action: 'token.mint', target: { type: 'token', id: jti }, details: { room: id, identity: b.identity, name: b.name, role: b.role ?? 'participant', expiresAt: expiresAt.toISOString() } });
        // In a cluster the link lands on a host with capacity (the room's origin while it has room).
        const base = await sfu.joinHostUrl(id, publicUrl());
        return reply.status(201).send({ token, expiresAt, joinUrl: `${base}/meet?token=${encodeURIComponent(token)}` });
      });
      api.get('/rooms/:id/peers', async (req) => {
        const id = roomId(req);
        const peers = sfu.rooms.get(id)?.listPeers() ?? [];
        await audit.succeeded(req, { action: 'room.peers', target: room(id), details: { count: peers.length } });
        return { peers };
      });
      api.post('/rooms/:id/promote', async (req) => {
        const id = roomId(req);
        return sfu.promote(id, body(PromoteBodySchema, req).peerId, { admin: true }, audit.contextOf(req));
      });
      api.get('/rooms/:id/stats', async (req) => {
        const id = roomId(req);
        const live = sfu.rooms.get(id);
        if (!live) throw new VerbatimError('ROOM_NOT_FOUND', `room ${id} is not open on this SFU`, { hint: 'Stats exist only while participants are in the room.' });
        const stats = await live.stats();
        await audit.succeeded(req, { action: 'room.stats', target: room(id) });
        return { room: id, workerPid: live.worker.pid, recording: live.recording, ...stats };
      });
      api.post('/rooms/:id/ingest', async (req, reply) => {
        const id = roomId(req);
        const b = body(IngestBodySchema, req);
        const result = await sfu.ingest(id, b.identity, b.name, b.tracks);
        await audit.succeeded(req, {
          action: 'ingest.create',
          target: room(id),
          details: { identity: b.identity, name: b.name, tracks: result.tracks.map((t) => ({ kind: t.kind, ssrc: t.ssrc, producerId: t.producerId, rtpPort: t.rtpPort })) },
        });
        return reply.status(201).send(result);
      });
      api.get('/cluster/hosts', async (req) => {
        const hosts = sfu.registry ? await sfu.registry.hosts() : [];
        await audit.succeeded(req, { action: 'cluster.hosts', details: { count: hosts.length } });
        return { self: sfu.registry?.hostId ?? null, hosts };
      });
      api.get('/workers', async (req) => {
        const workers = await sfu.pool.usage();
        await audit.succeeded(req, { action: 'workers.read', details: { count: workers.length } });
        return { workers };
      });
      api.post('/drain', async (req) => {
        const { enabled } = body(DrainBodySchema, req);
        sfu.setDraining(enabled);
        await audit.succeeded(req, { action: 'sfu.drain', details: { enabled } });
        return { draining: sfu.draining };
      });
    },
    { prefix: '/api/v1' },
  );
}
