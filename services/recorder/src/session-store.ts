import type { Db } from '../../../db/database.ts';
import type { SessionManifest } from '../../lib/contracts/recording.ts';
import { checkManifest } from '../../lib/recording/manifest-file.ts';

/**
 * Registers sealed sessions in the database: the session row (status "sealed") is what
 * the transcode reconciler re-enqueues from if the queue loses the job; participants,
 * tracks, segments and the timeline (session_events) are what the compliance API shows.
 */
export class SessionStore {
  constructor(private readonly db: Db) {}

  async markRecording(room: string, session: string, startedAt: string): Promise<void> {
    await this.db
      .insertInto('recording_sessions')
      .values({ id: session, room_id: room, started_at: startedAt, status: 'recording' })
      .onConflict((oc) => oc.column('id').doNothing())
      .execute();
  }

  /** A session's room and status, if the database knows it (a sealed session is not opened again). */
  async sessionRow(session: string): Promise<{ room: string; status: string } | undefined> {
    const r = await this.db.selectFrom('recording_sessions').select(['room_id', 'status']).where('id', '=', session).executeTakeFirst();
    return r ? { room: r.room_id, status: r.status } : undefined;
  }

  /** Idempotent: a retried finalize after a crash rewrites the same rows. */
  async registerSealed(m: SessionManifest, manifestPath: string, manifestSha256: string): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      await tx
        .insertInto('recording_sessions')
        .values({ id: m.session, room_id: m.room, started_at: m.startedAt, ended_at: m.endedAt, end_reason: m.endReason, status: 'sealed', manifest_path: manifestPath, manifest_sha256: manifestSha256 })
        .onConflict((oc) =>
          oc.column('id').doUpdateSet({ ended_at: m.endedAt, end_reason: m.endReason, status: 'sealed', manifest_path: manifestPath, manifest_sha256: manifestSha256, updated_at: new Date() }),
        )
        .execute();
      await tx.deleteFrom('track_segments').where('session_id', '=', m.session).execute();
      await tx.deleteFrom('tracks').where('session_id', '=', m.session).execute();
      await tx.deleteFrom('session_participants').where('session_id', '=', m.session).execute();
      if (m.participants.length > 0) {
        await tx
          .insertInto('session_participants')
          .values(m.participants.map((p) => ({ session_id: m.session, participant_id: p.id, name: p.name, consent_decision: p.consent.decision, consent_method: p.consent.method ?? null })))
          .execute();
      }
      if (m.tracks.length > 0) {
        await tx
          .insertInto('tracks')
          .values(m.tracks.map((t) => ({ session_id: m.session, track_id: t.track, participant_id: t.participant, kind: t.kind, codec: JSON.stringify(t.codec) })))
          .execute();
      }
      const segs = m.tracks.flatMap((t) =>
        t.segments.map((s) => ({
          session_id: m.session,
          track_id: t.track,
          segment: s.segment,
          file: s.file,
          ssrc: s.ssrc,
          bytes: s.bytes,
          sha256: s.sha256,
          rtp_packets: s.rtpPackets,
          rtcp_packets: s.rtcpPackets,
          started_at: s.startedAt,
          ended_at: s.endedAt,
          end_reason: s.endReason,
          truncated: s.truncated,
          stored_key: s.stored?.key ?? null,
          key_id: s.stored?.keyId ?? null,
          stored_at: s.stored?.at ?? null,
        })),
      );
      if (segs.length > 0) await tx.insertInto('track_segments').values(segs).execute();
      await replaceTimeline(tx, m.session, m.events);
    });
  }

  /**
   * Replaces a session's timeline rows with these events (their order is the ordinal), as
   * a manifest rewrite must (an erasure drops a participant's events and adds its own).
   * Pass a transaction as the store's db to do it with the rewrite's other changes.
   */
  async replaceTimeline(session: string, events: SessionManifest['events']): Promise<void> {
    await replaceTimeline(this.db, session, events);
  }

  /**
   * Sessions sealed before the timeline was stored in the database (migration 0010) get
   * their rows from their manifest, once, while it is still on this recorder's disk.
   * Returns how many sessions were filled in; unreadable or missing manifests are skipped.
   */
  async backfillTimelines(): Promise<number> {
    const rows = await this.db
      .selectFrom('recording_sessions as s')
      .select(['s.id', 's.manifest_path'])
      .where('s.manifest_path', 'is not', null)
      .where((eb) => eb.not(eb.exists(eb.selectFrom('session_events as e').select('e.session_id').whereRef('e.session_id', '=', 's.id'))))
      .execute();
    let filled = 0;
    for (const r of rows) {
      const c = checkManifest(r.manifest_path!);
      if (!c.ok || c.manifest.session !== r.id || c.manifest.events.length === 0) continue;
      await replaceTimeline(this.db, r.id, c.manifest.events);
      filled++;
    }
    return filled;
  }
}

/** Rows per INSERT: 7 parameters each stays far below Postgres's 65535 per statement, however long the meeting. */
const TIMELINE_BATCH = 1000;

async function replaceTimeline(db: Db, session: string, events: SessionManifest['events']): Promise<void> {
  await db.deleteFrom('session_events').where('session_id', '=', session).execute();
  const rows = events.map((e, ordinal) => ({ session_id: session, ordinal, at: e.at, type: e.type, participant_id: e.participant ?? null, track_id: e.track ?? null, details: JSON.stringify(e.details) }));
  for (let i = 0; i < rows.length; i += TIMELINE_BATCH) await db.insertInto('session_events').values(rows.slice(i, i + TIMELINE_BATCH)).execute();
}
