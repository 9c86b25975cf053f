import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Kysely } from 'kysely';
import type { ZodType } from 'zod';
import type { Database } from '../../../../db/schema.ts';
import { VerbatimError } from '../../../lib/errors.ts';
import { parseOrBadRequest } from '../../../lib/http/parse-or-bad-request.ts';
import type { AuditLog } from '../audit-log.ts';
import { authorize, can, type ApiKeyVerifier, type ConsoleSessions, type FailedAuthLimiter, type Permission, type Principal } from '../auth.ts';
import type { ErasureJobs } from '../erasure-jobs.ts';
import type { ExportJobs } from '../export-jobs.ts';
import type { SupervisionRuns } from '../supervision/supervision-runs.ts';
import type { OidcRelyingParty } from '../sso.ts';
import type { AuditServerOptions } from './audit-server-options.ts';
import type { AuditNote, RequestAudit } from './request-audit.ts';

/**
 * The compliance API's route table: each route declares its method and URL, the permissions
 * that may call it, its audited action, an OpenAPI summary and zod schemas for query, body and
 * path. The table authenticates and authorises each request, parses its input, runs the handler
 * and writes the request's one audit entry; the OpenAPI document is generated from the same table.
 */

/** Where the compliance API's reference is, for every refusal. */
export const API_HINT = 'See GET /docs/json for the API.';

export interface HandlerContext<Q, B, P> {
  req: FastifyRequest;
  reply: FastifyReply;
  principal: Principal;
  query: Q;
  body: B;
  params: P;
}

export interface HandlerResult {
  /** JSON, or a stream sent as is (set Content-Type in headers). */
  response: unknown;
  audit: AuditNote;
  /** Overrides the route's audited action (a ranged media read is a stream, a whole one a download). */
  action?: string;
  status?: number;
  headers?: Record<string, string | string[]>;
}

export interface RouteDef<Q, B, P> {
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
  /** The body's media type when not JSON (the server parses it for this route only). */
  bodyType?: 'application/x-www-form-urlencoded';
  params?: ZodType<P>;
  status?: number;
  handler(ctx: HandlerContext<Q, B, P>): Promise<HandlerResult>;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyRoute = RouteDef<any, any, any>;
export const defineRoute = <Q, B = undefined, P = undefined>(r: RouteDef<Q, B, P>): AnyRoute => r as AnyRoute;

/** What the route files are built with (once per app). */
export interface RouteContext {
  db: Kysely<Database>;
  /** The audit trail, for the routes that read or verify it (the table writes each request's entry). */
  log: AuditLog;
  options: AuditServerOptions;
  now: () => Date;
  verifier: ApiKeyVerifier;
  sessions: ConsoleSessions;
  limiter: FailedAuthLimiter;
  /** Records the authenticated principal of a request (sign-in, which has no credential header to authenticate). */
  setPrincipal: (req: FastifyRequest, p: Principal) => void;
  /** Erasure requests and their background jobs (with storage and RECORDINGS_DIR). */
  erasure: ErasureJobs | undefined;
  /** Console sign-in through the OpenID Connect provider (OIDC_ISSUER_URL); undefined: API keys only. */
  sso: OidcRelyingParty | undefined;
  /** The process's e-discovery export builder (one for the API: exports run one at a time); INTERNAL without storage. */
  exports: () => ExportJobs;
  /** Supervision policy runs over stored transcripts (BullMQ, with redisUrl); undefined: no job queues. */
  supervision: SupervisionRuns | undefined;
}

/** A request field that parsed but makes no sense (e.g. an expiry in the past). */
export function badRequest(message: string, field: string): VerbatimError {
  return new VerbatimError('BAD_REQUEST', message, { hint: API_HINT, details: { field } });
}

/** Registers every route of the table on `api` (mounted under /api/v1). */
export function mountRouteTable(api: FastifyInstance, table: readonly AnyRoute[], audit: RequestAudit, authenticate: (req: FastifyRequest) => Promise<Principal>): void {
  for (const r of table) {
    api.route({
      method: r.method,
      url: r.url,
      // Authenticate and authorise before the body is read: a refused caller never gets it parsed.
      onRequest: async (req) => {
        if (r.auth === 'none') return;
        const principal = await authenticate(req);
        audit.setPrincipal(req, principal);
        if (r.permissions.length > 0 && !r.permissions.some((p) => can(principal.role, p))) authorize(principal, r.permissions[0]!);
      },
      handler: async (req, reply) => {
        // The table holds routes of every input type: each route's own schema typed its handler.
        const params: unknown = r.params ? parseOrBadRequest(r.params, req.params, 'path', API_HINT) : undefined;
        const query: unknown = parseOrBadRequest(r.query, req.query ?? {}, 'query', API_HINT);
        const body: unknown = r.body ? parseOrBadRequest(r.body, req.body ?? {}, 'body', API_HINT) : undefined;
        const result = await r.handler({ req, reply, principal: audit.principalOf(req)!, query, body, params });
        // Sign-in sets the principal inside its handler, so the entry is written after it ran.
        try {
          await audit.succeeded(req, result.action ?? r.action, result.audit);
        } catch (err) {
          // No entry, no data: a stream opened for the answer is closed unread.
          if (result.response instanceof Readable) result.response.destroy();
          throw err;
        }
        for (const [k, v] of Object.entries(result.headers ?? {})) reply.header(k, v);
        return reply.status(result.status ?? r.status ?? 200).send(result.response);
      },
    });
  }
}
