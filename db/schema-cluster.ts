import type { ColumnType, Generated, JSONColumnType } from 'kysely';
import type { Timestamp } from './schema.ts';

/** Tables of the hosts that make up a deployment: the recorder pool (migration 0014) and the SFU cluster (migration 0018). */

/** A running SFU host of the cluster (migration 0018). */
export interface SfuHostsTable {
  id: string;
  control_url: string;
  public_url: string;
  capacity: number;
  participants: Generated<number>;
  started_at: Timestamp;
  heartbeat_at: Timestamp;
}

/** The host a room's speakers and recording live on (migration 0018). */
export interface RoomOriginsTable {
  room_id: string;
  host_id: string;
  claimed_at: Timestamp;
}

/** Recorders of the pool with their heartbeat (migration 0014). */
export interface RecordersTable {
  id: string;
  url: string;
  instance_id: string;
  host: string;
  /** Tracks it takes at most. */
  capacity: number;
  /** Tracks it records now. */
  load: ColumnType<number, number | undefined, number>;
  state: ColumnType<'active' | 'draining', 'active' | 'draining' | undefined, 'active' | 'draining'>;
  recordings_dir: string;
  heartbeat_at: Timestamp;
  started_at: Timestamp;
  /** Raw-upload backlog at the last heartbeat (migration 0020); null where raw upload is off. */
  upload_backlog_segments: ColumnType<number | null, number | null | undefined, number | null>;
  upload_backlog_bytes: ColumnType<number | null, number | null | undefined, number | null>;
  /** When the oldest segment still waiting was queued. */
  upload_oldest_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  upload_failed_attempts: ColumnType<number | null, number | null | undefined, number | null>;
  upload_last_error: ColumnType<string | null, string | null | undefined, string | null>;
}

/** A recording session's state while it records, on whichever recorders hold it (migration 0014). */
export interface LiveSessionParticipantsTable {
  session_id: string;
  participant_id: string;
  name: string;
  consent: JSONColumnType<Record<string, unknown>, string, string>;
}

export interface LiveSessionTracksTable {
  session_id: string;
  track_id: string;
  participant_id: string;
  kind: 'audio' | 'video';
  codec: JSONColumnType<Record<string, unknown>, string, string>;
  header_extensions: JSONColumnType<{ uri: string; id: number }[], string, string>;
}

export interface LiveTrackPlacementsTable {
  session_id: string;
  track_id: string;
  epoch: number;
  recorder_id: string;
  copy: ColumnType<number, number | undefined, number>;
  session_dir: string;
  created_at: Timestamp;
}

export interface LiveSegmentsTable {
  session_id: string;
  track_id: string;
  segment: number;
  recorder_id: string;
  session_dir: string;
  entry: JSONColumnType<Record<string, unknown>, string, string>;
}

export interface LiveSessionEventsTable {
  session_id: string;
  seq: Generated<number>;
  event: JSONColumnType<Record<string, unknown>, string, string>;
}
