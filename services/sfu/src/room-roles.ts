import type { RoomFlags } from '../../lib/contracts/room.ts';
import type { ParticipantRole } from '../../lib/contracts/signaling.ts';
import { VerbatimError } from '../../lib/errors.ts';
import type { Peer } from './peer.ts';

/** What the roles need of their room. */
export interface RolesRoom {
  readonly id: string;
  readonly flags: RoomFlags;
  readonly peers: Map<string, Peer>;
}

/**
 * Who may publish. A meeting room lets everyone; an allhands room lets its named speakers,
 * hosts (a host token), ingest sources an operator set up, and viewers a host promoted.
 * Everyone else receives only and may raise a hand, which hosts are told about.
 */
export class RoomRoles {
  /** Identities promoted while the room is open: a promoted viewer who reconnects stays a speaker. */
  private readonly promoted = new Set<string>();
  private readonly hands = new Set<string>();

  constructor(private readonly room: RolesRoom) {}

  roleOf(peer: Peer): ParticipantRole {
    if (peer.host) return 'host';
    if (this.room.flags.mode !== 'allhands') return 'participant';
    if (peer.kind === 'ingest' || this.room.flags.speakers.includes(peer.id) || this.promoted.has(peer.id)) return 'speaker';
    return 'viewer';
  }

  handRaised(peer: Peer): boolean {
    return this.hands.has(peer.id);
  }

  assertMayPublish(peer: Peer): void {
    if (this.roleOf(peer) !== 'viewer') return;
    throw new VerbatimError('NOT_A_SPEAKER', `room ${this.room.id} is an all-hands: only its speakers publish, you joined receive-only`, {
      hint: 'Raise your hand (raiseHand); a host can promote you to speaker.',
    });
  }

  /** A viewer raises or lowers a hand; the hosts are told. Speakers have nothing to ask for. */
  raiseHand(peer: Peer, raised: boolean): { raised: boolean } {
    if (this.roleOf(peer) !== 'viewer') return { raised: false };
    if (raised) this.hands.add(peer.id);
    else this.hands.delete(peer.id);
    this.notifyHosts({ notification: 'handRaised', data: { peerId: peer.id, name: peer.name, raised } });
    return { raised };
  }

  /** Makes a participant a speaker (the caller checked who may ask and writes the audit entry). */
  promote(targetId: string): { peer: Peer; changed: boolean } {
    const target = this.room.peers.get(targetId);
    if (!target) throw new VerbatimError('NOT_FOUND', `participant ${targetId} is not in room ${this.room.id}`, { hint: 'Promote someone who is in the room now (listPeers).' });
    if (this.roleOf(target) !== 'viewer') return { peer: target, changed: false };
    this.promoted.add(targetId);
    if (this.hands.delete(targetId)) this.notifyHosts({ notification: 'handRaised', data: { peerId: targetId, name: target.name, raised: false } });
    target.notify({ notification: 'roleChanged', data: { role: 'speaker' } });
    return { peer: target, changed: true };
  }

  /** A participant left: its hand goes down (its promotion stays for a reconnect). */
  left(peer: Peer): void {
    if (this.hands.delete(peer.id)) this.notifyHosts({ notification: 'handRaised', data: { peerId: peer.id, name: peer.name, raised: false } });
  }

  /** Raised hands, for a host who joins after they went up. */
  raisedHands(): { peerId: string; name: string }[] {
    return [...this.hands].flatMap((id) => {
      const p = this.room.peers.get(id);
      return p ? [{ peerId: id, name: p.name }] : [];
    });
  }

  private notifyHosts(n: Parameters<Peer['notify']>[0]): void {
    for (const p of this.room.peers.values()) if (p.host) p.notify(n);
  }
}
