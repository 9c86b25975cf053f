/// <reference lib="dom" />
import { api, qs, type AuditEntry, type ConsentEvent, type VerifyResult } from './api.ts';
import type { Ctx } from './app.ts';
import { field, formatTime, h, listen } from './dom.ts';
import { errorBox } from './errors.ts';

/** Entries per page: fewer on phones, where each becomes a stacked card. */
const pageSize = () => (matchMedia('(max-width: 640px)').matches ? 20 : 50);

export async function renderAudit(ctx: Ctx): Promise<void> {
  const PAGE = pageSize();
  const fromSeq = Math.max(1, Number(ctx.query.get('from_seq') ?? '1') || 1);
  const verifyOut = h('div', { class: 'verify-result', 'aria-live': 'polite', 'data-testid': 'verify-result' });
  const verifyButton = h('button', { type: 'button', 'data-testid': 'verify' }, 'Verify the chain');
  listen(verifyButton, 'click', async () => {
    verifyButton.disabled = true;
    verifyOut.replaceChildren(h('p', { role: 'status' }, 'Recomputing every hash…'));
    try {
      const r = await api<VerifyResult>('POST', '/audit/verify', {});
      verifyOut.replaceChildren(verifyBox(r));
      ctx.announce(r.ok ? `Audit chain OK, ${r.checked} entries checked.` : `Audit chain broken at entry ${r.firstBroken?.seq}.`);
    } catch (e) {
      verifyOut.replaceChildren(errorBox(e));
    } finally {
      verifyButton.disabled = false;
    }
  });
  const seq = h('input', { type: 'number', name: 'from_seq', min: 1, value: fromSeq, inputmode: 'numeric' });
  const table = h('div', { class: 'table-wrap' }, h('p', { role: 'status' }, 'Loading…'));
  ctx.main.append(
    h('h1', {}, 'Audit log'),
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'verify-title' },
      h('h2', { id: 'verify-title' }, 'Integrity'),
      h('p', {}, 'Each entry’s hash covers the previous hash and the entry itself; verifying recomputes the whole chain and compares it with the signed checkpoints.'),
      ctx.can('audit.verify') ? verifyButton : null,
      verifyOut,
    ),
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'entries-title' },
      h('h2', { id: 'entries-title' }, 'Entries'),
      h(
        'form',
        {
          class: 'inline',
          onsubmit: (ev: Event) => {
            ev.preventDefault();
            ctx.navigate(`/console/audit${qs({ from_seq: seq.value })}`);
          },
        },
        field('From entry #', seq),
        h('button', { type: 'submit' }, 'Show'),
      ),
      table,
    ),
  );
  let res: { entries: AuditEntry[]; nextFromSeq: number | null; headSeq: number };
  try {
    res = await api('GET', `/audit${qs({ from_seq: fromSeq, limit: PAGE })}`);
  } catch (e) {
    if (ctx.alive()) table.replaceChildren(errorBox(e));
    return;
  }
  if (!ctx.alive()) return;
  const nav = h(
    'nav',
    { class: 'pager', 'aria-label': 'Audit log pages' },
    fromSeq > 1 ? h('a', { class: 'button', href: `/console/audit${qs({ from_seq: Math.max(1, fromSeq - PAGE) })}` }, '← Earlier') : null,
    res.nextFromSeq ? h('a', { class: 'button', href: `/console/audit${qs({ from_seq: res.nextFromSeq })}` }, 'Later →') : null,
    res.nextFromSeq && res.headSeq >= fromSeq + 2 * PAGE ? h('a', { class: 'button', href: `/console/audit${qs({ from_seq: Math.max(1, res.headSeq - PAGE + 1) })}` }, 'Newest ⇥') : null,
  );
  table.replaceChildren(
    res.entries.length === 0
      ? h('p', { class: 'muted' }, 'No entries from here on.')
      : h(
          'table',
          { class: 'audit' },
          h('caption', { class: 'visually-hidden' }, 'Audit trail entries'),
          h('thead', {}, h('tr', {}, ['#', 'Time', 'Actor', 'Action', 'Target', 'Client', 'Details', 'Hash'].map((c) => h('th', { scope: 'col' }, c)))),
          h(
            'tbody',
            {},
            res.entries.map((e) =>
              h(
                'tr',
                { 'data-seq': e.seq },
                h('td', { class: 'num' }, e.seq),
                h('td', {}, formatTime(e.at)),
                h('td', {}, e.actor_type ? `${e.actor_type}${e.actor_id ? ` ${e.actor_id}` : ''}` : '—'),
                h('td', {}, h('code', {}, e.action)),
                h('td', {}, e.target_type ? `${e.target_type}${e.target_id ? ` ${e.target_id}` : ''}` : '—'),
                h('td', {}, e.client_address ?? '—'),
                h('td', {}, Object.keys(e.details ?? {}).length ? h('details', {}, h('summary', {}, 'details'), h('pre', {}, JSON.stringify(e.details, null, 2))) : '—'),
                h('td', {}, h('code', { class: 'hash', title: e.hash }, `${e.hash.slice(0, 12)}…`)),
              ),
            ),
          ),
        ),
    nav,
  );
}

