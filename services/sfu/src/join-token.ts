import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { DisplayNameSchema, ParticipantIdSchema, RoomIdSchema } from '../../lib/contracts/room.ts';
import { VerbatimError } from '../../lib/errors.ts';

/**
 * Short-lived join token: base64url(JSON claims) + "." + base64url(HMAC-SHA256).
 * Minted by the admin API, checked on `join`. No dependency: the format is ours.
 * Claims are held to the same patterns as the admin API's mint body, so a token minted
 * by an older build (or by anyone holding the secret) cannot smuggle in what mint refuses.
 */
const ClaimsSchema = z
  .object({
    v: z.literal(1),
    room: RoomIdSchema,
    sub: ParticipantIdSchema,
    name: DisplayNameSchema,
    exp: z.number().int(),
    jti: z.string().regex(/^[A-Za-z0-9_-]{8,64}$/),
    /** Set only for hosts (tokens without it, older ones included, are participants). */
    role: z.literal('host').optional(),
  })
  .strict();
export type JoinClaims = z.output<typeof ClaimsSchema>;

export function mintJoinToken(secret: string, c: { room: string; identity: string; name: string; ttlMinutes: number; now?: number; host?: boolean }): { token: string; expiresAt: Date; jti: string } {
  const exp = Math.floor((c.now ?? Date.now()) / 1000) + c.ttlMinutes * 60;
  const jti = randomBytes(9).toString('base64url');
  const claims: JoinClaims = { v: 1, room: c.room, sub: c.identity, name: c.name, exp, jti, ...(c.host ? { role: 'host' as const } : {}) };
  const body = Buffer.from(JSON.stringify(claims)).toString('base64url');
  return { token: `${body}.${sign(secret, body)}`, expiresAt: new Date(exp * 1000), jti };
}

export function verifyJoinToken(secret: string, token: string, now = Date.now()): JoinClaims {
  const invalid = (why: string) => new VerbatimError('TOKEN_INVALID', `join token is invalid: ${why}`, { hint: 'Ask the meeting host for a new join link.' });
  const parts = token.split('.');
  if (parts.length !== 2 || !parts[0] || !parts[1]) throw invalid('malformed');
  const [body, sigText] = parts as [string, string];
  // Canonical encoding only: Node's base64url decoder ignores stray characters and the unused
  // low bits of the last character, so several spellings decode to the same bytes. Only the
  // spelling we mint is accepted, so a token has exactly one form (and one jti to spend).
  const sig = Buffer.from(sigText, 'base64url');
  if (sig.toString('base64url') !== sigText || Buffer.from(body, 'base64url').toString('base64url') !== body) throw invalid('not canonically encoded');
  const expected = Buffer.from(sign(secret, body), 'base64url');
  if (sig.length !== expected.length || !timingSafeEqual(sig, expected)) throw invalid('signature does not match');
  let claims: JoinClaims;
  try {
    claims = ClaimsSchema.parse(JSON.parse(Buffer.from(body, 'base64url').toString('utf8')));
  } catch {
    throw invalid('its claims are malformed (identity, display name or room not allowed)');
  }
  if (claims.exp * 1000 <= now) {
    throw new VerbatimError('TOKEN_EXPIRED', `join token expired at ${new Date(claims.exp * 1000).toISOString()}`, { hint: 'Ask the meeting host for a new join link.' });
  }
  return claims;
}

function sign(secret: string, body: string): string {
  return createHmac('sha256', secret).update(body).digest('base64url');
}
