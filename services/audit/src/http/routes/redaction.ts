import { z } from 'zod';
import { VerbatimError } from '../../../../lib/errors.ts';
import { markSpan, sessionRedactions } from '../../supervision/redaction.ts';
import { defineRoute, type AnyRoute, type RouteContext } from '../route-table.ts';
import { EmptyQuerySchema, SessionParamsSchema } from '../schemas.ts';

const MarkBodySchema = z
  .object({
    seq: z.number().int().min(0).describe('The transcript segment (seq from GET /sessions/{id}/transcript).'),
    start: z.number().int().min(0).describe('First character of the span in the segment text (UTF-16 code units).'),
    end: z.number().int().min(1).describe('One past its last character.'),
    label: z.string().regex(/^[A-Z][A-Z0-9 _-]{0,39}$/, 'label: 1-40 of A-Z 0-9 space _ -, starting with a letter').describe('Shown as [LABEL].'),
  })
  .strict();

/** Redaction spans of a session: listed with when they were said, and marked by officers. */
export function redactionRoutes({ db }: RouteContext): AnyRoute[] {
  const known = async (id: string) => {
    const s = await db.selectFrom('recording_sessions').select('id').where('id', '=', id).executeTakeFirst();
    if (!s) throw new VerbatimError('SESSION_NOT_FOUND', `no recording session ${id}`, { hint: 'Find session ids with GET /api/v1/search.' });
  };
  return [
    defineRoute({
      method: 'GET',
      url: '/sessions/:id/redactions',
      permissions: ['recordings.view'],
      action: 'redaction.list',
      summary: "A session's redacted spans (detector hits and marked spans): segment, characters, label and the time said (word timing; exact=false: the whole segment).",
      query: EmptyQuerySchema,
      params: SessionParamsSchema,
      async handler({ params }) {
        await known(params.id);
        const { timed } = await sessionRedactions(db, params.id);
        return { response: { session: params.id, spans: timed }, audit: { target: { type: 'session', id: params.id }, details: { spans: timed.length } } };
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/sessions/:id/redactions',
      permissions: ['recordings.view'],
      action: 'redaction.mark',
      summary: 'Mark a span of a transcript segment for redaction (shown as [LABEL]; toned in redacted exports). The original text stays.',
      query: EmptyQuerySchema,
      params: SessionParamsSchema,
      body: MarkBodySchema,
      status: 201,
      async handler({ params, body, principal }) {
        await known(params.id);
        const span = await markSpan(db, { session: params.id, seq: body.seq, start: body.start, end: body.end, label: body.label, by: `user:${principal.userId}` });
        return { response: span, audit: { target: { type: 'session', id: params.id }, details: { seq: body.seq, start: body.start, end: body.end, label: body.label, from: span.from, to: span.to } } };
      },
    }),
  ];
}
