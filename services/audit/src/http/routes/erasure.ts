import path from 'node:path';
import { z } from 'zod';
import { VerbatimError } from '../../../../lib/errors.ts';
import { FluentFfmpegRunner } from '../../../../lib/media/ffmpeg-runner.ts';
import { ErasureService } from '../../erasure.ts';
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

/** GDPR Art. 17 erasure requests: made, listed and viewed here; ErasureService does the work. */
export function erasureRoutes({ db, log, options }: RouteContext): AnyRoute[] {
  let erasure: ErasureService | undefined;
  const erasureService = (): ErasureService => {
    if (!options.storage || !options.recordingsDir) {
      throw new VerbatimError('INTERNAL', 'the compliance API was started without storage and RECORDINGS_DIR: erasure is unavailable', { hint: 'Pass storage and recordingsDir to startAuditServer (npm start does).' });
    }
    erasure ??= new ErasureService({
      db,
      storage: options.storage,
      audit: log,
      recordingsDir: options.recordingsDir,
      ffmpeg: options.ffmpeg ?? new FluentFfmpegRunner(),
      workDir: options.workDir ?? path.join(options.recordingsDir, '..', 'erasure-work'),
      logger: options.logger,
      ...(options.now ? { now: options.now } : {}),
    });
    return erasure;
  };
  return [
    defineRoute({
      method: 'POST',
      url: '/erasure-requests',
      permissions: ['erasure.manage'],
      action: 'erasure.request',
      summary:
        "GDPR Art. 17 erasure of a participant (one session or all): their tracks, per-participant files and transcript segments are deleted and the composite re-rendered without them — unless a legal hold covers the session: then it is recorded as restricted, naming the hold. Runs to completion before answering.",
      query: EmptyQuerySchema,
      body: ErasureBodySchema,
      status: 201,
      async handler({ principal, body }) {
        const record = await erasureService().erase({ participant: body.participant, session: body.session, reason: body.reason, requestedBy: { type: 'user', id: principal.userId } });
        return {
          response: record,
          audit: { target: { type: 'erasure_request', id: record.id }, details: { participant: record.participant, session: record.session, reason: record.reason, status: record.status, holds: record.holds, sessions: record.outcome.map((o) => ({ session: o.session, state: o.state })) } },
        };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/erasure-requests',
      permissions: ['erasure.manage'],
      action: 'erasure.list',
      summary: 'Erasure requests with their status (completed / restricted / partial / failed) and per-session outcome.',
      query: ErasureListQuerySchema,
      async handler({ query }) {
        const requests = await erasureService().list({ participant: query.participant });
        return { response: { requests }, audit: { target: query.participant ? { type: 'participant', id: query.participant } : { type: 'erasure_requests' }, details: { returned: requests.length } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/erasure-requests/:id',
      permissions: ['erasure.manage'],
      action: 'erasure.view',
      summary: 'One erasure request.',
      query: EmptyQuerySchema,
      params: UuidParamsSchema,
      async handler({ params }) {
        const record = await erasureService().get(params.id);
        if (!record) throw new VerbatimError('NOT_FOUND', `no erasure request ${params.id}`, { hint: 'List them with GET /api/v1/erasure-requests.' });
        return { response: record, audit: { target: { type: 'erasure_request', id: record.id }, details: { status: record.status } } };
      },
    }),
  ];
}
