import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { VerbatimError } from '../../lib/errors.ts';

/**
 * Short-lived join token: base64url(JSON claims) + "." + base64url(HMAC-SHA256).
 * Minted by the admin API, checked on `join`. No dependency: the format is ours.
 */
const ClaimsSchema = z.object({
  v: z.literal(1),
  room: z.string(),
  sub: z.string(),
  name: z.string(),
  exp: z.number().int(),
  jti: z.string(),
});
export type JoinClaims = z.output<typeof ClaimsSchema>;

export function mintJoinToken(secret: string, c: { room: string; identity: string; name: string; ttlMinutes: number; now?: number }): { token: string; expiresAt: Date } {
  const exp = Math.floor((c.now ?? Date.now()) / 1000) + c.ttlMinutes * 60;
  const claims: JoinClaims = { v: 1, room: c.room, sub: c.identity, name: c.name, exp, jti: randomBytes(9).toString('base64url') };
  const body = Buffer.from(JSON.stringify(claims)).toString('base64url');
  return { token: `${body}.${sign(secret, body)}`, expiresAt: new Date(exp * 1000) };
}

export function verifyJoinToken(secret: string, token: string, now = Date.now()): JoinClaims {
  const dot = token.indexOf('.');
  const invalid = () => new VerbatimError('TOKEN_INVALID', 'join token is malformed or its signature does not match', { hint: 'Ask the meeting host for a new join link.' });
  if (dot <= 0) throw invalid();
  const body = token.slice(0, dot);
  const sig = Buffer.from(token.slice(dot + 1), 'base64url');
  const expected = Buffer.from(sign(secret, body), 'base64url');
  if (sig.length !== expected.length || !timingSafeEqual(sig, expected)) throw invalid();
  let claims: JoinClaims;
  try {
    claims = ClaimsSchema.parse(JSON.parse(Buffer.from(body, 'base64url').toString('utf8')));
  } catch {
    throw invalid();
  }
  if (claims.exp * 1000 <= now) {
    throw new VerbatimError('TOKEN_EXPIRED', `join token expired at ${new Date(claims.exp * 1000).toISOString()}`, { hint: 'Ask the meeting host for a new join link.' });
  }
  return claims;
}

function sign(secret: string, body: string): string {
  return createHmac('sha256', secret).update(body).digest('base64url');
}
