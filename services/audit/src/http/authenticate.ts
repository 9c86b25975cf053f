import type { FastifyRequest } from 'fastify';
import { VerbatimError } from '../../../lib/errors.ts';
import { CSRF_HEADER, GUESS_FAILURES, SESSION_COOKIE, readCookie, type ApiKeyVerifier, type ConsoleSessions, type FailedAuthLimiter, type Principal } from '../auth.ts';

/**
 * Who a request is: the bearer API key, else the console session cookie. Failed guesses count
 * towards the client address's rate limit; a cookie-authenticated change needs the CSRF header.
 */
export function requestAuthenticator(deps: {
  verifier: ApiKeyVerifier;
  sessions: ConsoleSessions;
  limiter: FailedAuthLimiter;
  /** Records the principal of a request refused after its cookie verified (its audit entry names it). */
  setPrincipal(req: FastifyRequest, p: Principal): void;
}): (req: FastifyRequest) => Promise<Principal> {
  const { verifier, sessions, limiter } = deps;
  return async function authenticate(req: FastifyRequest): Promise<Principal> {
    const cookie = readCookie(req.headers.cookie, SESSION_COOKIE);
    if (req.headers.authorization === undefined && !cookie) return verifier.fromHeader(undefined);
    limiter.check(req.ip);
    try {
      if (req.headers.authorization !== undefined) return await verifier.fromHeader(req.headers.authorization);
      const p = await sessions.verify(cookie!);
      // A cross-site page can make the browser send the cookie, but cannot set this header.
      if (req.method !== 'GET' && req.method !== 'HEAD' && req.headers[CSRF_HEADER] !== '1') {
        deps.setPrincipal(req, p);
        throw new VerbatimError('FORBIDDEN', `a cookie-authenticated ${req.method} needs the header ${CSRF_HEADER}: 1`, {
          hint: `Send "${CSRF_HEADER}: 1" with every POST/PUT/PATCH/DELETE made with the session cookie.`,
          details: { reason: 'csrf' },
        });
      }
      return p;
    } catch (err) {
      if (err instanceof VerbatimError && err.code === 'UNAUTHORIZED' && GUESS_FAILURES.has(String((err.details as { reason?: string } | undefined)?.reason))) limiter.record(req.ip);
      throw err;
    }
  };
}
