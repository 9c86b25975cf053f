import type { FastifyRequest } from 'fastify';
import { toStorable, toStorableJson } from '../../../lib/contracts/storable-text.ts';
import { VerbatimError } from '../../../lib/errors.ts';
import type { RefusedRequest } from '../../../lib/http/refusals.ts';
import type { Logger } from '../../../lib/logger.ts';
import type { AuditEntryInput, AuditLog } from '../audit-log.ts';
import type { Principal } from '../auth.ts';
import { SSO_PATHS } from '../sso.ts';

/** What a route's handler says about a request for its audit entry. */
export interface AuditNote {
  target?: { type: string; id?: string | null | undefined };
  details?: Record<string, unknown>;
}

/** How long a client should wait before retrying a request refused for want of its audit entry. */
export const AUDIT_RETRY_AFTER_SECONDS = 5;

/**
 * Every request to the compliance service that is refused, and every /api/v1 request that
 * succeeds, leaves exactly one entry in the audit trail:
 * - a success: the route's action, written before the response is sent. If it cannot be
 *   written the request fails with 503 AUDIT_UNAVAILABLE (Retry-After): no evidence, no data,
 *   for reads too (a search whose entry cannot be written returns no results).
 * - a refusal, wherever it was refused (a handler, authentication, no route, a bad URL, Node's
 *   HTTP parser): `auth.denied` (401/403/429), `login.failed` or `request.rejected`, with status
 *   and code. A refusal stands even when its entry cannot be written (it discloses and changes
 *   nothing; a 503 would only make the client retry a request that cannot succeed); the entry
 *   then goes to the error log in full.
 * This remembers who each request turned out to be, so a refusal after sign-in names its caller,
 * and which requests already have their entry, so none gets two.
 */
export class RequestAudit {
  private readonly principals = new WeakMap<FastifyRequest, Principal>();
  private readonly written = new WeakSet<FastifyRequest>();

  constructor(
    private readonly log: AuditLog,
    private readonly logger: Logger,
  ) {}

  setPrincipal(req: FastifyRequest, p: Principal): void {
    this.principals.set(req, p);
  }

  principalOf(req: FastifyRequest): Principal | undefined {
    return this.principals.get(req);
  }

  /**
   * The entry of a request that succeeded (the caller is known, or anonymous for the routes
   * without a credential that sign nobody in: the SSO redirect, the IdP's back-channel logout);
   * throws AUDIT_UNAVAILABLE.
   */
  async succeeded(req: FastifyRequest, action: string, note: AuditNote): Promise<void> {
    const principal = this.principals.get(req);
    const entry: AuditEntryInput = {
      action,
      actor: actorOf(principal),
      target: note.target,
      details: { ...note.details, ...principalDetails(principal), ...(principal?.sessionId ? { via: principal.sso ? 'sso-session' : 'session' } : {}) },
      clientAddress: storableAddress(req.ip),
    };
    try {
      await this.log.append(entry);
    } catch (err) {
      this.logger.error({ err, entry }, 'could not write the audit entry of a request: it is not answered with its result');
      throw new VerbatimError('AUDIT_UNAVAILABLE', `the request's audit entry (${action}) could not be written, so its result is not given`, {
        hint: 'The audit trail is not writable (is the database up?); retry later.',
        details: { action, retryAfterSeconds: AUDIT_RETRY_AFTER_SECONDS },
        cause: err,
      });
    }
    this.written.add(req);
  }

  /** The entry of a refused request (RefusalPolicy.record); answers the refusal as it is. */
  async refused(r: RefusedRequest, e: VerbatimError): Promise<VerbatimError> {
    if (r.req) {
      if (this.written.has(r.req)) return e;
      this.written.add(r.req);
    }
    const p = r.req ? this.principals.get(r.req) : undefined;
    const denied = e.status === 401 || e.status === 403 || e.status === 429;
    const login = (r.method === 'POST' && r.route === '/api/v1/login') || (r.method === 'GET' && r.route === SSO_PATHS.callback);
    const entry: AuditEntryInput = {
      action: login && denied ? 'login.failed' : denied ? 'auth.denied' : 'request.rejected',
      actor: actorOf(p),
      target: { type: 'route', id: r.method ? `${r.method} ${r.route}` : r.route || null },
      details: {
        status: e.status,
        code: e.code,
        message: toStorable(e.message, 500),
        ...principalDetails(p),
        ...(isPlainObject(e.details) ? { error: toStorableJson(e.details) } : {}),
        ...(r.req ? {} : { stage: 'before-routing' }),
      },
      clientAddress: storableAddress(r.clientAddress),
    };
    try {
      await this.log.append(entry);
    } catch (err) {
      this.logger.error({ err, entry }, 'could not audit a refused request');
    }
    return e;
  }
}

const principalDetails = (p: Principal | undefined) => (p ? { ...(p.keyId ? { apiKey: p.keyId } : {}), role: p.role } : {});
const actorOf = (p: Principal | undefined) => (p ? { type: 'user' as const, id: p.userId } : { type: 'anonymous' as const });
/** Behind a trusted proxy the address comes from X-Forwarded-For: any text the client chose. */
const storableAddress = (a: string | null | undefined) => (a ? toStorable(a, 100) : null);

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
