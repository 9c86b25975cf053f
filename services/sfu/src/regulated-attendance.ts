import type { Db } from '../../../db/database.ts';
import { VerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import type { Peer } from './peer.ts';
import type { Room } from './room.ts';

/**
 * Capture assurance on the SFU (issue 13 item 4): whether an identity is regulated (named, or a
 * member of a regulated group; the list is managed through the compliance API), and the
 * attendance of regulated identities: when each was in which room and when it first
 * published. Attendance is written whatever gets recorded, so the reconciliation can tell a
 * meeting that left no recording at all from one that was recorded.
 */
export class RegulatedAttendance {
  /** The attendance row of each regulated peer in a room (by peer object: a reload is a new row). */
  private readonly rows = new WeakMap<Peer, Promise<number | undefined>>();
  /** Every regulated identity (named, or a member of a regulated group), as last read. */
  private list: { identities: Set<string>; at: number } | undefined;
  private reading: Promise<Set<string>> | undefined;

  constructor(
    private readonly db: Db,
    private readonly logger: Logger,
    /** How long a read of the list is used before the next join reads it again. */
    private readonly maxAgeMs = 5000,
  ) {}

  /**
   * Whether an identity is regulated, from the list as read at most maxAgeMs ago (so a change
   * applies within seconds, and a join costs no query of its own). When the list cannot be
   * read, the last one read is used (logged); with none read yet, the join fails rather than
   * let a regulated identity in unrecorded.
   */
  async isRegulated(identity: string): Promise<boolean> {
    if (this.list && Date.now() - this.list.at < this.maxAgeMs) return this.list.identities.has(identity);
    try {
      return (await this.read()).has(identity);
    } catch (err) {
      if (!this.list) {
        throw new VerbatimError('DATABASE_UNAVAILABLE', 'cannot tell yet whether you must be recorded (the regulated list is not readable), so you cannot join now', {
          hint: 'Try again in a moment; the SFU\'s database is not reachable.',
          cause: err,
        });
      }
      this.logger.error({ err }, 'could not read the regulated list: using the one read before');
      return this.list.identities.has(identity);
    }
  }

  private read(): Promise<Set<string>> {
    this.reading ??= (async () => {
      const named = this.db.selectFrom('regulated_subjects').select('value as identity').where('kind', '=', 'identity');
      const members = this.db
        .selectFrom('identity_group_members as g')
        .innerJoin('regulated_subjects as r', (j) => j.onRef('r.value', '=', 'g.group_name').on('r.kind', '=', 'group'))
        .select('g.participant_id as identity');
      const rows = await named.union(members).execute();
      const identities = new Set(rows.map((r) => r.identity));
      this.list = { identities, at: Date.now() };
      return identities;
    })().finally(() => {
      this.reading = undefined;
    });
    return this.reading;
  }

  /** Follows a room's regulated peers: joins, first producer, leaves. Writes are in the background (logged on failure). */
  watch(room: Room): void {
    room.on('peerJoined', (peer) => {
      if (!peer.regulated) return;
      const row = this.db
        .insertInto('regulated_attendance')
        .values({ room_id: room.id, participant_id: peer.id, participant_name: peer.name, joined_at: peer.joinedAt })
        .returning('id')
        .executeTakeFirstOrThrow()
        .then((r) => Number(r.id))
        .catch((err: unknown) => {
          this.logger.error({ err, room: room.id, peer: peer.id }, 'could not store the attendance of a regulated participant');
          return undefined;
        });
      this.rows.set(peer, row);
    });
    room.on('producerAdded', (peer) => this.update(peer, 'first_produced_at'));
    room.on('peerLeft', (peer) => this.update(peer, 'left_at'));
  }

  private update(peer: Peer, column: 'first_produced_at' | 'left_at'): void {
    const row = this.rows.get(peer);
    if (!row) return;
    void row.then(async (id) => {
      if (id === undefined) return;
      await this.db
        .updateTable('regulated_attendance')
        .set({ [column]: new Date() })
        .where('id', '=', id)
        .where(column, 'is', null)
        .execute()
        .catch((err: unknown) => this.logger.error({ err, peer: peer.id, column }, 'could not update the attendance of a regulated participant'));
    });
  }
}
