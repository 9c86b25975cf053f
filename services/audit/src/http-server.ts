import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { sql, type Kysely } from 'kysely';
import { z, type ZodType } from 'zod';
import type { Database } from '../../../db/schema.ts';
import { RoomIdSchema } from '../../lib/contracts/room.ts';
import { VerbatimError, toVerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { ApiKeyVerifier, ROLES, authorize, can, createUserWithKey, type Permission, type Principal } from './auth.ts';
import { AuditLog, type CheckpointSigner } from './audit-log.ts';

/**
 * The compliance service's HTTP API (v1). Every /api/v1 request carries
 * `Authorization: Bearer <API key>`, is authorised against the key's role, and leaves
 * exactly one entry in the hash-chained audit trail: the route's action when it
 * succeeds (written before the response is sent: no audit entry, no data), or
 * `auth.denied` (401/403) / `request.rejected` (any other refusal) when it does not.
 * The OpenAPI document is generated from the same route table (GET /docs/json).
 */

type Db = Kysely<Database>;

export interface AuditServerOptions {
  db: Db;
  host?: string;
  port?: number;
  logger: Logger;
  /** Checks checkpoint signatures in POST /api/v1/audit/verify. */
  checkpointSigner?: CheckpointSigner;
  /** Trust X-Forwarded-For (behind a reverse proxy) for the audited client address. */
  trustProxy?: boolean;
  now?: () => Date;
}

export interface AuditServer {
  app: FastifyInstance;
  url: string;
  close(): Promise<void>;
}

export const BODY_LIMIT = 64 * 1024;
const MARK_START = '\uE000';
const MARK_STOP = '\uE001';

// ---------------------------------------------------------------- request schemas

const NO_BAD_TEXT = /[\u0000]|\p{Cs}/u;
const text = (max: number) =>
  z
    .string()
    .min(1)
    .max(max)
    .refine((s) => !NO_BAD_TEXT.test(s), 'must not hold NUL characters or lone surrogates');
const intParam = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d{1,9}$/, 'must be a non-negative integer')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));
/** An ISO-8601 instant with an offset, or a date (UTC day). */
const instant = z.union([z.iso.datetime({ offset: true }), z.iso.date()]);
export const SessionIdSchema = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/, 'session id: 1-128 chars of A-Z a-z 0-9 _ . : -');
const ParticipantIdSchema = text(200);

export const CreateKeyBodySchema = z
  .object({
    name: text(200).describe('Who the key is for (shown in the audit trail).'),
    role: z.enum(ROLES),
    expiresAt: z.iso.datetime({ offset: true }).optional().describe('Default: never.'),
  })
  .strict();

export const SearchQuerySchema = z
  .object({
    q: text(500)
      .refine((s) => s.trim().length > 0, 'must not be blank')
      .describe("Web-search syntax: words, \"a phrase\", or, -not (websearch_to_tsquery('english'))."),
    room: RoomIdSchema.optional(),
    participant: ParticipantIdSchema.optional(),
    session: SessionIdSchema.optional(),
    from: instant.optional().describe('Segments spoken at or after this instant (a date: its UTC midnight).'),
    to: instant.optional().describe('Segments spoken at or before this instant (a date: through its UTC end).'),
    page: intParam(1, 100_000).optional(),
    pageSize: intParam(1, 100).optional(),
  })
  .strict();

const SessionParamsSchema = z.object({ id: SessionIdSchema }).strict();
const EmptyQuerySchema = z.object({}).strict();

export const ConsentQuerySchema = z
  .object({
    participant: ParticipantIdSchema.optional(),
    session: SessionIdSchema.optional(),
    room: RoomIdSchema.optional(),
    after: intParam(0, 2 ** 31 - 1).optional().describe('Cursor: events with a larger id.'),
    limit: intParam(1, 1000).optional(),
  })
  .strict();

export const AuditQuerySchema = z
  .object({
    from_seq: intParam(1, Number.MAX_SAFE_INTEGER).optional(),
    limit: intParam(1, 1000).optional(),
  })
  .strict();

const VerifyBodySchema = z.object({}).strict();

// ---------------------------------------------------------------- route table

interface AuditNote {
  target?: { type: string; id?: string | null | undefined };
  details?: Record<string, unknown>;
}

interface HandlerContext<Q, B, P> {
  req: FastifyRequest;
  principal: Principal;
  query: Q;
  body: B;
  params: P;
}

