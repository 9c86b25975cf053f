import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTVerifyGetKey } from 'jose';
import type { Kysely } from 'kysely';
import * as oidc from 'openid-client';
import { z } from 'zod';
import type { Database } from '../../../db/schema.ts';
import { isLoopbackHost } from '../../lib/config.ts';
import { toStorable } from '../../lib/contracts/storable-text.ts';
import { VerbatimError } from '../../lib/errors.ts';
import type { Role } from './auth.ts';

/**
 * Console sign-in through the organisation's OpenID Connect provider (authorization code flow
 * with PKCE, openid-client). The IdP's groups claim decides the role (OIDC_ROLE_MAP, first
 * matching pair wins) at every sign-in; a first sign-in provisions the user, keyed by the IdP
 * identity (iss, sub). Back-channel logout tokens from the IdP are verified here (JWKS of the
 * issuer); ending the sessions they name is ConsoleSessions' job.
 */

export interface SsoOptions {
  issuer: string;
  clientId: string;
  /** Unset: a public client (PKCE is the proof). */
  clientSecret?: string;
  /** Registered at the IdP. Unset: <the server's own URL>/api/v1/sso/callback. */
  redirectUrl?: string;
  scopes: string;
  groupsClaim: string;
  roleMap: readonly { group: string; role: Role }[];
}

export const SSO_FLOW_COOKIE = 'vb_sso';
export const SSO_PATHS = { login: '/api/v1/sso/login', callback: '/api/v1/sso/callback', backchannelLogout: '/api/v1/sso/backchannel-logout' } as const;
/** How long the browser may spend at the IdP between "Sign in with SSO" and the callback. */
const FLOW_TTL_MS = 10 * 60_000;
const BACKCHANNEL_EVENT = 'http://schemas.openid.net/event/backchannel-logout';

/** Who the IdP says signed in, and the role their groups map to. */
export interface SsoIdentity {
  issuer: string;
  subject: string;
  name: string;
  groups: string[];
  role: Role;
  /** The IdP's session id (`sid`), when it sends one: back-channel logout names it. */
  sid: string | null;
  idToken: string;
  /** Where in the console the browser goes after sign-in. */
  next: string;
}

const FlowSchema = z.object({ state: z.string(), nonce: z.string(), verifier: z.string(), next: z.string(), exp: z.number() }).strict();
const GroupsSchema = z.union([z.array(z.string()), z.string().transform((g) => [g])]);
const LogoutTokenSchema = z.looseObject({
  iss: z.string(),
  sub: z.string().optional(),
  sid: z.string().optional(),
  events: z.looseObject({ [BACKCHANNEL_EVENT]: z.looseObject({}) }),
  nonce: z.never({ message: 'a logout token must not carry a nonce' }).optional(),
});

/** A console deep link to return to after sign-in; anything else is the start page. */
export function safeNext(next: string | undefined): string {
  return next && /^\/console\/[^\\]*$/.test(next) && !next.startsWith('/console/signin') && !next.includes('//') ? next : '/console/';
}

export class OidcRelyingParty {
  private configuration: Promise<oidc.Configuration> | undefined;
  private jwks: JWTVerifyGetKey | undefined;
  private baseUrl: string | undefined;

  constructor(
    private readonly db: Kysely<Database>,
    readonly opts: SsoOptions,
    private readonly flowSecret: Buffer,
    private readonly now: () => Date = () => new Date(),
  ) {}

  /** The server's own URL once it listens (the redirect URL derives from it when none is configured). */
  setBaseUrl(url: string): void {
    this.baseUrl = url;
  }

  get redirectUrl(): string {
    if (this.opts.redirectUrl) return this.opts.redirectUrl;
    if (!this.baseUrl) throw new VerbatimError('SSO_FAILED', 'the SSO redirect URL is not known yet', { hint: 'Set OIDC_REDIRECT_URL or AUDIT_PUBLIC_URL.' });
    return new URL(SSO_PATHS.callback, this.baseUrl).href;
  }

  /** Discovery, once; a failed one is retried by the next sign-in. */
  private config(): Promise<oidc.Configuration> {
    this.configuration ??= (async () => {
      const issuer = new URL(this.opts.issuer);
      const auth = this.opts.clientSecret !== undefined ? oidc.ClientSecretBasic(this.opts.clientSecret) : oidc.None();
      // Plain http only to a loopback IdP (config validation refuses it elsewhere).
      const execute = issuer.protocol === 'http:' && isLoopbackHost(issuer.hostname) ? [oidc.allowInsecureRequests] : [];
      return oidc.discovery(issuer, this.opts.clientId, undefined, auth, { execute, timeout: 10 });
    })();
    this.configuration.catch(() => {
      this.configuration = undefined;
      this.jwks = undefined;
    });
    return this.configuration.catch((err: unknown) => {
      throw idpError(`the OpenID Connect provider ${this.opts.issuer} could not be discovered`, err);
    });
  }

