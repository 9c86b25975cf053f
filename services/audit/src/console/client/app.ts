/// <reference lib="dom" />
import { api, ApiError, setUnauthorizedHandler, type Me } from './api.ts';
import { clear, field, fill, h, stackable } from './dom.ts';
import { errorBox, setRetry } from './errors.ts';
import { renderAudit, renderConsent } from './pages-auditor.ts';
import { renderKeys } from './pages-keys.ts';
import { renderRecorders } from './pages-recorders.ts';
import { renderErasure, renderExports, renderHolds, renderPolicies } from './pages-manage.ts';
import { renderReview, renderReviewItem, renderReviewReport } from './pages-review.ts';
import { renderSearch } from './pages-search.ts';
import { renderSession, renderSessionLookup } from './pages-session.ts';

/**
 * The console shell: sign-in, role-based navigation and a small history router over
 * /console/*. Navigation lists only what the signed-in role may use (from GET /me);
 * the API refuses the rest anyway, and a refusal is shown as such.
 */

export interface Ctx {
  me: Me;
  can(permission: string): boolean;
  main: HTMLElement;
  params: Record<string, string>;
  query: URLSearchParams;
  navigate(path: string, opts?: { replace?: boolean }): void;
  /** Runs when the page is left (stops polls, pauses media). */
  onLeave(fn: () => void): void;
  announce(message: string): void;
  /** False once the user navigated away: late answers must not paint over the next page. */
  alive(): boolean;
}

interface Route {
  path: string;
  pattern: RegExp;
  keys: string[];
  title: string;
  /** Any one suffices; empty = every signed-in role. */
  permissions: string[];
  nav?: string;
  render(ctx: Ctx): void | Promise<void>;
}

const route = (path: string, title: string, permissions: string[], render: Route['render'], nav?: string): Route => {
  const keys: string[] = [];
  const pattern = new RegExp(`^${path.replace(/:(\w+)/g, (_m, k: string) => (keys.push(k), '([^/]+)'))}/?$`);
  return { path, pattern, keys, title, permissions, render, ...(nav ? { nav } : {}) };
};

const ROUTES: Route[] = [
  route('/console/search', 'Search transcripts', ['recordings.search'], renderSearch, 'Search'),
  route('/console/review', 'Review queue', ['review.read'], renderReview, 'Review'),
  route('/console/review/:id', 'Review item', ['review.read'], renderReviewItem),
  route('/console/review-report', 'Review evidence report', ['review.report'], renderReviewReport, 'Review report'),
  route('/console/sessions', 'Open a session', ['sessions.metadata'], renderSessionLookup, 'Sessions'),
  route('/console/sessions/:id', 'Session', ['sessions.metadata'], renderSession),
  route('/console/holds', 'Legal holds', ['holds.manage'], renderHolds, 'Legal holds'),
  route('/console/erasure', 'Erasure requests', ['erasure.manage'], renderErasure, 'Erasure requests'),
  route('/console/exports', 'Exports', ['recordings.export'], renderExports, 'Exports'),
  route('/console/policies', 'Retention policies', ['retention.manage'], renderPolicies, 'Retention policies'),
  route('/console/keys', 'Users and API keys', ['keys.manage'], renderKeys, 'Users & keys'),
  route('/console/audit', 'Audit log', ['audit.read'], renderAudit, 'Audit log'),
  route('/console/consent', 'Consent log', ['consent.read'], renderConsent, 'Consent log'),
  route('/console/recorders', 'Recorders', ['capture.manage', 'capture.read'], renderRecorders, 'Recorders'),
];

const top = document.getElementById('top')!;
const main = document.getElementById('main') as HTMLElement;
const live = document.getElementById('live')!;
let me: Me | null = null;
const leaving: (() => void)[] = [];
let generation = 0;
let flash: string | null = null;

function announce(message: string): void {
  live.textContent = '';
  // A fresh text node after a tick makes screen readers speak repeated messages too.
  setTimeout(() => (live.textContent = message), 30);
}

function can(permission: string): boolean {
  return !!me && me.permissions.includes(permission);
}

function allowed(r: Route): boolean {
  return r.permissions.length === 0 || r.permissions.some(can);
}

/** Each role's start page: its main job. */
const HOME: Record<string, string> = { compliance_officer: '/console/search', admin: '/console/policies', auditor: '/console/audit' };

