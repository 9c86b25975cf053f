import type { FastifyRequest } from 'fastify';
import type { Logger } from '../../../lib/logger.ts';
import type { AuditLog } from '../audit-log.ts';
import type { Principal } from '../auth.ts';

/** What a route's handler says about a request for its audit entry. */
export interface AuditNote {
  target?: { type: string; id?: string | null | undefined };
  details?: Record<string, unknown>;
}

/**
 * Every /api/v1 request leaves exactly one entry in the audit trail: the route's action when it
 * succeeds (written before the response is sent: no audit entry, no data), or `auth.denied`
 * (401/403/429), `login.failed` or `request.rejected` (any other refusal) when it does not. This
 * remembers who each request turned out to be, so a refusal after sign-in names its caller.
 */
export class RequestAudit {
  private readonly principals = new WeakMap<FastifyRequest, Principal>();

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

  /** The entry of a request that succeeded (the caller is known: routes without one sign it in). */
  async succeeded(req: FastifyRequest, action: string, note: AuditNote): Promise<void> {
    const principal = this.principals.get(req)!;
    await this.log.append({
      action,
      actor: actorOf(principal),
      target: note.target,
      details: { ...note.details, apiKey: principal.keyId, role: principal.role, ...(principal.sessionId ? { via: 'session' } : {}) },
      clientAddress: req.ip,
    });
  }

  /** The entry of a refused request; refusals stand even when it cannot be written. */
  async refused(req: FastifyRequest, e: { status: number; code: string; message: string; details?: unknown }): Promise<void> {
    const p = this.principals.get(req);
    const denied = e.status === 401 || e.status === 403 || e.status === 429;
    const login = req.method === 'POST' && routeOf(req) === 'POST /api/v1/login';
    try {
      await this.log.append({
        action: login && denied ? 'login.failed' : denied ? 'auth.denied' : 'request.rejected',
        actor: actorOf(p),
        target: { type: 'route', id: routeOf(req) },
        details: { status: e.status, code: e.code, message: e.message.slice(0, 500), ...(p ? { apiKey: p.keyId, role: p.role } : {}), ...(isPlainObject(e.details) ? { error: e.details } : {}) },
        clientAddress: req.ip,
      });
    } catch (err) {
      this.logger.error({ err, route: routeOf(req), code: e.code }, 'could not audit a refused request');
    }
  }
}

const routeOf = (req: FastifyRequest) => `${req.method} ${req.routeOptions.url ?? req.url.split('?')[0]}`;
const actorOf = (p: Principal | undefined) => (p ? { type: 'user' as const, id: p.userId } : { type: 'anonymous' as const });

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
