/// <reference lib="dom" />
import { api, qs } from './api.ts';
import type { Ctx } from './app.ts';
import { field, fill, formatOffset, formatTime, h } from './dom.ts';
import { errorBox } from './errors.ts';

// The API's own types (type-only imports are erased from the browser bundle).
import type { ReviewItem } from '../../supervision/review-queue.ts';
import type { EvidenceReport } from '../../supervision/evidence-report.ts';
import type { PolicyRecord } from '../../supervision/policies.ts';

/**
 * The supervision review queue: items flagged by policies (or drawn by the sample), filtered,
 * opened at their moment in the player, annotated and decided; and the review evidence report.
 * Every view and decision is the API's audited request; this page only shows and sends.
 */

interface ItemDetails extends ReviewItem {
  hitList: { seq: number; participant: string; rule: string; label: string; matched: string; snippet: string; start: number; end: number; playerUrl: string }[];
  notes: { id: number; author: string; body: string; at: string }[];
  decisions: { disposition: string; reason: string; decidedBy: string; at: string; holdId: string | null; exportId: string | null }[];
}

const FILTERS = ['policy', 'severity', 'state', 'reviewer', 'room', 'from', 'to'] as const;
const DISPOSITION_LABELS: Record<string, string> = { no_issue: 'No issue', false_positive: 'False positive', escalated: 'Escalate', violation: 'Violation' };

function status(): { el: HTMLElement; busy(m: string): void; ok(m: string): void; fail(e: unknown): void } {
  const el = h('div', { class: 'form-status', 'aria-live': 'polite' });
  return { el, busy: (m) => el.replaceChildren(h('p', { role: 'status' }, m)), ok: (m) => el.replaceChildren(h('p', { class: 'ok', role: 'status' }, m)), fail: (e) => el.replaceChildren(errorBox(e)) };
}

/** The snippet with the matched words marked (text nodes only: nothing in a transcript becomes markup). */
function marked(snippet: string, matched: string): Node[] {
  const i = snippet.indexOf(matched);
  if (!matched || i < 0) return [document.createTextNode(snippet)];
  return [document.createTextNode(snippet.slice(0, i)), h('mark', {}, matched), document.createTextNode(snippet.slice(i + matched.length))];
}