interface RouteDef<Q, B, P> {
  method: 'GET' | 'POST';
  url: string;
  /** Any one of these permissions is enough. */
  permissions: readonly Permission[];
  action: string;
  summary: string;
  query: ZodType<Q>;
  body?: ZodType<B>;
  params?: ZodType<P>;
  status?: number;
  handler(ctx: HandlerContext<Q, B, P>): Promise<{ response: unknown; audit: AuditNote }>;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyRoute = RouteDef<any, any, any>;
const defineRoute = <Q, B = undefined, P = undefined>(r: RouteDef<Q, B, P>): AnyRoute => r as AnyRoute;

function routes(db: Db, log: AuditLog, opts: AuditServerOptions): AnyRoute[] {
  const now = () => opts.now?.() ?? new Date();
  return [
    defineRoute({
      method: 'POST',
      url: '/keys',
      permissions: ['keys.manage'],
      action: 'key.create',
      summary: 'Create a user with a role and an API key for it (the key is returned once).',
      query: EmptyQuerySchema,
      body: CreateKeyBodySchema,
      status: 201,
      async handler({ body }) {
        const expiresAt = body.expiresAt ? new Date(body.expiresAt) : null;
        if (expiresAt && expiresAt.getTime() <= now().getTime()) throw badRequest('expiresAt is in the past', 'expiresAt');
        const created = await createUserWithKey(db, { name: body.name, role: body.role, expiresAt });
        return {
          response: created,
          audit: { target: { type: 'api_key', id: created.key.id }, details: { userId: created.user.id, name: created.user.name, role: created.user.role, keyPrefix: created.key.prefix, expiresAt: created.key.expiresAt } },
        };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/search',
      permissions: ['recordings.search'],
      action: 'search',
      summary: 'Full-text search over transcripts, ranked, with highlighted snippets.',
      query: SearchQuerySchema,
      async handler({ query }) {
        const result = await search(db, query);
        const filters = { room: query.room, participant: query.participant, session: query.session, from: query.from, to: query.to };
        return {
          response: result,
          audit: {
            target: query.session ? { type: 'session', id: query.session } : query.room ? { type: 'room', id: query.room } : { type: 'transcripts' },
            details: { query: query.q, filters, page: result.page, pageSize: result.pageSize, total: result.total, sessions: [...new Set(result.hits.map((h) => h.session))] },
          },
        };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/sessions/:id',
      permissions: ['sessions.metadata'],
      action: 'session.view',
      summary: 'A recording session: status, participants, tracks and their segments, artifacts with size and SHA-256.',
      query: EmptyQuerySchema,
      params: SessionParamsSchema,
      async handler({ params }) {
        const session = await sessionDetails(db, params.id);
        return { response: session, audit: { target: { type: 'session', id: params.id }, details: { room: session.room } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/sessions/:id/transcript',
      permissions: ['recordings.view'],
      action: 'transcript.view',
      summary: "A session's transcript, segment by segment.",
      query: EmptyQuerySchema,
      params: SessionParamsSchema,
      async handler({ params }) {
        const s = await db.selectFrom('recording_sessions').select(['id', 'room_id', 'transcript_status']).where('id', '=', params.id).executeTakeFirst();
        if (!s) throw sessionNotFound(params.id);
        const segments = await db
          .selectFrom('transcript_segments')
          .select(['seq', 'participant_id', 'speaker', 'start_seconds', 'end_seconds', 'text', 'language'])
          .where('session_id', '=', params.id)
          .orderBy('seq')
          .execute();
        return {
          response: {
            session: s.id,
            room: s.room_id,
            transcriptStatus: s.transcript_status,
            segments: segments.map((g) => ({ seq: g.seq, participant: g.participant_id, speaker: g.speaker, start: g.start_seconds, end: g.end_seconds, text: g.text, language: g.language })),
          },
          audit: { target: { type: 'session', id: s.id }, details: { room: s.room_id, segments: segments.length } },
        };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/consent',
      permissions: ['consent.read'],
      action: 'consent.view',
      summary: 'The consent log: every grant and decline, with policy, method and client info.',
      query: ConsentQuerySchema,
      async handler({ query }) {
        const limit = query.limit ?? 500;
        let q = db.selectFrom('consent_events').selectAll().where('id', '>', query.after ?? 0);
        if (query.participant) q = q.where('participant_id', '=', query.participant);
        if (query.session) q = q.where('session_id', '=', query.session);
        if (query.room) q = q.where('room_id', '=', query.room);
        const rows = await q.orderBy('id').limit(limit).execute();
        const events = rows.map((r) => ({
          id: Number(r.id),
          room: r.room_id,
          session: r.session_id,
          participant: r.participant_id,
          participantName: r.participant_name,
          policy: r.policy,
          decision: r.decision,
          method: r.method,
          clientInfo: typeof r.client_info === 'string' ? (JSON.parse(r.client_info) as unknown) : r.client_info,
          at: new Date(r.created_at).toISOString(),
        }));
        const next = events.length === limit ? events.at(-1)!.id : null;
        const target = query.session ? { type: 'session', id: query.session } : query.room ? { type: 'room', id: query.room } : query.participant ? { type: 'participant', id: query.participant } : { type: 'consent_log' };
        return { response: { events, next }, audit: { target, details: { filters: { participant: query.participant, session: query.session, room: query.room }, after: query.after, returned: events.length } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/audit',
      permissions: ['audit.read'],
      action: 'audit.read',
      summary: 'Audit trail entries in seq order, with their hashes.',
      query: AuditQuerySchema,
      async handler({ query }) {
        const fromSeq = query.from_seq ?? 1;
        const limit = query.limit ?? 100;
        const entries = await log.entries({ afterSeq: fromSeq - 1, limit });
        const next = entries.length === limit ? entries.at(-1)!.seq + 1 : null;
        return { response: { entries, nextFromSeq: next }, audit: { target: { type: 'audit_log' }, details: { fromSeq, limit, returned: entries.length } } };
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/audit/verify',
      permissions: ['audit.verify'],
      action: 'audit.verify',
      summary: 'Recompute the audit chain and compare it with the recorded checkpoints.',
      query: EmptyQuerySchema,
      body: VerifyBodySchema,
      async handler() {
        const result = await log.verify({ checkpoints: await log.listCheckpoints(), ...(opts.checkpointSigner ? { signer: opts.checkpointSigner } : {}) });
        return { response: result, audit: { target: { type: 'audit_log' }, details: { ok: result.ok, checked: result.checked, head: result.head, firstBroken: result.firstBroken } } };
      },
    }),
  ];
}

// ---------------------------------------------------------------- queries

export interface SearchHit {
  session: string;
  room: string;
  seq: number;
  speaker: string;
  participant: string;
  start: number;
  end: number;
  /** HTML: the transcript text escaped, matches in <mark>…</mark>. */
  snippet: string;
  rank: number;
  /** When the segment was spoken (session start + offset). */
  at: string;
  playUrl: string;
}

async function search(db: Db, query: z.infer<typeof SearchQuerySchema>): Promise<{ query: string; page: number; pageSize: number; total: number; hits: SearchHit[] }> {
  const page = query.page ?? 1;
  const pageSize = query.pageSize ?? 20;
  const from = query.from ? bound(query.from, 'from') : undefined;
  const to = query.to ? bound(query.to, 'to') : undefined;
  if (from && to && from.getTime() > to.getTime()) throw badRequest('from is after to', 'from');
  const tsq = sql`websearch_to_tsquery('english', ${query.q})`;
  const spokenAt = sql`(rs.started_at + ts.start_seconds * interval '1 second')`;
  let base = db
    .selectFrom('transcript_segments as ts')
    .innerJoin('recording_sessions as rs', 'rs.id', 'ts.session_id')
    .where(sql<boolean>`ts.tsv @@ ${tsq}`);
  if (query.room) base = base.where('rs.room_id', '=', query.room);
  if (query.session) base = base.where('ts.session_id', '=', query.session);
  if (query.participant) base = base.where('ts.participant_id', '=', query.participant);
  if (from) base = base.where(sql<boolean>`${spokenAt} >= ${from.toISOString()}::timestamptz`);
  if (to) base = base.where(sql<boolean>`${spokenAt} <= ${to.toISOString()}::timestamptz`);
  const count = await base.select(sql<number>`count(*)::int`.as('n')).executeTakeFirstOrThrow();
  const headlineOptions = `StartSel=${MARK_START}, StopSel=${MARK_STOP}, MaxWords=35, MinWords=15, MaxFragments=2, FragmentDelimiter=" … "`;
  const rows = await base
    .select([
      'ts.session_id',
      'rs.room_id',
      'ts.seq',
      'ts.speaker',
      'ts.participant_id',
      'ts.start_seconds',
      'ts.end_seconds',
      sql<string>`ts_headline('english', translate(ts.text, ${MARK_START + MARK_STOP}, ''), ${tsq}, ${headlineOptions})`.as('headline'),
      sql<number>`ts_rank_cd(ts.tsv, ${tsq})`.as('rank'),
      sql<string>`to_char(${spokenAt} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`.as('spoken_at'),
    ])
    .orderBy(sql`ts_rank_cd(ts.tsv, ${tsq})`, 'desc')
    .orderBy('rs.started_at', 'desc')
    .orderBy('ts.session_id')
    .orderBy('ts.seq')
    .limit(pageSize)
    .offset((page - 1) * pageSize)
    .execute();
  return {
    query: query.q,
    page,
    pageSize,
    total: Number(count.n),
    hits: rows.map((r) => ({
      session: r.session_id,
      room: r.room_id,
      seq: r.seq,
      speaker: r.speaker,
      participant: r.participant_id,
      start: r.start_seconds,
      end: r.end_seconds,
      snippet: markup(r.headline),
      rank: Number(r.rank),
      at: r.spoken_at,
      playUrl: `/play/${encodeURIComponent(r.session_id)}?t=${r.start_seconds}`,
    })),
  };
}

function bound(v: string, which: 'from' | 'to'): Date {
  if (/^\d{4}-\d{2}-\d{2}$/.test(v)) {
    const d = new Date(`${v}T00:00:00.000Z`);
    return which === 'from' ? d : new Date(d.getTime() + 86_400_000 - 1);
  }
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) throw badRequest(`${which} is not a valid instant`, which);
  return d;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

function markup(headline: string): string {
  return escapeHtml(headline).replaceAll(MARK_START, '<mark>').replaceAll(MARK_STOP, '</mark>');
}

async function sessionDetails(db: Db, id: string) {
  const s = await db.selectFrom('recording_sessions').selectAll().where('id', '=', id).executeTakeFirst();
  if (!s) throw sessionNotFound(id);
  const [participants, tracks, segments, artifacts] = await Promise.all([
    db.selectFrom('session_participants').selectAll().where('session_id', '=', id).orderBy('participant_id').execute(),
    db.selectFrom('tracks').selectAll().where('session_id', '=', id).orderBy('track_id').execute(),
    db.selectFrom('track_segments').selectAll().where('session_id', '=', id).orderBy('track_id').orderBy('segment').execute(),
    db.selectFrom('artifacts').selectAll().where('session_id', '=', id).orderBy('key').execute(),
  ]);
  const iso = (d: Date | string | null) => (d === null ? null : new Date(d).toISOString());
  return {
    session: s.id,
    room: s.room_id,
    status: s.status,
    startedAt: iso(s.started_at),
    endedAt: iso(s.ended_at),
    endReason: s.end_reason,
    manifestSha256: s.manifest_sha256,
    transcriptStatus: s.transcript_status,
    progress: s.progress,
    error: s.error_code ? { code: s.error_code, message: s.error_message } : null,
    participants: participants.map((p) => ({ participant: p.participant_id, name: p.name, consent: p.consent_decision, consentMethod: p.consent_method })),
    tracks: tracks.map((t) => ({
      track: t.track_id,
      participant: t.participant_id,
      kind: t.kind,
      codec: typeof t.codec === 'string' ? (JSON.parse(t.codec) as unknown) : t.codec,
      segments: segments
        .filter((g) => g.track_id === t.track_id)
        .map((g) => ({ segment: g.segment, file: g.file, bytes: Number(g.bytes), sha256: g.sha256, startedAt: iso(g.started_at), endedAt: iso(g.ended_at), endReason: g.end_reason, truncated: g.truncated })),
    })),
    artifacts: artifacts.map((a) => ({ key: a.key, kind: a.kind, participant: a.participant_id, contentType: a.content_type, bytes: Number(a.bytes), sha256: a.sha256, durationSeconds: a.duration_seconds })),
  };
}

function sessionNotFound(id: string): VerbatimError {
  return new VerbatimError('SESSION_NOT_FOUND', `no recording session ${id}`, { hint: 'Find session ids with GET /api/v1/search.' });
}

function badRequest(message: string, field: string): VerbatimError {
  return new VerbatimError('BAD_REQUEST', message, { hint: 'See GET /docs/json for the API.', details: { field } });
}

function parse<T>(schema: ZodType<T>, value: unknown, what: string): T {
  const r = schema.safeParse(value);
  if (!r.success) {
    const issues = r.error.issues.slice(0, 5);
    const detail = issues.map((i) => `${i.path.join('.') || what}: ${i.message}`).join('; ');
    throw new VerbatimError('BAD_REQUEST', `invalid ${what}: ${detail}`, {
      hint: 'See GET /docs/json for the API.',
      details: { in: what, fields: issues.map((i) => i.path.join('.') || what) },
    });
  }
  return r.data;
}

// ---------------------------------------------------------------- OpenAPI

export function openApiDocument(table: readonly AnyRoute[]): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  const errorResponse = (description: string) => ({ description, content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } });
  for (const r of table) {
    const path = `/api/v1${r.url.replace(/:(\w+)/g, '{$1}')}`;
    const parameters: unknown[] = [];
    for (const [where, schema] of [['path', r.params], ['query', r.query]] as const) {
      if (!schema) continue;
      const js = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as { properties?: Record<string, unknown>; required?: string[] };
      for (const [name, s] of Object.entries(js.properties ?? {})) {
        parameters.push({ name, in: where, required: where === 'path' || (js.required ?? []).includes(name), schema: s });
      }
    }
    paths[path] ??= {};
    paths[path][r.method.toLowerCase()] = {
      summary: r.summary,
      description: `Needs permission ${r.permissions.join(' or ')} (roles: ${ROLES.filter((role) => r.permissions.some((p) => rolesWith(p).includes(role))).join(', ')}). Audited as \`${r.action}\`.`,
      operationId: r.action.replace(/\.(\w)/g, (_m, c: string) => c.toUpperCase()),
      security: [{ apiKey: [] }],
      parameters,
      ...(r.body ? { requestBody: { required: true, content: { 'application/json': { schema: z.toJSONSchema(r.body, { io: 'input', unrepresentable: 'any' }) } } } } : {}),
      responses: {
        [String(r.status ?? 200)]: { description: 'OK' },
        '400': errorResponse('BAD_REQUEST: invalid parameters or body'),
        '401': errorResponse('UNAUTHORIZED: missing, malformed, unknown, forged, revoked or expired key'),
        '403': errorResponse("FORBIDDEN: the key's role lacks the permission"),
        ...(r.body ? { '413': errorResponse('MESSAGE_TOO_LARGE: body over 64 KiB') } : {}),
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Verbatim compliance API', version: '1' },
    components: {
      securitySchemes: { apiKey: { type: 'http', scheme: 'bearer', description: 'API key vb_<prefix>_<secret>' } },
      schemas: {
        Error: {
          type: 'object',
          required: ['error'],
          properties: { error: { type: 'object', required: ['code', 'message'], properties: { code: { type: 'string' }, message: { type: 'string' }, hint: { type: 'string' }, details: {} } } },
        },
      },
    },
    paths,
  };
}

function rolesWith(p: Permission): string[] {
  return ROLES.filter((r) => can(r, p));
}

function docsPage(doc: Record<string, unknown>): string {
  const rows: string[] = [];
  for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, { summary: string; description: string }>>)) {
    for (const [method, op] of Object.entries(ops)) {
      rows.push(`<tr><td><code>${method.toUpperCase()}</code></td><td><code>${escapeHtml(path)}</code></td><td>${escapeHtml(op.summary)}<br><small>${escapeHtml(op.description)}</small></td></tr>`);
    }
  }
  return `<!doctype html><html><head><meta charset="utf-8"><title>Verbatim compliance API</title>
<style>body{font:14px system-ui,sans-serif;margin:2em}td{padding:.4em;border-bottom:1px solid #ddd;vertical-align:top}</style></head>
<body><h1>Verbatim compliance API v1</h1><p>Send <code>Authorization: Bearer vb_&lt;prefix&gt;_&lt;secret&gt;</code>. Machine-readable: <a href="/docs/json">OpenAPI 3.1 (JSON)</a>.</p>
<table>${rows.join('')}</table></body></html>`;
}

// ---------------------------------------------------------------- server

/** Builds the app without listening (tests may inject). */
export function buildAuditApp(opts: AuditServerOptions): FastifyInstance {
  const { db, logger } = opts;
  const log = new AuditLog(db);
  const verifier = new ApiKeyVerifier(db, opts.now ? { now: opts.now } : {});
  const principals = new WeakMap<FastifyRequest, Principal>();
  const app = Fastify({ logger: false, bodyLimit: BODY_LIMIT, trustProxy: opts.trustProxy ?? false });
  const table = routes(db, log, opts);
  const doc = openApiDocument(table);

  const isApi = (req: FastifyRequest) => req.url.startsWith('/api/');
  const routeOf = (req: FastifyRequest) => `${req.method} ${req.routeOptions.url ?? req.url.split('?')[0]}`;
  const actorOf = (p: Principal | undefined) => (p ? { type: 'user' as const, id: p.userId } : { type: 'anonymous' as const });

  /** The one audit entry of a refused request; refusals stand even when it cannot be written. */
  async function auditRefusal(req: FastifyRequest, e: { status: number; code: string; message: string; details?: unknown }): Promise<void> {
    const p = principals.get(req);
    const denied = e.status === 401 || e.status === 403;
    try {
      await log.append({
        action: denied ? 'auth.denied' : 'request.rejected',
        actor: actorOf(p),
        target: { type: 'route', id: routeOf(req) },
        details: { status: e.status, code: e.code, message: e.message.slice(0, 500), ...(p ? { apiKey: p.keyId, role: p.role } : {}), ...(isPlainObject(e.details) ? { error: e.details } : {}) },
        clientAddress: req.ip,
      });
    } catch (err) {
      logger.error({ err, route: routeOf(req), code: e.code }, 'could not audit a refused request');
    }
  }

  app.setErrorHandler(async (err, req, reply) => {
    let e: VerbatimError;
    const statusCode = (err as { statusCode?: number }).statusCode;
    if (err instanceof VerbatimError) e = err;
    else if (statusCode === 413) e = new VerbatimError('MESSAGE_TOO_LARGE', 'request body too large', { hint: `Bodies are limited to ${BODY_LIMIT / 1024} KiB.` });
    else if (statusCode !== undefined && statusCode >= 400 && statusCode < 500) e = new VerbatimError('BAD_REQUEST', (err as Error).message, { hint: 'Send a JSON body with Content-Type: application/json.' });
    else e = toVerbatimError(err);
    if (e.code === 'INTERNAL') logger.error({ err, url: req.url }, 'request failed');
    if (isApi(req)) await auditRefusal(req, e);
    return reply.status(e.status).send({ error: e.toJSON() });
  });
  app.setNotFoundHandler(async (req, reply) => {
    const error = { code: 'NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}`, hint: 'See GET /docs/json for the API.' };
    if (isApi(req)) await auditRefusal(req, { status: 404, ...error });
    return reply.status(404).send({ error });
  });

  app.get('/healthz', async () => ({ ok: true }));
  app.get('/docs', async (_req, reply) => reply.type('text/html; charset=utf-8').send(docsPage(doc)));
  app.get('/docs/json', async () => doc);

  app.register(
    async (api) => {
      for (const r of table) {
        api.route({
          method: r.method,
          url: r.url,
          // Authenticate and authorise before the body is read: a refused caller never gets it parsed.
          onRequest: async (req) => {
            const principal = await verifier.fromHeader(req.headers.authorization);
            principals.set(req, principal);
            if (!r.permissions.some((p) => can(principal.role, p))) authorize(principal, r.permissions[0]!);
          },
          handler: async (req, reply) => {
            const principal = principals.get(req)!;
            const params = r.params ? parse(r.params, req.params, 'path') : undefined;
            const query = parse(r.query, req.query ?? {}, 'query');
            const body = r.body ? parse(r.body, req.body ?? {}, 'body') : undefined;
            const { response, audit } = await r.handler({ req, principal, query, body, params });
            await log.append({
              action: r.action,
              actor: actorOf(principal),
              target: audit.target,
              details: { ...audit.details, apiKey: principal.keyId, role: principal.role },
              clientAddress: req.ip,
            });
            return reply.status(r.status ?? 200).send(response);
          },
        });
      }
    },
    { prefix: '/api/v1' },
  );
  return app;
}

export async function startAuditServer(opts: AuditServerOptions): Promise<AuditServer> {
  const app = buildAuditApp(opts);
  await app.listen({ host: opts.host ?? '127.0.0.1', port: opts.port ?? 0 });
  const addr = app.server.address() as AddressInfo;
  const url = `http://${addr.address.includes(':') ? `[${addr.address}]` : addr.address}:${addr.port}`;
  opts.logger.info({ url }, 'compliance API listening');
  return { app, url, close: () => app.close() };
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
