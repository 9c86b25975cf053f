import { z } from 'zod';
import { RoomIdSchema } from '../../../../lib/contracts/room.ts';
import { consentCsv, listConsentEvents } from '../../consent-log.ts';
import { defineRoute, type AnyRoute, type RouteContext } from '../route-table.ts';
import { ParticipantIdSchema, SessionIdSchema, intParam } from '../schemas.ts';

export const ConsentQuerySchema = z
  .object({
    participant: ParticipantIdSchema.optional(),
    session: SessionIdSchema.optional(),
    room: RoomIdSchema.optional(),
    after: intParam(0, 2 ** 31 - 1).optional().describe('Cursor: events with a larger id.'),
    limit: intParam(1, 1000).optional(),
    format: z.enum(['json', 'csv']).optional().describe('csv: a download (RFC 4180); the next cursor is in the X-Next-After header.'),
  })
  .strict();

/** The consent log, as JSON pages or a CSV download. */
export function consentRoutes({ db }: RouteContext): AnyRoute[] {
  return [
    defineRoute({
      method: 'GET',
      url: '/consent',
      permissions: ['consent.read'],
      action: 'consent.view',
      summary: 'The consent log: every grant and decline, with policy, method and client info.',
      query: ConsentQuerySchema,
      async handler({ query }) {
        const limit = query.limit ?? 500;
        const events = await listConsentEvents(db, { participant: query.participant, session: query.session, room: query.room, after: query.after, limit });
        const next = events.length === limit ? events.at(-1)!.id : null;
        const target = query.session ? { type: 'session', id: query.session } : query.room ? { type: 'room', id: query.room } : query.participant ? { type: 'participant', id: query.participant } : { type: 'consent_log' };
        const audit = { target, details: { filters: { participant: query.participant, session: query.session, room: query.room }, after: query.after, returned: events.length, ...(query.format === 'csv' ? { format: 'csv' } : {}) } };
        if (query.format === 'csv') {
          const name = (query.participant ?? query.session ?? query.room ?? 'all').replace(/[^A-Za-z0-9._-]/g, '_');
          return { response: consentCsv(events), headers: { 'content-type': 'text/csv; charset=utf-8', 'content-disposition': `attachment; filename="consent-${name}.csv"`, ...(next !== null ? { 'x-next-after': String(next) } : {}) }, audit };
        }
        return { response: { events, next }, audit };
      },
    }),
  ];
}
