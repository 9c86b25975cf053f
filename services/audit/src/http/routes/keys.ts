import { z } from 'zod';
import { ROLES, createUserWithKey } from '../../auth.ts';
import { badRequest, defineRoute, type AnyRoute, type RouteContext } from '../route-table.ts';
import { EmptyQuerySchema, text } from '../schemas.ts';

export const CreateKeyBodySchema = z
  .object({
    name: text(200).describe('Who the key is for (shown in the audit trail).'),
    role: z.enum(ROLES),
    expiresAt: z.iso.datetime({ offset: true }).optional().describe('Default: never.'),
  })
  .strict();

/** API keys: each is a user with a role. */
export function keyRoutes({ db, now }: RouteContext): AnyRoute[] {
  return [
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
        const expiresAt = body.expiresAt ? new Date(body.expiresAt) : null;
        if (expiresAt && expiresAt.getTime() <= now().getTime()) throw badRequest('expiresAt is in the past', 'expiresAt');
        const created = await createUserWithKey(db, { name: body.name, role: body.role, expiresAt });
        return {
          response: created,
          audit: { target: { type: 'api_key', id: created.key.id }, details: { userId: created.user.id, name: created.user.name, role: created.user.role, keyPrefix: created.key.prefix, expiresAt: created.key.expiresAt } },
        };
      },
    }),
  ];
}
