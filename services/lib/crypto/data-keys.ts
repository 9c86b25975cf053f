import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { Transaction } from 'kysely';
import type { Db } from '../../../db/database.ts';
import type { Database } from '../../../db/schema.ts';
import { VerbatimError } from '../errors.ts';
import type { MasterKey } from './master-key.ts';

type Q = Db | Transaction<Database>;

/** Who a data key belongs to: one participant of a session, or (participant null) the session as a whole. */
export interface KeyScope {
  session: string;
  participant: string | null;
}

export interface DataKey {
  id: string;
  key: Buffer;
}

const WRAP_IV = 12;
const WRAP_TAG = 16;

/** AES-256-GCM under the master key, bound to the key id (a wrapped key moved to another row does not unwrap). */
export function wrapKey(master: MasterKey, keyId: string, key: Buffer): Buffer {
  const iv = randomBytes(WRAP_IV);
  const c = createCipheriv('aes-256-gcm', master.key, iv);
  c.setAAD(Buffer.from(keyId, 'utf8'));
  return Buffer.concat([iv, c.update(key), c.final(), c.getAuthTag()]);
}

export function unwrapKey(master: MasterKey, keyId: string, wrapped: Buffer): Buffer {
  const d = createDecipheriv('aes-256-gcm', master.key, wrapped.subarray(0, WRAP_IV));
  d.setAAD(Buffer.from(keyId, 'utf8'));
  d.setAuthTag(wrapped.subarray(wrapped.length - WRAP_TAG));
  try {
    return Buffer.concat([d.update(wrapped.subarray(WRAP_IV, wrapped.length - WRAP_TAG)), d.final()]);
  } catch {
    throw new VerbatimError('MASTER_KEY_MISMATCH', `data key ${keyId} does not unwrap with master key ${master.id}`, { hint: 'The data_keys row was altered, or VERBATIM_MASTER_KEY is not the key it was wrapped with.' });
  }
}

/**
 * The data keys of encryption at rest (table data_keys, migration 0019). Keys are made on first use
 * per scope, stored only wrapped by the master key, and never cached: every read looks its key up, so a
 * key destroyed by an erasure stops decryption in every process at once.
 */
export class DataKeys {
  private master: MasterKey;

  constructor(
    private readonly db: Db,
    master: MasterKey,
    /** Re-reads the master key (its file): after a rotation by another process, keys are wrapped by a newer one. */
    private readonly reload?: () => MasterKey,
  ) {
    this.master = master;
  }

  get masterKeyId(): string {
    return this.master.id;
  }

  /** The live key of the scope, made now if it has none (or only destroyed ones). */
  async forScope(scope: KeyScope): Promise<DataKey> {
    const live = await this.liveRow(this.db, scope);
    if (live) return { id: live.id, key: this.unwrapRow(live) };
    const key = randomBytes(32);
    const id = `dk_${randomBytes(12).toString('base64url')}`;
    // Two writers may race to make the scope's key: the partial unique index keeps one, both use it.
    await this.db
      .insertInto('data_keys')
      .values({ id, session_id: scope.session, participant_id: scope.participant, wrapped_key: wrapKey(this.master, id, key), master_key_id: this.master.id })
      .onConflict((oc) => oc.doNothing())
      .execute();
    const row = await this.liveRow(this.db, scope);
    if (!row) throw new VerbatimError('INTERNAL', `no data key for session ${scope.session} after creating one`, { hint: 'Retry; check the data_keys table.' });
    return { id: row.id, key: row.id === id ? key : this.unwrapRow(row) };
  }

  /** The key with this id; KEY_DESTROYED once an erasure destroyed it, NOT_FOUND for an unknown id. */
  async get(keyId: string): Promise<Buffer> {
    const row = await this.db.selectFrom('data_keys').select(['id', 'wrapped_key', 'master_key_id', 'destroyed_at', 'session_id', 'participant_id']).where('id', '=', keyId).executeTakeFirst();
    if (!row) throw new VerbatimError('NOT_FOUND', `no data key ${keyId}`, { hint: 'The object was encrypted against another database, or its key row was removed.' });
    if (row.destroyed_at || !row.wrapped_key) {
      throw new VerbatimError('KEY_DESTROYED', `data key ${keyId} was destroyed${row.destroyed_at ? ` at ${new Date(row.destroyed_at).toISOString()}` : ''}: the media encrypted with it cannot be read`, {
        hint: 'Crypto-shredded by a GDPR erasure; the bytes stored under this key are unrecoverable by design.',
        details: { keyId, session: row.session_id, participant: row.participant_id },
      });
    }
    return this.unwrapRow(row);
  }

