import type { AddressInfo } from 'node:net';
import { createHmac, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { sql, type Kysely } from 'kysely';
import { z, type ZodType } from 'zod';
import type { Database } from '../../../db/schema.ts';
import { searchTranscripts } from './transcript-search.ts';
import { SessionManifestSchema, type SessionManifest } from '../../lib/contracts/recording.ts';
import { RoomFlagsSchema, RoomIdSchema } from '../../lib/contracts/room.ts';
import { VerbatimError, toVerbatimError } from '../../lib/errors.ts';
import type { Config } from '../../lib/config.ts';
import type { Logger } from '../../lib/logger.ts';
import { loadOrCreateSecrets } from '../../lib/secrets.ts';
import {
  ApiKeyVerifier,
  ConsoleSessions,
  CSRF_HEADER,
  FailedAuthLimiter,
  GUESS_FAILURES,
  ROLE_PERMISSIONS,
  ROLES,
  SESSION_COOKIE,
  authorize,
  can,
  createUserWithKey,
  readCookie,
  type Permission,
  type Principal,
} from './auth.ts';
import { AuditLog, type AuditEntryInput, type CheckpointSigner } from './audit-log.ts';
import { registerConsole } from './console/console-routes.ts';
import { LegalHolds, type LegalHold } from './retention.ts';
import { ErasureJobs } from './erasure-jobs.ts';
import { ExportJobs } from './export-jobs.ts';
import { consentCsv, listConsentEvents } from './consent-log.ts';
import { legalHoldStorage, objectLockRetention, sessionsInScope, syncLegalHolds } from './object-lock.ts';
import type { ArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { sessionArtifactPrefix } from '../../lib/storage/artifact-keys.ts';
import { storageFromConfig } from '../../lib/storage/storage-from-config.ts';

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
  /** HMAC key of console session cookies (>= 16 bytes). Unset: a random one per process (sign-ins end at restart). */
  sessionSecret?: string | Buffer;
  /** Console session lifetime (default 8 h). */
  sessionTtlMs?: number;
  /** Failed credential guesses per client address per minute before RATE_LIMITED (default 10; 0 = no limit). */
  failedAuthPerMinute?: number;
  /** Artifact storage: media playback (GET .../artifacts/:artifactId/content) and erasure need it. */
  storage?: ArtifactStorage;
  /** Erasure (with storage): the recorder's RECORDINGS_DIR, and scratch space. */
  recordingsDir?: string;
  workDir?: string;
  /**
   * The job queues' Redis: erasure requests run as jobs on the `erasure` queue (a worker runs in
   * this process) and have composites re-rendered by the transcode workers on the same Redis.
   */
  redisUrl?: string;
  queuePrefix?: string;
  /** Where e-discovery archives requested over the API are built and kept (with storage). */
  exportsDir?: string;
}

export interface AuditServer {
  app: FastifyInstance;
  url: string;
  close(): Promise<void>;
}

export const BODY_LIMIT = 64 * 1024;

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
    format: z.enum(['json', 'csv']).optional().describe('csv: a download (RFC 4180); the next cursor is in the X-Next-After header.'),
  })
  .strict();

export const SessionsQuerySchema = z
  .object({
    room: RoomIdSchema.optional(),
    status: z.enum(['recording', 'sealed', 'processing', 'done', 'failed']).optional(),
    from: z.string().datetime({ offset: true }).optional().describe('Sessions started at or after this instant.'),
    to: z.string().datetime({ offset: true }).optional().describe('Sessions started before this instant.'),
    offset: intParam(0, 1_000_000).optional(),
    limit: intParam(1, 200).optional(),
  })
  .strict();

export const AuditQuerySchema = z
  .object({
    from_seq: intParam(1, Number.MAX_SAFE_INTEGER).optional(),
    limit: intParam(1, 1000).optional(),
  })
  .strict();

const VerifyBodySchema = z.object({}).strict();

const ArtifactParamsSchema = z
  .object({
    id: SessionIdSchema,
    artifactId: z
      .string()
      .min(1)
      .max(300)
      .regex(/^[A-Za-z0-9][A-Za-z0-9._@-]*(\/[A-Za-z0-9][A-Za-z0-9._@-]*)*$/, 'artifact id: a relative path of A-Z a-z 0-9 . _ @ - segments'),
  })
  .strict();

const PolicyNameSchema = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$/, 'policy name: 1-100 chars of A-Z a-z 0-9 _ . : -');
const days = z.number().int().min(0).max(36_500).nullable().describe('Days after the session ends; null = keep forever.');
export const PolicyBodySchema = z
  .object({
    name: PolicyNameSchema,
    scope: z.enum(['default', 'room', 'tag']).describe("'default': every session; 'room': sessions of rooms that name it; 'tag': sessions tagged with its name."),
    mediaDays: days,
    transcriptDays: days,
    rawDays: days,
  })
  .strict();
export const PolicyUpdateBodySchema = PolicyBodySchema.omit({ name: true })
  .partial()
  .strict()
  .refine((b) => Object.keys(b).length > 0, 'name at least one field to change');
const PolicyParamsSchema = z.object({ name: PolicyNameSchema }).strict();
const RoomParamsSchema = z.object({ id: RoomIdSchema }).strict();
export const RoomPolicyBodySchema = z.object({ policy: PolicyNameSchema.nullable().describe("A 'room'-scope policy, or null to clear.") }).strict();

export const HoldBodySchema = z
  .object({
    caseId: text(200),
    reason: text(2000),
    scope: z
      .object({
        type: z.enum(['session', 'room', 'participant', 'query']),
        value: text(500).refine((v) => v.trim().length > 0, 'must not be blank').describe('Session id, room id, participant id, or a full-text query (its matching sessions are frozen now).'),
      })
      .strict(),
  })
  .strict();
/** Holds, erasure requests and exports are all addressed by a UUID. */
const UuidParamsSchema = z.object({ id: z.uuid() }).strict();
export const HoldReleaseBodySchema = z.object({ reason: text(2000).optional() }).strict();
export const ErasureBodySchema = z
  .object({
    participant: ParticipantIdSchema.describe('The participant id (as in sessions and transcripts).'),
    session: SessionIdSchema.optional().describe('One session; leave out for every session of the participant.'),
    reason: text(2000).describe('Why (e.g. the data subject\'s request reference).'),
  })
  .strict();
