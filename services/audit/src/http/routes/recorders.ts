import { sql } from 'kysely';
import { defineRoute, type AnyRoute, type RouteContext } from '../route-table.ts';
import { EmptyQuerySchema } from '../schemas.ts';

/** One recorder of the pool as the console shows it: liveness, load and what waits on its disk for object storage. */
export interface RecorderView {
  id: string;
  host: string;
  state: 'active' | 'draining';
  /** Its heartbeat is newer than RECORDER_DEAD_AFTER_MS (the SFUs' rule for placing tracks). */
  alive: boolean;
  heartbeatAgeMs: number;
  startedAt: string;
  tracks: number;
  capacity: number;
  /** Null where the recorder does not upload raw segments (RECORDER_UPLOAD_RAW off). */
  uploads: { segments: number; bytes: number; oldestQueuedAt: string | null; failedAttempts: number; lastError: string | null } | null;
}

/** The recording tier (capture assurance: what is recorded where, and what has not reached storage yet). */
export function recorderRoutes({ db, options }: RouteContext): AnyRoute[] {
  const deadAfterMs = options.recorderDeadAfterMs ?? 1500;
  return [
    defineRoute({
      method: 'GET',
      url: '/recorders',
      permissions: ['capture.manage', 'capture.read'],
      action: 'recorders.list',
      summary: 'The recorders of the pool: state, heartbeat, tracks, and the raw-upload backlog each holds on its disk.',
      query: EmptyQuerySchema,
      async handler() {
        // Ages in the database's clock, as the recorders write their heartbeats with now().
        const rows = await db
          .selectFrom('recorders')
          .selectAll()
          .select(sql<number>`(extract(epoch from (now() - heartbeat_at)) * 1000)::float8`.as('age_ms'))
          .orderBy('id')
          .execute();
        const recorders: RecorderView[] = rows.map((r) => ({
          id: r.id,
          host: r.host,
          state: r.state,
          alive: Number(r.age_ms) <= deadAfterMs,
          heartbeatAgeMs: Math.max(0, Math.round(Number(r.age_ms))),
          startedAt: new Date(r.started_at).toISOString(),
          tracks: r.load,
          capacity: r.capacity,
          uploads:
            r.upload_backlog_segments === null
              ? null
              : {
                  segments: r.upload_backlog_segments,
                  bytes: Number(r.upload_backlog_bytes ?? 0),
                  oldestQueuedAt: r.upload_oldest_at ? new Date(r.upload_oldest_at).toISOString() : null,
                  failedAttempts: r.upload_failed_attempts ?? 0,
                  lastError: r.upload_last_error,
                },
        }));
        const backlog = recorders.reduce((a, r) => ({ segments: a.segments + (r.uploads?.segments ?? 0), bytes: a.bytes + (r.uploads?.bytes ?? 0) }), { segments: 0, bytes: 0 });
        return { response: { recorders, backlog }, audit: { target: { type: 'recorders' }, details: { returned: recorders.length } } };
      },
    }),
  ];
}
