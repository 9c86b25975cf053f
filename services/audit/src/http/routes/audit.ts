import { z } from 'zod';
import { defineRoute, type AnyRoute, type RouteContext } from '../route-table.ts';
import { verifyAuditTrail } from '../../audit-verify.ts';
import { EmptyQuerySchema, intParam } from '../schemas.ts';

export const AuditQuerySchema = z
  .object({
    from_seq: intParam(1, Number.MAX_SAFE_INTEGER).optional(),
    limit: intParam(1, 1000).optional(),
  })
  .strict();

const VerifyBodySchema = z.object({}).strict();

/** The audit trail: read page by page, and verified against its checkpoints. */
export function auditRoutes({ db, log, options }: RouteContext): AnyRoute[] {
  return [
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
      summary: 'Recompute the audit chain and compare it with every signed checkpoint (directory and storage copies); each finding is named by kind.',
      query: EmptyQuerySchema,
      body: VerifyBodySchema,
      async handler() {
        const result = await verifyAuditTrail(db, { store: options.checkpoints?.store, verifiers: options.checkpoints?.verifiers ?? [] });
        const kinds = [...new Set(result.findings.map((f) => f.kind))];
        return { response: result, audit: { target: { type: 'audit_log' }, details: { ok: result.ok, checked: result.checked, head: result.head, checkpoints: result.checkpoints, findings: kinds, firstBroken: result.firstBroken } } };
      },
    }),
  ];
}