function home(): string {
  const preferred = me ? HOME[me.role] : undefined;
  if (preferred && ROUTES.some((r) => r.pattern.test(preferred) && allowed(r))) return preferred;
  const first = ROUTES.find((r) => r.nav && allowed(r));
  return first ? first.path : '/console/';
}

export function navigate(path: string, opts: { replace?: boolean } = {}): void {
  if (opts.replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  void render();
}

function renderHeader(): void {
  clear(top);
  const links = me
    ? ROUTES.filter((r) => r.nav && allowed(r)).map((r) => {
        const path = r.path;
        const current = location.pathname === path || location.pathname.startsWith(`${path}/`);
        return h('li', {}, h('a', { href: path, ...(current ? { 'aria-current': 'page' } : {}) }, r.nav));
      })
    : [];
  fill(
    top,
    h('div', { class: 'brand' }, h('a', { href: '/console/' }, 'Verbatim'), h('span', { class: 'sub' }, 'compliance console')),
    me ? h('nav', { 'aria-label': 'Main' }, h('ul', {}, links)) : null,
    me
      ? h(
          'div',
          { class: 'who' },
          h('span', { 'data-testid': 'whoami' }, `${me.user.name} · `, h('span', { class: 'role' }, me.role.replace('_', ' '))),
          h('button', { type: 'button', class: 'link', onclick: () => void signOut() }, 'Sign out'),
        )
      : null,
  );
}

async function signOut(): Promise<void> {
  try {
    const r = await api<{ ended: boolean; endSessionUrl?: string }>('POST', '/logout', undefined, { quiet401: true });
    // Signed in by SSO: sign out at the identity provider too (it returns to the sign-in page).
    if (r.endSessionUrl) return location.assign(r.endSessionUrl);
  } catch {
    // Already signed out or offline: the cookie is cleared or expires anyway.
  }
  me = null;
  flash = 'You are signed out.';
  navigate('/console/signin');
}

/** The console page to go to after sign-in (?next=), if it is one. */
function nextPath(): string | null {
  const next = new URLSearchParams(location.search).get('next');
  return next && next.startsWith('/console/') && !next.startsWith('/console/signin') ? next : null;
}

/** The SSO sign-in route when the server has an identity provider (the page says so). */
const ssoLogin = (JSON.parse(document.getElementById('signin-options')?.textContent ?? '{}') as { sso?: string | null }).sso ?? null;

function renderSignIn(message?: string): void {
  document.title = 'Sign in · Verbatim';
  const key = h('input', { type: 'password', name: 'apiKey', autocomplete: 'current-password', required: true, spellcheck: 'false', placeholder: 'vb_…' });
  const status = h('p', { class: 'form-status', role: 'status' });
  const error = h('div');
  const button = h('button', { type: 'submit' }, 'Sign in');
  const form = h(
    'form',
    {
      class: 'card signin',
      'aria-labelledby': 'signin-title',
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        clear(error);
        button.disabled = true;
        status.textContent = 'Signing in…';
        try {
          me = await api<Me>('POST', '/login', { apiKey: key.value.trim() }, { quiet401: true });
          key.value = '';
          navigate(nextPath() ?? home(), { replace: true });
        } catch (e) {
          status.textContent = '';
          error.append(errorBox(e, e instanceof ApiError && e.status === 401 ? 'That API key was not accepted.' : undefined));
          key.focus();
        } finally {
          button.disabled = false;
        }
      },
    },
    h('h1', { id: 'signin-title' }, 'Sign in'),
    message ? h('p', { class: 'notice', role: 'status' }, message) : null,
    ssoLogin
      ? h(
          'p',
          { class: 'sso' },
          h('a', { class: 'button', href: `${ssoLogin}?${new URLSearchParams({ next: nextPath() ?? '/console/' }).toString()}` }, 'Sign in with SSO'),
          ' with your organisation account, or with an API key:',
        )
      : null,
    h('p', {}, 'Use the API key an admin gave you. The console keeps you signed in with a session cookie for up to 8 hours; the key itself is not stored in the browser.'),
    // Password managers pair a secret with a user name; the key is its own identity.
    h('input', { type: 'text', name: 'username', autocomplete: 'username', value: 'api-key', hidden: true, 'aria-hidden': 'true', tabindex: -1 }),
    field('API key', key, 'Looks like vb_1a2b3c4d_…'),
    button,
    status,
    error,
  );
  clear(main);
  main.append(form);
  key.focus();
}