export const ErasureListQuerySchema = z.object({ participant: ParticipantIdSchema.optional() }).strict();

export const ExportBodySchema = z
  .union([
    z.object({ holdId: z.uuid().describe("A legal hold: its sessions (a query hold's frozen list).") }).strict(),
    z.object({ sessionIds: z.array(SessionIdSchema).min(1).max(1000).describe('These sessions.') }).strict(),
    z.object({ query: text(500).describe('Every session whose transcript matches (websearch syntax), resolved now.') }).strict(),
  ])
  .describe('Exactly one of holdId, sessionIds or query.');

export const HoldListQuerySchema = z.object({ includeReleased: z.enum(['true', 'false']).optional() }).strict();

// ---------------------------------------------------------------- route table

interface AuditNote {
  target?: { type: string; id?: string | null | undefined };
  details?: Record<string, unknown>;
}

interface HandlerContext<Q, B, P> {
  req: FastifyRequest;
  reply: FastifyReply;
  principal: Principal;
  query: Q;
  body: B;
  params: P;
}

interface HandlerResult {
  /** JSON, or a stream sent as is (set Content-Type in headers). */
  response: unknown;
  audit: AuditNote;
  /** Overrides the route's audited action (a ranged media read is a stream, a whole one a download). */
  action?: string;
  status?: number;
  headers?: Record<string, string | string[]>;
}

