import { z } from 'zod';
import { RoomIdSchema } from '../../../../lib/contracts/room.ts';
import { searchTranscripts } from '../../transcript-search.ts';
import { revealing } from '../../supervision/reveal.ts';
import { redactRows } from '../../supervision/redaction.ts';
import { defineRoute, type AnyRoute, type RouteContext } from '../route-table.ts';
import { ParticipantIdSchema, SessionIdSchema, instant, intParam, text } from '../schemas.ts';

export const SearchQuerySchema = z
  .object({
    q: text(500)
      .refine((s) => s.trim().length > 0, 'must not be blank')
      .describe("Web-search syntax: words, \"a phrase\", or, -not (websearch_to_tsquery('english'))."),
    room: RoomIdSchema.optional(),
    participant: ParticipantIdSchema.optional(),
    session: SessionIdSchema.optional(),
    from: instant.optional().describe('Segments spoken at or after this instant (a date: its UTC midnight).'),
    to: instant.optional().describe('Segments spoken at or before this instant (a date: through its UTC end).'),
    page: intParam(1, 100_000).optional(),
    pageSize: intParam(1, 100).optional(),
    reveal: z.enum(['true', 'false']).optional().describe('true: snippets in clear, redacted spans included (redaction.reveal; audited as search.reveal).'),
  })
  .strict();

/** Full-text search over transcripts. */
export function searchRoutes({ db }: RouteContext): AnyRoute[] {
  return [
    defineRoute({
      method: 'GET',
      url: '/search',
      permissions: ['recordings.search'],
      action: 'search',
      summary: 'Full-text search over transcripts, ranked, with highlighted snippets.',
      query: SearchQuerySchema,
      async handler({ query, principal }) {
        const reveal = revealing(principal, query);
        const result = await searchTranscripts(db, query, { redact: (rows, mark) => redactRows(db, rows, mark), reveal });
        const filters = { room: query.room, participant: query.participant, session: query.session, from: query.from, to: query.to };
        return {
          response: result,
          ...(reveal && result.redactedHits > 0 ? { action: 'search.reveal' } : {}),
          audit: {
            target: query.session ? { type: 'session', id: query.session } : query.room ? { type: 'room', id: query.room } : { type: 'transcripts' },
            details: { query: query.q, filters, page: result.page, pageSize: result.pageSize, total: result.total, ...(result.totalIsEstimate ? { totalIsEstimate: true, rankedMatches: result.rankedMatches } : {}), sessions: [...new Set(result.hits.map((h) => h.session))], redactedHits: result.redactedHits, revealed: reveal && result.redactedHits > 0 },
          },
        };
      },
    }),
  ];
}
