import { Readable } from 'node:stream';
import { z } from 'zod';
import { VerbatimError } from '../../../../lib/errors.ts';
import { sessionArtifactPrefix } from '../../../../lib/storage/artifact-keys.ts';
import { parseRange } from '../byte-range.ts';
import { defineRoute, type AnyRoute, type RouteContext } from '../route-table.ts';
import { EmptyQuerySchema, SessionIdSchema, SessionParamsSchema } from '../schemas.ts';
import { sessionNotFound } from './sessions.ts';

const ArtifactParamsSchema = z
  .object({
    id: SessionIdSchema,
    artifactId: z
      .string()
      .min(1)
      .max(300)
      .regex(/^[A-Za-z0-9][A-Za-z0-9._@-]*(\/[A-Za-z0-9][A-Za-z0-9._@-]*)*$/, 'artifact id: a relative path of A-Z a-z 0-9 . _ @ - segments'),
  })
  .strict();

/** A session's artifacts, and their bytes for playback and download from any storage backend. */
export function mediaRoutes({ db, options }: RouteContext): AnyRoute[] {
  return [
    defineRoute({
      method: 'GET',
      url: '/sessions/:id/artifacts',
      permissions: ['recordings.play'],
      action: 'artifact.list',
      summary: "A session's artifacts (kind, participant, bytes, SHA-256, content URL), and those deleted by retention or erasure with their state.",
      query: EmptyQuerySchema,
      params: SessionParamsSchema,
      async handler({ params }) {
        const s = await db.selectFrom('recording_sessions').select(['id', 'room_id']).where('id', '=', params.id).executeTakeFirst();
        if (!s) throw sessionNotFound(params.id);
        const rows = await db.selectFrom('artifacts').selectAll().where('session_id', '=', params.id).orderBy('key').execute();
        const prefix = sessionArtifactPrefix(s.room_id, s.id);
        const artifacts = rows.map((a) => {
          const id = artifactIdOf(prefix, a.key);
          return { id, key: a.key, kind: a.kind, participant: a.participant_id, contentType: a.content_type, bytes: Number(a.bytes), sha256: a.sha256, durationSeconds: a.duration_seconds, contentUrl: `/api/v1/sessions/${encodeURIComponent(s.id)}/artifacts/${encodeURIComponent(id)}/content` };
        });
        const tombs = await db.selectFrom('tombstones').selectAll().where('session_id', '=', params.id).orderBy('id').execute();
        const deleted = tombs.map((t) => ({ item: t.item, kind: t.kind, state: t.erasure_request ? 'erased' : 'deleted', deletedAt: new Date(t.deleted_at).toISOString(), reason: t.reason, policy: t.policy, erasureRequest: t.erasure_request }));
        return { response: { session: s.id, room: s.room_id, artifacts, deleted }, audit: { target: { type: 'session', id: s.id }, details: { room: s.room_id, returned: artifacts.length } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/sessions/:id/artifacts/:artifactId/content',
      permissions: ['recordings.play'],
      action: 'media.download',
      summary: 'An artifact\'s bytes (artifact id from the list, URL-encoded), with HTTP Range (206) so a <video> can seek; works with the session cookie. Deleted or erased: 410 with its state.',
      query: EmptyQuerySchema,
      params: ArtifactParamsSchema,
      async handler({ req, params }) {
        const { artifactId } = params;
        const storage = options.storage;
        if (!storage) throw new VerbatimError('INTERNAL', 'the compliance API was started without artifact storage', { hint: 'Pass `storage` to startAuditServer (npm start does).' });
        const s = await db.selectFrom('recording_sessions').select(['id', 'room_id']).where('id', '=', params.id).executeTakeFirst();
        if (!s) throw sessionNotFound(params.id);
        const prefix = sessionArtifactPrefix(s.room_id, s.id);
        // The id is the key below the session's prefix, or the whole key for artifacts stored elsewhere.
        const candidates = [`${prefix}${artifactId}`, artifactId];
        const row = await db.selectFrom('artifacts').selectAll().where('session_id', '=', s.id).where('key', 'in', candidates).orderBy('key', 'desc').executeTakeFirst();
        const key = row?.key ?? candidates[0]!;
        if (!row) {
          const tomb = await db.selectFrom('tombstones').selectAll().where('session_id', '=', s.id).where('item', 'in', candidates).orderBy('id', 'desc').executeTakeFirst();
          if (tomb) {
            throw new VerbatimError('GONE', `artifact ${artifactId} of session ${s.id} was ${tomb.erasure_request ? 'erased' : 'deleted'} at ${new Date(tomb.deleted_at).toISOString()}`, {
              hint: 'Deleted content cannot be played; the tombstone records when and why.',
              details: { state: tomb.erasure_request ? 'erased' : 'deleted', deletedAt: new Date(tomb.deleted_at).toISOString(), reason: tomb.reason, policy: tomb.policy, erasureRequest: tomb.erasure_request },
            });
          }
          throw new VerbatimError('NOT_FOUND', `session ${s.id} has no artifact ${artifactId}`, { hint: `List them with GET /api/v1/sessions/${s.id}/artifacts.` });
        }
        // The size as stored, not as recorded: Content-Length and Content-Range must match the bytes sent.
        const stored = await storage.stat(key);
        if (!stored) throw new VerbatimError('GONE', `artifact ${key} is recorded but missing from storage`, { hint: 'The stored file is gone; check storage and the tombstones.', details: { state: 'missing' } });
        const size = stored.bytes;
        const range = parseRange(req.headers.range, size);
        const { start, end } = range ?? { start: 0, end: size - 1 };
        const body = size === 0 ? Readable.from([]) : await storage.getRange(key, start, end);
        const headers: Record<string, string> = {
          'content-type': row.content_type,
          'accept-ranges': 'bytes',
          'content-length': String(size === 0 ? 0 : end - start + 1),
          'cache-control': 'private, no-store',
          'x-content-type-options': 'nosniff',
          'content-disposition': `inline; filename="${key.split('/').pop()!.replace(/[^A-Za-z0-9._-]/g, '_')}"`,
          ...(range ? { 'content-range': `bytes ${start}-${end}/${size}` } : {}),
        };
        return {
          response: body,
          status: range ? 206 : 200,
          headers,
          action: range ? 'media.stream' : 'media.download',
          audit: { target: { type: 'artifact', id: key }, details: { session: s.id, room: s.room_id, kind: row.kind, participant: row.participant_id, sha256: row.sha256, bytes: size, ...(range ? { range: `${start}-${end}` } : {}) } },
        };
      },
    }),
  ];
}

/** The artifact id in URLs: the key below the session's prefix (older keys elsewhere: the whole key). */
function artifactIdOf(prefix: string, key: string): string {
  return key.startsWith(prefix) ? key.slice(prefix.length) : key;
}
