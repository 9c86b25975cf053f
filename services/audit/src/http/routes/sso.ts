import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import { VerbatimError } from '../../../../lib/errors.ts';
import { readCookie, ROLE_PERMISSIONS } from '../../auth.ts';
import { SSO_FLOW_COOKIE, SSO_PATHS, type OidcRelyingParty } from '../../sso.ts';
import { defineRoute, type AnyRoute, type RouteContext } from '../route-table.ts';
import { sessionCookie } from './auth.ts';

const API = '/api/v1';
const sub = (path: string) => path.slice(API.length);

const StartQuerySchema = z.object({ next: z.string().max(2000).optional().describe('Console path to land on after sign-in (default: the start page).') }).strict();
/** The IdP's authorization response; IdPs add parameters of their own (session_state, ...), which are ignored. */
const CallbackQuerySchema = z.looseObject({
  code: z.string().max(4096).optional(),
  state: z.string().max(1024).optional(),
  iss: z.string().max(2048).optional(),
  error: z.string().max(200).optional(),
  error_description: z.string().max(2000).optional(),
});
const BackchannelBodySchema = z.looseObject({ logout_token: z.string().min(1).max(16_384).describe('The logout token (a JWT signed by the IdP).') });

/** Console sign-in through the organisation's OpenID Connect provider, and the IdP's back-channel logout. */
export function ssoRoutes({ sso, sessions, now, setPrincipal }: RouteContext): AnyRoute[] {
  const rp = (): OidcRelyingParty => {
    if (!sso) throw new VerbatimError('SSO_NOT_CONFIGURED', 'single sign-on is not configured on this server', { hint: 'Sign in with an API key, or ask the operator to set OIDC_ISSUER_URL, OIDC_CLIENT_ID and OIDC_ROLE_MAP.' });
    return sso;
  };
  return [
    defineRoute({
      method: 'GET',
      url: sub(SSO_PATHS.login),
      permissions: [],
      auth: 'none',
      action: 'sso.start',
      status: 302,
      summary: `Starts console sign-in at the OpenID Connect provider: redirects there (authorization code + PKCE) and sets a short-lived flow cookie ${SSO_FLOW_COOKIE}.`,
      query: StartQuerySchema,
      async handler({ req, query }) {
        const { url, flowCookie } = await rp().start(query.next);
        return {
          response: { location: url },
          headers: { location: url, 'set-cookie': flowCookieHeader(req, flowCookie, 600), 'cache-control': 'no-store' },
          audit: { details: { method: 'sso', issuer: rp().opts.issuer } },
        };
      },
    }),
    defineRoute({
      method: 'GET',
      url: sub(SSO_PATHS.callback),
      permissions: [],
      auth: 'none',
      action: 'login',
      status: 302,
      summary: `The OpenID Connect redirect URI: verifies the IdP's answer, maps the groups claim to a role (none: 403 SSO_NO_ROLE, audited login.failed), provisions or updates the user, opens a console session (cookie vb_session) and redirects to the console.`,
      query: CallbackQuerySchema,
      async handler({ req }) {
        const search = req.url.includes('?') ? req.url.slice(req.url.indexOf('?')) : '';
        const id = await rp().finish(search, readCookie(req.headers.cookie, SSO_FLOW_COOKIE));
        const user = await rp().provision(id);
        setPrincipal(req, { userId: user.userId, userName: user.name, role: user.role, sso: { issuer: id.issuer, subject: id.subject } });
        const session = await sessions.openSso(user, id, req.ip);
        const maxAge = Math.max(1, Math.round((session.expiresAt.getTime() - now().getTime()) / 1000));
        return {
          response: { user: { id: user.userId, name: user.name }, role: user.role, permissions: ROLE_PERMISSIONS[user.role], expiresAt: session.expiresAt.toISOString() },
          headers: { location: id.next, 'set-cookie': [sessionCookie(req, session.cookie, maxAge), flowCookieHeader(req, '', 0)], 'cache-control': 'no-store' },
          audit: {
            target: { type: 'user', id: user.userId },
            details: { method: 'sso', issuer: id.issuer, subject: id.subject, groups: id.groups, role: user.role, ...(user.created ? { provisioned: true } : {}), ...(user.previousRole && user.previousRole !== user.role ? { previousRole: user.previousRole } : {}), expiresAt: session.expiresAt.toISOString() },
          },
        };
      },
    }),
    defineRoute({
      method: 'POST',
      url: sub(SSO_PATHS.backchannelLogout),
      permissions: [],
      auth: 'none',
      action: 'logout',
      summary: 'OpenID Connect Back-Channel Logout: the IdP posts a signed logout_token (application/x-www-form-urlencoded); the console sessions of that IdP session (sid) or user (sub) end. Invalid token: 400.',
      query: z.object({}).strict(),
      body: BackchannelBodySchema,
      bodyType: 'application/x-www-form-urlencoded',
      async handler({ body }) {
        const token = await rp().verifyLogoutToken(body.logout_token);
        const { ended, userIds } = await sessions.endIdpSessions(token);
        const [userId] = userIds;
        return {
          response: { ended },
          headers: { 'cache-control': 'no-store' },
          audit: {
            ...(userId ? { target: { type: 'user', id: userId } } : {}),
            details: { method: 'sso-backchannel', issuer: token.issuer, subject: token.subject, sid: token.sid, ended, ...(userIds.length > 1 ? { users: userIds } : {}) },
          },
        };
      },
    }),
  ];
}

/** The flow cookie: Lax, since the IdP's redirect back is a cross-site top-level navigation; only the SSO routes see it. */
function flowCookieHeader(req: FastifyRequest, value: string, maxAgeSeconds: number): string {
  return `${SSO_FLOW_COOKIE}=${value}; Path=${API}/sso/; HttpOnly; SameSite=Lax; Max-Age=${maxAgeSeconds}${req.protocol === 'https' ? '; Secure' : ''}`;
}
