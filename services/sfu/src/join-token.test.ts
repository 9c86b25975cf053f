import { describe, expect, it } from 'vitest';
import { mintJoinToken, verifyJoinToken } from './join-token.ts';

const secret = 'x'.repeat(32);

describe('join tokens', () => {
  it('round-trips claims', () => {
    const { token, expiresAt } = mintJoinToken(secret, { room: 'r1', identity: 'alice', name: 'Alice', ttlMinutes: 5 });
    const claims = verifyJoinToken(secret, token);
    expect(claims).toMatchObject({ room: 'r1', sub: 'alice', name: 'Alice' });
    expect(expiresAt.getTime() - Date.now()).toBeGreaterThan(4 * 60_000);
  });

  it('rejects expired tokens with TOKEN_EXPIRED', () => {
    const { token } = mintJoinToken(secret, { room: 'r1', identity: 'a', name: 'A', ttlMinutes: 1, now: Date.now() - 120_000 });
    expect(() => verifyJoinToken(secret, token)).toThrow(expect.objectContaining({ code: 'TOKEN_EXPIRED' }));
  });

  it('rejects forged, altered or garbage tokens with TOKEN_INVALID', () => {
    const { token } = mintJoinToken(secret, { room: 'r1', identity: 'a', name: 'A', ttlMinutes: 5 });
    expect(() => verifyJoinToken('y'.repeat(32), token)).toThrow(expect.objectContaining({ code: 'TOKEN_INVALID' }));
    const [body, sig] = token.split('.');
    const altered = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(body!, 'base64url').toString()), room: 'r2' })).toString('base64url');
    expect(() => verifyJoinToken(secret, `${altered}.${sig}`)).toThrow(expect.objectContaining({ code: 'TOKEN_INVALID' }));
    for (const junk of ['', '.', 'abc', 'a.b', `${body}.`]) {
      expect(() => verifyJoinToken(secret, junk)).toThrow(expect.objectContaining({ code: 'TOKEN_INVALID' }));
    }
  });
});
