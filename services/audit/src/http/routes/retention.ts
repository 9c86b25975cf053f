import { sql, type Kysely } from 'kysely';
import { z } from 'zod';
import type { Database } from '../../../../../db/schema.ts';
import { RoomFlagsSchema, RoomIdSchema } from '../../../../lib/contracts/room.ts';
import { VerbatimError } from '../../../../lib/errors.ts';
import { badRequest, defineRoute, type AnyRoute, type RouteContext } from '../route-table.ts';
import { EmptyQuerySchema } from '../schemas.ts';

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

/** Retention policies, and the one a room names. */
export function retentionRoutes({ db, now }: RouteContext): AnyRoute[] {
  return [
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
  ];
}

async function listPolicies(db: Kysely<Database>) {
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

async function policyByName(db: Kysely<Database>, name: string): Promise<PolicyJson | undefined> {
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