export async function renderReview(ctx: Ctx): Promise<void> {
  const q = ctx.query;
  const results = h('section', { class: 'results', 'aria-labelledby': 'queue-title' });
  let policies: PolicyRecord[];
  try {
    policies = (await api<{ policies: PolicyRecord[] }>('GET', '/supervision/policies')).policies;
  } catch (e) {
    ctx.main.append(h('h1', {}, 'Review queue'), errorBox(e));
    return;
  }
  if (!ctx.alive()) return;
  const select = (name: string, options: [string, string][]) => {
    const s = h('select', { name }, options.map(([v, label]) => h('option', { value: v }, label)));
    s.value = q.get(name) ?? '';
    return s;
  };
  const input = (name: string, type = 'text') => h('input', { name, type, value: q.get(name) ?? '' });
  const form = h(
    'form',
    {
      class: 'card search-form',
      'aria-label': 'Filter the review queue',
      onsubmit: (ev: Event) => {
        ev.preventDefault();
        const data = new FormData(form);
        const params: Record<string, string> = {};
        for (const k of FILTERS) {
          const v = data.get(k);
          if (typeof v === 'string' && v.trim()) params[k] = v.trim();
        }
        ctx.navigate(`/console/review${qs(params)}`);
      },
    },
    h(
      'div',
      { class: 'grid' },
      field('Policy', select('policy', [['', 'Any policy'], ...policies.map((p): [string, string] => [p.id, p.name])])),
      field('Severity', select('severity', [['', 'Any'], ['critical', 'Critical'], ['high', 'High'], ['medium', 'Medium'], ['low', 'Low']])),
      field('State', select('state', [['', 'Any'], ['open', 'Open'], ['escalated', 'Escalated'], ['closed', 'Closed']])),
      field('Reviewer', select('reviewer', [['', 'Anyone'], ['me', 'Assigned to me'], ['unassigned', 'Unassigned']])),
      field('Room', input('room')),
      field('From (date)', input('from', 'date')),
      field('To (date)', input('to', 'date')),
    ),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Filter')),
  );
  ctx.main.append(h('h1', {}, 'Review queue'), form, results);
  const page = Math.max(1, Number(q.get('page') ?? '1') || 1);
  const params: Record<string, string | number> = { page, pageSize: 50 };
  for (const f of FILTERS) {
    const v = q.get(f);
    if (v) params[f] = v;
  }
  results.append(h('p', { role: 'status' }, 'Loading…'));
  let res: { items: ReviewItem[]; total: number; totalIsEstimate: boolean; page: number; pageSize: number };
  try {
    res = await api('GET', `/review/items${qs(params)}`);
  } catch (e) {
    if (ctx.alive()) results.replaceChildren(errorBox(e));
    return;
  }
  if (!ctx.alive()) return;
  const pages = Math.max(1, Math.ceil(res.total / res.pageSize));
  const summary = res.total === 0 ? 'No items match.' : `${res.totalIsEstimate ? 'More than ' : ''}${res.total} item${res.total === 1 ? '' : 's'} — page ${res.page} of ${pages}.`;
  const pageLink = (n: number, label: string) => {
    const p = new URLSearchParams(q);
    p.set('page', String(n));
    return h('a', { href: `/console/review?${p.toString()}`, class: 'button' }, label);
  };
  fill(
    results,
    h('h2', { id: 'queue-title' }, 'Items'),
    h('p', { role: 'status', 'data-testid': 'queue-summary' }, summary),
    res.items.length === 0
      ? null
      : h(
          'div',
          { class: 'table-wrap' },
          h(
            'table',
            { class: 'review-items' },
            h('thead', {}, h('tr', {}, ['Severity', 'Policy', 'Speaker', 'Said', 'Words', 'State', 'Assignee', ''].map((c) => h('th', { scope: 'col' }, c)))),
            h(
              'tbody',
              {},
              res.items.map((i) =>
                h(
                  'tr',
                  { 'data-item': i.id, class: `sev-${i.severity}` },
                  h('td', {}, i.severity),
                  h('td', {}, `${i.policy.name} v${i.policy.version}`),
                  h('td', {}, i.kind === 'sample' ? h('em', {}, 'sampled session') : (i.speaker ?? '')),
                  h('td', {}, h('a', { href: i.playerUrl, 'aria-label': `Play session ${i.session} from ${formatOffset(i.start)}` }, `${formatTime(i.spokenAt)} · ${formatOffset(i.start)}`)),
                  h('td', { class: 'snippet' }, i.preview ? marked(i.preview.snippet, i.preview.matched) : '—'),
                  h('td', {}, i.state + (i.disposition ? ` (${i.disposition.replace('_', ' ')})` : '')),
                  h('td', {}, i.assignee ?? '—'),
                  h('td', { class: 'row-actions' }, h('a', { href: `/console/review/${encodeURIComponent(i.id)}`, 'aria-label': `Open item ${i.id}` }, 'Open')),
                ),
              ),
            ),
          ),
        ),
    pages > 1 ? h('nav', { class: 'pager', 'aria-label': 'Queue pages' }, res.page > 1 ? pageLink(res.page - 1, '← Previous') : null, res.page < pages ? pageLink(res.page + 1, 'Next →') : null) : null,
  );
  ctx.announce(summary);
}

