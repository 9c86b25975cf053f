import { createHash, createHmac, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import type { Kysely } from 'kysely';
import { USER_ROLES, type Database, type UserRole } from '../../../db/schema.ts';
import { VerbatimError } from '../../lib/errors.ts';

/**
 * API keys and roles of the compliance API.
 *
 * A key is `vb_<prefix>_<secret>`: an 8-character lowercase hex prefix (stored in clear,
 * unique, to find the row) and a 43-character base64url secret (256 bits). The database
 * holds only `scrypt$<salt>$<hash>` of the whole key; the plain key is shown once, when
 * it is created. Verification hashes before it tells a revoked or expired key apart, so
 * whoever knows only a prefix learns nothing about the key's state.
 */

export const ROLES = USER_ROLES;
export type Role = UserRole;

export const PERMISSIONS = [
  // admin
  'rooms.manage',
  'retention.manage',
  'users.manage',
  'keys.manage',
  // compliance_officer
  'recordings.search',
  'recordings.view',
  'recordings.play',
  'recordings.export',
  'holds.manage',
  'erasure.manage',
  // auditor
  'audit.read',
  'audit.verify',
  'consent.read',
  // compliance_officer and auditor: a session's metadata (participants, tracks, artifact hashes), no content
  'sessions.metadata',
  // supervision: admin and compliance_officer manage policies; officers review; officers and auditors read the evidence report
  'policy.manage',
  'review.read',
  'review.decide',
  'review.report',
  // capture assurance (issue 13): admin manages the regulated list; officers run reconciliations; both officer and auditor read reports
  'capture.manage',
  'capture.reconcile',
  'capture.read',
  // redaction (issue 13): see redacted spans in clear when asking for it (audited)
  'redaction.reveal',
] as const;
export type Permission = (typeof PERMISSIONS)[number];

/** Roles → permissions. Mostly disjoint on purpose: an admin cannot read recordings, an officer cannot rewrite retention policy (supervision policies both manage). */
export const ROLE_PERMISSIONS: Readonly<Record<Role, readonly Permission[]>> = {
  admin: ['rooms.manage', 'retention.manage', 'users.manage', 'keys.manage', 'policy.manage', 'capture.manage'],
  compliance_officer: ['recordings.search', 'recordings.view', 'recordings.play', 'recordings.export', 'holds.manage', 'erasure.manage', 'sessions.metadata', 'policy.manage', 'review.read', 'review.decide', 'review.report', 'capture.reconcile', 'capture.read', 'redaction.reveal'],
  auditor: ['audit.read', 'audit.verify', 'consent.read', 'sessions.metadata', 'review.report', 'capture.read'],
};

export function can(role: Role, permission: Permission): boolean {
  return ROLE_PERMISSIONS[role]?.includes(permission) ?? false;
}

export interface Principal {
  userId: string;
  userName: string;
  role: Role;
  /** The API key of the request, or of the console session it opened; absent for an SSO session. */
  keyId?: string;
  keyPrefix?: string;
  /** Set when the request authenticated with a console session cookie instead of a Bearer key. */
  sessionId?: string;
  /** The IdP identity of a console session opened by SSO. */
  sso?: { issuer: string; subject: string };
}

/** Throws FORBIDDEN unless the principal's role grants the permission. */
export function authorize(p: Principal, permission: Permission): void {
  if (!can(p.role, permission)) {
    const roles = ROLES.filter((r) => can(r, permission));
    throw new VerbatimError('FORBIDDEN', `role ${p.role} lacks permission ${permission}`, {
      hint: `This needs a key of role ${roles.join(' or ')}; ask an admin for one.`,
      details: { permission, role: p.role },
    });
  }
}

const KEY_RE = /^vb_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$/;
const SCRYPT = { N: 16384, r: 8, p: 1, keylen: 32 } as const;

function scryptAsync(secret: string, salt: Buffer, keylen: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(secret, salt, keylen, { N: SCRYPT.N, r: SCRYPT.r, p: SCRYPT.p }, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

export async function hashApiKey(key: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await scryptAsync(key, salt, SCRYPT.keylen);
  return `scrypt$${salt.toString('base64url')}$${hash.toString('base64url')}`;
}

export async function checkApiKeyHash(key: string, stored: string): Promise<boolean> {
  const [scheme, salt, hash] = stored.split('$');
  if (scheme !== 'scrypt' || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64url');
  if (expected.length < 16) return false;
  const actual = await scryptAsync(key, Buffer.from(salt, 'base64url'), expected.length);
  return timingSafeEqual(actual, expected);
}

/** Splits `vb_<prefix>_<secret>`; null when it is not shaped like a Verbatim key. */
export function parseApiKey(key: string): { prefix: string } | null {
  const m = KEY_RE.exec(key);
  return m ? { prefix: m[1]! } : null;
}

type Db = Kysely<Database>;

/** Why a key was refused; all are UNAUTHORIZED, told apart in the message and details.reason. */
export type AuthFailure = 'missing' | 'malformed' | 'unknown' | 'forged' | 'revoked' | 'expired' | 'disabled' | 'session_invalid' | 'session_expired' | 'session_ended';

/** Failures that are guesses at a credential (counted by the rate limiter); a stale real key is not one. */
export const GUESS_FAILURES: ReadonlySet<string> = new Set<AuthFailure>(['malformed', 'unknown', 'forged', 'session_invalid']);

function unauthorized(reason: AuthFailure, message: string, prefix?: string): VerbatimError {
  return new VerbatimError('UNAUTHORIZED', message, {
    hint:
      reason === 'expired' || reason === 'revoked' || reason === 'disabled'
        ? 'Ask an admin for a new API key.'
        : reason.startsWith('session_')
          ? 'Sign in again (POST /api/v1/login with your API key, or the console\'s "Sign in with SSO").'
          : 'Send "Authorization: Bearer vb_<prefix>_<secret>" with a key an admin created (POST /api/v1/keys).',
    details: { reason, ...(prefix ? { keyPrefix: prefix } : {}) },
  });
}

const LAST_USED_RESOLUTION_MS = 60_000;

interface KeyStateRow {
  keyId: string;
  prefix: string;
  expires_at: Date | null;
  revoked_at: Date | null;
  last_used_at: Date | null;
  userId: string;
  name: string;
  role: Role;
  disabled_at: Date | null;
}

/**
 * Verifies API keys against the database. A verified key's digest is remembered (keyed
 * by row and stored hash), so repeated requests skip scrypt; revocation, expiry and
 * disabling are read from the database on every request.
 */
export class ApiKeyVerifier {
  private readonly verified = new Map<string, string>();
  constructor(
    private readonly db: Db,
    private readonly opts: { now?: () => Date; cacheSize?: number } = {},
  ) {}

  /** Authorization header → principal, or UNAUTHORIZED. */
  async fromHeader(header: string | undefined): Promise<Principal> {
    if (!header) throw unauthorized('missing', 'this API needs "Authorization: Bearer <API key>"');
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!m) throw unauthorized('malformed', 'Authorization header is not "Bearer <API key>"');
    return this.verify(m[1]!);
  }

  async verify(key: string): Promise<Principal> {
    const parsed = parseApiKey(key);
    if (!parsed) throw unauthorized('malformed', 'API key is malformed (expected vb_<8 hex>_<43 base64url>)');
    const row = await this.db
      .selectFrom('api_keys')
      .innerJoin('users', 'users.id', 'api_keys.user_id')
      .select(['api_keys.id as keyId', 'api_keys.prefix', 'api_keys.hash', 'api_keys.expires_at', 'api_keys.revoked_at', 'api_keys.last_used_at', 'users.id as userId', 'users.name', 'users.role', 'users.disabled_at'])
      .where('api_keys.prefix', '=', parsed.prefix)
      .executeTakeFirst();
    if (!row) throw unauthorized('unknown', `unknown API key ${parsed.prefix}`, parsed.prefix);
    const digest = createHash('sha256').update(key).digest('hex');
    const cacheKey = `${row.keyId}:${row.hash}`;
    const cached = this.verified.get(cacheKey);
    const ok = cached !== undefined ? timingSafeEqual(Buffer.from(cached, 'hex'), Buffer.from(digest, 'hex')) : await checkApiKeyHash(key, row.hash);
    if (!ok) throw unauthorized('forged', `API key ${parsed.prefix} does not match its stored hash`, parsed.prefix);
    if (cached === undefined) {
      if (this.verified.size >= (this.opts.cacheSize ?? 10_000)) this.verified.delete(this.verified.keys().next().value!);
      this.verified.set(cacheKey, digest);
    }
    return this.checkState(row);
  }

  /** The key's principal when the key (found by id, e.g. from a console session) is still usable. */
  async byKeyId(keyId: string, opts: { touch?: boolean } = {}): Promise<Principal> {
    const row = await this.keyRow().where('api_keys.id', '=', keyId).executeTakeFirst();
    if (!row) throw unauthorized('revoked', 'the API key this session was opened with no longer exists');
    return this.checkState(row, opts.touch ?? true);
  }

  private keyRow() {
    return this.db
      .selectFrom('api_keys')
      .innerJoin('users', 'users.id', 'api_keys.user_id')
      .select(['api_keys.id as keyId', 'api_keys.prefix', 'api_keys.hash', 'api_keys.expires_at', 'api_keys.revoked_at', 'api_keys.last_used_at', 'users.id as userId', 'users.name', 'users.role', 'users.disabled_at']);
  }

  /** touch: record the use (last_used_at, at most once a minute per key); false for a refused session's check. */
  private async checkState(row: KeyStateRow, touch = true): Promise<Principal> {
    const parsed = { prefix: row.prefix };
    const now = this.opts.now?.() ?? new Date();
    // A rotated key's revoked_at lies in the future until its grace period ends.
    if (row.revoked_at && new Date(row.revoked_at).getTime() <= now.getTime()) throw unauthorized('revoked', `API key ${parsed.prefix} was revoked at ${new Date(row.revoked_at).toISOString()}`, parsed.prefix);
    if (row.expires_at && new Date(row.expires_at).getTime() <= now.getTime()) {
      throw unauthorized('expired', `API key ${parsed.prefix} expired at ${new Date(row.expires_at).toISOString()}`, parsed.prefix);
    }
    if (row.disabled_at) throw unauthorized('disabled', `the user of API key ${parsed.prefix} is disabled`, parsed.prefix);
    if (touch && (!row.last_used_at || now.getTime() - new Date(row.last_used_at).getTime() > LAST_USED_RESOLUTION_MS)) {
      await this.db.updateTable('api_keys').set({ last_used_at: now }).where('id', '=', row.keyId).execute();
    }
    return { userId: row.userId, userName: row.name, role: row.role, keyId: row.keyId, keyPrefix: row.prefix };
  }
}

// ---------------------------------------------------------------- console sessions (browser sign-in)

export const SESSION_COOKIE = 'vb_session';
/** Header a cookie-authenticated mutating request must carry: a cross-site form or <img> cannot set it. */
export const CSRF_HEADER = 'x-verbatim-csrf';
export const SESSION_TTL_MS = 8 * 3_600_000;

/**
 * Sessions of the browser console. The cookie is `<id>.<expiry ms>.<HMAC-SHA256(secret, id.expiry)>`:
 * the MAC turns away forged or altered cookies without a database read; the console_sessions row
 * ends the session at sign-out and ties it to its API key, whose revocation, expiry or disabled
 * user ends the session as well (checked on every request, as for Bearer keys).
 */
export class ConsoleSessions {
  private readonly secret: Buffer;
  private readonly ttlMs: number;
  constructor(
    private readonly db: Db,
    private readonly verifier: ApiKeyVerifier,
    opts: { secret: string | Buffer; ttlMs?: number; now?: () => Date },
  ) {
    this.secret = Buffer.isBuffer(opts.secret) ? opts.secret : Buffer.from(opts.secret, 'utf8');
    if (this.secret.length < 16) throw new VerbatimError('CONFIG_INVALID', 'console session secret is shorter than 16 bytes', { hint: 'Use a long random secret.' });
    this.ttlMs = opts.ttlMs ?? SESSION_TTL_MS;
    this.now = opts.now ?? (() => new Date());
  }
  private readonly now: () => Date;

  private mac(id: string, exp: number): string {
    return createHmac('sha256', this.secret).update(`v1.${id}.${exp}`).digest('base64url');
  }

  /** Opens a session for a verified key; returns the cookie value. */
  async open(p: Principal, clientAddress: string | null): Promise<{ cookie: string; sessionId: string; expiresAt: Date }> {
    const id = randomBytes(18).toString('base64url');
    const expiresAt = new Date(this.now().getTime() + this.ttlMs);
    await this.db.insertInto('console_sessions').values({ id, key_id: p.keyId, user_id: p.userId, expires_at: expiresAt, client_address: clientAddress }).execute();
    const exp = expiresAt.getTime();
    return { cookie: `${id}.${exp}.${this.mac(id, exp)}`, sessionId: id, expiresAt };
  }

  /** Opens a session for a user the IdP signed in (no API key: the IdP session and the user's state bound it). */
  async openSso(user: { userId: string; name: string; role: Role }, idp: { issuer: string; subject: string; sid: string | null; idToken: string }, clientAddress: string | null): Promise<{ cookie: string; sessionId: string; expiresAt: Date }> {
    const id = randomBytes(18).toString('base64url');
    const expiresAt = new Date(this.now().getTime() + this.ttlMs);
    await this.db
      .insertInto('console_sessions')
      .values({ id, key_id: null, user_id: user.userId, expires_at: expiresAt, client_address: clientAddress, method: 'sso', idp_issuer: idp.issuer, idp_subject: idp.subject, idp_sid: idp.sid, id_token: idp.idToken })
      .execute();
    const exp = expiresAt.getTime();
    return { cookie: `${id}.${exp}.${this.mac(id, exp)}`, sessionId: id, expiresAt };
  }

  async verify(cookie: string): Promise<Principal> {
    const m = /^([A-Za-z0-9_-]{24})\.(\d{13})\.([A-Za-z0-9_-]{43})$/.exec(cookie);
    if (!m) throw unauthorized('session_invalid', 'the session cookie is malformed');
    const [, id, expText, mac] = m as unknown as [string, string, string, string];
    const exp = Number(expText);
    const expected = Buffer.from(this.mac(id, exp));
    if (!timingSafeEqual(expected, Buffer.from(mac))) throw unauthorized('session_invalid', 'the session cookie does not carry a valid signature');
    if (exp <= this.now().getTime()) throw unauthorized('session_expired', `the console session expired at ${new Date(exp).toISOString()}`);
    const row = await this.db.selectFrom('console_sessions').select(['key_id', 'user_id', 'ended_at', 'expires_at', 'idp_issuer', 'idp_subject']).where('id', '=', id).executeTakeFirst();
    if (!row) throw unauthorized('session_invalid', 'unknown console session');
    if (row.ended_at) {
      // Ended by its key's revocation or its user's disabling: say that, rather than "signed out".
      if (row.key_id) await this.verifier.byKeyId(row.key_id, { touch: false });
      else {
        const user = await this.db.selectFrom('users').select('disabled_at').where('id', '=', row.user_id).executeTakeFirst();
        if (user?.disabled_at) throw unauthorized('disabled', 'the user of this console session is disabled');
      }
      throw unauthorized('session_ended', `the console session was signed out at ${new Date(row.ended_at).toISOString()}`);
    }
    if (new Date(row.expires_at).getTime() <= this.now().getTime()) throw unauthorized('session_expired', `the console session expired at ${new Date(row.expires_at).toISOString()}`);
    if (row.key_id) return { ...(await this.verifier.byKeyId(row.key_id)), sessionId: id };
    // An SSO session: the user's current role (re-mapped at each sign-in) and state decide.
    const user = await this.db.selectFrom('users').select(['id', 'name', 'role', 'disabled_at']).where('id', '=', row.user_id).executeTakeFirst();
    if (!user || user.disabled_at) throw unauthorized('disabled', 'the user of this console session is disabled');
    return { userId: user.id, userName: user.name, role: user.role, sessionId: id, sso: { issuer: row.idp_issuer!, subject: row.idp_subject! } };
  }

  /** The ID token of an SSO session (the IdP's sign-out takes it as id_token_hint); null for a key session. */
  async idTokenOf(sessionId: string): Promise<string | null> {
    const row = await this.db.selectFrom('console_sessions').select('id_token').where('id', '=', sessionId).executeTakeFirst();
    return row?.id_token ?? null;
  }

  /**
   * Ends the sessions an IdP logout names (back-channel logout): those of its session id when it
   * names one, else every session of the subject. Returns the ended sessions' users.
   */
  async endIdpSessions(idp: { issuer: string; subject: string | null; sid: string | null }): Promise<{ ended: number; userIds: string[] }> {
    let q = this.db.updateTable('console_sessions').set({ ended_at: this.now() }).where('method', '=', 'sso').where('idp_issuer', '=', idp.issuer).where('ended_at', 'is', null);
    if (idp.sid) q = q.where('idp_sid', '=', idp.sid);
    if (idp.subject) q = q.where('idp_subject', '=', idp.subject);
    const rows = await q.returning('user_id').execute();
    return { ended: rows.length, userIds: [...new Set(rows.map((r) => r.user_id))] };
  }

  async end(sessionId: string): Promise<boolean> {
    const r = await this.db.updateTable('console_sessions').set({ ended_at: this.now() }).where('id', '=', sessionId).where('ended_at', 'is', null).executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }
}

/** The value of one cookie in a Cookie header. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

// ---------------------------------------------------------------- rate limit of failed credentials

/**
 * Counts failed credential guesses per client address in a sliding window; at the limit every
 * credentialed request from that address is refused until the oldest failure leaves the window
 * (refusing only wrong guesses would tell a guesser which guess was right).
 */
export class FailedAuthLimiter {
  private readonly failures = new Map<string, number[]>();
  constructor(
    private readonly opts: { limit: number; windowMs?: number; now?: () => Date },
  ) {}

  private window(): number {
    return this.opts.windowMs ?? 60_000;
  }

  private recent(address: string, at: number): number[] {
    const list = (this.failures.get(address) ?? []).filter((t) => t > at - this.window());
    if (list.length === 0) this.failures.delete(address);
    else this.failures.set(address, list);
    return list;
  }

  /** Throws RATE_LIMITED (details.retryAfterSeconds) while the address is over the limit. */
  check(address: string): void {
    if (this.opts.limit <= 0) return;
    const at = (this.opts.now?.() ?? new Date()).getTime();
    const list = this.recent(address, at);
    if (list.length >= this.opts.limit) {
      const retryAfterSeconds = Math.max(1, Math.ceil((list[list.length - this.opts.limit]! + this.window() - at) / 1000));
      throw new VerbatimError('RATE_LIMITED', `too many failed sign-in attempts from ${address}`, {
        hint: `Wait ${retryAfterSeconds} s, then retry with a valid API key.`,
        details: { retryAfterSeconds, limit: this.opts.limit, windowSeconds: this.window() / 1000 },
      });
    }
  }

  record(address: string): void {
    if (this.opts.limit <= 0) return;
    const at = (this.opts.now?.() ?? new Date()).getTime();
    const list = this.recent(address, at);
    list.push(at);
    this.failures.set(address, list);
    // Bound memory under a spray from many addresses: forget the oldest address.
    if (this.failures.size > 100_000) this.failures.delete(this.failures.keys().next().value!);
  }
}