async function loadMe(): Promise<Me | null> {
  try {
    return await api<Me>('GET', '/me', undefined, { quiet401: true });
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return null;
    throw e;
  }
}

async function render(): Promise<void> {
  const gen = ++generation;
  for (const fn of leaving.splice(0)) fn();
  const path = location.pathname;
  if (path === '/console/signin' || path === '/console/signin/') {
    renderHeader();
    const msg = flash ?? undefined;
    flash = null;
    renderSignIn(msg);
    return;
  }
  if (!me) {
    try {
      me = await loadMe();
    } catch (e) {
      if (gen !== generation) return;
      renderHeader();
      clear(main);
      main.append(h('h1', {}, 'Verbatim console'), errorBox(e));
      return;
    }
    if (gen !== generation) return;
    if (!me) {
      const next = path === '/console/' || path === '/console' ? '' : `?next=${encodeURIComponent(path + location.search)}`;
      history.replaceState(null, '', `/console/signin${next}`);
      renderHeader();
      renderSignIn(flash ?? undefined);
      flash = null;
      return;
    }
  }
  if (path === '/console/' || path === '/console') {
    history.replaceState(null, '', home());
    return render();
  }
  renderHeader();
  clear(main);
  const r = ROUTES.find((x) => x.pattern.test(path));
  if (!r) {
    document.title = 'Not found · Verbatim';
    main.append(h('h1', {}, 'Page not found'), h('p', {}, 'There is no console page at ', h('code', {}, path), '. ', h('a', { href: home() }, 'Go to your start page'), '.'));
    return;
  }
  document.title = `${r.title} · Verbatim`;
  if (!allowed(r)) {
    main.append(
      h('h1', {}, r.title),
      h('div', { class: 'error http-403', role: 'alert' }, h('strong', {}, 'Not allowed for your role'), h('p', {}, `Your role (${me.role.replace('_', ' ')}) cannot use this page. Ask an admin for a key with the right role.`)),
    );
    return;
  }
  const m = r.pattern.exec(path)!;
  const params: Record<string, string> = {};
  r.keys.forEach((k, i) => {
    const raw = m[i + 1]!;
    try {
      params[k] = decodeURIComponent(raw);
    } catch {
      params[k] = raw; // a malformed %-escape: the API will refuse the id with a clear message
    }
  });
  const ctx: Ctx = {
    me,
    can,
    main,
    params,
    query: new URLSearchParams(location.search),
    navigate,
    onLeave: (fn) => leaving.push(fn),
    announce,
    alive: () => gen === generation,
  };
  try {
    await r.render(ctx);
  } catch (e) {
    if (gen === generation) main.append(errorBox(e));
  }
  if (gen === generation && document.activeElement === document.body) main.focus({ preventScroll: true });
}

setRetry(() => void render());
setUnauthorizedHandler((e) => {
  me = null;
  flash = / was revoked /.test(e.message)
    ? 'Your session has ended: its API key was revoked. Sign in with a current key.'
    : / is disabled/.test(e.message)
      ? 'Your session has ended: your user was disabled. Ask an admin.'
      : e.message.includes('signed out')
        ? 'You were signed out. Sign in again.'
        : 'Your session has ended. Sign in again.';
  const next = location.pathname.startsWith('/console/signin') ? '' : `?next=${encodeURIComponent(location.pathname + location.search)}`;
  navigate(`/console/signin${next}`, { replace: true });
});

// Same-origin console links navigate in place (keeps the page and its player state cheap).
document.addEventListener('click', (ev) => {
  if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const a = (ev.target as Element | null)?.closest?.('a[href]') as HTMLAnchorElement | null;
  if (!a || a.target || a.hasAttribute('download')) return;
  const url = new URL(a.href);
  if (url.origin !== location.origin || !url.pathname.startsWith('/console/')) return;
  ev.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener('popstate', () => void render());
// Every table the pages add gets its column labels copied onto its cells, for the stacked phone layout.
new MutationObserver((records) => {
  for (const r of records)
    for (const n of r.addedNodes) {
      if (!(n instanceof Element)) continue;
      if (n instanceof HTMLTableElement) stackable(n);
      n.querySelectorAll('table').forEach((t) => stackable(t));
    }
}).observe(main, { childList: true, subtree: true });
void render();
