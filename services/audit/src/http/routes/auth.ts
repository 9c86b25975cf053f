import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import { VerbatimError } from '../../../../lib/errors.ts';
import { CSRF_HEADER, GUESS_FAILURES, ROLE_PERMISSIONS, SESSION_COOKIE, type Principal } from '../../auth.ts';
import { defineRoute, type AnyRoute, type RouteContext } from '../route-table.ts';
import { EmptyQuerySchema } from '../schemas.ts';

export const LoginBodySchema = z.object({ apiKey: z.string().min(1).max(200).describe('An API key vb_<prefix>_<secret>.') }).strict();

/** Who the caller is, and the console's sign-in and sign-out. */
export function authRoutes({ now, verifier, sessions, limiter, setPrincipal, sso }: RouteContext): AnyRoute[] {
  return [
    defineRoute({
      method: 'GET',
      url: '/me',
      permissions: [],
      action: 'me.view',
      summary: 'Who the caller is: user, role and permissions.',
      query: EmptyQuerySchema,
      async handler({ principal }) {
        return {
          response: { user: { id: principal.userId, name: principal.userName }, role: principal.role, permissions: ROLE_PERMISSIONS[principal.role], via: principal.sso ? 'sso' : principal.sessionId ? 'session' : 'key', ...(principal.keyPrefix ? { keyPrefix: principal.keyPrefix } : {}) },
          audit: { target: { type: 'user', id: principal.userId } },
        };
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/login',
      permissions: [],
      auth: 'none',
      action: 'login',
      summary: `Browser sign-in: an API key in the body opens a console session (HttpOnly, SameSite=Strict cookie ${SESSION_COOKIE}, 8 h). Cookie-authenticated POST/PUT/PATCH/DELETE must send ${CSRF_HEADER}: 1.`,
      query: EmptyQuerySchema,
      body: LoginBodySchema,
      async handler({ req, body }) {
        limiter.check(req.ip);
        let principal: Principal;
        try {
          principal = await verifier.verify(body.apiKey.trim());
        } catch (err) {
          if (err instanceof VerbatimError && GUESS_FAILURES.has(String((err.details as { reason?: string } | undefined)?.reason))) limiter.record(req.ip);
          throw err;
        }
        setPrincipal(req, principal);
        const session = await sessions.open(principal, req.ip);
        const maxAge = Math.max(1, Math.round((session.expiresAt.getTime() - now().getTime()) / 1000));
        return {
          response: { user: { id: principal.userId, name: principal.userName }, role: principal.role, permissions: ROLE_PERMISSIONS[principal.role], expiresAt: session.expiresAt.toISOString() },
          headers: { 'set-cookie': sessionCookie(req, session.cookie, maxAge) },
          audit: { target: { type: 'user', id: principal.userId }, details: { via: 'login', expiresAt: session.expiresAt.toISOString() } },
        };
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/logout',
      permissions: [],
      action: 'logout',
      summary: "Ends the console session of the cookie (and clears it). A session opened by SSO also answers endSessionUrl: the IdP's sign-out, for the browser to go to.",
      query: EmptyQuerySchema,
      async handler({ req, principal }) {
        const idToken = principal.sso && principal.sessionId ? await sessions.idTokenOf(principal.sessionId) : null;
        const ended = principal.sessionId ? await sessions.end(principal.sessionId) : false;
        // RP-initiated logout: the IdP's session ends too, and its back-channel logout reaches every app of it.
        const endSessionUrl = principal.sso && sso ? await sso.endSessionUrl(idToken, new URL('/console/signin', sso.redirectUrl).href).catch(() => undefined) : undefined;
        return {
          response: { ended, ...(endSessionUrl ? { endSessionUrl } : {}) },
          headers: { 'set-cookie': sessionCookie(req, '', 0) },
          audit: { target: { type: 'user', id: principal.userId }, details: { ended, ...(principal.sso ? { method: 'sso', issuer: principal.sso.issuer, subject: principal.sso.subject, idpLogout: endSessionUrl !== undefined } : {}) } },
        };
      },
    }),
  ];
}

/** The console session cookie (empty value + Max-Age=0 clears it). Secure when the request came over HTTPS. */
export function sessionCookie(req: FastifyRequest, value: string, maxAgeSeconds: number): string {
  return `${SESSION_COOKIE}=${value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAgeSeconds}${req.protocol === 'https' ? '; Secure' : ''}`;
}