export async function renderReviewItem(ctx: Ctx): Promise<void> {
  const id = ctx.params.id!;
  const body = h('div', {}, h('p', { role: 'status' }, 'Loading…'));
  ctx.main.append(h('h1', {}, 'Review item'), h('p', {}, h('a', { href: '/console/review' }, '← Review queue')), body);
  const load = async (): Promise<void> => {
    let item: ItemDetails;
    try {
      item = await api<ItemDetails>('GET', `/review/items/${encodeURIComponent(id)}`);
    } catch (e) {
      if (ctx.alive()) body.replaceChildren(errorBox(e));
      return;
    }
    if (!ctx.alive()) return;
    const closed = item.state === 'closed';
    const st = status();
    const disposition = h('select', { name: 'disposition', required: true }, [h('option', { value: '' }, 'Choose…'), ...Object.entries(DISPOSITION_LABELS).map(([v, l]) => h('option', { value: v }, l))]);
    const reason = h('textarea', { name: 'reason', rows: 3, required: true, maxlength: 4000 });
    const caseId = h('input', { name: 'caseId', autocomplete: 'off', maxlength: 200 });
    const exportBox = h('input', { name: 'export', type: 'checkbox' });
    const escalation = h(
      'fieldset',
      { class: 'escalation', hidden: true },
      h('legend', {}, 'With the escalation'),
      field('Place a legal hold on the session (case id)', caseId, 'Leave empty for no hold.'),
      h('div', { class: 'field checkbox' }, exportBox, h('label', { for: (exportBox.id = `export-${id}`) }, 'Start an e-discovery export of the session')),
    );
    disposition.addEventListener('change', () => (escalation.hidden = disposition.value !== 'escalated'));
    const decide = h(
      'form',
      {
        class: 'card decision',
        'aria-labelledby': 'decide-title',
        onsubmit: async (ev: Event) => {
          ev.preventDefault();
          st.busy('Recording the decision…');
          try {
            const payload: Record<string, unknown> = { disposition: disposition.value, reason: reason.value };
            if (disposition.value === 'escalated' && caseId.value.trim()) payload.hold = { caseId: caseId.value.trim() };
            if (disposition.value === 'escalated' && exportBox.checked) payload.export = true;
            const r = await api<{ item: ReviewItem; holdId: string | null; exportId: string | null }>('POST', `/review/items/${encodeURIComponent(id)}/decision`, payload);
            ctx.announce(`Decision recorded: ${r.item.disposition ?? ''}.`);
            await load();
            body.prepend(h('p', { class: 'ok', role: 'status', 'data-testid': 'decision-ok' }, `Decision recorded: ${DISPOSITION_LABELS[r.item.disposition ?? ''] ?? r.item.disposition}${r.holdId ? ` · legal hold ${r.holdId}` : ''}${r.exportId ? ` · export ${r.exportId}` : ''}.`));
          } catch (e) {
            st.fail(e);
          }
        },
      },
      h('h2', { id: 'decide-title' }, 'Decision'),
      field('Disposition', disposition),
      field('Reason', reason, 'Required: say why, for the evidence report.'),
      escalation,
      h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Record decision')),
      st.el,
    );
    const noteText = h('textarea', { name: 'note', rows: 2, required: true, maxlength: 4000 });
    const noteStatus = status();
    const noteForm = h(
      'form',
      {
        class: 'card notes',
        'aria-labelledby': 'notes-title',
        onsubmit: async (ev: Event) => {
          ev.preventDefault();
          try {
            await api('POST', `/review/items/${encodeURIComponent(id)}/notes`, { body: noteText.value });
            await load();
          } catch (e) {
            noteStatus.fail(e);
          }
        },
      },
      h('h2', { id: 'notes-title' }, 'Notes'),
      item.notes.length === 0 ? h('p', { class: 'muted' }, 'No notes yet.') : h('ul', {}, item.notes.map((n) => h('li', {}, h('span', { class: 'meta' }, `${n.author} · ${formatTime(n.at)}: `), n.body))),
      field('Add a note', noteText),
      h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Add note')),
      noteStatus.el,
    );
    const assignStatus = status();
    fill(
      body,
      h(
        'dl',
        { class: 'facts', 'data-testid': 'item-facts' },
        h('dt', {}, 'Policy'),
        h('dd', {}, `${item.policy.name} (version ${item.policy.version}) · ${item.severity}`),
        h('dt', {}, 'Session'),
        h('dd', {}, h('a', { href: item.playerUrl, class: 'play', 'data-testid': 'item-play' }, `${item.session} at ${formatOffset(item.start)} — play from here`), ` · room ${item.room}`),
        h('dt', {}, 'Speaker'),
        h('dd', {}, item.kind === 'sample' ? 'Whole session (random sample)' : `${item.speaker ?? ''} (${item.participant ?? ''})`),
        h('dt', {}, 'State'),
        h('dd', { 'data-testid': 'item-state' }, item.state + (item.disposition ? ` · ${item.disposition.replace('_', ' ')}: ${item.reason ?? ''}` : '')),
        h('dt', {}, 'Assignee'),
        h(
          'dd',
          {},
          item.assignee ?? 'nobody',
          ' ',
          closed || item.assignee === ctx.me.user.id
            ? null
            : h(
                'button',
                {
                  type: 'button',
                  class: 'link',
                  onclick: async () => {
                    try {
                      await api('POST', `/review/items/${encodeURIComponent(id)}/assign`, { assignee: 'me' });
                      await load();
                    } catch (e) {
                      assignStatus.fail(e);
                    }
                  },
                },
                'Assign to me',
              ),
          assignStatus.el,
        ),
        item.removedHits > 0 ? h('dt', {}, 'Removed') : null,
        item.removedHits > 0 ? h('dd', {}, `${item.removedHits} hit${item.removedHits === 1 ? '' : 's'} went with their erased transcript segments (${formatTime(item.hitsRemovedAt)}).`) : null,
      ),
      h('h2', {}, 'What was said'),
      item.hitList.length === 0
        ? h('p', { class: 'muted' }, item.kind === 'sample' ? 'A randomly sampled session: review it in the player.' : 'No hits left.')
        : h(
            'ol',
            { class: 'hits' },
            item.hitList.map((x) =>
              h(
                'li',
                { class: 'hit' },
                h('a', { href: x.playerUrl, class: 'hit-link' }, h('span', { class: 'time' }, `${formatOffset(x.start)}–${formatOffset(x.end)}`), h('span', { class: 'visually-hidden' }, ' — play from here')),
                ' ',
                h('code', {}, x.rule),
                h('p', { class: 'snippet' }, marked(x.snippet, x.matched)),
              ),
            ),
          ),
      item.decisions.length > 0
        ? h('section', {}, h('h2', {}, 'Decisions'), h('ul', {}, item.decisions.map((d) => h('li', {}, `${formatTime(d.at)} · ${d.decidedBy}: ${d.disposition.replace('_', ' ')} — ${d.reason}${d.holdId ? ` (hold ${d.holdId})` : ''}${d.exportId ? ` (export ${d.exportId})` : ''}`))))
        : null,
      closed || !ctx.can('review.decide') ? null : decide,
      ctx.can('review.decide') ? noteForm : null,
    );
  };
  await load();
}

