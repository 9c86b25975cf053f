import { z } from 'zod';
import { VerbatimError } from '../../../../lib/errors.ts';
import { PolicyDefinitionSchema, SupervisionPolicies, type PolicyRecord } from '../../supervision/policies.ts';
import { STARTER_FINANCIAL_LEXICON } from '../../supervision/starter-lexicon.ts';
import type { RunRecord } from '../../supervision/supervision-runs.ts';
import { defineRoute, type AnyRoute, type RouteContext } from '../route-table.ts';
import { EmptyQuerySchema, ParticipantIdSchema, UuidParamsSchema, text } from '../schemas.ts';

const GroupParamsSchema = z.object({ name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$/, 'group name: 1-100 chars of A-Z a-z 0-9 _ . : -') }).strict();
export const GroupBodySchema = z.object({ description: text(500).optional(), members: z.array(ParticipantIdSchema).max(10_000) }).strict();
const RunParamsSchema = z.object({ id: z.uuid() }).strict();

/**
 * Supervision policies (admins and compliance officers): versioned; every change is audited
 * with the policy before and after, and runs the new version over the stored transcripts in
 * the background (progress: GET /supervision/runs/{id}). Identity groups for their scope.
 */
export function policyRoutes({ db, supervision }: RouteContext): AnyRoute[] {
  const policies = new SupervisionPolicies(db);
  /** Starts the backfill of a policy version; without job queues the policy still applies to new transcripts. */
  const backfill = async (p: PolicyRecord, by: string): Promise<RunRecord | null> => (supervision ? supervision.request(p.id, p.version, by) : null);
  return [
    defineRoute({
      method: 'GET',
      url: '/supervision/policies',
      permissions: ['policy.manage', 'review.read'],
      action: 'supervision_policy.list',
      summary: 'Supervision policies, each at its current version.',
      query: EmptyQuerySchema,
      async handler() {
        const list = await policies.list();
        return { response: { policies: list }, audit: { target: { type: 'supervision_policies' }, details: { returned: list.length } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/supervision/starter-lexicon',
      permissions: ['policy.manage'],
      action: 'supervision_policy.starter',
      summary: 'The shipped starter policy for financial-services conduct (a definition to copy and tune).',
      query: EmptyQuerySchema,
      async handler() {
        return { response: STARTER_FINANCIAL_LEXICON, audit: { target: { type: 'supervision_policies' } } };
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/supervision/policies',
      permissions: ['policy.manage'],
      action: 'supervision_policy.create',
      summary: 'Create a policy (version 1). Invalid lexicon entries or patterns: 400 LEXICON_INVALID / PATTERN_INVALID with the position. Starts a run over the stored transcripts.',
      query: EmptyQuerySchema,
      body: PolicyDefinitionSchema,
      status: 201,
      async handler({ principal, body }) {
        const after = await policies.create(body, principal.userId);
        const run = await backfill(after, `user:${principal.userId}`);
        return { response: { policy: after, run }, audit: { target: { type: 'supervision_policy', id: after.id }, details: { before: null, after, run: run?.id ?? null } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/supervision/policies/:id',
      permissions: ['policy.manage', 'review.read'],
      action: 'supervision_policy.view',
      summary: 'One policy at its current version.',
      query: EmptyQuerySchema,
      params: UuidParamsSchema,
      async handler({ params }) {
        const p = await policies.get(params.id);
        return { response: p, audit: { target: { type: 'supervision_policy', id: p.id }, details: { version: p.version } } };
      },
    }),
    defineRoute({
      method: 'PUT',
      url: '/supervision/policies/:id',
      permissions: ['policy.manage'],
      action: 'supervision_policy.update',
      summary: 'Change a policy: the whole definition, saved as its next version. Audited with before and after; starts a run of the new version over the stored transcripts.',
      query: EmptyQuerySchema,
      params: UuidParamsSchema,
      body: PolicyDefinitionSchema,
      async handler({ principal, params, body }) {
        const { before, after } = await policies.update(params.id, body, principal.userId);
        const run = await backfill(after, `user:${principal.userId}`);
        return { response: { policy: after, run }, audit: { target: { type: 'supervision_policy', id: after.id }, details: { before, after, run: run?.id ?? null } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/supervision/policies/:id/versions',
      permissions: ['policy.manage', 'review.read'],
      action: 'supervision_policy.versions',
      summary: "A policy's versions, newest first.",
      query: EmptyQuerySchema,
      params: UuidParamsSchema,
      async handler({ params }) {
        const versions = await policies.versions(params.id);
        return { response: { versions }, audit: { target: { type: 'supervision_policy', id: params.id }, details: { returned: versions.length } } };
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/supervision/policies/:id/runs',
      permissions: ['policy.manage'],
      action: 'supervision_run.request',
      summary: "Run the policy's current version over the stored transcripts again (nothing is filed twice).",
      query: EmptyQuerySchema,
      params: UuidParamsSchema,
      status: 202,
      async handler({ principal, params }) {
        const p = await policies.get(params.id);
        if (!supervision) throw new VerbatimError('CONFIG_INVALID', 'policy runs are background jobs and this server has no job queues', { hint: 'Start the compliance service with REDIS_URL (npm start does).' });
        const run = await supervision.request(p.id, p.version, `user:${principal.userId}`);
        return { response: run, audit: { target: { type: 'supervision_run', id: run.id }, details: { policy: p.id, version: p.version } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/supervision/policies/:id/runs',
      permissions: ['policy.manage', 'review.read'],
      action: 'supervision_run.list',
      summary: "A policy's runs over the stored transcripts, newest first, with progress.",
      query: EmptyQuerySchema,
      params: UuidParamsSchema,
      async handler({ params }) {
        await policies.get(params.id);
        const runs = supervision ? await supervision.list(params.id) : [];
        return { response: { runs }, audit: { target: { type: 'supervision_policy', id: params.id }, details: { returned: runs.length } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/supervision/runs/:id',
      permissions: ['policy.manage', 'review.read'],
      action: 'supervision_run.view',
      summary: 'One run: status and progress (sessions done of total, items and hits so far).',
      query: EmptyQuerySchema,
      params: RunParamsSchema,
      async handler({ params }) {
        const run = await supervision?.get(params.id);
        if (!run) throw new VerbatimError('NOT_FOUND', `no supervision run ${params.id}`, { hint: 'List runs with GET /api/v1/supervision/policies/{id}/runs.' });
        return { response: run, audit: { target: { type: 'supervision_run', id: run.id }, details: { status: run.status, pct: run.progress.pct } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/supervision/groups',
      permissions: ['policy.manage'],
      action: 'identity_group.list',
      summary: 'Identity groups (named sets of participant ids) that policy scopes can name.',
      query: EmptyQuerySchema,
      async handler() {
        const groups = await db.selectFrom('identity_groups').selectAll().orderBy('name').execute();
        const members = await db.selectFrom('identity_group_members').select(['group_name', 'participant_id']).orderBy('participant_id').execute();
        const response = { groups: groups.map((g) => ({ name: g.name, description: g.description, members: members.filter((m) => m.group_name === g.name).map((m) => m.participant_id) })) };
        return { response, audit: { target: { type: 'identity_groups' }, details: { returned: groups.length } } };
      },
    }),
    defineRoute({
      method: 'PUT',
      url: '/supervision/groups/:name',
      permissions: ['policy.manage'],
      action: 'identity_group.put',
      summary: 'Create or replace an identity group and its members (audited with before and after).',
      query: EmptyQuerySchema,
      params: GroupParamsSchema,
      body: GroupBodySchema,
      async handler({ params, body }) {
        const before = await db.selectFrom('identity_group_members').select('participant_id').where('group_name', '=', params.name).orderBy('participant_id').execute();
        const members = [...new Set(body.members)].sort();
        await db.transaction().execute(async (tx) => {
          await tx
            .insertInto('identity_groups')
            .values({ name: params.name, description: body.description ?? '' })
            .onConflict((oc) => oc.column('name').doUpdateSet({ description: body.description ?? '' }))
            .execute();
          await tx.deleteFrom('identity_group_members').where('group_name', '=', params.name).execute();
          if (members.length > 0) await tx.insertInto('identity_group_members').values(members.map((m) => ({ group_name: params.name, participant_id: m }))).execute();
        });
        return { response: { name: params.name, description: body.description ?? '', members }, audit: { target: { type: 'identity_group', id: params.name }, details: { before: before.map((b) => b.participant_id), after: members } } };
      },
    }),
  ];
}
