import { randomBytes, randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database } from '../../../db/schema.ts';
import { VerbatimError } from '../../lib/errors.ts';
import { ROLES, hashApiKey, type Role } from './auth.ts';

/**
 * The lifecycle of users and API keys: create (with an optional expiry), list, revoke, rotate
 * (a new key at once, the old one refused after a grace period), disable and enable users.
 * Revoking a key or disabling a user also ends their console sessions in the same transaction;
 * the verifier (auth.ts) re-reads key and user state on every request, so the next request of a
 * revoked key, a disabled user or one of their sessions is refused at once. Changes that would
 * leave no enabled admin with a usable key are refused (LAST_ADMIN): the lost-admin recovery is
 * the host-side `verbatim keys create-admin`.
 */

type Db = Kysely<Database>;

export interface CreatedKey {
  user: { id: string; name: string; role: Role };
  key: { id: string; prefix: string; expiresAt: string | null };
  /** The plain key: shown once, never stored. */
  apiKey: string;
}

/** active: accepted; rotating: accepted until revokedAt (a rotation's grace period); revoked / expired: refused. */
export type KeyState = 'active' | 'rotating' | 'revoked' | 'expired';

export interface KeyView {
  id: string;
  prefix: string;
  userId: string;
  createdAt: string;
  lastUsedAt: string | null;
  expiresAt: string | null;
  revokedAt: string | null;
  rotatedFrom: string | null;
  state: KeyState;
}

export interface UserView {
  id: string;
  name: string;
  role: Role;
  createdAt: string;
  disabledAt: string | null;
  state: 'enabled' | 'disabled';
  keys: KeyView[];
}

/** Creates a user with the given role and one API key for it. */
export async function createUserWithKey(db: Db, opts: { name: string; role: Role; expiresAt?: Date | null }): Promise<CreatedKey> {
  if (!(ROLES as readonly string[]).includes(opts.role)) throw new VerbatimError('BAD_REQUEST', `unknown role ${String(opts.role)}`, { hint: `Roles: ${ROLES.join(', ')}.` });
  const userId = `usr_${randomUUID()}`;
  return db.transaction().execute(async (trx) => {
    await trx.insertInto('users').values({ id: userId, name: opts.name, role: opts.role }).execute();
    const key = await createApiKey(trx, userId, { expiresAt: opts.expiresAt ?? null });
    return { user: { id: userId, name: opts.name, role: opts.role }, ...key };
  });
}

/** Adds an API key to an existing user. */
export async function createApiKey(db: Db, userId: string, opts: { expiresAt?: Date | null; rotatedFrom?: string } = {}): Promise<Omit<CreatedKey, 'user'>> {
  for (let attempt = 0; ; attempt++) {
    const prefix = randomBytes(4).toString('hex');
    const apiKey = `vb_${prefix}_${randomBytes(32).toString('base64url')}`;
    const id = `key_${randomUUID()}`;
    const expiresAt = opts.expiresAt ?? null;
    const taken = await db.selectFrom('api_keys').select('id').where('prefix', '=', prefix).executeTakeFirst();
    if (taken) {
      if (attempt > 5) throw new VerbatimError('INTERNAL', 'could not find a free API key prefix');
      continue;
    }
    await db.insertInto('api_keys').values({ id, user_id: userId, prefix, hash: await hashApiKey(apiKey), expires_at: expiresAt, rotated_from: opts.rotatedFrom ?? null }).execute();
    return { key: { id, prefix, expiresAt: expiresAt ? expiresAt.toISOString() : null }, apiKey };
  }
}

