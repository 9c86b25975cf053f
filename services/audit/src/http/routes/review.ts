import { z } from 'zod';
import { RoomIdSchema } from '../../../../lib/contracts/room.ts';
import type { AuditEntryInput, AuditLog } from '../../audit-log.ts';
import { legalHoldStorage, sessionsInScope, syncLegalHolds } from '../../object-lock.ts';
import { LegalHolds } from '../../retention.ts';
import { evidenceReport, evidenceReportCsv } from '../../supervision/evidence-report.ts';
import { SEVERITIES } from '../../supervision/policies.ts';
import { Pseudonyms } from '../../supervision/pseudonyms.ts';
import { DISPOSITIONS, ReviewQueue } from '../../supervision/review-queue.ts';
import { badRequest, defineRoute, type AnyRoute, type RouteContext } from '../route-table.ts';
import { EmptyQuerySchema, SessionIdSchema, UuidParamsSchema, instant, intParam, text } from '../schemas.ts';

export const ReviewItemsQuerySchema = z
  .object({
    policy: z.uuid().optional(),
    severity: z.enum(SEVERITIES).optional(),
    state: z.enum(['open', 'escalated', 'closed']).optional(),
    reviewer: text(200).optional().describe("An assignee's user id, 'me' or 'unassigned'."),
    room: RoomIdSchema.optional(),
    session: SessionIdSchema.optional(),
    kind: z.enum(['hit', 'sample']).optional(),
    from: instant.optional().describe('Spoken at or after this instant (a date: its UTC midnight).'),
    to: instant.optional().describe('Spoken at or before this instant (a date: through its UTC end).'),
    page: intParam(1, 100_000).optional(),
    pageSize: intParam(1, 200).optional(),
  })
  .strict();
export const AssignBodySchema = z.object({ assignee: text(200).nullable().describe("A compliance officer's user id, 'me', or null to unassign.") }).strict();
export const NoteBodySchema = z.object({ body: text(4000) }).strict();
export const DecisionBodySchema = z
  .object({
    disposition: z.enum(DISPOSITIONS),
    reason: z.string().max(4000).optional().describe('Required: why.'),
    hold: z.object({ caseId: text(200) }).strict().optional().describe("Escalation only: place a legal hold on the item's session under this case."),
    export: z.boolean().optional().describe("Escalation only: start an e-discovery export of the item's session."),
  })
  .strict();
export const ReportQuerySchema = z
  .object({
    from: instant.describe('Window start (a date: its UTC midnight).'),
    to: instant.describe('Window end (a date: through its UTC end).'),
    format: z.enum(['json', 'csv']).optional(),
  })
  .strict();

const dayEnd = (s: string) => (/^\d{4}-\d{2}-\d{2}$/.test(s) ? new Date(Date.parse(`${s}T00:00:00Z`) + 86_400_000 - 1) : new Date(s));

