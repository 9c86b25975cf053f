import type { Kysely } from 'kysely';
import { z } from 'zod';
import type { Database } from '../../../../../db/schema.ts';
import { RoomIdSchema } from '../../../../lib/contracts/room.ts';
import { VerbatimError } from '../../../../lib/errors.ts';
import { sessionTimeline } from '../../session-timeline.ts';
import { RevealQuerySchema, revealing } from '../../supervision/reveal.ts';
import { redactRows, segmentKey } from '../../supervision/redaction.ts';
import { defineRoute, type AnyRoute, type RouteContext } from '../route-table.ts';
import { EmptyQuerySchema, SessionParamsSchema, intParam } from '../schemas.ts';

export const SessionsQuerySchema = z
  .object({
    room: RoomIdSchema.optional(),
    status: z.enum(['recording', 'sealed', 'processing', 'done', 'failed']).optional(),
    from: z.string().datetime({ offset: true }).optional().describe('Sessions started at or after this instant.'),
    to: z.string().datetime({ offset: true }).optional().describe('Sessions started before this instant.'),
    offset: intParam(0, 1_000_000).optional(),
    limit: intParam(1, 200).optional(),
  })
  .strict();

/** Recording sessions: the list (metadata), one session in detail, and its transcript. */
export function sessionRoutes({ db }: RouteContext): AnyRoute[] {
  return [
    defineRoute({
      method: 'GET',
      url: '/sessions',
      permissions: ['sessions.metadata'],
      action: 'session.list',
      summary: 'Recording sessions, newest first: room, status, times, participant count (metadata only).',
      query: SessionsQuerySchema,
      async handler({ query }) {
        const limit = query.limit ?? 50;
        let q = db.selectFrom('recording_sessions').select(['id', 'room_id', 'status', 'started_at', 'ended_at', 'transcript_status', 'progress', 'error_code']);
        if (query.room) q = q.where('room_id', '=', query.room);
        if (query.status) q = q.where('status', '=', query.status);
        if (query.from) q = q.where('started_at', '>=', new Date(query.from));
        if (query.to) q = q.where('started_at', '<', new Date(query.to));
        const rows = await q.orderBy('started_at', 'desc').orderBy('id').offset(query.offset ?? 0).limit(limit + 1).execute();
        const page = rows.slice(0, limit);
        const counts = page.length
          ? await db.selectFrom('session_participants').select(['session_id', db.fn.countAll<string>().as('n')]).where('session_id', 'in', page.map((r) => r.id)).groupBy('session_id').execute()
          : [];
        const n = new Map(counts.map((c) => [c.session_id, Number(c.n)]));
        const iso = (d: Date | string | null) => (d === null ? null : new Date(d).toISOString());
        const sessions = page.map((r) => ({ session: r.id, room: r.room_id, status: r.status, startedAt: iso(r.started_at), endedAt: iso(r.ended_at), transcriptStatus: r.transcript_status, progress: r.progress, errorCode: r.error_code, participants: n.get(r.id) ?? 0 }));
        const next = rows.length > limit ? (query.offset ?? 0) + limit : null;
        return { response: { sessions, next }, audit: { target: query.room ? { type: 'room', id: query.room } : { type: 'sessions' }, details: { filters: { room: query.room, status: query.status, from: query.from, to: query.to }, returned: sessions.length } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/sessions/:id',
      permissions: ['sessions.metadata'],
      action: 'session.view',
      summary: 'A recording session: status, participants, tracks and their segments, artifacts with size and SHA-256.',
      query: EmptyQuerySchema,
      params: SessionParamsSchema,
      async handler({ params }) {
        const session = await sessionDetails(db, params.id);
        return { response: session, audit: { target: { type: 'session', id: params.id }, details: { room: session.room } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/sessions/:id/transcript',
      permissions: ['recordings.view'],
      action: 'transcript.view',
      summary: "A session's transcript, segment by segment; redacted spans (detector hits, marked spans) as [LABEL] unless reveal=true (redaction.reveal; audited as transcript.reveal).",
      query: RevealQuerySchema,
      params: SessionParamsSchema,
      async handler({ params, query, principal }) {
        const reveal = revealing(principal, query);
        const s = await db.selectFrom('recording_sessions').select(['id', 'room_id', 'transcript_status']).where('id', '=', params.id).executeTakeFirst();
        if (!s) throw sessionNotFound(params.id);
        const segments = await db
          .selectFrom('transcript_segments')
          .select(['seq', 'participant_id', 'speaker', 'start_seconds', 'end_seconds', 'text', 'language'])
          .where('session_id', '=', params.id)
          .orderBy('seq')
          .execute();
        const redacted = await redactRows(db, segments.map((g) => ({ session_id: s.id, seq: g.seq, text: g.text })));
        const spans = [...redacted.values()].reduce((n, r) => n + r.spans, 0);
        const textOf = (g: { seq: number; text: string }) => (reveal ? g.text : (redacted.get(segmentKey(s.id, g.seq))?.text ?? g.text));
        return {
          response: {
            session: s.id,
            room: s.room_id,
            transcriptStatus: s.transcript_status,
            redacted: !reveal && spans > 0,
            segments: segments.map((g) => ({ seq: g.seq, participant: g.participant_id, speaker: g.speaker, start: g.start_seconds, end: g.end_seconds, text: textOf(g), language: g.language })),
          },
          ...(reveal && spans > 0 ? { action: 'transcript.reveal' } : {}),
          audit: { target: { type: 'session', id: s.id }, details: { room: s.room_id, segments: segments.length, redactedSpans: spans, revealed: reveal && spans > 0 } },
        };
      },
    }),
  ];
}

export function sessionNotFound(id: string): VerbatimError {
  return new VerbatimError('SESSION_NOT_FOUND', `no recording session ${id}`, { hint: 'Find session ids with GET /api/v1/search.' });
}

async function sessionDetails(db: Kysely<Database>, id: string) {
  const s = await db.selectFrom('recording_sessions').selectAll().where('id', '=', id).executeTakeFirst();
  if (!s) throw sessionNotFound(id);
  const [participants, tracks, segments, artifacts] = await Promise.all([
    db.selectFrom('session_participants').selectAll().where('session_id', '=', id).orderBy('participant_id').execute(),
    db.selectFrom('tracks').selectAll().where('session_id', '=', id).orderBy('track_id').execute(),
    db.selectFrom('track_segments').selectAll().where('session_id', '=', id).orderBy('track_id').orderBy('segment').execute(),
    db.selectFrom('artifacts').selectAll().where('session_id', '=', id).orderBy('key').execute(),
  ]);
  const iso = (d: Date | string | null) => (d === null ? null : new Date(d).toISOString());
  return {
    session: s.id,
    // Stored at seal time: it outlives the raw recording and needs no access to the recorder's disk.
    events: await sessionTimeline(db, id),
    room: s.room_id,
    status: s.status,
    startedAt: iso(s.started_at),
    endedAt: iso(s.ended_at),
    endReason: s.end_reason,
    manifestSha256: s.manifest_sha256,
    transcriptStatus: s.transcript_status,
    progress: s.progress,
    error: s.error_code ? { code: s.error_code, message: s.error_message } : null,
    participants: participants.map((p) => ({ participant: p.participant_id, name: p.name, consent: p.consent_decision, consentMethod: p.consent_method })),
    tracks: tracks.map((t) => ({
      track: t.track_id,
      participant: t.participant_id,
      kind: t.kind,
      codec: typeof t.codec === 'string' ? (JSON.parse(t.codec) as unknown) : t.codec,
      segments: segments
        .filter((g) => g.track_id === t.track_id)
        .map((g) => ({ segment: g.segment, file: g.file, bytes: Number(g.bytes), sha256: g.sha256, startedAt: iso(g.started_at), endedAt: iso(g.ended_at), endReason: g.end_reason, truncated: g.truncated })),
    })),
    artifacts: artifacts.map((a) => ({ key: a.key, kind: a.kind, participant: a.participant_id, contentType: a.content_type, bytes: Number(a.bytes), sha256: a.sha256, durationSeconds: a.duration_seconds })),
  };
}

