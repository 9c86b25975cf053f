import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import type { AuditEntryInput, AuditSink } from '../../lib/audit-sink.ts';
import { VerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import type { AuditContext } from './audit-context.ts';

/** The admin API's one credential: its audit actor. */
export const ADMIN_ACTOR = { type: 'api_key', id: 'sfu-admin' } as const;

/** What a route says about a request it served, for that request's audit entry. */
export interface AuditNote {
  action: string;
  target?: { type: string; id?: string | null };
  details?: Record<string, unknown>;
}

/** A request refused before Fastify made a request object of it (client errors, upgrades). */
export interface RawRequestInfo {
  requestId: string;
  method: string;
  path: string;
  clientAddress: string | null;
  authorization?: string | undefined;
}

/**
 * Every SFU admin API request leaves exactly one audit entry, and so does every request the
 * SFU's HTTP server refuses, wherever it is refused (a bad secret, a 404, a malformed body, a
 * bad URL encoding, oversized headers, a bad WebSocket upgrade):
 * - a served admin request: the change's own entry (room.create, room.flags, recording.toggle,
 *   room.close: written by the Sfu with this request's AuditContext) or the route's note
 *   (room.list, token.mint, ...), written before the answer; if it cannot be written the request
 *   fails with 503 AUDIT_UNAVAILABLE;
 * - a refusal: `auth.denied` (401) or `request.rejected` with status and code; a refusal stands
 *   even when its entry cannot be written (logged).
 * Served requests of the public routes (meeting page, health, metrics) are not audited.
 * Request-controlled text is made storable first (no NUL, no lone surrogates, bounded).
 */
export class AdminRequestAudit {
  private readonly contexts = new WeakMap<FastifyRequest, AuditContext>();
  private readonly keyHash: Buffer;

  constructor(
    private readonly sink: AuditSink,
    apiSecret: string,
    private readonly logger: Logger,
  ) {
    this.keyHash = sha256(apiSecret);
  }

  /** Whether an Authorization header carries the admin secret (compared in constant time). */
  isAdmin(authorization: string | undefined): boolean {
    const m = /^Bearer (.+)$/.exec(authorization ?? '');
    return !!m && timingSafeEqual(sha256(m[1]!), this.keyHash);
  }

  contextOf(req: FastifyRequest): AuditContext {
    let ctx = this.contexts.get(req);
    if (!ctx) {
      ctx = { requestId: req.id, clientAddress: req.ip ?? null, written: false };
      this.contexts.set(req, ctx);
    }
    return ctx;
  }

  /** The entry of a served admin request (none if the change already wrote it); throws AUDIT_UNAVAILABLE. */
  async succeeded(req: FastifyRequest, note: AuditNote): Promise<void> {
    const ctx = this.contextOf(req);
    if (ctx.written) return;
    try {
      await this.sink.append({
        action: note.action,
        actor: ADMIN_ACTOR,
        target: note.target,
        details: { ...note.details, requestId: ctx.requestId },
        clientAddress: ctx.clientAddress,
      });
    } catch (err) {
      this.logger.error({ err, action: note.action }, 'could not write the audit entry of an admin request');
      throw new VerbatimError('AUDIT_UNAVAILABLE', `the request was served but its audit entry (${note.action}) could not be written, so it is not answered`, {
        hint: 'The audit trail is not writable (database?); retry once it is back.',
        cause: err,
      });
    }
    ctx.written = true;
  }

  /** The entry of a refused request that reached Fastify (routed or not). */
  async refused(req: FastifyRequest, e: VerbatimError): Promise<void> {
    const ctx = this.contextOf(req);
    if (ctx.written) return;
    ctx.written = true;
    await this.write(refusalEntry(e, { requestId: ctx.requestId, method: req.method, path: routeOf(req), clientAddress: ctx.clientAddress }, this.isAdmin(req.headers.authorization)));
  }

  /** The entry of a request refused before routing; returns the request id the answer carries. */
  async refusedRaw(info: Omit<RawRequestInfo, 'requestId'>, e: VerbatimError): Promise<string> {
    const requestId = randomUUID();
    await this.write(refusalEntry(e, { ...info, requestId }, this.isAdmin(info.authorization)));
    return requestId;
  }

  private async write(entry: AuditEntryInput): Promise<void> {
    try {
      await this.sink.append(entry);
    } catch (err) {
      this.logger.error({ err, route: entry.target?.id, code: entry.details?.code }, 'could not audit a refused request');
    }
  }
}

function refusalEntry(e: VerbatimError, r: RawRequestInfo, admin: boolean): AuditEntryInput {
  return {
    action: e.status === 401 ? 'auth.denied' : 'request.rejected',
    actor: admin ? ADMIN_ACTOR : { type: 'anonymous' },
    target: { type: 'route', id: storable(`${r.method} ${r.path}`, 300) },
    details: { status: e.status, code: e.code, message: storable(e.message, 500), requestId: r.requestId },
    clientAddress: r.clientAddress,
  };
}

/** The route pattern when one matched, else the path as sent (no query). */
function routeOf(req: FastifyRequest): string {
  let pattern: string | undefined;
  try {
    pattern = req.routeOptions?.url;
  } catch {
    pattern = undefined;
  }
  return pattern ?? (req.raw.url ?? '').split('?')[0]!;
}

/**
 * Request-controlled text as the audit trail can keep it: Postgres refuses NUL and lone
 * surrogates in JSON, so they (and other control characters) become U+FFFD; long text is cut.
 */
export function storable(s: string, max: number): string {
  // Cut first, then clean: a cut can split a surrogate pair. With /u, [\uD800-\uDFFF] matches only unpaired halves.
  const cut = s.length > max ? `${s.slice(0, max)}…` : s;
  return cut.replace(/[\p{Cc}\uD800-\uDFFF]/gu, '\uFFFD');
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}