  /**
   * Crypto-shredding: destroys the live and past keys of the participant in the session (wrapped key
   * erased, row kept as evidence) and, with `sessionWide`, the session-wide key too (composite and
   * transcripts hold everyone: their re-made versions get a new key). Returns the ids destroyed.
   */
  destroy(q: Q, session: string, participant: string, opts: { sessionWide?: boolean; at?: Date } = {}): Promise<string[]> {
    return destroyDataKeys(q, session, participant, opts);
  }

  /**
   * Master-key rotation: every live data key is unwrapped with the current master and wrapped with
   * `next`, in one transaction (media is untouched: the data keys do not change). Keys wrapped by
   * neither key fail the whole rotation. From then on this instance wraps with `next`.
   */
  async rewrapAll(next: MasterKey): Promise<{ rewrapped: number; from: string; to: string }> {
    const from = this.master.id;
    const count = await this.db.transaction().execute(async (trx) => {
      const rows = await trx.selectFrom('data_keys').select(['id', 'wrapped_key', 'master_key_id']).where('wrapped_key', 'is not', null).forUpdate().execute();
      let n = 0;
      for (const r of rows) {
        if (r.master_key_id === next.id) continue;
        const key = this.unwrapRow(r);
        await trx.updateTable('data_keys').set({ wrapped_key: wrapKey(next, r.id, key), master_key_id: next.id }).where('id', '=', r.id).execute();
        n++;
      }
      return n;
    });
    this.master = next;
    return { rewrapped: count, from, to: next.id };
  }

  private liveRow(q: Q, scope: KeyScope) {
    return q
      .selectFrom('data_keys')
      .select(['id', 'wrapped_key', 'master_key_id'])
      .where('session_id', '=', scope.session)
      .where((eb) => (scope.participant === null ? eb('participant_id', 'is', null) : eb('participant_id', '=', scope.participant)))
      .where('destroyed_at', 'is', null)
      .executeTakeFirst();
  }

  private unwrapRow(row: { id: string; wrapped_key: Buffer | null; master_key_id: string }): Buffer {
    if (!row.wrapped_key) throw new VerbatimError('KEY_DESTROYED', `data key ${row.id} was destroyed`, { hint: 'Crypto-shredded by a GDPR erasure.' });
    if (row.master_key_id !== this.master.id && this.reload) {
      const fresh = this.reload();
      if (fresh.id === row.master_key_id) this.master = fresh;
    }
    if (row.master_key_id !== this.master.id) {
      throw new VerbatimError('MASTER_KEY_MISMATCH', `data key ${row.id} is wrapped by master key ${row.master_key_id}, this process has ${this.master.id}`, {
        hint: 'Every process must use the same VERBATIM_MASTER_KEY; after `verbatim keys rotate-master`, restart the others with the new key.',
      });
    }
    return unwrapKey(this.master, row.id, Buffer.from(row.wrapped_key));
  }
}

/**
 * Crypto-shredding (needs no master key: it only forgets): destroys the participant's keys in the
 * session (wrapped key erased, row kept as evidence) and, with `sessionWide`, the session-wide key too
 * (composite and transcripts hold everyone; their re-made versions get a new key). Returns the ids.
 */
export async function destroyDataKeys(q: Q, session: string, participant: string, opts: { sessionWide?: boolean; at?: Date } = {}): Promise<string[]> {
  const rows = await q
    .updateTable('data_keys')
    .set({ wrapped_key: null, destroyed_at: opts.at ?? new Date() })
    .where('session_id', '=', session)
    .where('destroyed_at', 'is', null)
    .where((eb) => (opts.sessionWide ? eb.or([eb('participant_id', '=', participant), eb('participant_id', 'is', null)]) : eb('participant_id', '=', participant)))
    .returning('id')
    .execute();
  return rows.map((r) => r.id).sort();
}

/** Whether the key was destroyed (by an erasure). */
export async function isDestroyed(q: Q, keyId: string): Promise<boolean> {
  const row = await q.selectFrom('data_keys').select('destroyed_at').where('id', '=', keyId).executeTakeFirst();
  return row !== undefined && row.destroyed_at !== null;
}