interface RouteDef<Q, B, P> {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  url: string;
  /** Any one of these permissions is enough; none listed = any signed-in principal. */
  permissions: readonly Permission[];
  /** 'none': no credential needed (sign-in itself); the handler authenticates. */
  auth?: 'none';
  action: string;
  summary: string;
  query: ZodType<Q>;
  body?: ZodType<B>;
  params?: ZodType<P>;
  status?: number;
  handler(ctx: HandlerContext<Q, B, P>): Promise<HandlerResult>;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyRoute = RouteDef<any, any, any>;
const defineRoute = <Q, B = undefined, P = undefined>(r: RouteDef<Q, B, P>): AnyRoute => r as AnyRoute;

interface RouteDeps {
  verifier: ApiKeyVerifier;
  sessions: ConsoleSessions;
  limiter: FailedAuthLimiter;
  /** Records the authenticated principal of a request (for the audit of a refusal after sign-in). */
  setPrincipal(req: FastifyRequest, p: Principal): void;
  /** Erasure requests (with storage and RECORDINGS_DIR). */
  erasure: ErasureJobs | undefined;
}

export const LoginBodySchema = z.object({ apiKey: z.string().min(1).max(200).describe('An API key vb_<prefix>_<secret>.') }).strict();

function routes(db: Db, log: AuditLog, opts: AuditServerOptions, deps: RouteDeps): AnyRoute[] {
  const now = () => opts.now?.() ?? new Date();
  /** With an Object Lock bucket: the S3 legal-hold flags of what the hold covers follow the holds in force. */
  const applyObjectLock = async (hold: LegalHold): Promise<{ set: number; cleared: number; failed: string[] } | undefined> => {
    const storage = legalHoldStorage(opts.storage);
    if (!storage) return undefined;
    const r = await syncLegalHolds(db, storage, await sessionsInScope(db, hold), opts.logger);
    return { set: r.set.length, cleared: r.cleared.length, failed: r.failed };
  };
  /** A placed or released hold: S3 legal-hold flags follow it, and the response and audit entry say what they did. */
  const holdChanged = async (hold: LegalHold, capture: CapturedAudit): Promise<HandlerResult> => {
    const objectLock = await applyObjectLock(hold);
    const note = capture.note({ type: 'legal_hold', id: hold.id });
    return { response: { ...holdJson(hold), ...(objectLock ? { objectLock } : {}) }, audit: { ...note, details: { ...note.details, ...(objectLock ? { objectLock } : {}) } } };
  };
  const erasureService = (): ErasureJobs => {
    if (!deps.erasure) {
      throw new VerbatimError('INTERNAL', 'the compliance API was started without storage and RECORDINGS_DIR: erasure is unavailable', { hint: 'Pass storage and recordingsDir to startAuditServer (npm start does).' });
    }
    return deps.erasure;
  };
  let exports: ExportJobs | undefined;
  const exportJobs = (): ExportJobs => {
    if (!opts.storage || !opts.exportsDir) {
      throw new VerbatimError('INTERNAL', 'the compliance API was started without storage and an exports directory: exports are unavailable', { hint: 'Pass storage and exportsDir to startAuditServer (npm start does), or use `verbatim export create`.' });
    }
    exports ??= new ExportJobs({ db, storage: opts.storage, auditLog: log, dir: opts.exportsDir, logger: opts.logger });
    return exports;
  };
  return [
    defineRoute({
      method: 'POST',
      url: '/exports',
      permissions: ['recordings.export'],
      action: 'export.request',
      summary:
        'Start an e-discovery export (a legal hold, sessions, or a transcript query): a tar with media, transcripts (JSON/VTT/TXT), consent records, the audit extract and a SHA-256 manifest. Built in the background: poll GET /exports/{id} for progress, then download /exports/{id}/archive. `verbatim export verify` checks the archive.',
      query: EmptyQuerySchema,
      body: ExportBodySchema,
      status: 202,
      async handler({ principal, body }) {
        const record = await exportJobs().start(body, { type: 'user', id: principal.userId });
        return { response: { ...record, statusUrl: `/api/v1/exports/${record.id}` }, audit: { target: { type: 'export', id: record.id }, details: { selection: body } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/exports',
      permissions: ['recordings.export'],
      action: 'export.list',
      summary: 'Exports, newest first, with status and progress.',
      query: EmptyQuerySchema,
      async handler() {
        const list = await exportJobs().list();
        return { response: { exports: list }, audit: { target: { type: 'exports' }, details: { returned: list.length } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/exports/:id',
      permissions: ['recordings.export'],
      action: 'export.view',
      summary: "An export's status and progress (files and bytes written so far), its sessions and manifest SHA-256 once done.",
      query: EmptyQuerySchema,
      params: UuidParamsSchema,
      async handler({ params }) {
        const record = await exportJobs().get(params.id);
        if (!record) throw new VerbatimError('NOT_FOUND', `no export ${params.id}`, { hint: 'List exports with GET /api/v1/exports.' });
        return { response: record, audit: { target: { type: 'export', id: record.id }, details: { status: record.status, pct: record.progress.pct } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/exports/:id/archive',
      permissions: ['recordings.export'],
      action: 'export.download',
      summary: 'The finished archive (application/x-tar). Still running: 409 with progress; failed: 410.',
      query: EmptyQuerySchema,
      params: UuidParamsSchema,
      async handler({ params }) {
        const { file, record } = await exportJobs().archivePath(params.id);
        const size = (await stat(file)).size;
        return {
          response: createReadStream(file),
          headers: {
            'content-type': 'application/x-tar',
            'content-length': String(size),
            'cache-control': 'private, no-store',
            'x-content-type-options': 'nosniff',
            'content-disposition': `attachment; filename="verbatim-export-${record.id}.tar"`,
          },
          audit: { target: { type: 'export', id: record.id }, details: { bytes: size, manifestSha256: record.manifestSha256, sessions: record.sessionIds } },
        };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/me',
      permissions: [],
      action: 'me.view',
      summary: 'Who the caller is: user, role and permissions.',
      query: EmptyQuerySchema,
      async handler({ principal }) {
        return {
          response: { user: { id: principal.userId, name: principal.userName }, role: principal.role, permissions: ROLE_PERMISSIONS[principal.role], via: principal.sessionId ? 'session' : 'key', keyPrefix: principal.keyPrefix },
          audit: { target: { type: 'user', id: principal.userId } },
        };
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/login',
      permissions: [],
      auth: 'none',
      action: 'login',
      summary: `Browser sign-in: an API key in the body opens a console session (HttpOnly, SameSite=Strict cookie ${SESSION_COOKIE}, 8 h). Cookie-authenticated POST/PUT/PATCH/DELETE must send ${CSRF_HEADER}: 1.`,
      query: EmptyQuerySchema,
      body: LoginBodySchema,
      async handler({ req, body }) {
        deps.limiter.check(req.ip);
        let principal: Principal;
        try {
          principal = await deps.verifier.verify(body.apiKey.trim());
        } catch (err) {
          if (err instanceof VerbatimError && GUESS_FAILURES.has(String((err.details as { reason?: string } | undefined)?.reason))) deps.limiter.record(req.ip);
          throw err;
        }
        deps.setPrincipal(req, principal);
        const session = await deps.sessions.open(principal, req.ip);
        const maxAge = Math.max(1, Math.round((session.expiresAt.getTime() - now().getTime()) / 1000));
        return {
          response: { user: { id: principal.userId, name: principal.userName }, role: principal.role, permissions: ROLE_PERMISSIONS[principal.role], expiresAt: session.expiresAt.toISOString() },
          headers: { 'set-cookie': sessionCookie(req, session.cookie, maxAge) },
          audit: { target: { type: 'user', id: principal.userId }, details: { via: 'login', expiresAt: session.expiresAt.toISOString() } },
        };
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/logout',
      permissions: [],
      action: 'logout',
      summary: 'Ends the console session of the cookie (and clears it).',
      query: EmptyQuerySchema,
      async handler({ req, principal }) {
        const ended = principal.sessionId ? await deps.sessions.end(principal.sessionId) : false;
        return { response: { ended }, headers: { 'set-cookie': sessionCookie(req, '', 0) }, audit: { target: { type: 'user', id: principal.userId }, details: { ended } } };
      },
    }),
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
      url: '/sessions/:id/artifacts',
      permissions: ['recordings.play'],
      action: 'artifact.list',
      summary: "A session's artifacts (kind, participant, bytes, SHA-256, content URL), and those deleted by retention or erasure with their state.",
      query: EmptyQuerySchema,
      params: SessionParamsSchema,
      async handler({ params }) {
        const s = await db.selectFrom('recording_sessions').select(['id', 'room_id']).where('id', '=', params.id).executeTakeFirst();
        if (!s) throw sessionNotFound(params.id);
        const rows = await db.selectFrom('artifacts').selectAll().where('session_id', '=', params.id).orderBy('key').execute();
        const prefix = sessionArtifactPrefix(s.room_id, s.id);
        const artifacts = rows.map((a) => {
          const id = artifactIdOf(prefix, a.key);
          return { id, key: a.key, kind: a.kind, participant: a.participant_id, contentType: a.content_type, bytes: Number(a.bytes), sha256: a.sha256, durationSeconds: a.duration_seconds, contentUrl: `/api/v1/sessions/${encodeURIComponent(s.id)}/artifacts/${encodeURIComponent(id)}/content` };
        });
        const tombs = await db.selectFrom('tombstones').selectAll().where('session_id', '=', params.id).orderBy('id').execute();
        const deleted = tombs.map((t) => ({ item: t.item, kind: t.kind, state: t.erasure_request ? 'erased' : 'deleted', deletedAt: new Date(t.deleted_at).toISOString(), reason: t.reason, policy: t.policy, erasureRequest: t.erasure_request }));
        return { response: { session: s.id, room: s.room_id, artifacts, deleted }, audit: { target: { type: 'session', id: s.id }, details: { room: s.room_id, returned: artifacts.length } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/sessions/:id/artifacts/:artifactId/content',
      permissions: ['recordings.play'],
      action: 'media.download',
      summary: 'An artifact\'s bytes (artifact id from the list, URL-encoded), with HTTP Range (206) so a <video> can seek; works with the session cookie. Deleted or erased: 410 with its state.',
      query: EmptyQuerySchema,
      params: ArtifactParamsSchema,
      async handler({ req, params }) {
        const { artifactId } = params;
        if (!opts.storage) throw new VerbatimError('INTERNAL', 'the compliance API was started without artifact storage', { hint: 'Pass `storage` to startAuditServer (npm start does).' });
        const s = await db.selectFrom('recording_sessions').select(['id', 'room_id']).where('id', '=', params.id).executeTakeFirst();
        if (!s) throw sessionNotFound(params.id);
        const prefix = sessionArtifactPrefix(s.room_id, s.id);
        // The id is the key below the session's prefix, or the whole key for artifacts stored elsewhere.
        const candidates = [`${prefix}${artifactId}`, artifactId];
        const row = await db.selectFrom('artifacts').selectAll().where('session_id', '=', s.id).where('key', 'in', candidates).orderBy('key', 'desc').executeTakeFirst();
        const key = row?.key ?? candidates[0]!;
        if (!row) {
          const tomb = await db.selectFrom('tombstones').selectAll().where('session_id', '=', s.id).where('item', 'in', candidates).orderBy('id', 'desc').executeTakeFirst();
          if (tomb) {
            throw new VerbatimError('GONE', `artifact ${artifactId} of session ${s.id} was ${tomb.erasure_request ? 'erased' : 'deleted'} at ${new Date(tomb.deleted_at).toISOString()}`, {
              hint: 'Deleted content cannot be played; the tombstone records when and why.',
              details: { state: tomb.erasure_request ? 'erased' : 'deleted', deletedAt: new Date(tomb.deleted_at).toISOString(), reason: tomb.reason, policy: tomb.policy, erasureRequest: tomb.erasure_request },
            });
          }
          throw new VerbatimError('NOT_FOUND', `session ${s.id} has no artifact ${artifactId}`, { hint: `List them with GET /api/v1/sessions/${s.id}/artifacts.` });
        }
        const where = await opts.storage.locate(key);
        const size = await storedSize(where, key, Number(row.bytes));
        const range = parseRange(req.headers.range, size);
        const { start, end } = range ?? { start: 0, end: size - 1 };
        const body = await openArtifact(where, key, start, end, size);
        const headers: Record<string, string> = {
          'content-type': row.content_type,
          'accept-ranges': 'bytes',
          'content-length': String(size === 0 ? 0 : end - start + 1),
          'cache-control': 'private, no-store',
          'x-content-type-options': 'nosniff',
          'content-disposition': `inline; filename="${key.split('/').pop()!.replace(/[^A-Za-z0-9._-]/g, '_')}"`,
          ...(range ? { 'content-range': `bytes ${start}-${end}/${size}` } : {}),
        };
        return {
          response: body,
          status: range ? 206 : 200,
          headers,
          action: range ? 'media.stream' : 'media.download',
          audit: { target: { type: 'artifact', id: key }, details: { session: s.id, room: s.room_id, kind: row.kind, participant: row.participant_id, sha256: row.sha256, bytes: size, ...(range ? { range: `${start}-${end}` } : {}) } },
        };
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/erasure-requests',
      permissions: ['erasure.manage'],
      action: 'erasure.request',
      summary:
        "GDPR Art. 17 erasure of a participant (one session or all): their tracks, per-participant files and transcript segments are deleted and the composite re-rendered without them — unless a legal hold covers the session: then it is recorded as restricted, naming the hold. Runs in the background: the answer is the accepted request (pending, with progress); poll GET /erasure-requests/{id} until its status is completed, restricted, partial or failed.",
      query: EmptyQuerySchema,
      body: ErasureBodySchema,
      status: 202,
      async handler({ principal, body }) {
        const record = await erasureService().request({ participant: body.participant, session: body.session, reason: body.reason, requestedBy: { type: 'user', id: principal.userId } });
        return {
          response: record,
          audit: { target: { type: 'erasure_request', id: record.id }, details: { participant: record.participant, session: record.session, reason: record.reason, status: record.status, sessions: record.sessions } },
        };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/erasure-requests',
      permissions: ['erasure.manage'],
      action: 'erasure.list',
      summary: 'Erasure requests with their status (pending / running / completed / restricted / partial / failed), progress and per-session outcome.',
      query: ErasureListQuerySchema,
      async handler({ query }) {
        const requests = await erasureService().list({ participant: query.participant });
        return { response: { requests }, audit: { target: query.participant ? { type: 'participant', id: query.participant } : { type: 'erasure_requests' }, details: { returned: requests.length } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/erasure-requests/:id',
      permissions: ['erasure.manage'],
      action: 'erasure.view',
      summary: 'One erasure request: its status, progress (percent, current step, sessions done) and, once finished, its per-session outcome.',
      query: EmptyQuerySchema,
      params: UuidParamsSchema,
      async handler({ params }) {
        const record = await erasureService().get(params.id);
        if (!record) throw new VerbatimError('NOT_FOUND', `no erasure request ${params.id}`, { hint: 'List them with GET /api/v1/erasure-requests.' });
        return { response: record, audit: { target: { type: 'erasure_request', id: record.id }, details: { status: record.status, pct: record.progress.pct } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/retention-policies',
      permissions: ['retention.manage'],
      action: 'retention_policy.list',
      summary: 'Retention policies, with the rooms that name each.',
      query: EmptyQuerySchema,
      async handler() {
        const policies = await listPolicies(db);
        return { response: { policies }, audit: { target: { type: 'retention_policies' }, details: { returned: policies.length } } };
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/retention-policies',
      permissions: ['retention.manage'],
      action: 'retention_policy.create',
      summary: 'Create a retention policy (days per kind of content after a session ends; null = forever).',
      query: EmptyQuerySchema,
      body: PolicyBodySchema,
      status: 201,
      async handler({ body }) {
        const inserted = await db
          .insertInto('retention_policies')
          .values({ name: body.name, scope: body.scope, media_days: body.mediaDays, transcript_days: body.transcriptDays, raw_days: body.rawDays })
          .onConflict((oc) => oc.column('name').doNothing())
          .returning('name')
          .executeTakeFirst();
        if (!inserted) throw new VerbatimError('CONFLICT', `retention policy "${body.name}" already exists`, { hint: `Change it with PUT /api/v1/retention-policies/${body.name}.`, details: { policy: await policyByName(db, body.name) } });
        const policy = (await policyByName(db, body.name))!;
        return { response: policy, audit: { target: { type: 'retention_policy', id: body.name }, details: { after: policyAudit(policy) } } };
      },
    }),
    defineRoute({
      method: 'PUT',
      url: '/retention-policies/:name',
      permissions: ['retention.manage'],
      action: 'retention_policy.update',
      summary: 'Change a retention policy (any of scope, mediaDays, transcriptDays, rawDays).',
      query: EmptyQuerySchema,
      params: PolicyParamsSchema,
      body: PolicyUpdateBodySchema,
      async handler({ params, body }) {
        const before = await policyByName(db, params.name);
        if (!before) throw policyNotFound(params.name);
        if (body.scope && body.scope !== 'room' && before.rooms.length > 0) throw policyInUse(params.name, before.rooms, `its scope cannot leave 'room'`);
        await db
          .updateTable('retention_policies')
          .set({
            ...(body.scope !== undefined ? { scope: body.scope } : {}),
            ...(body.mediaDays !== undefined ? { media_days: body.mediaDays } : {}),
            ...(body.transcriptDays !== undefined ? { transcript_days: body.transcriptDays } : {}),
            ...(body.rawDays !== undefined ? { raw_days: body.rawDays } : {}),
            updated_at: now(),
          })
          .where('name', '=', params.name)
          .execute();
        const after = (await policyByName(db, params.name))!;
        return { response: after, audit: { target: { type: 'retention_policy', id: params.name }, details: { before: policyAudit(before), after: policyAudit(after) } } };
      },
    }),
    defineRoute({
      method: 'DELETE',
      url: '/retention-policies/:name',
      permissions: ['retention.manage'],
      action: 'retention_policy.delete',
      summary: 'Delete a retention policy no room names (what it covered falls back to the remaining policies).',
      query: EmptyQuerySchema,
      params: PolicyParamsSchema,
      async handler({ params }) {
        const before = await policyByName(db, params.name);
        if (!before) throw policyNotFound(params.name);
        if (before.rooms.length > 0) throw policyInUse(params.name, before.rooms, 'it cannot be deleted');
        await db.deleteFrom('retention_policies').where('name', '=', params.name).execute();
        return { response: { deleted: params.name }, audit: { target: { type: 'retention_policy', id: params.name }, details: { before: policyAudit(before) } } };
      },
    }),
    defineRoute({
      method: 'PUT',
      url: '/rooms/:id/retention-policy',
      permissions: ['retention.manage'],
      action: 'room.retention_policy',
      summary: "Assign a 'room'-scope retention policy to a room (its retentionPolicy flag), or clear it with null.",
      query: EmptyQuerySchema,
      params: RoomParamsSchema,
      body: RoomPolicyBodySchema,
      async handler({ params, body }) {
        if (body.policy !== null) {
          const p = await policyByName(db, body.policy);
          if (!p) throw policyNotFound(body.policy);
          if (p.scope !== 'room') throw badRequest(`policy "${body.policy}" has scope '${p.scope}'; a room can name only a 'room'-scope policy`, 'policy');
        }
        const change = await db.transaction().execute(async (trx) => {
          const room = await trx.selectFrom('rooms').select(['flags']).where('id', '=', params.id).forUpdate().executeTakeFirst();
          if (!room) throw new VerbatimError('ROOM_NOT_FOUND', `no room ${params.id}`, { hint: 'Rooms are created through the SFU admin API.' });
          const current = RoomFlagsSchema.parse(typeof room.flags === 'string' ? JSON.parse(room.flags) : room.flags);
          const { retentionPolicy: previous, ...rest } = current;
          const flags = RoomFlagsSchema.parse(body.policy === null ? rest : { ...rest, retentionPolicy: body.policy });
          await trx.updateTable('rooms').set({ flags: JSON.stringify(flags), updated_at: now() }).where('id', '=', params.id).execute();
          return { previous: previous ?? null, flags };
        });
        return { response: { room: params.id, retentionPolicy: body.policy, previous: change.previous }, audit: { target: { type: 'room', id: params.id }, details: { before: change.previous, after: body.policy } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/legal-holds',
      permissions: ['holds.manage'],
      action: 'legal_hold.list',
      summary: 'Legal holds in force (includeReleased=true: every hold).',
      query: HoldListQuerySchema,
      async handler({ query }) {
        const holds = await new LegalHolds(db, log).list({ includeReleased: query.includeReleased === 'true' });
        return { response: { holds: holds.map(holdJson) }, audit: { target: { type: 'legal_holds' }, details: { includeReleased: query.includeReleased === 'true', returned: holds.length } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/legal-holds/:id',
      permissions: ['holds.manage'],
      action: 'legal_hold.view',
      summary: 'One legal hold, in force or released.',
      query: EmptyQuerySchema,
      params: UuidParamsSchema,
      async handler({ params }) {
        const hold = await holdById(db, log, params.id);
        return { response: holdJson(hold), audit: { target: { type: 'legal_hold', id: params.id }, details: { caseId: hold.caseId } } };
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/legal-holds',
      permissions: ['holds.manage'],
      action: 'legal_hold.place',
      summary: 'Place a legal hold (case id, reason, scope: session / room / participant / query). Held content is never deleted by retention or erasure.',
      query: EmptyQuerySchema,
      body: HoldBodySchema,
      status: 201,
      async handler({ principal, body }) {
        const capture = new CapturedAudit();
        const hold = await new LegalHolds(db, capture.asLog()).place({ caseId: body.caseId, reason: body.reason, scopeType: body.scope.type, scopeValue: body.scope.value.trim(), placedBy: { type: 'user', id: principal.userId } });
        return holdChanged(hold, capture);
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/legal-holds/:id/release',
      permissions: ['holds.manage'],
      action: 'legal_hold.release',
      summary: 'Release a legal hold; retention applies again to what it covered at the next sweep.',
      query: EmptyQuerySchema,
      params: UuidParamsSchema,
      body: HoldReleaseBodySchema,
      async handler({ principal, params, body }) {
        const current = await holdById(db, log, params.id);
        if (current.releasedAt) {
          throw new VerbatimError('CONFLICT', `legal hold ${params.id} was already released at ${new Date(current.releasedAt).toISOString()}`, { hint: 'List the holds in force with GET /api/v1/legal-holds.', details: { hold: holdJson(current) } });
        }
        const capture = new CapturedAudit();
        const hold = await new LegalHolds(db, capture.asLog()).release(params.id, { type: 'user', id: principal.userId }, body.reason);
        return holdChanged(hold, capture);
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
        const result = await searchTranscripts(db, query);
        const filters = { room: query.room, participant: query.participant, session: query.session, from: query.from, to: query.to };
        return {
          response: result,
          audit: {
            target: query.session ? { type: 'session', id: query.session } : query.room ? { type: 'room', id: query.room } : { type: 'transcripts' },
            details: { query: query.q, filters, page: result.page, pageSize: result.pageSize, total: result.total, ...(result.totalIsEstimate ? { totalIsEstimate: true, rankedMatches: result.rankedMatches } : {}), sessions: [...new Set(result.hits.map((h) => h.session))] },
          },
        };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/sessions',
      permissions: ['sessions.metadata'],
      action: 'session.list',
      summary: 'Recording sessions, newest first: room, status, times, participant count (metadata only).',
      query: SessionsQuerySchema,
      async handler({ query }) {
        const limit = query.limit ?? 50;
        let q = db.selectFrom('recording_sessions').select(['id', 'room_id', 'status', 'started_at', 'ended_at', 'transcript_status', 'progress', 'error_code']);
        if (query.room) q = q.where('room_id', '=', query.room);
        if (query.status) q = q.where('status', '=', query.status);
        if (query.from) q = q.where('started_at', '>=', new Date(query.from));
        if (query.to) q = q.where('started_at', '<', new Date(query.to));
        const rows = await q.orderBy('started_at', 'desc').orderBy('id').offset(query.offset ?? 0).limit(limit + 1).execute();
        const page = rows.slice(0, limit);
        const counts = page.length
          ? await db.selectFrom('session_participants').select(['session_id', db.fn.countAll<string>().as('n')]).where('session_id', 'in', page.map((r) => r.id)).groupBy('session_id').execute()
          : [];
        const n = new Map(counts.map((c) => [c.session_id, Number(c.n)]));
        const iso = (d: Date | string | null) => (d === null ? null : new Date(d).toISOString());
        const sessions = page.map((r) => ({ session: r.id, room: r.room_id, status: r.status, startedAt: iso(r.started_at), endedAt: iso(r.ended_at), transcriptStatus: r.transcript_status, progress: r.progress, errorCode: r.error_code, participants: n.get(r.id) ?? 0 }));
        const next = rows.length > limit ? (query.offset ?? 0) + limit : null;
        return { response: { sessions, next }, audit: { target: query.room ? { type: 'room', id: query.room } : { type: 'sessions' }, details: { filters: { room: query.room, status: query.status, from: query.from, to: query.to }, returned: sessions.length } } };
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
        const events = await listConsentEvents(db, { participant: query.participant, session: query.session, room: query.room, after: query.after, limit });
        const next = events.length === limit ? events.at(-1)!.id : null;
        const target = query.session ? { type: 'session', id: query.session } : query.room ? { type: 'room', id: query.room } : query.participant ? { type: 'participant', id: query.participant } : { type: 'consent_log' };
        const audit = { target, details: { filters: { participant: query.participant, session: query.session, room: query.room }, after: query.after, returned: events.length, ...(query.format === 'csv' ? { format: 'csv' } : {}) } };
        if (query.format === 'csv') {
          const name = (query.participant ?? query.session ?? query.room ?? 'all').replace(/[^A-Za-z0-9._-]/g, '_');
          return { response: consentCsv(events), headers: { 'content-type': 'text/csv; charset=utf-8', 'content-disposition': `attachment; filename="consent-${name}.csv"`, ...(next !== null ? { 'x-next-after': String(next) } : {}) }, audit };
        }
        return { response: { events, next }, audit };
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
        // The head lets a viewer jump to the newest page without scanning forward.
        const headSeq = (await log.head())?.seq ?? 0;
        return { response: { entries, nextFromSeq: next, headSeq }, audit: { target: { type: 'audit_log' }, details: { fromSeq, limit, returned: entries.length } } };
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

// ---------------------------------------------------------------- media

function artifactIdOf(prefix: string, key: string): string {
  return key.startsWith(prefix) ? key.slice(prefix.length) : key;
}

/** One byte range (RFC 9110): `bytes=a-b`, `bytes=a-`, `bytes=-n`. Several ranges: null (the whole body, as RFC 9110 allows). */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | null {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return null;
  const [, a, b] = m as unknown as [string, string, string];
  let start: number;
  let end: number;
  if (a === '' && b === '') return null;
  if (a === '') {
    const n = Number(b);
    if (n === 0) throw rangeNotSatisfiable(header, size);
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(a);
    end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
    if (b !== '' && Number(b) < start) return null; // invalid: ignored
  }
  if (start >= size || end < start) throw rangeNotSatisfiable(header, size);
  return { start, end };
}

function rangeNotSatisfiable(header: string, size: number): VerbatimError {
  return new VerbatimError('RANGE_NOT_SATISFIABLE', `range ${header} is outside the artifact's ${size} bytes`, { hint: 'Ask for bytes within Content-Length.', details: { size } });
}

/** A byte range of a stored artifact: a local file is read from its offset; S3 is asked for the range on its presigned URL. */
async function openArtifact(where: string, key: string, start: number, end: number, size: number): Promise<Readable> {
  if (size === 0) return Readable.from([]);
  if (isUrl(where)) {
    const res = await fetch(where, { headers: { range: `bytes=${start}-${end}` } });
    if ((res.status !== 206 && res.status !== 200) || !res.body) throw new VerbatimError('INTERNAL', `reading ${key} from storage failed: HTTP ${res.status}`, { hint: 'Check that the S3 endpoint is reachable.' });
    const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream);
    // A server that ignores Range answers 200 with everything: skip to the range ourselves.
    return res.status === 206 ? body : body.pipe(sliceStream(start, end));
  }
  return createReadStream(where, { start, end });
}

function isUrl(where: string): boolean {
  return /^https?:\/\//.test(where);
}

/** A local file's size as stored (Content-Length must match what is sent); S3: the size recorded at upload (checked by HEAD then). */
async function storedSize(where: string, key: string, recorded: number): Promise<number> {
  if (isUrl(where)) return recorded;
  try {
    const st = await stat(where);
    if (st.isFile()) return st.size;
  } catch {
    // reported below
  }
  throw new VerbatimError('GONE', `artifact ${key} is recorded but missing from storage`, { hint: 'The stored file is gone; check storage and the tombstones.', details: { state: 'missing' } });
}

function sliceStream(start: number, end: number) {
  let pos = 0;
  return new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: (err: Error | null, data?: Buffer) => void) {
      const from = Math.max(0, start - pos);
      const to = Math.min(chunk.length, end + 1 - pos);
      pos += chunk.length;
      cb(null, from < to ? chunk.subarray(from, to) : Buffer.alloc(0));
    },
  });
}

// ---------------------------------------------------------------- queries

/**
 * LegalHolds audits what it does; inside a request the route writes the one entry of the request,
 * so the entry LegalHolds composes is taken over (with the key, role and client address added).
 */
class CapturedAudit {
  private entry: AuditEntryInput | undefined;
  asLog(): AuditLog {
    const append = async (e: AuditEntryInput) => {
      this.entry = e;
    };
    return { append } as unknown as AuditLog;
  }
  note(fallback: { type: string; id: string }): AuditNote {
    return { target: this.entry?.target ?? fallback, details: (this.entry?.details as Record<string, unknown> | undefined) ?? {} };
  }
}

async function listPolicies(db: Db) {
  const [rows, rooms] = await Promise.all([
    db.selectFrom('retention_policies').selectAll().orderBy('name').execute(),
    db.selectFrom('rooms').select(['id', sql<string | null>`flags->>'retentionPolicy'`.as('policy')]).where(sql<boolean>`flags->>'retentionPolicy' is not null`).orderBy('id').execute(),
  ]);
  return rows.map((r) => ({
    name: r.name,
    scope: r.scope,
    mediaDays: r.media_days,
    transcriptDays: r.transcript_days,
    rawDays: r.raw_days,
    rooms: rooms.filter((x) => x.policy === r.name).map((x) => x.id),
    createdAt: new Date(r.created_at).toISOString(),
    updatedAt: new Date(r.updated_at).toISOString(),
  }));
}

type PolicyJson = Awaited<ReturnType<typeof listPolicies>>[number];

async function policyByName(db: Db, name: string): Promise<PolicyJson | undefined> {
  return (await listPolicies(db)).find((p) => p.name === name);
}

function policyAudit(p: PolicyJson) {
  return { scope: p.scope, mediaDays: p.mediaDays, transcriptDays: p.transcriptDays, rawDays: p.rawDays };
}

function policyNotFound(name: string): VerbatimError {
  return new VerbatimError('NOT_FOUND', `no retention policy "${name}"`, { hint: 'List them with GET /api/v1/retention-policies.', details: { policy: name } });
}

function policyInUse(name: string, rooms: string[], what: string): VerbatimError {
  return new VerbatimError('CONFLICT', `retention policy "${name}" is assigned to ${rooms.length} room(s): ${what}`, {
    hint: 'Assign the rooms another policy first (PUT /api/v1/rooms/:id/retention-policy).',
    details: { policy: name, rooms },
  });
}

async function holdById(db: Db, log: AuditLog, id: string): Promise<LegalHold> {
  const hold = (await new LegalHolds(db, log).list({ includeReleased: true })).find((h) => h.id === id);
  if (!hold) throw new VerbatimError('NOT_FOUND', `no legal hold ${id}`, { hint: 'List the holds with GET /api/v1/legal-holds?includeReleased=true.', details: { hold: id } });
  return hold;
}

function holdJson(h: LegalHold) {
  const iso = (d: Date | string | null) => (d === null ? null : new Date(d).toISOString());
  return {
    id: h.id,
    caseId: h.caseId,
    reason: h.reason,
    scope: { type: h.scopeType, value: h.scopeValue },
    frozenSessionIds: h.frozenSessionIds,
    placedBy: h.placedBy,
    placedAt: iso(h.placedAt),
    releasedAt: iso(h.releasedAt),
    releasedBy: h.releasedBy,
    state: h.releasedAt ? 'released' : 'in_force',
  };
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
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
    events: await manifestEvents(s.manifest_path),
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

/**
 * The session timeline (joins, leaves, pauses, consent) lives in the sealed manifest, not in
 * the db; a manifest that is gone (retention deleted the raw recording) or unreadable gives
 * an empty timeline rather than failing the whole view.
 */
async function manifestEvents(manifestPath: string | null): Promise<SessionManifest['events']> {
  if (!manifestPath) return [];
  try {
    const m = SessionManifestSchema.safeParse(JSON.parse(await readFile(manifestPath, 'utf8')));
    return m.success ? m.data.events : [];
  } catch {
    return [];
  }
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
      description: `${
        r.auth === 'none'
          ? 'No credential needed.'
          : r.permissions.length === 0
            ? 'Any signed-in role.'
            : `Needs permission ${r.permissions.join(' or ')} (roles: ${ROLES.filter((role) => r.permissions.some((p) => rolesWith(p).includes(role))).join(', ')}).`
      } Audited as \`${r.action}\`.`,
      operationId: `${r.method.toLowerCase()}${r.url.replace(/:(\w+)/g, 'By_$1').replace(/[/_-](\w)/g, (_m, c: string) => c.toUpperCase())}`,
      security: r.auth === 'none' ? [] : [{ apiKey: [] }, { sessionCookie: [] }],
      parameters,
      ...(r.body ? { requestBody: { required: true, content: { 'application/json': { schema: z.toJSONSchema(r.body, { io: 'input', unrepresentable: 'any' }) } } } } : {}),
      responses: {
        [String(r.status ?? 200)]: { description: 'OK' },
        '400': errorResponse('BAD_REQUEST: invalid parameters or body'),
        '401': errorResponse('UNAUTHORIZED: missing, malformed, unknown, forged, revoked or expired key'),
        '403': errorResponse("FORBIDDEN: the key's role lacks the permission (or a cookie-authenticated change lacks the CSRF header)"),
        '429': errorResponse('RATE_LIMITED: too many failed credential guesses from this address (Retry-After)'),
        ...(r.body ? { '413': errorResponse('MESSAGE_TOO_LARGE: body over 64 KiB') } : {}),
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Verbatim compliance API', version: '1' },
    components: {
      securitySchemes: {
        apiKey: { type: 'http', scheme: 'bearer', description: 'API key vb_<prefix>_<secret>' },
        sessionCookie: { type: 'apiKey', in: 'cookie', name: SESSION_COOKIE, description: `Console session from POST /api/v1/login; mutating requests also send ${CSRF_HEADER}: 1.` },
      },
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
  const sessions = new ConsoleSessions(db, verifier, {
    secret: opts.sessionSecret ?? randomBytes(32),
    ...(opts.sessionTtlMs !== undefined ? { ttlMs: opts.sessionTtlMs } : {}),
    ...(opts.now ? { now: opts.now } : {}),
  });
  const limiter = new FailedAuthLimiter({ limit: opts.failedAuthPerMinute ?? 10, windowMs: 60_000, ...(opts.now ? { now: opts.now } : {}) });
  const principals = new WeakMap<FastifyRequest, Principal>();
  const app = Fastify({ logger: false, bodyLimit: BODY_LIMIT, trustProxy: opts.trustProxy ?? false });
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
  const table = routes(db, log, opts, { verifier, sessions, limiter, setPrincipal: (req, p) => principals.set(req, p), erasure });

  /** Bearer key, else the console session cookie; guesses count towards the address's rate limit. */
  async function authenticate(req: FastifyRequest): Promise<Principal> {
    const cookie = readCookie(req.headers.cookie, SESSION_COOKIE);
    if (req.headers.authorization === undefined && !cookie) return verifier.fromHeader(undefined);
    limiter.check(req.ip);
    try {
      if (req.headers.authorization !== undefined) return await verifier.fromHeader(req.headers.authorization);
      const p = await sessions.verify(cookie!);
      // A cross-site page can make the browser send the cookie, but cannot set this header.
      if (req.method !== 'GET' && req.method !== 'HEAD' && req.headers[CSRF_HEADER] !== '1') {
        principals.set(req, p);
        throw new VerbatimError('FORBIDDEN', `a cookie-authenticated ${req.method} needs the header ${CSRF_HEADER}: 1`, {
          hint: `Send "${CSRF_HEADER}: 1" with every POST/PUT/PATCH/DELETE made with the session cookie.`,
          details: { reason: 'csrf' },
        });
      }
      return p;
    } catch (err) {
      if (err instanceof VerbatimError && err.code === 'UNAUTHORIZED' && GUESS_FAILURES.has(String((err.details as { reason?: string } | undefined)?.reason))) limiter.record(req.ip);
      throw err;
    }
  }
  const doc = openApiDocument(table);

  const isApi = (req: FastifyRequest) => req.url.startsWith('/api/');
  const routeOf = (req: FastifyRequest) => `${req.method} ${req.routeOptions.url ?? req.url.split('?')[0]}`;
  const actorOf = (p: Principal | undefined) => (p ? { type: 'user' as const, id: p.userId } : { type: 'anonymous' as const });

  /** The one audit entry of a refused request; refusals stand even when it cannot be written. */
  async function auditRefusal(req: FastifyRequest, e: { status: number; code: string; message: string; details?: unknown }): Promise<void> {
    const p = principals.get(req);
    const denied = e.status === 401 || e.status === 403 || e.status === 429;
    const login = req.method === 'POST' && routeOf(req) === 'POST /api/v1/login';
    try {
      await log.append({
        action: login && denied ? 'login.failed' : denied ? 'auth.denied' : 'request.rejected',
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
    if (e.code === 'RANGE_NOT_SATISFIABLE') reply.header('content-range', `bytes */${(e.details as { size?: number } | undefined)?.size ?? 0}`);
    if (e.code === 'RATE_LIMITED') reply.header('retry-after', String((e.details as { retryAfterSeconds?: number } | undefined)?.retryAfterSeconds ?? 60));
    if (reply.sent) return;
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
  // The web console (public page; all its data comes from /api/v1 with the session cookie).
  registerConsole(app);

  app.register(
    async (api) => {
      for (const r of table) {
        api.route({
          method: r.method,
          url: r.url,
          // Authenticate and authorise before the body is read: a refused caller never gets it parsed.
          onRequest: async (req) => {
            if (r.auth === 'none') return;
            const principal = await authenticate(req);
            principals.set(req, principal);
            if (r.permissions.length > 0 && !r.permissions.some((p) => can(principal.role, p))) authorize(principal, r.permissions[0]!);
          },
          handler: async (req, reply) => {
            const params = r.params ? parse(r.params, req.params, 'path') : undefined;
            const query = parse(r.query, req.query ?? {}, 'query');
            const body = r.body ? parse(r.body, req.body ?? {}, 'body') : undefined;
            const result = await r.handler({ req, reply, principal: principals.get(req)!, query, body, params });
            // Sign-in sets the principal inside its handler.
            const principal = principals.get(req)!;
            await log.append({
              action: result.action ?? r.action,
              actor: actorOf(principal),
              target: result.audit.target,
              details: { ...result.audit.details, apiKey: principal.keyId, role: principal.role, ...(principal.sessionId ? { via: 'session' } : {}) },
              clientAddress: req.ip,
            });
            for (const [k, v] of Object.entries(result.headers ?? {})) reply.header(k, v);
            return reply.status(result.status ?? r.status ?? 200).send(result.response);
          },
        });
      }
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
export function auditServerOptionsFromConfig(config: Config, db?: Db): Pick<AuditServerOptions, 'sessionSecret' | 'storage' | 'recordingsDir' | 'workDir' | 'failedAuthPerMinute' | 'exportsDir'> {
  const secrets = loadOrCreateSecrets(config.DATA_DIR, { apiSecret: config.SFU_API_SECRET, tokenSecret: config.SFU_TOKEN_SECRET, recorderSecret: config.RECORDER_SECRET });
  return {
    sessionSecret: createHmac('sha256', secrets.tokenSecret).update('verbatim console session v1').digest(),
    storage: storageFromConfig(config, db ? { retainUntil: objectLockRetention(db) } : {}),
    recordingsDir: config.RECORDINGS_DIR,
    workDir: path.join(config.DATA_DIR, 'erasure-work'),
    exportsDir: path.join(config.DATA_DIR, 'exports'),
    failedAuthPerMinute: config.AUDIT_FAILED_AUTH_PER_MIN,
  };
}

export async function startAuditServer(opts: AuditServerOptions): Promise<AuditServer> {
  const app = buildAuditApp(opts);
  await app.listen({ host: opts.host ?? '127.0.0.1', port: opts.port ?? 0 });
  const addr = app.server.address() as AddressInfo;
  const url = `http://${addr.address.includes(':') ? `[${addr.address}]` : addr.address}:${addr.port}`;
  opts.logger.info({ url }, 'compliance API listening');
  return { app, url, close: () => app.close() };
}

/** The console session cookie (empty value + Max-Age=0 clears it). Secure when the request came over HTTPS. */
function sessionCookie(req: FastifyRequest, value: string, maxAgeSeconds: number): string {
  return `${SESSION_COOKIE}=${value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAgeSeconds}${req.protocol === 'https' ? '; Secure' : ''}`;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