/** Marks a key revoked without the lifecycle checks (tests and imports); use revokeKey for people. */
export async function revokeApiKey(db: Db, keyId: string, at: Date = new Date()): Promise<boolean> {
  const r = await db.updateTable('api_keys').set({ revoked_at: at }).where('id', '=', keyId).where('revoked_at', 'is', null).executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

interface KeyRow {
  id: string;
  prefix: string;
  user_id: string;
  created_at: Date;
  last_used_at: Date | null;
  expires_at: Date | null;
  revoked_at: Date | null;
  rotated_from: string | null;
}

const iso = (d: Date | string | null): string | null => (d === null ? null : new Date(d).toISOString());

export function keyState(k: Pick<KeyRow, 'expires_at' | 'revoked_at'>, now: Date): KeyState {
  const t = now.getTime();
  if (k.revoked_at && new Date(k.revoked_at).getTime() <= t) return 'revoked';
  if (k.expires_at && new Date(k.expires_at).getTime() <= t) return 'expired';
  return k.revoked_at ? 'rotating' : 'active';
}

function keyView(k: KeyRow, now: Date): KeyView {
  return {
    id: k.id,
    prefix: k.prefix,
    userId: k.user_id,
    createdAt: iso(k.created_at)!,
    lastUsedAt: iso(k.last_used_at),
    expiresAt: iso(k.expires_at),
    revokedAt: iso(k.revoked_at),
    rotatedFrom: k.rotated_from,
    state: keyState(k, now),
  };
}

const KEY_COLUMNS = ['id', 'prefix', 'user_id', 'created_at', 'last_used_at', 'expires_at', 'revoked_at', 'rotated_from'] as const;

/** Every user with every key (oldest first), with their states at `now`. */
export async function listUsers(db: Db, now: Date = new Date()): Promise<UserView[]> {
  const users = await db.selectFrom('users').select(['id', 'name', 'role', 'created_at', 'disabled_at']).orderBy('created_at').orderBy('id').execute();
  const keys = await db.selectFrom('api_keys').select(KEY_COLUMNS).orderBy('created_at').orderBy('id').execute();
  const byUser = new Map<string, KeyView[]>();
  for (const k of keys) byUser.set(k.user_id, [...(byUser.get(k.user_id) ?? []), keyView(k, now)]);
  return users.map((u) => ({
    id: u.id,
    name: u.name,
    role: u.role,
    createdAt: iso(u.created_at)!,
    disabledAt: iso(u.disabled_at),
    state: u.disabled_at ? 'disabled' : 'enabled',
    keys: byUser.get(u.id) ?? [],
  }));
}

/** A key by id, or by its 8-hex prefix (what people see and type). */
export async function findKey(db: Db, idOrPrefix: string, now: Date = new Date()): Promise<KeyView> {
  const row = await db
    .selectFrom('api_keys')
    .select(KEY_COLUMNS)
    .where(/^[0-9a-f]{8}$/.test(idOrPrefix) ? 'prefix' : 'id', '=', idOrPrefix)
    .executeTakeFirst();
  if (!row) throw notFound('API key', idOrPrefix);
  return keyView(row, now);
}

function notFound(what: string, id: string): VerbatimError {
  return new VerbatimError('NOT_FOUND', `no ${what} ${id}`, { hint: 'List users and keys with GET /api/v1/users (or `verbatim keys list`).', details: { id } });
}

/**
 * Locks the admin rows for the rest of the transaction (two admins disabling each other at once
 * are serialized), then refuses with LAST_ADMIN unless an enabled admin other than the excluded
 * user keeps a usable key other than the excluded key.
 */
async function assertAnotherAdmin(trx: Db, now: Date, exclude: { userId?: string; keyId?: string }, what: string): Promise<void> {
  await trx.selectFrom('users').select('id').where('role', '=', 'admin').forUpdate().execute();
  let q = trx
    .selectFrom('api_keys')
    .innerJoin('users', 'users.id', 'api_keys.user_id')
    .select('api_keys.id')
    .where('users.role', '=', 'admin')
    .where('users.disabled_at', 'is', null)
    .where('api_keys.revoked_at', 'is', null)
    .where((eb) => eb.or([eb('api_keys.expires_at', 'is', null), eb('api_keys.expires_at', '>', now)]));
  if (exclude.userId) q = q.where('users.id', '!=', exclude.userId);
  if (exclude.keyId) q = q.where('api_keys.id', '!=', exclude.keyId);
  if (!(await q.limit(1).executeTakeFirst())) {
    throw new VerbatimError('LAST_ADMIN', `${what} would leave no enabled admin with a usable API key`, {
      hint: 'Create another admin key first (POST /api/v1/keys with role admin, or `verbatim keys create-admin` on the host), then retry.',
    });
  }
}

async function lockedKey(trx: Db, keyId: string): Promise<KeyRow & { role: Role; disabled_at: Date | null }> {
  const row = await trx
    .selectFrom('api_keys')
    .innerJoin('users', 'users.id', 'api_keys.user_id')
    .select(['api_keys.id', 'api_keys.prefix', 'api_keys.user_id', 'api_keys.created_at', 'api_keys.last_used_at', 'api_keys.expires_at', 'api_keys.revoked_at', 'api_keys.rotated_from', 'users.role', 'users.disabled_at'])
    .where('api_keys.id', '=', keyId)
    .forUpdate()
    .executeTakeFirst();
  if (!row) throw notFound('API key', keyId);
  return row;
}

/** A usable key of an enabled admin: the only kind the last-admin rule protects. */
const countsForAdmin = (k: KeyRow & { role: Role; disabled_at: Date | null }, now: Date) => k.role === 'admin' && !k.disabled_at && keyState(k, now) === 'active';

async function endConsoleSessions(trx: Db, by: { keyId: string } | { userId: string }, now: Date): Promise<number> {
  const r = await trx
    .updateTable('console_sessions')
    .set({ ended_at: now })
    .where('keyId' in by ? 'key_id' : 'user_id', '=', 'keyId' in by ? by.keyId : by.userId)
    .where('ended_at', 'is', null)
    .executeTakeFirst();
  return Number(r.numUpdatedRows);
}

export interface KeyChange {
  before: KeyView;
  after: KeyView;
  /** Console sessions opened with the key, ended by this change. */
  sessionsEnded: number;
}

/** Revokes a key at once (also one in its rotation grace period) and ends its console sessions. */
export async function revokeKey(db: Db, keyId: string, now: Date = new Date()): Promise<KeyChange> {
  return db.transaction().execute(async (trx) => {
    const row = await lockedKey(trx, keyId);
    const before = keyView(row, now);
    if (before.state === 'revoked') throw new VerbatimError('CONFLICT', `API key ${row.prefix} is already revoked`, { hint: 'Nothing to do.', details: { keyId, revokedAt: before.revokedAt } });
    if (countsForAdmin(row, now)) await assertAnotherAdmin(trx, now, { keyId }, `revoking API key ${row.prefix}`);
    await trx.updateTable('api_keys').set({ revoked_at: now }).where('id', '=', keyId).execute();
    const sessionsEnded = await endConsoleSessions(trx, { keyId }, now);
    return { before, after: keyView({ ...row, revoked_at: now }, now), sessionsEnded };
  });
}

export interface Rotation {
  before: KeyView;
  /** The old key after the rotation (state rotating, or revoked with no grace period). */
  old: KeyView;
  created: Omit<CreatedKey, 'user'>;
  /** When the old key stops being accepted. */
  oldRevokedAt: string;
}

/**
 * Rotates an active key: a new key for the same user (same expiry unless given), and the old key
 * accepted until `now + graceMs` (0: refused at once, its console sessions ended).
 */
export async function rotateKey(db: Db, keyId: string, opts: { graceMs: number; expiresAt?: Date | null; now?: Date }): Promise<Rotation> {
  const now = opts.now ?? new Date();
  return db.transaction().execute(async (trx) => {
    const row = await lockedKey(trx, keyId);
    const before = keyView(row, now);
    const state = before.state;
    if (state !== 'active') {
      throw new VerbatimError('CONFLICT', `API key ${row.prefix} is ${state}: only an active key can be rotated`, {
        hint: state === 'rotating' ? 'Use the key it was rotated to (or revoke this one now).' : 'Add a new key for the user instead.',
        details: { keyId, state },
      });
    }
    const created = await createApiKey(trx, row.user_id, { expiresAt: opts.expiresAt !== undefined ? opts.expiresAt : row.expires_at, rotatedFrom: row.id });
    const until = new Date(now.getTime() + Math.max(0, opts.graceMs));
    await trx.updateTable('api_keys').set({ revoked_at: until }).where('id', '=', keyId).execute();
    if (opts.graceMs <= 0) await endConsoleSessions(trx, { keyId }, now);
    return { before, old: keyView({ ...row, revoked_at: until }, now), created, oldRevokedAt: until.toISOString() };
  });
}

export interface UserChange {
  before: Omit<UserView, 'keys'>;
  after: Omit<UserView, 'keys'>;
  sessionsEnded: number;
}

/** Disables (every key refused, console sessions ended) or re-enables a user. */
export async function setUserDisabled(db: Db, userId: string, disabled: boolean, now: Date = new Date()): Promise<UserChange> {
  return db.transaction().execute(async (trx) => {
    const u = await trx.selectFrom('users').select(['id', 'name', 'role', 'created_at', 'disabled_at']).where('id', '=', userId).forUpdate().executeTakeFirst();
    if (!u) throw notFound('user', userId);
    const view = (disabledAt: Date | null): Omit<UserView, 'keys'> => ({ id: u.id, name: u.name, role: u.role, createdAt: iso(u.created_at)!, disabledAt: iso(disabledAt), state: disabledAt ? 'disabled' : 'enabled' });
    const before = view(u.disabled_at);
    if (Boolean(u.disabled_at) === disabled) throw new VerbatimError('CONFLICT', `user ${u.name} is already ${before.state}`, { hint: 'Nothing to do.', details: { userId, state: before.state } });
    let sessionsEnded = 0;
    if (disabled) {
      if (u.role === 'admin') await assertAnotherAdmin(trx, now, { userId }, `disabling admin ${u.name}`);
      await trx.updateTable('users').set({ disabled_at: now }).where('id', '=', userId).execute();
      // Ended for good: enabling the user again does not bring these sessions back.
      sessionsEnded = await endConsoleSessions(trx, { userId }, now);
    } else {
      await trx.updateTable('users').set({ disabled_at: null }).where('id', '=', userId).execute();
    }
    return { before, after: view(disabled ? now : null), sessionsEnded };
  });
}
