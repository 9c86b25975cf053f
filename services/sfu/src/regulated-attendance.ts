import type { Db } from '../../../db/database.ts';
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

  constructor(
    private readonly db: Db,
    private readonly logger: Logger,
  ) {}

  /** Read at each join, so a change to the list applies from the next join on. */
  async isRegulated(identity: string): Promise<boolean> {
    const hit = await this.db
      .selectFrom('regulated_subjects as r')
      .select('r.value')
      .where((eb) =>
        eb.or([
          eb.and([eb('r.kind', '=', 'identity'), eb('r.value', '=', identity)]),
          eb.and([eb('r.kind', '=', 'group'), eb('r.value', 'in', eb.selectFrom('identity_group_members as g').select('g.group_name').where('g.participant_id', '=', identity))]),
        ]),
      )
      .limit(1)
      .executeTakeFirst();
    return !!hit;
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
