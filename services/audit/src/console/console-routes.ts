import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { bundleBrowserScript } from '../../../lib/browser-bundle.ts';
import { VerbatimError } from '../../../lib/errors.ts';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { ROLE_PERMISSIONS } from '../auth.ts';
import { SESSION_ID_RE } from '../http/schemas.ts';
import { SSO_PATHS } from '../sso.ts';

/**
 * The web console: one static page plus its bundle, served by the compliance service
 * outside /api/v1. The page is public and holds no data; everything it shows comes
 * from the authorised, audited API (cookie session after sign-in), so hiding a control
 * is convenience and the API's refusal is the guard.
 */

const clientDir = fileURLToPath(new URL('./client/', import.meta.url));

export interface ConsoleAssets {
  js: string;
  css: string;
}

// The bundle is the same for every app built in this process (tests build many): build it once.
let assets: Promise<ConsoleAssets> | undefined;

export function buildConsoleAssets(): Promise<ConsoleAssets> {
  assets ??= (async () => {
    const [css, bundle] = await Promise.all([
      readFile(`${clientDir}app.css`, 'utf8'),
      bundleBrowserScript(`${clientDir}app.ts`),
    ]);
    return { js: bundle, css };
  })();
  assets.catch(() => {
    assets = undefined; // a failed build is retried by the next app, not cached
  });
  return assets;
}

function consoleHtml(opts: { sso: boolean }): string {
  // The role → permission table travels with the page so navigation follows auth.ts without a copy of it.
  const rbac = JSON.stringify(ROLE_PERMISSIONS).replace(/</g, '\\u003c');
  // Whether the sign-in page offers "Sign in with SSO" (the server has an OpenID Connect provider).
  const signIn = JSON.stringify({ sso: opts.sso ? SSO_PATHS.login : null });
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Verbatim console</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/console/app.css">
<script type="application/json" id="rbac">${rbac}</script>
<script type="application/json" id="signin-options">${signIn}</script>
<script type="module" src="/console/app.js"></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header id="top"></header>
<main id="main" tabindex="-1"><noscript>The Verbatim console needs JavaScript.</noscript></main>
<div id="live" class="visually-hidden" aria-live="polite"></div>
</body>
</html>
`;
}

const CSP = ["default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "media-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'"].join('; ');

function secure(reply: FastifyReply): FastifyReply {
  return reply.header('content-security-policy', CSP).header('x-content-type-options', 'nosniff').header('referrer-policy', 'same-origin').header('x-frame-options', 'DENY');
}

export interface ConsoleOptions {
  /** Build the bundle before the server listens (default) — a broken bundle then fails start-up, not the first visit. */
  eager?: boolean;
  /** Offer "Sign in with SSO" on the sign-in page. */
  sso?: boolean;
}

/**
 * Serves GET /console/ (and every /console/* client route) as the console page,
 * /console/app.js and /console/app.css, and turns search hits' play links
 * (/play/<session>?t=<seconds>) into the session page at that moment.
 */
export function registerConsole(app: FastifyInstance, opts: ConsoleOptions = {}): void {
  void app.register(async (scope) => {
    const ready = opts.eager === false ? undefined : await buildConsoleAssets();
    const get = async () => ready ?? (await buildConsoleAssets());
    const html = consoleHtml({ sso: opts.sso ?? false });
    const page = async (_req: unknown, reply: FastifyReply) => secure(reply).type('text/html; charset=utf-8').header('cache-control', 'no-store').send(html);

    scope.get('/console', async (_req, reply) => reply.redirect('/console/', 301));
    scope.get('/console/', page);
    scope.get('/console/app.js', async (_req, reply) => secure(reply).type('text/javascript; charset=utf-8').header('cache-control', 'no-cache').send((await get()).js));
    scope.get('/console/app.css', async (_req, reply) => secure(reply).type('text/css; charset=utf-8').header('cache-control', 'no-cache').send((await get()).css));
    scope.get('/console/*', page);
    scope.get<{ Params: { session: string }; Querystring: Record<string, string | undefined> }>('/play/:session', async (req, reply) => {
      const { session } = req.params;
      // Thrown, not sent: the server's error handler answers and audits every refusal.
      if (!SESSION_ID_RE.test(session)) throw new VerbatimError('BAD_REQUEST', 'invalid session id', { hint: 'Play links look like /play/<session>?t=<seconds>.' });
      const t = req.query.t;
      const seconds = t !== undefined && /^\d{1,7}(\.\d{1,3})?$/.test(t) ? `?t=${t}` : '';
      return reply.redirect(`/console/sessions/${encodeURIComponent(session)}${seconds}`, 302);
    });
  });
}
