import { z } from 'zod';
import { VerbatimError } from '../../../../lib/errors.ts';
import type { ErasureJobs } from '../../erasure-jobs.ts';
import { defineRoute, type AnyRoute, type RouteContext } from '../route-table.ts';
import { EmptyQuerySchema, ParticipantIdSchema, SessionIdSchema, UuidParamsSchema, text } from '../schemas.ts';

export const ErasureBodySchema = z
  .object({
    participant: ParticipantIdSchema.describe('The participant id (as in sessions and transcripts).'),
    session: SessionIdSchema.optional().describe('One session; leave out for every session of the participant.'),
    reason: text(2000).describe('Why (e.g. the data subject\'s request reference).'),
  })
  .strict();
export const ErasureListQuerySchema = z.object({ participant: ParticipantIdSchema.optional() }).strict();

/** GDPR Art. 17 erasure requests: made, listed and viewed here; ErasureJobs runs them in the background. */
export function erasureRoutes({ erasure }: RouteContext): AnyRoute[] {
  const erasureJobs = (): ErasureJobs => {
    if (!erasure) {
      throw new VerbatimError('INTERNAL', 'the compliance API was started without storage and RECORDINGS_DIR: erasure is unavailable', { hint: 'Pass storage and recordingsDir to startAuditServer (npm start does).' });
    }
    return erasure;
  };
  return [
    defineRoute({
      method: 'POST',
      url: '/erasure-requests',
      permissions: ['erasure.manage'],
      action: 'erasure.request',
      summary:
        "GDPR Art. 17 erasure of a participant (one session or all): their tracks, per-participant files and transcript segments are deleted and the composite re-rendered without them — unless a legal hold covers the session: then it is recorded as restricted, naming the hold. Runs in the background: the answer is the accepted request (pending, with progress); poll GET /erasure-requests/{id} until its status is completed, restricted, partial or failed.",
      query: EmptyQuerySchema,
      body: ErasureBodySchema,
      status: 202,
      async handler({ principal, body }) {
        const record = await erasureJobs().request({ participant: body.participant, session: body.session, reason: body.reason, requestedBy: { type: 'user', id: principal.userId } });
        return {
          response: record,
          audit: { target: { type: 'erasure_request', id: record.id }, details: { participant: record.participant, session: record.session, reason: record.reason, status: record.status, sessions: record.sessions } },
        };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/erasure-requests',
      permissions: ['erasure.manage'],
      action: 'erasure.list',
      summary: 'Erasure requests with their status (pending / running / completed / restricted / partial / failed), progress and per-session outcome.',
      query: ErasureListQuerySchema,
      async handler({ query }) {
        const requests = await erasureJobs().list({ participant: query.participant });
        return { response: { requests }, audit: { target: query.participant ? { type: 'participant', id: query.participant } : { type: 'erasure_requests' }, details: { returned: requests.length } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/erasure-requests/:id',
      permissions: ['erasure.manage'],
      action: 'erasure.view',
      summary: 'One erasure request: its status, progress (percent, current step, sessions done) and, once finished, its per-session outcome.',
      query: EmptyQuerySchema,
      params: UuidParamsSchema,
      async handler({ params }) {
        const record = await erasureJobs().get(params.id);
        if (!record) throw new VerbatimError('NOT_FOUND', `no erasure request ${params.id}`, { hint: 'List them with GET /api/v1/erasure-requests.' });
        return { response: record, audit: { target: { type: 'erasure_request', id: record.id }, details: { status: record.status, pct: record.progress.pct } } };
      },
    }),
  ];
}