export async function renderReviewReport(ctx: Ctx): Promise<void> {
  const q = ctx.query;
  const today = new Date().toISOString().slice(0, 10);
  const monthAgo = new Date(Date.now() - 30 * 86_400_000).toISOString().slice(0, 10);
  const from = h('input', { name: 'from', type: 'date', required: true, value: q.get('from') ?? monthAgo });
  const to = h('input', { name: 'to', type: 'date', required: true, value: q.get('to') ?? today });
  const out = h('section', { 'aria-labelledby': 'report-title' });
  const form = h(
    'form',
    {
      class: 'card',
      'aria-label': 'Report period',
      onsubmit: (ev: Event) => {
        ev.preventDefault();
        ctx.navigate(`/console/review-report${qs({ from: from.value, to: to.value })}`);
      },
    },
    h('div', { class: 'grid' }, field('From', from), field('To', to)),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Show report')),
  );
  ctx.main.append(h('h1', {}, 'Review evidence report'), form, out);
  let r: EvidenceReport;
  try {
    r = await api<EvidenceReport>('GET', `/review/report${qs({ from: from.value, to: to.value })}`);
  } catch (e) {
    if (ctx.alive()) out.replaceChildren(errorBox(e));
    return;
  }
  if (!ctx.alive()) return;
  const d = (b: { no_issue: number; false_positive: number; escalated: number; violation: number }) => [b.no_issue, b.false_positive, b.escalated, b.violation].map((n) => h('td', { class: 'num' }, n));
  const median = (s: number | null) => (s === null ? '—' : s < 3600 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`);
  fill(
    out,
    h('h2', { id: 'report-title' }, `${r.from.slice(0, 10)} – ${r.to.slice(0, 10)}`),
    h('p', {}, h('a', { href: `/api/v1/review/report${qs({ from: from.value, to: to.value, format: 'csv' })}`, download: '', class: 'button' }, 'Download CSV')),
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { class: 'review-report', 'data-testid': 'review-report' },
        h('thead', {}, h('tr', {}, ['Policy', 'Reviewer', 'Created', 'Sampled', 'Reviewed', 'No issue', 'False positive', 'Escalated', 'Violation', 'Median to decision'].map((c) => h('th', { scope: 'col' }, c)))),
        h(
          'tbody',
          {},
          r.policies.flatMap((p) => [
            h('tr', { class: 'policy-row', 'data-policy': p.policy }, h('td', {}, p.name), h('td', {}, 'all'), h('td', { class: 'num' }, p.created), h('td', { class: 'num' }, p.sampled), h('td', { class: 'num' }, p.reviewed), ...d(p.byDisposition), h('td', {}, median(p.medianSecondsToDecision))),
            ...p.reviewers.map((v) => h('tr', { 'data-reviewer': v.reviewer }, h('td', {}, ''), h('td', {}, v.reviewer), h('td', {}, ''), h('td', {}, ''), h('td', { class: 'num' }, v.reviewed), ...d(v.byDisposition), h('td', {}, median(v.medianSecondsToDecision)))),
          ]),
        ),
      ),
    ),
    h('h2', {}, 'Sample drawn'),
    r.sample.length === 0 ? h('p', { class: 'muted' }, 'No sessions were sampled in this period.') : h('ul', {}, r.sample.map((s) => h('li', {}, h('a', { href: `/console/sessions/${encodeURIComponent(s.session)}` }, s.session), ` · room ${s.room} · ${formatTime(s.drawnAt)} · ${s.state}${s.disposition ? ` (${s.disposition})` : ''}`))),
  );
}