  /** The IdP's authorization URL (PKCE S256, state, nonce) and the signed flow cookie that remembers them. */
  async start(next: string | undefined): Promise<{ url: string; flowCookie: string }> {
    const config = await this.config();
    const verifier = oidc.randomPKCECodeVerifier();
    const flow = { state: oidc.randomState(), nonce: oidc.randomNonce(), verifier, next: safeNext(next), exp: this.now().getTime() + FLOW_TTL_MS };
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: this.redirectUrl,
      scope: this.opts.scopes,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state: flow.state,
      nonce: flow.nonce,
    });
    const payload = Buffer.from(JSON.stringify(flow)).toString('base64url');
    return { url: url.href, flowCookie: `${payload}.${this.mac(payload)}` };
  }

  private mac(payload: string): string {
    return createHmac('sha256', this.flowSecret).update(`sso-flow.v1.${payload}`).digest('base64url');
  }

  private readFlow(cookie: string | undefined): z.infer<typeof FlowSchema> {
    const refused = (why: string) =>
      new VerbatimError('BAD_REQUEST', `SSO callback without a valid sign-in in progress: ${why}`, {
        hint: 'Start again with "Sign in with SSO" on the console sign-in page (the sign-in must finish within 10 minutes, in the same browser).',
        details: { reason: 'sso_flow' },
      });
    const m = cookie ? /^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{43})$/.exec(cookie) : null;
    if (!m) throw refused('no flow cookie');
    if (!timingSafeEqual(Buffer.from(this.mac(m[1]!)), Buffer.from(m[2]!))) throw refused('the flow cookie does not carry a valid signature');
    const flow = FlowSchema.safeParse(JSON.parse(Buffer.from(m[1]!, 'base64url').toString('utf8')));
    if (!flow.success) throw refused('the flow cookie is malformed');
    if (flow.data.exp <= this.now().getTime()) throw refused('the sign-in took too long');
    return flow.data;
  }

  /**
   * The authorization response at the redirect URL → the verified identity and its role. Throws
   * SSO_NO_ROLE (details: issuer, subject, groups) when no group maps to a role.
   */
  async finish(search: string, flowCookie: string | undefined): Promise<SsoIdentity> {
    const flow = this.readFlow(flowCookie);
    const config = await this.config();
    const current = new URL(this.redirectUrl);
    current.search = search;
    let tokens: Awaited<ReturnType<typeof oidc.authorizationCodeGrant>>;
    try {
      tokens = await oidc.authorizationCodeGrant(config, current, { pkceCodeVerifier: flow.verifier, expectedState: flow.state, expectedNonce: flow.nonce, idTokenExpected: true });
    } catch (err) {
      throw idpError('the sign-in at the OpenID Connect provider did not complete', err);
    }
    const claims = tokens.claims()!;
    let profile: Record<string, unknown> = claims;
    // Many IdPs put groups and the name only in userinfo; what the ID token says wins.
    if (config.serverMetadata().userinfo_endpoint && tokens.access_token) {
      try {
        profile = { ...(await oidc.fetchUserInfo(config, tokens.access_token, claims.sub)), ...claims };
      } catch (err) {
        if (claims[this.opts.groupsClaim] === undefined) throw idpError('the userinfo of the signed-in user could not be read', err);
      }
    }
    const parsed = GroupsSchema.safeParse(profile[this.opts.groupsClaim] ?? []);
    const groups = parsed.success ? parsed.data.map((g) => toStorable(g, 200)).slice(0, 200) : [];
    const issuer = claims.iss;
    const subject = claims.sub;
    const role = this.roleFor(groups);
    if (!role) {
      throw new VerbatimError('SSO_NO_ROLE', `none of the groups of ${subject} at ${issuer} maps to a Verbatim role`, {
        hint: `Ask your identity provider's admin to add you to one of the groups ${this.opts.roleMap.map((r) => `"${r.group}"`).join(', ')} (claim "${this.opts.groupsClaim}"), then sign in again.`,
        details: { method: 'sso', issuer, subject, groups, groupsClaim: this.opts.groupsClaim },
      });
    }
    const nameClaim = [profile.name, profile.preferred_username, profile.email].find((v): v is string => typeof v === 'string' && v.trim() !== '');
    return {
      issuer,
      subject,
      name: toStorable(nameClaim ?? subject, 200),
      groups,
      role,
      sid: typeof claims.sid === 'string' ? claims.sid : null,
      idToken: tokens.id_token!,
      next: flow.next,
    };
  }

  /** The first pair of OIDC_ROLE_MAP whose group the user has. */
  roleFor(groups: readonly string[]): Role | undefined {
    return this.opts.roleMap.find((r) => groups.includes(r.group))?.role;
  }

  /**
   * The user of an IdP identity: provisioned at the first sign-in, renamed and re-roled at each
   * one. A disabled user stays disabled (UNAUTHORIZED).
   */
  async provision(id: SsoIdentity): Promise<{ userId: string; name: string; role: Role; created: boolean; previousRole: Role | null }> {
    return this.db.transaction().execute(async (trx) => {
      const row = await trx.selectFrom('users').select(['id', 'role', 'disabled_at']).where('external_issuer', '=', id.issuer).where('external_subject', '=', id.subject).forUpdate().executeTakeFirst();
      if (row?.disabled_at) {
        throw new VerbatimError('UNAUTHORIZED', `the user of ${id.subject} at ${id.issuer} is disabled`, { hint: 'Ask an admin to enable your user.', details: { reason: 'disabled', method: 'sso' } });
      }
      if (row) {
        await trx.updateTable('users').set({ name: id.name, role: id.role }).where('id', '=', row.id).execute();
        return { userId: row.id, name: id.name, role: id.role, created: false, previousRole: row.role };
      }
      const userId = `usr_${randomUUID()}`;
      await trx.insertInto('users').values({ id: userId, name: id.name, role: id.role, external_issuer: id.issuer, external_subject: id.subject }).execute();
      return { userId, name: id.name, role: id.role, created: true, previousRole: null };
    });
  }

  /** Where the browser goes to sign out at the IdP too (RP-initiated logout); undefined when the IdP has no end_session_endpoint. */
  async endSessionUrl(idToken: string | null, postLogoutRedirect: string): Promise<string | undefined> {
    const config = await this.config();
    if (!config.serverMetadata().end_session_endpoint) return undefined;
    return oidc.buildEndSessionUrl(config, { post_logout_redirect_uri: postLogoutRedirect, client_id: this.opts.clientId, ...(idToken ? { id_token_hint: idToken } : {}) }).href;
  }

  /**
   * Verifies a back-channel logout token (OpenID Connect Back-Channel Logout 1.0, section 2.6):
   * signed by the issuer's keys, for this client, fresh, with the logout event, a sub or sid,
   * and no nonce. Throws BAD_REQUEST (the spec's 400) otherwise.
   */
  async verifyLogoutToken(token: string): Promise<{ issuer: string; subject: string | null; sid: string | null }> {
    const config = await this.config();
    const meta = config.serverMetadata();
    if (!meta.jwks_uri) throw new VerbatimError('SSO_FAILED', 'the IdP publishes no jwks_uri to verify logout tokens with', { hint: 'Check the IdP configuration.' });
    this.jwks ??= createRemoteJWKSet(new URL(meta.jwks_uri));
    const refused = (why: string, cause?: unknown) => new VerbatimError('BAD_REQUEST', `invalid logout token: ${why}`, { hint: 'Only the configured OpenID Connect provider sends back-channel logout tokens here.', details: { reason: 'logout_token' }, cause });
    let payload: unknown;
    try {
      ({ payload } = await jwtVerify(token, this.jwks, { issuer: meta.issuer, audience: this.opts.clientId, requiredClaims: ['iat'], maxTokenAge: '5 minutes', clockTolerance: 60, currentDate: this.now() }));
    } catch (err) {
      if (err instanceof joseErrors.JOSEError) throw refused(err.message, err);
      throw idpError('the keys of the OpenID Connect provider could not be read', err);
    }
    const claims = LogoutTokenSchema.safeParse(payload);
    if (!claims.success) throw refused(claims.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
    if (!claims.data.sub && !claims.data.sid) throw refused('it names neither sub nor sid');
    return { issuer: claims.data.iss, subject: claims.data.sub ?? null, sid: claims.data.sid ?? null };
  }
}

function idpError(message: string, err: unknown): VerbatimError {
  if (err instanceof VerbatimError) return err;
  const e = err as { message?: string; error?: string; error_description?: string; code?: string };
  const said = e.error ? `${e.error}${e.error_description ? `: ${e.error_description}` : ''}` : (e.message ?? String(err));
  return new VerbatimError('SSO_FAILED', `${message}: ${toStorable(said, 300)}`, {
    hint: 'Try again; if it keeps failing, check OIDC_ISSUER_URL, OIDC_CLIENT_ID/SECRET and the redirect URI registered at the IdP, and that the IdP is reachable from the Verbatim server.',
    details: { ...(e.error ? { idpError: toStorable(e.error, 100) } : {}), ...(e.code ? { cause: toStorable(e.code, 100) } : {}) },
    cause: err,
  });
}
