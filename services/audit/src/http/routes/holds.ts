import type { Kysely } from 'kysely';
import { z } from 'zod';
import type { Database } from '../../../../../db/schema.ts';
import { VerbatimError } from '../../../../lib/errors.ts';
import type { AuditEntryInput, AuditLog } from '../../audit-log.ts';
import { legalHoldStorage, sessionsInScope, syncLegalHolds } from '../../object-lock.ts';
import { LegalHolds, type LegalHold } from '../../retention.ts';
import type { AuditNote } from '../request-audit.ts';
import { defineRoute, type AnyRoute, type HandlerResult, type RouteContext } from '../route-table.ts';
import { EmptyQuerySchema, UuidParamsSchema, text } from '../schemas.ts';

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
export const HoldReleaseBodySchema = z.object({ reason: text(2000).optional() }).strict();
export const HoldListQuerySchema = z.object({ includeReleased: z.enum(['true', 'false']).optional() }).strict();

/** Legal holds: listed, viewed, placed and released; with an Object Lock bucket the S3 legal-hold flags follow them. */
export function holdRoutes({ db, log, options }: RouteContext): AnyRoute[] {
  /** With an Object Lock bucket: the S3 legal-hold flags of what the hold covers follow the holds in force. */
  const applyObjectLock = async (hold: LegalHold): Promise<{ set: number; cleared: number; failed: string[] } | undefined> => {
    const storage = legalHoldStorage(options.storage);
    if (!storage) return undefined;
    const r = await syncLegalHolds(db, storage, await sessionsInScope(db, hold), options.logger);
    return { set: r.set.length, cleared: r.cleared.length, failed: r.failed };
  };
  /** A placed or released hold: S3 legal-hold flags follow it, and the response and audit entry say what they did. */
  const holdChanged = async (hold: LegalHold, capture: CapturedAudit): Promise<HandlerResult> => {
    const objectLock = await applyObjectLock(hold);
    const note = capture.note({ type: 'legal_hold', id: hold.id });
    return { response: { ...holdJson(hold), ...(objectLock ? { objectLock } : {}) }, audit: { ...note, details: { ...note.details, ...(objectLock ? { objectLock } : {}) } } };
  };
  return [
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
  ];
}

/**
 * LegalHolds audits what it does; inside a request the route table writes the one entry of the
 * request, so the entry LegalHolds composes is taken over (with the key, role and client address added).
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
    return { target: this.entry?.target ?? fallback, details: (this.entry?.details) ?? {} };
  }
}

async function holdById(db: Kysely<Database>, log: AuditLog, id: string): Promise<LegalHold> {
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
