import { sql } from 'kysely';
import type { Db } from '../../../db/database.ts';
import type { StartTrackRequest, TimelineEvent } from '../../lib/contracts/recorder-control.ts';
import { SegmentEntrySchema, type SegmentEntry, type SessionManifest } from '../../lib/contracts/recording.ts';

type Participant = SessionManifest['participants'][number];
type Track = Omit<SessionManifest['tracks'][number], 'segments'>;

/**
 * Segment numbers of one placement of a track on a recorder start at epoch × EPOCH_SPAN: two
 * recorders holding one track (after a failover, during a drain, as replicas) never write the
 * same segment number, so the sealed session can hold both recorders' files side by side.
 */
export const EPOCH_SPAN = 100_000;

/** A segment some recorder of the pool sealed, and where that recorder keeps it. */
export interface LiveSegment {
  track: string;
  recorderId: string;
  sessionDir: string;
  entry: SegmentEntry;
}

export interface LiveSessionState {
  participants: Participant[];
  tracks: Track[];
  segments: LiveSegment[];
  placements: { track: string; epoch: number; recorderId: string; copy: number; sessionDir: string }[];
  events: SessionManifest['events'];
}

/**
 * A recording session's state in the shared database while it records (migration 0014), written
 * by every recorder that holds some of its tracks: what another recorder needs to seal it when
 * the first one is gone. Never on the packet path: one write per track start, sealed segment,
 * batch of timeline events.
 */
export class LiveSessionStore {
  constructor(private readonly db: Db) {}

  /** Claims the next placement of a track (a new segment number range) for this recorder. */
  async claimPlacement(session: string, track: string, recorderId: string, copy: number, sessionDir: string): Promise<number> {
    for (let attempt = 0; ; attempt++) {
      const row = await this.db.selectFrom('live_track_placements').select((eb) => eb.fn.max('epoch').as('max')).where('session_id', '=', session).where('track_id', '=', track).executeTakeFirst();
      const epoch = row?.max === null || row?.max === undefined ? 0 : Number(row.max) + 1;
      const inserted = await this.db
        .insertInto('live_track_placements')
        .values({ session_id: session, track_id: track, epoch, recorder_id: recorderId, copy, session_dir: sessionDir })
        .onConflict((oc) => oc.columns(['session_id', 'track_id', 'epoch']).doNothing())
        .returning('epoch')
        .executeTakeFirst();
      if (inserted) return epoch;
      // Another recorder claimed the same epoch at the same moment (replicas start together): next one.
      if (attempt > 20) throw new Error(`could not claim a placement of ${session}/${track}`);
    }
  }

  async putTrack(session: string, req: StartTrackRequest, participant: Participant): Promise<void> {
    await this.putParticipants(session, [participant]);
    await this.db
      .insertInto('live_session_tracks')
      .values({ session_id: session, track_id: req.track, participant_id: req.participant.id, kind: req.kind, codec: JSON.stringify(req.codec), header_extensions: JSON.stringify(req.headerExtensions) })
      .onConflict((oc) => oc.columns(['session_id', 'track_id']).doNothing())
      .execute();
  }

  /** Upserts participants; a granted consent is never downgraded by a later, less informed writer. */
  async putParticipants(session: string, participants: Participant[]): Promise<void> {
    if (participants.length === 0) return;
    await this.db
      .insertInto('live_session_participants')
      .values(participants.map((p) => ({ session_id: session, participant_id: p.id, name: p.name, consent: JSON.stringify(p.consent) })))
      .onConflict((oc) =>
        oc.columns(['session_id', 'participant_id']).doUpdateSet({
          name: sql<string>`excluded.name`,
          consent: sql<string>`case when live_session_participants.consent->>'decision' = 'granted' and excluded.consent->>'decision' <> 'declined' and excluded.consent->>'at' is null then live_session_participants.consent else excluded.consent end`,
        }),
      )
      .execute();
  }

  async putSegment(session: string, track: string, recorderId: string, sessionDir: string, entry: SegmentEntry): Promise<void> {
    await this.db
      .insertInto('live_segments')
      .values({ session_id: session, track_id: track, segment: entry.segment, recorder_id: recorderId, session_dir: sessionDir, entry: JSON.stringify(entry) })
      .onConflict((oc) => oc.columns(['session_id', 'track_id', 'segment']).doUpdateSet({ entry: sql<string>`excluded.entry`, recorder_id: sql<string>`excluded.recorder_id`, session_dir: sql<string>`excluded.session_dir` }))
      .execute();
  }

  async addEvents(session: string, events: TimelineEvent[] | SessionManifest['events']): Promise<void> {
    if (events.length === 0) return;
    await this.db
      .insertInto('live_session_events')
      .values(events.map((e) => ({ session_id: session, event: JSON.stringify(e) })))
      .execute();
  }

  /** Everything the pool knows of a session; undefined when no recorder wrote live state for it. */
  async load(session: string): Promise<LiveSessionState | undefined> {
    const [participants, tracks, segments, placements, events] = await Promise.all([
      this.db.selectFrom('live_session_participants').selectAll().where('session_id', '=', session).execute(),
      this.db.selectFrom('live_session_tracks').selectAll().where('session_id', '=', session).execute(),
      this.db.selectFrom('live_segments').selectAll().where('session_id', '=', session).execute(),
      this.db.selectFrom('live_track_placements').selectAll().where('session_id', '=', session).orderBy('epoch').execute(),
      this.db.selectFrom('live_session_events').select('event').where('session_id', '=', session).orderBy('seq').execute(),
    ]);
    if (tracks.length === 0 && events.length === 0) return undefined;
    return {
      participants: participants.map((p) => ({ id: p.participant_id, name: p.name, consent: p.consent as Participant['consent'] })),
      tracks: tracks.map((t) => ({ track: t.track_id, participant: t.participant_id, kind: t.kind, codec: t.codec as Track['codec'], headerExtensions: t.header_extensions })),
      segments: segments.map((s) => ({ track: s.track_id, recorderId: s.recorder_id, sessionDir: s.session_dir, entry: SegmentEntrySchema.parse(s.entry) })),
      placements: placements.map((p) => ({ track: p.track_id, epoch: p.epoch, recorderId: p.recorder_id, copy: p.copy, sessionDir: p.session_dir })),
      events: events.map((e) => e.event as SessionManifest['events'][number]),
    };
  }

  /** The session is sealed: its rows are the sealed tables now. */
  async clear(session: string): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      for (const table of ['live_session_participants', 'live_session_tracks', 'live_track_placements', 'live_segments', 'live_session_events'] as const) {
        await tx.deleteFrom(table).where('session_id', '=', session).execute();
      }
    });
  }
}
