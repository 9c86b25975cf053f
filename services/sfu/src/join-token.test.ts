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

  it('accepts only the canonical encoding: spellings that decode to the same bytes are TOKEN_INVALID', () => {
    const { token } = mintJoinToken(secret, { room: 'r1', identity: 'a', name: 'A', ttlMinutes: 5 });
    const [body, sig] = token.split('.') as [string, string];
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const twin = (s: string) => s.slice(0, -1) + alphabet[alphabet.indexOf(s.at(-1)!) ^ 1];
    // The twin decodes to the very same signature bytes: only re-encoding tells them apart.
    expect(Buffer.from(twin(sig), 'base64url').equals(Buffer.from(sig, 'base64url'))).toBe(true);
    for (const variant of [`${body}.${twin(sig)}`, `${body}.${sig}=`, `${body}.${sig.slice(0, 5)}*${sig.slice(5)}`, `${body} .${sig}`, `${body}.${sig}.`]) {
      expect(() => verifyJoinToken(secret, variant), variant.slice(-8)).toThrow(expect.objectContaining({ code: 'TOKEN_INVALID' }));
    }
    expect(verifyJoinToken(secret, token).sub).toBe('a');
  });

  it('holds claims to the admin API patterns: identities, names and rooms it would refuse are TOKEN_INVALID', () => {
    for (const c of [{ identity: '../x', name: 'X', room: 'r1' }, { identity: 'a', name: 'A\u0000', room: 'r1' }, { identity: 'a', name: '\uD800', room: 'r1' }, { identity: 'a', name: 'A', room: 'r/1' }]) {
      const { token } = mintJoinToken(secret, { ...c, ttlMinutes: 5 });
      expect(() => verifyJoinToken(secret, token), JSON.stringify(c)).toThrow(expect.objectContaining({ code: 'TOKEN_INVALID' }));
    }
  });
});