/** The review queue of supervision policies: every view and decision is the request's audit entry. */
export function reviewRoutes({ db, options, exports }: RouteContext): AnyRoute[] {
  const queue = new ReviewQueue(db);
  // Speakers of pseudonymising policies are shown as pseudonyms until revealed (POST /review/pseudonyms/reveal).
  const pseudonyms = new Pseudonyms(db);
  return [
    defineRoute({
      method: 'GET',
      url: '/review/items',
      permissions: ['review.read'],
      action: 'review.item.list',
      summary: 'The review queue, newest first: filter by policy, severity, state, reviewer, room, session, kind and date; each item links to its moment in the player.',
      query: ReviewItemsQuerySchema,
      async handler({ principal, query }) {
        const r = await queue.list(principal, query);
        r.items = await pseudonyms.apply(principal, r.items);
        return { response: r, audit: { target: { type: 'review_items' }, details: { filters: { ...query }, returned: r.items.length, items: r.items.map((i) => i.id), total: r.total } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/review/items/:id',
      permissions: ['review.read'],
      action: 'review.item.view',
      summary: 'One review item with its hits (matched words, snippet, time span), notes and decisions.',
      query: EmptyQuerySchema,
      params: UuidParamsSchema,
      async handler({ principal, params }) {
        const [item] = await pseudonyms.apply(principal, [await queue.details(principal, params.id)]);
        if (!item) throw new Error('unreachable: one item in, one out');
        return { response: item, audit: { target: { type: 'review_item', id: item.id }, details: { session: item.session, policy: item.policy.id, state: item.state } } };
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/review/items/:id/assign',
      permissions: ['review.decide'],
      action: 'review.item.assign',
      summary: 'Assign an open item to a compliance officer (or unassign it).',
      query: EmptyQuerySchema,
      params: UuidParamsSchema,
      body: AssignBodySchema,
      async handler({ principal, params, body }) {
        const assignee = body.assignee === 'me' ? principal.userId : body.assignee;
        const r = await queue.assign(principal, params.id, assignee);
        return { response: (await pseudonyms.apply(principal, [r.item]))[0], audit: { target: { type: 'review_item', id: params.id }, details: { before: r.before, after: assignee } } };
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/review/items/:id/notes',
      permissions: ['review.decide'],
      action: 'review.item.note',
      summary: 'Add a note to an item (open or closed).',
      query: EmptyQuerySchema,
      params: UuidParamsSchema,
      body: NoteBodySchema,
      status: 201,
      async handler({ principal, params, body }) {
        const r = await queue.note(principal, params.id, body.body);
        return { response: { id: r.id }, audit: { target: { type: 'review_item', id: params.id }, details: { note: r.id, body: body.body } } };
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/review/items/:id/decision',
      permissions: ['review.decide'],
      action: 'review.item.decide',
      summary:
        'Decide an item: no_issue, false_positive or violation close it; escalated keeps it open and can place a legal hold (hold.caseId) and start an export (export: true) of its session in the same step. 400 REASON_REQUIRED without a reason; 403 REVIEW_OUT_OF_SCOPE; 409 REVIEW_CLOSED.',
      query: EmptyQuerySchema,
      params: UuidParamsSchema,
      body: DecisionBodySchema,
      async handler({ principal, params, body }) {
        const item = await queue.checkDecision(principal, params.id, body.reason);
        const reason = body.reason!.trim();
        if ((body.hold || body.export) && body.disposition !== 'escalated') throw badRequest('a hold or an export is started by an escalation only', body.hold ? 'hold' : 'export');
        // Exports unavailable (no storage): refused before a hold is placed, so nothing is half done.
        const exportJobs = body.export ? exports() : undefined;
        let holdId: string | null = null;
        let holdEntry: AuditEntryInput | undefined;
        let exportId: string | null = null;
        if (body.hold) {
          // LegalHolds audits itself; inside this request its entry becomes part of the decision's one entry.
          const captured: { entry?: AuditEntryInput } = {};
          const capture = { append: async (e: AuditEntryInput) => void (captured.entry = e) } as unknown as AuditLog;
          const hold = await new LegalHolds(db, capture).place({ caseId: body.hold.caseId, reason: `review item ${item.id}: ${reason}`, scopeType: 'session', scopeValue: item.session, placedBy: { type: 'user', id: principal.userId } });
          holdId = hold.id;
          holdEntry = captured.entry;
          const storage = legalHoldStorage(options.storage);
          if (storage) await syncLegalHolds(db, storage, await sessionsInScope(db, hold), options.logger);
        }
        if (exportJobs) {
          const record = await exportJobs.start({ sessionIds: [item.session] }, { type: 'user', id: principal.userId });
          exportId = record.id;
        }
        const after = await queue.commit(principal, params.id, { disposition: body.disposition, reason, holdId, exportId });
        return {
          response: { item: (await pseudonyms.apply(principal, [after]))[0], holdId, exportId, ...(exportId ? { exportStatusUrl: `/api/v1/exports/${exportId}` } : {}) },
          audit: {
            target: { type: 'review_item', id: params.id },
            details: { session: item.session, policy: item.policy.id, policyVersion: item.policy.version, before: { state: item.state, disposition: item.disposition }, disposition: body.disposition, reason, holdId, exportId, ...(holdEntry ? { hold: holdEntry.details } : {}) },
          },
        };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/review/report',
      permissions: ['review.report'],
      action: 'review.report',
      summary: 'Review evidence over [from, to]: per policy and reviewer, items created, reviewed, by disposition, median time to decision, and the sample drawn. format=csv for a spreadsheet.',
      query: ReportQuerySchema,
      async handler({ query }) {
        const from = new Date(query.from);
        const to = dayEnd(query.to);
        if (to.getTime() < from.getTime()) throw badRequest('to is before from', 'to');
        const report = await evidenceReport(db, from, to);
        const audit = { target: { type: 'review_report' }, details: { from: report.from, to: report.to, format: query.format ?? 'json', policies: report.policies.length, sample: report.sample.length } };
        if (query.format === 'csv') {
          return { response: evidenceReportCsv(report), headers: { 'content-type': 'text/csv; charset=utf-8', 'content-disposition': `attachment; filename="review-evidence-${report.from.slice(0, 10)}-${report.to.slice(0, 10)}.csv"`, 'cache-control': 'private, no-store' }, audit };
        }
        return { response: report, audit };
      },
    }),
  ];
}

