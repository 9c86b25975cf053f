/// <reference lib="dom" />
import { api, qs, type SearchResult } from './api.ts';
import type { Ctx } from './app.ts';
import { errorBox } from './errors.ts';
import { field, fill, formatOffset, formatTime, h, snippetNodes } from './dom.ts';

const FILTERS = ['room', 'participant', 'session', 'from', 'to'] as const;

/** The session page at a hit: the player starts at `t`, on that participant's line of the transcript. */
export function hitHref(session: string, start: number, participant?: string): string {
  return `/console/sessions/${encodeURIComponent(session)}${qs({ t: start, participant })}`;
}

export async function renderSearch(ctx: Ctx): Promise<void> {
  const q = ctx.query;
  const input = (name: string, type = 'text', extra: Record<string, string> = {}) => h('input', { name, type, value: q.get(name) ?? '', ...extra });
  const qInput = input('q', 'search', { required: 'required', placeholder: 'words, "a phrase", or, -not', autocomplete: 'off' });
  const results = h('section', { 'aria-labelledby': 'results-title', class: 'results' });
  const form = h(
    'form',
    {
      role: 'search',
      class: 'card search-form',
      onsubmit: (ev: Event) => {
        ev.preventDefault();
        const data = new FormData(form);
        const params: Record<string, string> = {};
        for (const k of ['q', ...FILTERS]) {
          const raw = data.get(k);
          const v = typeof raw === 'string' ? raw.trim() : '';
          if (v) params[k] = v;
        }
        ctx.navigate(`/console/search${qs(params)}`);
      },
    },
    field('Search the transcripts', qInput, 'Web-search syntax: words, "exact phrase", or, -exclude.'),
    h(
      'details',
      { class: 'filters', ...(FILTERS.some((f) => q.get(f)) ? { open: true } : {}) },
      h('summary', {}, 'Filters'),
      h(
        'div',
        { class: 'grid' },
        field('Room', input('room')),
        field('Participant id', input('participant')),
        field('Session id', input('session')),
        field('From (date)', input('from', 'date')),
        field('To (date)', input('to', 'date')),
      ),
    ),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Search')),
  );
  ctx.main.append(h('h1', {}, 'Search transcripts'), form, results);

  const text = q.get('q')?.trim();
  if (!text) {
    qInput.focus();
    return;
  }
  const page = Math.max(1, Number(q.get('page') ?? '1') || 1);
  results.append(h('p', { role: 'status' }, 'Searching…'));
  let res: SearchResult;
  try {
    const params: Record<string, string | number> = { q: text, page, pageSize: 20 };
    for (const f of FILTERS) {
      const v = q.get(f);
      if (v) params[f] = v;
    }
    res = await api<SearchResult>('GET', `/search${qs(params)}`);
  } catch (e) {
    if (!ctx.alive()) return;
    results.replaceChildren(errorBox(e));
    return;
  }
  if (!ctx.alive()) return;
  const reachable = res.totalIsEstimate && res.rankedMatches !== undefined ? res.rankedMatches : res.total;
  const pages = Math.max(1, Math.ceil(reachable / res.pageSize));
  const summary =
    res.total === 0
      ? `No results for “${res.query}”.`
      : res.totalIsEstimate
        ? `About ${res.total} results for “${res.query}”; the best of the ${reachable} newest${res.rankedSince ? ` (since ${formatTime(res.rankedSince)})` : ''} are shown — narrow the dates, room or participant to reach older ones. Page ${res.page} of ${pages}.`
        : `${res.total} result${res.total === 1 ? '' : 's'} for “${res.query}” — page ${res.page} of ${pages}.`;
  const pageLink = (n: number, label: string) => {
    const p = new URLSearchParams(q);
    p.set('page', String(n));
    return h('a', { href: `/console/search?${p.toString()}`, class: 'button' }, label);
  };
  fill(
    results,
    h('h2', { id: 'results-title' }, 'Results'),
    h('p', { role: 'status', 'data-testid': 'search-summary' }, summary),
    h(
      'ol',
      { class: 'hits', start: (res.page - 1) * res.pageSize + 1 },
      res.hits.map((hit) =>
        h(
          'li',
          { class: 'hit' },
          h(
            'a',
            { href: hitHref(hit.session, hit.start, hit.participant), class: 'hit-link', 'data-session': hit.session, 'data-start': hit.start },
            h('span', { class: 'speaker' }, hit.speaker),
            h('span', { class: 'time' }, `${formatOffset(hit.start)}–${formatOffset(hit.end)}`),
            h('span', { class: 'visually-hidden' }, ' — play from here'),
          ),
          h('p', { class: 'snippet' }, snippetNodes(hit.snippet)),
          h('p', { class: 'meta' }, `Room ${hit.room} · session `, h('code', {}, hit.session), ` · ${formatTime(hit.at)}`),
        ),
      ),
    ),
    pages > 1
      ? h('nav', { class: 'pager', 'aria-label': 'Result pages' }, res.page > 1 ? pageLink(res.page - 1, '← Previous') : null, res.page < pages ? pageLink(res.page + 1, 'Next →') : null)
      : null,
  );
  ctx.announce(summary);
}