function verifyBox(r: VerifyResult): HTMLElement {
  if (r.ok) {
    return h(
      'div',
      { class: 'ok', role: 'status', 'data-ok': 'true' },
      h('strong', {}, 'OK — the audit chain is intact'),
      h('p', {}, `${r.checked} entries checked`, r.head ? `; head #${r.head.seq} ` : '', r.head ? h('code', { class: 'hash' }, r.head.hash) : null),
      h('p', {}, `${r.checkpoints} signed checkpoint${r.checkpoints === 1 ? '' : 's'} compared${r.signaturesVerified ? `, signatures verified with ${r.keys.join(', ')}` : ', signatures not checked (no key)'}.`),
    );
  }
  return h(
    'div',
    { class: 'error', role: 'alert', 'data-ok': 'false' },
    h('strong', {}, `BROKEN at entry #${r.firstBroken?.seq ?? '?'}`),
    h('ul', {}, ...r.findings.map((f) => h('li', {}, h('code', {}, f.kind), ` at #${f.seq}: ${f.message}`))),
    h('p', {}, `${r.checked} entries checked out before it. Keep the database as it is and investigate (\`verbatim audit verify\`).`),
  );
}

export async function renderConsent(ctx: Ctx): Promise<void> {
  const q = ctx.query;
  const input = (name: string) => h('input', { name, value: q.get(name) ?? '', autocomplete: 'off' });
  const participant = input('participant');
  const session = input('session');
  const room = input('room');
  const out = h('div', {}, h('p', { role: 'status' }, 'Loading…'));
  ctx.main.append(
    h('h1', {}, 'Consent log'),
    h(
      'form',
      {
        class: 'card',
        onsubmit: (ev: Event) => {
          ev.preventDefault();
          ctx.navigate(`/console/consent${qs({ participant: participant.value.trim(), session: session.value.trim(), room: room.value.trim() })}`);
        },
      },
      h('div', { class: 'grid' }, field('Participant id', participant), field('Session id', session), field('Room', room)),
      h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Show')),
    ),
    out,
  );
  let res: { events: ConsentEvent[]; next: number | null };
  try {
    res = await api('GET', `/consent${qs({ participant: q.get('participant'), session: q.get('session'), room: q.get('room'), after: q.get('after'), limit: 200 })}`);
  } catch (e) {
    if (ctx.alive()) out.replaceChildren(errorBox(e));
    return;
  }
  if (!ctx.alive()) return;
  // Per participant: their latest decision, then every event.
  const latest = new Map<string, ConsentEvent>();
  for (const e of res.events) latest.set(e.participant, e);
  const filterLink = (p: string) => {
    const params = new URLSearchParams(q);
    params.set('participant', p);
    params.delete('after');
    return `/console/consent?${params.toString()}`;
  };
  out.replaceChildren(
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'per-participant' },
      h('h2', { id: 'per-participant' }, 'Per participant'),
      latest.size === 0
        ? h('p', { class: 'muted' }, 'No consent events match.')
        : h(
            'ul',
            { class: 'people' },
            [...latest.values()].map((e) =>
              h('li', {}, h('a', { href: filterLink(e.participant) }, e.participantName), ' ', h('code', {}, e.participant), ' — last: ', h('span', { class: `badge ${e.decision}` }, e.decision), ` (${e.method}, ${formatTime(e.at)})`),
            ),
          ),
    ),
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'events-title' },
      h('h2', { id: 'events-title' }, `Events (${res.events.length})`),
      res.events.length === 0
        ? null
        : h(
            'div',
            { class: 'table-wrap' },
            h(
              'table',
              { class: 'consent' },
              h('thead', {}, h('tr', {}, ['Time', 'Participant', 'Room', 'Session', 'Policy', 'Decision', 'Method', 'Client'].map((c) => h('th', { scope: 'col' }, c)))),
              h(
                'tbody',
                {},
                res.events.map((e) =>
                  h(
                    'tr',
                    {},
                    h('td', {}, formatTime(e.at)),
                    h('td', {}, e.participantName, ' ', h('code', {}, e.participant)),
                    h('td', {}, e.room),
                    h('td', {}, e.session ? h('a', { href: `/console/sessions/${encodeURIComponent(e.session)}` }, e.session) : '—'),
                    h('td', {}, e.policy),
                    h('td', {}, h('span', { class: `badge ${e.decision}` }, e.decision)),
                    h('td', {}, e.method),
                    h('td', { class: 'client' }, clientText(e.clientInfo)),
                  ),
                ),
              ),
            ),
          ),
      res.next !== null
        ? h('nav', { class: 'pager', 'aria-label': 'Consent pages' }, h('a', { class: 'button', href: `/console/consent?${withParam(q, 'after', String(res.next))}` }, 'More →'))
        : null,
    ),
  );
}

function withParam(q: URLSearchParams, k: string, v: string): string {
  const p = new URLSearchParams(q);
  p.set(k, v);
  return p.toString();
}

function clientText(info: unknown): string {
  if (!info || typeof info !== 'object') return '—';
  const o = info as Record<string, unknown>;
  const parts = [o.userAgent ?? o.ua, o.ip ?? o.address].filter((x): x is string => typeof x === 'string');
  return parts.length ? parts.join(' · ') : JSON.stringify(info).slice(0, 200);
}
