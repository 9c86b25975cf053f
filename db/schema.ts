import type { ColumnType, Generated, JSONColumnType } from 'kysely';
import type { RoomFlags } from '../services/lib/contracts/room.ts';

/** A timestamptz with a database default: optional on insert. */
type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;

export interface RoomsTable {
  id: string;
  name: string;
  flags: JSONColumnType<RoomFlags, string, string>;
  /** scrypt hash of the room secret that unlocks a lockRecord room's recording toggle. */
  secret_hash: string;
  recording: Generated<boolean>;
  created_at: Timestamp;
  updated_at: Timestamp;
  closed_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface ConsentEventsTable {
  id: Generated<number>;
  room_id: string;
  session_id: string | null;
  participant_id: string;
  participant_name: string;
  policy: string;
  decision: 'granted' | 'declined';
  method: 'click' | 'announcement' | 'pre-accepted';
  client_info: JSONColumnType<Record<string, unknown>, string, string>;
  created_at: Timestamp;
}

export interface Database {
  rooms: RoomsTable;
  consent_events: ConsentEventsTable;
}
