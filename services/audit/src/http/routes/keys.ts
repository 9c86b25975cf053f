import { z } from 'zod';
import { ROLES } from '../../auth.ts';
import { createApiKey, createUserWithKey, listUsers, revokeKey, rotateKey, setUserDisabled } from '../../key-lifecycle.ts';
import { VerbatimError } from '../../../../lib/errors.ts';
import { badRequest, defineRoute, type AnyRoute, type RouteContext } from '../route-table.ts';
import { EmptyQuerySchema, text } from '../schemas.ts';

const expiresAt = z.iso.datetime({ offset: true }).optional().describe('Default: never.');

export const CreateKeyBodySchema = z
  .object({
    name: text(200).describe('Who the key is for (shown in the audit trail).'),
    role: z.enum(ROLES),
    expiresAt,
  })
  .strict();
export const AddKeyBodySchema = z.object({ expiresAt }).strict();
export const RotateKeyBodySchema = z
  .object({
    graceHours: z.number().min(0).max(720).optional().describe('How long the old key stays valid (default AUDIT_KEY_ROTATION_GRACE_HOURS; 0 = refused at once).'),
    expiresAt: z.iso.datetime({ offset: true }).nullable().optional().describe("The new key's expiry (default: the old key's)."),
  })
  .strict();
export const ChangeBodySchema = z.object({ reason: text(2000).optional().describe('Why (kept in the audit trail).') }).strict();
export const KeyParamsSchema = z.object({ id: z.string().regex(/^key_[0-9a-f-]{36}$/, 'an API key id key_<uuid>') }).strict();
export const UserParamsSchema = z.object({ id: z.string().regex(/^usr_[0-9a-f-]{36}$/, 'a user id usr_<uuid>') }).strict();

/** Users and their API keys: created, listed, revoked, rotated, disabled and enabled; each change audited with before and after. */
export function keyRoutes({ db, now, options }: RouteContext): AnyRoute[] {
  const futureOrNull = (value: string | null | undefined, field: string): Date | null | undefined => {
    if (value === undefined || value === null) return value;
    const d = new Date(value);
    if (d.getTime() <= now().getTime()) throw badRequest(`${field} is in the past`, field);
    return d;
  };
  const graceMs = (hours: number | undefined) => (hours ?? options.keyRotationGraceHours ?? 24) * 3_600_000;
  return [
    defineRoute({
      method: 'GET',
      url: '/users',
      permissions: ['users.manage'],
      action: 'user.list',
      summary: 'Every user with role and state, and each of their API keys: prefix, created, last used (to the minute), expiry, state (active, rotating, revoked, expired).',
      query: EmptyQuerySchema,
      async handler() {
        const users = await listUsers(db, now());
        return { response: { users }, audit: { target: { type: 'users' }, details: { returned: users.length } } };
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/keys',
      permissions: ['keys.manage'],
      action: 'key.create',
      summary: 'Create a user with a role and an API key for it (the key is returned once).',
      query: EmptyQuerySchema,
      body: CreateKeyBodySchema,
      status: 201,
      async handler({ body }) {
        const expiry = futureOrNull(body.expiresAt, 'expiresAt') ?? null;
        const created = await createUserWithKey(db, { name: body.name, role: body.role, expiresAt: expiry });
        return {
          response: created,
          audit: { target: { type: 'api_key', id: created.key.id }, details: { userId: created.user.id, name: created.user.name, role: created.user.role, keyPrefix: created.key.prefix, expiresAt: created.key.expiresAt } },
        };
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/users/:id/keys',
      permissions: ['keys.manage'],
      action: 'key.create',
      summary: 'Add an API key to an existing user (returned once).',
      query: EmptyQuerySchema,
      params: UserParamsSchema,
      body: AddKeyBodySchema,
      status: 201,
      async handler({ params, body }) {
        const user = await db.selectFrom('users').select(['id', 'name', 'role']).where('id', '=', params.id).executeTakeFirst();
        if (!user) throw new VerbatimError('NOT_FOUND', `no user ${params.id}`, { hint: 'List users with GET /api/v1/users.', details: { id: params.id } });
        const created = await createApiKey(db, user.id, { expiresAt: futureOrNull(body.expiresAt, 'expiresAt') ?? null });
        return {
          response: { user, ...created },
          audit: { target: { type: 'api_key', id: created.key.id }, details: { userId: user.id, name: user.name, role: user.role, keyPrefix: created.key.prefix, expiresAt: created.key.expiresAt } },
        };
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/keys/:id/revoke',
      permissions: ['keys.manage'],
      action: 'key.revoke',
      summary: "Revoke a key at once: its next request and its console sessions' next requests get 401. 409 LAST_ADMIN for the last usable key of the last enabled admin.",
      query: EmptyQuerySchema,
      params: KeyParamsSchema,
      body: ChangeBodySchema,
      async handler({ params, body }) {
        const r = await revokeKey(db, params.id, now());
        return { response: { key: r.after, sessionsEnded: r.sessionsEnded }, audit: { target: { type: 'api_key', id: params.id }, details: { keyPrefix: r.after.prefix, userId: r.after.userId, before: r.before, after: r.after, sessionsEnded: r.sessionsEnded, reason: body.reason } } };
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/keys/:id/rotate',
      permissions: ['keys.manage'],
      action: 'key.rotate',
      summary: 'Rotate an active key: a new key for the same user (returned once); the old key stays valid for graceHours (default AUDIT_KEY_ROTATION_GRACE_HOURS), then is refused.',
      query: EmptyQuerySchema,
      params: KeyParamsSchema,
      body: RotateKeyBodySchema,
      status: 201,
      async handler({ params, body }) {
        const r = await rotateKey(db, params.id, { graceMs: graceMs(body.graceHours), expiresAt: futureOrNull(body.expiresAt, 'expiresAt'), now: now() });
        return {
          response: { ...r.created, old: r.old, oldRevokedAt: r.oldRevokedAt },
          audit: { target: { type: 'api_key', id: params.id }, details: { keyPrefix: r.before.prefix, userId: r.before.userId, before: r.before, after: r.old, newKey: { id: r.created.key.id, prefix: r.created.key.prefix, expiresAt: r.created.key.expiresAt } } },
        };
      },
    }),
    ...(['disable', 'enable'] as const).map((verb) =>
      defineRoute({
        method: 'POST',
        url: `/users/:id/${verb}`,
        permissions: ['users.manage'],
        action: `user.${verb}`,
        summary:
          verb === 'disable'
            ? "Disable a user: every key of theirs and their console sessions get 401 at once. 409 LAST_ADMIN for the last enabled admin with a usable key."
            : 'Enable a disabled user again (their keys work again unless revoked or expired; ended console sessions stay ended).',
        query: EmptyQuerySchema,
        params: UserParamsSchema,
        body: ChangeBodySchema,
        async handler({ params, body }) {
          const r = await setUserDisabled(db, params.id, verb === 'disable', now());
          return { response: { user: r.after, sessionsEnded: r.sessionsEnded }, audit: { target: { type: 'user', id: params.id }, details: { name: r.after.name, role: r.after.role, before: r.before, after: r.after, sessionsEnded: r.sessionsEnded, reason: body.reason } } };
        },
      }),
    ),
  ];
}
