import { randomBytes, scryptSync, timingSafeEqual } from 'node:crypto';
import type { Db } from '../../../db/database.ts';
import { RoomFlagsSchema, type RoomFlags } from '../../lib/contracts/room.ts';

export interface StoredRoom {
  id: string;
  name: string;
  flags: RoomFlags;
  recording: boolean;
  createdAt: Date;
  closedAt: Date | null;
}

export interface ConsentRecord {
  roomId: string;
  sessionId?: string | null;
  participantId: string;
  participantName: string;
  policy: string;
  decision: 'granted' | 'declined';
  method: 'click' | 'announcement' | 'pre-accepted';
  clientInfo: Record<string, unknown>;
}

/** Rooms and their flags live in the database so they survive an SFU restart. */
export class RoomStore {
  constructor(private readonly db: Db) {}

  async create(r: { id: string; name: string; flags: RoomFlags }): Promise<{ room: StoredRoom; roomSecret: string }> {
    const roomSecret = randomBytes(18).toString('base64url');
    await this.db
      .insertInto('rooms')
      .values({ id: r.id, name: r.name, flags: JSON.stringify(r.flags), secret_hash: hashSecret(roomSecret), recording: false })
      .execute();
    const room = await this.get(r.id);
    if (!room) throw new Error(`room ${r.id} vanished after insert`);
    return { room, roomSecret };
  }

  async get(id: string): Promise<StoredRoom | undefined> {
    const row = await this.db.selectFrom('rooms').selectAll().where('id', '=', id).executeTakeFirst();
    return row ? toRoom(row) : undefined;
  }

  async list(opts: { includeClosed?: boolean } = {}): Promise<StoredRoom[]> {
    let q = this.db.selectFrom('rooms').selectAll().orderBy('created_at', 'desc');
    if (!opts.includeClosed) q = q.where('closed_at', 'is', null);
    return (await q.execute()).map(toRoom);
  }

  async updateFlags(id: string, flags: RoomFlags): Promise<void> {
    await this.db.updateTable('rooms').set({ flags: JSON.stringify(flags), updated_at: new Date() }).where('id', '=', id).execute();
  }

  async setRecording(id: string, recording: boolean): Promise<void> {
    await this.db.updateTable('rooms').set({ recording, updated_at: new Date() }).where('id', '=', id).execute();
  }

  async close(id: string): Promise<void> {
    await this.db.updateTable('rooms').set({ closed_at: new Date(), recording: false, updated_at: new Date() }).where('id', '=', id).where('closed_at', 'is', null).execute();
  }

  async verifySecret(id: string, secret: string): Promise<boolean> {
    const row = await this.db.selectFrom('rooms').select('secret_hash').where('id', '=', id).executeTakeFirst();
    return row ? checkSecret(row.secret_hash, secret) : false;
  }

  /** Stores a consent decision; resolves its row id. */
  async recordConsent(c: ConsentRecord): Promise<string> {
    const row = await this.db
      .insertInto('consent_events')
      .values({
        room_id: c.roomId,
        session_id: c.sessionId ?? null,
        participant_id: c.participantId,
        participant_name: c.participantName,
        policy: c.policy,
        decision: c.decision,
        method: c.method,
        client_info: JSON.stringify(c.clientInfo),
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    return String(row.id);
  }

  /** Takes back a decision stored moments ago whose audit entry could not be written (it was never acknowledged). */
  async withdrawConsent(id: string): Promise<void> {
    await this.db.deleteFrom('consent_events').where('id', '=', id as never).execute();
  }
}

function toRoom(row: { id: string; name: string; flags: unknown; recording: boolean; created_at: Date; closed_at: Date | null }): StoredRoom {
  // Parsing on read fills defaults for flags added after the row was written.
  const flags = RoomFlagsSchema.parse(typeof row.flags === 'string' ? JSON.parse(row.flags) : row.flags);
  return { id: row.id, name: row.name, flags, recording: row.recording, createdAt: new Date(row.created_at), closedAt: row.closed_at ? new Date(row.closed_at) : null };
}

function hashSecret(secret: string): string {
  const salt = randomBytes(16);
  return `scrypt$${salt.toString('base64url')}$${scryptSync(secret, salt, 32).toString('base64url')}`;
}

function checkSecret(stored: string, secret: string): boolean {
  const [scheme, salt, hash] = stored.split('$');
  if (scheme !== 'scrypt' || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64url');
  const actual = scryptSync(secret, Buffer.from(salt, 'base64url'), expected.length);
  return timingSafeEqual(expected, actual);
}
