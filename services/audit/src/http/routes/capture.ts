import { z } from 'zod';
import { ParticipantIdSchema } from '../../../../lib/contracts/room.ts';
import { VerbatimError } from '../../../../lib/errors.ts';
import { exceptionsCsv, Reconciler } from '../../supervision/reconciliation.ts';
import { RegulatedList } from '../../supervision/regulated.ts';
import { badRequest, defineRoute, type AnyRoute, type RouteContext } from '../route-table.ts';
import { EmptyQuerySchema, UuidParamsSchema, instant, text } from '../schemas.ts';

const GroupNameSchema = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$/, 'group: 1-64 chars of A-Z a-z 0-9 _ . @ -');
const RegulatedBodySchema = z
  .object({
    kind: z.enum(['identity', 'group']),
    value: z.string().min(1).max(64).describe('The identity (join token subject) or group name.'),
    reason: text(2000),
  })
  .strict()
  .superRefine((b, ctx) => {
    const ok = (b.kind === 'identity' ? ParticipantIdSchema : GroupNameSchema).safeParse(b.value).success;
    if (!ok) ctx.addIssue({ code: 'custom', path: ['value'], message: `not a valid ${b.kind} (1-64 chars of A-Z a-z 0-9 _ . @ -)` });
  });
const RegulatedParamsSchema = z.object({ kind: z.enum(['identity', 'group']), value: z.string().min(1).max(64) }).strict();
const ReconcileBodySchema = z
  .object({ from: instant.optional().describe('Default: 24 h before `to`.'), to: instant.optional().describe('Default: now.') })
  .strict();
const ReportQuerySchema = z.object({ format: z.enum(['json', 'csv']).optional() }).strict();

const DAY_MS = 86_400_000;

/** Capture assurance: the regulated list (admin) and reconciliation runs and their reports (officer; auditors read). */
export function captureRoutes({ db, log, options, now }: RouteContext): AnyRoute[] {
  const regulated = new RegulatedList(db);
  const reconciler = new Reconciler({ db, storage: options.storage, audit: log, logger: options.logger.child({ component: 'reconciliation' }), gapSeconds: options.reconcileGapSeconds ?? 5, now });
  const runById = async (id: string) => {
    const run = await reconciler.get(id);
    if (!run) throw new VerbatimError('NOT_FOUND', `no reconciliation run ${id}`, { hint: 'List runs with GET /api/v1/capture/reconciliations.', details: { run: id } });
    return run;
  };
  return [
    defineRoute({
      method: 'GET',
      url: '/capture/regulated',
      permissions: ['capture.manage', 'capture.read'],
      action: 'capture.regulated.list',
      summary: 'Identities and groups (identity groups: /supervision/groups) recorded in every room they join, with group members.',
      query: EmptyQuerySchema,
      async handler() {
        const subjects = await regulated.list();
        return { response: { subjects }, audit: { target: { type: 'regulated_subjects' }, details: { returned: subjects.length } } };
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/capture/regulated',
      permissions: ['capture.manage'],
      action: 'capture.regulated.add',
      summary: 'Mark an identity or a group regulated: the SFU records it in every room it joins (from its next join).',
      query: EmptyQuerySchema,
      body: RegulatedBodySchema,
      status: 201,
      async handler({ principal, body }) {
        const s = await regulated.add({ kind: body.kind, value: body.value, reason: body.reason, addedBy: `user:${principal.userId}` });
        return { response: s, audit: { target: { type: `regulated_${s.kind}`, id: s.value }, details: { before: null, after: s } } };
      },
    }),
    defineRoute({
      method: 'DELETE',
      url: '/capture/regulated/:kind/:value',
      permissions: ['capture.manage'],
      action: 'capture.regulated.remove',
      summary: 'No longer regulated (from its next join).',
      query: EmptyQuerySchema,
      params: RegulatedParamsSchema,
      async handler({ params }) {
        const before = await regulated.remove(params.kind, params.value);
        return { response: { removed: before }, audit: { target: { type: `regulated_${params.kind}`, id: params.value }, details: { before, after: null } } };
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/capture/reconciliations',
      permissions: ['capture.reconcile'],
      action: 'reconciliation.request',
      summary: 'Run capture reconciliation now over [from, to) (default the last 24 h); answers at once with the run, poll GET /capture/reconciliations/{id}.',
      query: EmptyQuerySchema,
      body: ReconcileBodySchema,
      status: 202,
      async handler({ principal, body }) {
        const to = body.to ? new Date(body.to) : now();
        const from = body.from ? new Date(body.from) : new Date(to.getTime() - DAY_MS);
        if (!(from < to)) throw badRequest(`from ${from.toISOString()} is not before to ${to.toISOString()}`, 'from');
        const id = await reconciler.start({ from, to }, `user:${principal.userId}`);
        // In the background: re-hashing every artifact can take minutes. The run row says how it ended.
        reconciler.execute(id).catch(() => {});
        return { response: await runById(id), audit: { target: { type: 'reconciliation', id }, details: { from: from.toISOString(), to: to.toISOString() } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/capture/reconciliations',
      permissions: ['capture.read'],
      action: 'reconciliation.list',
      summary: 'The latest reconciliation runs with their summaries.',
      query: EmptyQuerySchema,
      async handler() {
        const runs = await reconciler.list();
        return { response: { runs }, audit: { target: { type: 'reconciliations' }, details: { returned: runs.length } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/capture/reconciliations/:id',
      permissions: ['capture.read'],
      action: 'reconciliation.view',
      summary: 'One run and its exceptions (format=csv: the exceptions as CSV).',
      query: ReportQuerySchema,
      params: UuidParamsSchema,
      async handler({ params, query }) {
        const run = await runById(params.id);
        const exceptions = await reconciler.exceptions(params.id);
        const audit = { target: { type: 'reconciliation', id: params.id }, details: { format: query.format ?? 'json', exceptions: exceptions.length } };
        if (query.format === 'csv') {
          return { response: exceptionsCsv(exceptions), audit, headers: { 'content-type': 'text/csv; charset=utf-8', 'content-disposition': `attachment; filename="reconciliation-${params.id}.csv"` } };
        }
        return { response: { run, exceptions }, audit };
      },
    }),
  ];
}
