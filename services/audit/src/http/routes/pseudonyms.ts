import { z } from 'zod';
import { Pseudonyms } from '../../supervision/pseudonyms.ts';
import { defineRoute, type AnyRoute, type RouteContext } from '../route-table.ts';
import { EmptyQuerySchema } from '../schemas.ts';

const RevealBodySchema = z
  .object({
    policy: z.uuid().describe('The pseudonymising policy whose item shows the pseudonym.'),
    pseudonym: z.string().regex(/^Speaker [A-Z2-9]{4}-[A-Z2-9]{4}$/, 'a pseudonym as shown: "Speaker XXXX-XXXX"'),
  })
  .strict();

/** Pseudonymised review: revealing one speaker (to the caller only) is its own audited action. */
export function pseudonymRoutes({ db }: RouteContext): AnyRoute[] {
  const pseudonyms = new Pseudonyms(db);
  return [
    defineRoute({
      method: 'POST',
      url: '/review/pseudonyms/reveal',
      permissions: ['review.read'],
      action: 'review.pseudonym.reveal',
      summary: "Reveal the speaker behind a pseudonym of a pseudonymising policy: from now on the caller sees that speaker's name on the policy's items.",
      query: EmptyQuerySchema,
      body: RevealBodySchema,
      async handler({ principal, body }) {
        const r = await pseudonyms.reveal(principal, body.policy, body.pseudonym);
        return { response: r, audit: { target: { type: 'participant', id: r.participant }, details: { policy: r.policy, pseudonym: r.pseudonym } } };
      },
    }),
  ];
}
