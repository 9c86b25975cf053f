/// <reference lib="dom" />
import { api, ApiError } from './api.ts';
import type { Ctx } from './app.ts';
import { field, formatTime, h } from './dom.ts';
import { errorBox } from './errors.ts';

/** A route the server does not have (an older server): say the feature is unavailable rather than "not found". */
function unavailable(e: unknown, what: string): HTMLElement {
  if (e instanceof ApiError && e.status === 404 && e.message.startsWith('no route')) {
    return h('div', { class: 'error unavailable', role: 'alert', 'data-code': 'UNAVAILABLE' }, h('strong', {}, `${what} not available`), h('p', {}, `This server does not offer ${what.toLowerCase()} (${e.message}).`));
  }
  return errorBox(e);
}

function formStatus(): { el: HTMLElement; busy(msg: string): void; ok(msg: string): void; fail(e: unknown): void } {
  const el = h('div', { class: 'form-status', 'aria-live': 'polite' });
  return {
    el,
    busy: (msg) => el.replaceChildren(h('p', { role: 'status' }, msg)),
    ok: (msg) => el.replaceChildren(h('p', { class: 'ok', role: 'status' }, msg)),
    fail: (e) => el.replaceChildren(errorBox(e)),
  };
}

const num = (v: unknown): number | null => (typeof v === 'number' ? v : v === null || v === undefined || v === '' ? null : Number(v));
const pick = (o: Record<string, unknown>, ...keys: string[]): unknown => keys.map((k) => o[k]).find((v) => v !== undefined);

// ---------------------------------------------------------------- retention policies (admin)

interface Policy {
  name: string;
  scope: string;
  mediaDays: number | null;
  transcriptDays: number | null;
  rawDays: number | null;
  rooms: string[];
  updatedAt?: string;
}

function toPolicy(o: Record<string, unknown>): Policy {
  return {
    name: String(o.name),
    scope: typeof o.scope === 'string' ? o.scope : 'room',
    mediaDays: num(pick(o, 'mediaDays', 'media_days')),
    transcriptDays: num(pick(o, 'transcriptDays', 'transcript_days')),
    rawDays: num(pick(o, 'rawDays', 'raw_days')),
    rooms: Array.isArray(o.rooms) ? (o.rooms as string[]) : [],
    ...(typeof pick(o, 'updatedAt', 'updated_at') === 'string' ? { updatedAt: String(pick(o, 'updatedAt', 'updated_at')) } : {}),
  };
}

export async function renderPolicies(ctx: Ctx): Promise<void> {
  const list = h('div', { class: 'table-wrap' }, h('p', { role: 'status' }, 'Loading…'));
  const name = h('input', { name: 'name', required: true, autocomplete: 'off', pattern: '[A-Za-z0-9][A-Za-z0-9_.:\\-]{0,99}' });
  const scope = h('select', { name: 'scope' }, ['default', 'room', 'tag'].map((s) => h('option', { value: s }, s)));
  scope.value = 'room';
  const days = (n: string) => h('input', { name: n, type: 'number', min: 0, max: 36500, inputmode: 'numeric', placeholder: 'keep forever' });
  const media = days('mediaDays');
  const transcript = days('transcriptDays');
  const raw = days('rawDays');
  const status = formStatus();
  let policies: Policy[] = [];
  const load = async () => {
    try {
      const res = await api<{ policies: Record<string, unknown>[] }>('GET', '/retention-policies');
      if (!ctx.alive()) return;
      policies = res.policies.map(toPolicy);
      list.replaceChildren(
        policies.length === 0
          ? h('p', { class: 'muted' }, 'No policies yet: everything is kept until you add one.')
          : h(
              'table',
              { class: 'policies' },
              h('thead', {}, h('tr', {}, ['Name', 'Scope', 'Media', 'Transcript', 'Raw RTP', 'Rooms', 'Updated', ''].map((c) => h('th', { scope: 'col' }, c)))),
              h(
                'tbody',
                {},
                policies.map((p) =>
                  h(
                    'tr',
                    { 'data-policy': p.name },
                    h('td', {}, h('code', {}, p.name)),
                    h('td', {}, p.scope),
                    ...[p.mediaDays, p.transcriptDays, p.rawDays].map((d) => h('td', { class: 'num' }, d === null ? 'forever' : `${d} d`)),
                    h('td', {}, p.rooms.length ? p.rooms.join(', ') : '—'),
                    h('td', {}, formatTime(p.updatedAt)),
                    h(
                      'td',
                      { class: 'row-actions' },
                      h(
                        'button',
                        {
                          type: 'button',
                          class: 'link',
                          'aria-label': `Edit policy ${p.name}`,
                          onclick: () => {
                            name.value = p.name;
                            scope.value = p.scope;
                            media.value = p.mediaDays === null ? '' : String(p.mediaDays);
                            transcript.value = p.transcriptDays === null ? '' : String(p.transcriptDays);
                            raw.value = p.rawDays === null ? '' : String(p.rawDays);
                            name.focus();
                          },
                        },
                        'Edit',
                      ),
                      p.rooms.length === 0
                        ? h(
                            'button',
                            {
                              type: 'button',
                              class: 'link',
                              'aria-label': `Delete policy ${p.name}`,
                              onclick: async () => {
                                if (!confirm(`Delete retention policy ${p.name}? What it covered falls back to the remaining policies.`)) return;
                                status.busy('Deleting…');
                                try {
                                  await api('DELETE', `/retention-policies/${encodeURIComponent(p.name)}`);
                                  status.ok(`Policy ${p.name} deleted.`);
                                  await load();
                                } catch (e) {
                                  status.fail(e);
                                }
                              },
                            },
                            'Delete',
                          )
                        : null,
                    ),
                  ),
                ),
              ),
            ),
      );
    } catch (e) {
      if (ctx.alive()) list.replaceChildren(unavailable(e, 'Retention policies'));
    }
  };
  const form = h(
    'form',
    {
      class: 'card',
      'aria-labelledby': 'policy-form-title',
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        status.busy('Saving…');
        const d = (i: HTMLInputElement) => (i.value.trim() === '' ? null : Number(i.value));
        const n = name.value.trim();
        const values = { scope: scope.value, mediaDays: d(media), transcriptDays: d(transcript), rawDays: d(raw) };
        try {
          if (policies.some((p) => p.name === n)) await api('PUT', `/retention-policies/${encodeURIComponent(n)}`, values);
          else await api('POST', '/retention-policies', { name: n, ...values });
          status.ok(`Policy ${n} saved.`);
          ctx.announce(`Policy ${n} saved.`);
          await load();
        } catch (e) {
          status.fail(e);
        }
      },
    },
    h('h2', { id: 'policy-form-title' }, 'Add or change a policy'),
    h('p', { class: 'muted' }, 'Days after a session ends; empty keeps forever. The longest applicable retention wins, and a legal hold beats every policy. Rooms pick a policy through their retentionPolicy flag.'),
    h('div', { class: 'grid' }, field('Name', name), field('Scope', scope), field('Media (days)', media), field('Transcript (days)', transcript), field('Raw RTP (days)', raw)),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Save policy')),
    status.el,
  );
  const room = h('input', { name: 'room', required: true, autocomplete: 'off' });
  const roomPolicy = h('input', { name: 'policy', autocomplete: 'off', placeholder: 'empty: clear' });
  const roomStatus = formStatus();
  const roomForm = h(
    'form',
    {
      class: 'card',
      'aria-labelledby': 'room-form-title',
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        roomStatus.busy('Saving…');
        const policy = roomPolicy.value.trim() || null;
        try {
          await api('PUT', `/rooms/${encodeURIComponent(room.value.trim())}/retention-policy`, { policy });
          roomStatus.ok(policy ? `Room ${room.value.trim()} now uses ${policy}.` : `Room ${room.value.trim()} has no room policy now.`);
          await load();
        } catch (e) {
          roomStatus.fail(e);
        }
      },
    },
    h('h2', { id: 'room-form-title' }, 'Assign a policy to a room'),
    h('div', { class: 'grid' }, field('Room id', room), field("Policy (scope 'room')", roomPolicy)),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Assign')),
    roomStatus.el,
  );
  ctx.main.append(h('h1', {}, 'Retention policies'), h('section', { class: 'card', 'aria-label': 'Policies' }, list), form, roomForm);
  await load();
}

// ---------------------------------------------------------------- legal holds (compliance officer)

interface Hold {
  id: string;
  caseId: string;
  reason: string;
  scope: { type: string; value: string };
  frozenSessionIds: string[];
  placedBy: string;
  placedAt: string;
  releasedAt: string | null;
}

export async function renderHolds(ctx: Ctx): Promise<void> {
  const list = h('div', { class: 'table-wrap' }, h('p', { role: 'status' }, 'Loading…'));
  const caseId = h('input', { name: 'caseId', required: true, autocomplete: 'off' });
  const reason = h('input', { name: 'reason', required: true, autocomplete: 'off' });
  const scopeType = h('select', { name: 'scopeType' }, ['session', 'room', 'participant', 'query'].map((s) => h('option', { value: s }, s)));
  const scopeValue = h('input', { name: 'scopeValue', required: true, autocomplete: 'off' });
  const status = formStatus();
  const load = async () => {
    try {
      const res = await api<{ holds: Hold[] }>('GET', '/legal-holds?includeReleased=true');
      if (!ctx.alive()) return;
      list.replaceChildren(
        res.holds.length === 0
          ? h('p', { class: 'muted' }, 'No legal holds.')
          : h(
              'table',
              { class: 'holds' },
              h('thead', {}, h('tr', {}, ['Case', 'Reason', 'Scope', 'Sessions frozen', 'Placed', 'State', ''].map((c) => h('th', { scope: 'col' }, c)))),
              h(
                'tbody',
                {},
                res.holds.map((x) =>
                  h(
                    'tr',
                    { 'data-hold': x.id },
                    h('td', {}, x.caseId),
                    h('td', {}, x.reason),
                    h('td', {}, `${x.scope.type}: `, h('code', {}, x.scope.value)),
                    h('td', {}, x.scope.type === 'query' ? String(x.frozenSessionIds?.length ?? 0) : '—'),
                    h('td', {}, `${formatTime(x.placedAt)} by ${x.placedBy}`),
                    h('td', {}, x.releasedAt ? h('span', { class: 'badge' }, `released ${formatTime(x.releasedAt)}`) : h('span', { class: 'badge active' }, 'in force')),
                    h(
                      'td',
                      {},
                      x.releasedAt
                        ? null
                        : h(
                            'button',
                            {
                              type: 'button',
                              'aria-label': `Release hold ${x.caseId}`,
                              onclick: async () => {
                                if (!confirm(`Release hold ${x.caseId}? Retention applies again to what it covered.`)) return;
                                status.busy('Releasing…');
                                try {
                                  await api('POST', `/legal-holds/${encodeURIComponent(x.id)}/release`, {});
                                  status.ok(`Hold ${x.caseId} released.`);
                                  await load();
                                } catch (e) {
                                  status.fail(e);
                                }
                              },
                            },
                            'Release',
                          ),
                    ),
                  ),
                ),
              ),
            ),
      );
    } catch (e) {
      if (ctx.alive()) list.replaceChildren(unavailable(e, 'Legal holds'));
    }
  };
  const form = h(
    'form',
    {
      class: 'card',
      'aria-labelledby': 'hold-form-title',
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        status.busy('Placing the hold…');
        try {
          await api('POST', '/legal-holds', { caseId: caseId.value.trim(), reason: reason.value.trim(), scope: { type: scopeType.value, value: scopeValue.value.trim() } });
          status.ok(`Hold ${caseId.value.trim()} placed.`);
          ctx.announce(`Hold ${caseId.value.trim()} placed.`);
          caseId.value = reason.value = scopeValue.value = '';
          await load();
        } catch (e) {
          status.fail(e);
        }
      },
    },
    h('h2', { id: 'hold-form-title' }, 'Place a legal hold'),
    h('p', { class: 'muted' }, 'Held sessions are never deleted by retention or erasure. A query hold freezes the sessions whose transcripts match now.'),
    h('div', { class: 'grid' }, field('Case id', caseId), field('Reason', reason), field('Scope', scopeType), field('Session, room, participant or query', scopeValue)),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Place hold')),
    status.el,
  );
  ctx.main.append(h('h1', {}, 'Legal holds'), h('section', { class: 'card', 'aria-label': 'Holds' }, list), form);
  await load();
}

// ---------------------------------------------------------------- erasure requests (GDPR Art. 17)

interface Erasure {
  id: string;
  participant: string;
  session: string | null;
  reason: string;
  status: string;
  holds: string[];
  requestedBy: string;
  requestedAt: string;
  completedAt: string | null;
  outcome: { session: string; state: string; holds?: { id: string; caseId?: string }[]; composite?: string; note?: string }[];
  progress: { pct: number; stage: string | null };
  error: { code: string; message: string } | null;
}

/** Requests still running are polled this often (the work runs in the background, like exports). */
const ERASURE_POLL_MS = 1000;
const erasureRunning = (r: Erasure) => r.status === 'pending' || r.status === 'running';

/** "s1: restricted by CASE-42; s2: erased (composite re-rendered)". */
function outcomeText(r: Erasure): string {
  if (r.error) return `${r.error.code}: ${r.error.message} — submit the same request again to resume it`;
  if (erasureRunning(r)) return r.progress.stage ?? 'queued';
  if (r.outcome.length === 0) return r.status === 'completed' ? 'nothing of theirs was stored' : '—';
  return r.outcome
    .map((o) => `${o.session}: ${o.state}${o.holds?.length ? ` by hold ${o.holds.map((x) => x.caseId ?? x.id).join(', ')}` : ''}${o.composite && o.composite !== 'none' ? ` (composite ${o.composite})` : ''}${o.note ? ` — ${o.note}` : ''}`)
    .join('; ');
}

function toErasure(o: Record<string, unknown>): Erasure {
  const progress = (o.progress ?? {}) as { pct?: unknown; stage?: unknown };
  const str = (v: unknown) => (typeof v === 'string' ? v : '');
  return {
    id: str(o.id),
    participant: str(pick(o, 'participant', 'participantId', 'participant_id')),
    session: (pick(o, 'session', 'sessionId', 'session_id') as string | null | undefined) ?? null,
    reason: str(o.reason),
    status: str(o.status),
    holds: (o.holds as string[] | undefined) ?? [],
    requestedBy: str(pick(o, 'requestedBy', 'requested_by')),
    requestedAt: str(pick(o, 'requestedAt', 'requested_at')),
    completedAt: (pick(o, 'completedAt', 'completed_at') as string | null | undefined) ?? null,
    outcome: Array.isArray(o.outcome) ? (o.outcome as Erasure['outcome']) : [],
    progress: { pct: Number(progress.pct ?? 0), stage: typeof progress.stage === 'string' ? progress.stage : null },
    error: (o.error as Erasure['error'] | undefined) ?? null,
  };
}

export async function renderErasure(ctx: Ctx): Promise<void> {
  const list = h('div', { class: 'table-wrap' }, h('p', { role: 'status' }, 'Loading…'));
  const participant = h('input', { name: 'participant', required: true, autocomplete: 'off' });
  const session = h('input', { name: 'session', autocomplete: 'off' });
  const reason = h('input', { name: 'reason', required: true, autocomplete: 'off' });
  const status = formStatus();
  let timer: ReturnType<typeof setTimeout> | undefined;
  /** The request submitted from this page: its outcome is announced when its job finishes. */
  let submitted: string | undefined;
  const load = async (): Promise<void> => {
    clearTimeout(timer);
    let rows: Erasure[];
    try {
      rows = (await api<{ requests: Record<string, unknown>[] }>('GET', '/erasure-requests')).requests.map(toErasure).sort((a, b) => b.requestedAt.localeCompare(a.requestedAt));
    } catch (e) {
      if (ctx.alive()) list.replaceChildren(unavailable(e, 'Erasure requests'));
      return;
    }
    if (!ctx.alive()) return;
    list.replaceChildren(
      rows.length === 0
        ? h('p', { class: 'muted' }, 'No erasure requests.')
        : h(
            'table',
            { class: 'erasures' },
            h('thead', {}, h('tr', {}, ['Requested', 'Participant', 'Session', 'Reason', 'Status', 'Outcome'].map((c) => h('th', { scope: 'col' }, c)))),
            h(
              'tbody',
              {},
              rows.map((r) =>
                h(
                  'tr',
                  { 'data-erasure': r.id, 'data-status': r.status },
                  h('td', {}, `${formatTime(r.requestedAt)}${r.requestedBy ? ` by ${r.requestedBy}` : ''}`),
                  h('td', {}, h('code', {}, r.participant)),
                  h('td', {}, r.session ? h('a', { href: `/console/sessions/${encodeURIComponent(r.session)}` }, r.session) : 'all sessions'),
                  h('td', {}, r.reason),
                  h('td', {}, erasureRunning(r) ? h('progress', { max: 100, value: r.progress.pct, 'aria-label': `Erasure ${r.status}, ${r.progress.pct}% done` }, `${r.progress.pct}%`) : h('span', { class: `badge ${r.status}` }, r.status)),
                  h('td', {}, outcomeText(r)),
                ),
              ),
            ),
          ),
    );
    const mine = submitted === undefined ? undefined : rows.find((r) => r.id === submitted);
    if (mine && !erasureRunning(mine)) {
      submitted = undefined;
      status.ok(`Erasure request for ${mine.participant}: ${mine.status} — ${outcomeText(mine)}.`);
      ctx.announce(`Erasure request ${mine.status}.`);
    }
    // Live progress while any request is still being worked on.
    if (rows.some(erasureRunning)) timer = setTimeout(() => void (ctx.alive() && load()), ERASURE_POLL_MS);
  };
  const submit = async (ev: Event): Promise<void> => {
    ev.preventDefault();
    const who = participant.value.trim();
    if (!confirm(`Erase ${who}'s tracks, files and transcript${session.value.trim() ? ` in session ${session.value.trim()}` : ' in every session'}? This cannot be undone (held sessions are kept and the request is marked restricted).`)) return;
    status.busy('Submitting…');
    try {
      const r = toErasure(await api<Record<string, unknown>>('POST', '/erasure-requests', { participant: who, ...(session.value.trim() ? { session: session.value.trim() } : {}), reason: reason.value.trim() }));
      if (erasureRunning(r)) {
        submitted = r.id;
        status.busy(`Erasure request for ${who} accepted: it runs in the background, its progress is below.`);
        ctx.announce('Erasure request accepted.');
      } else {
        status.ok(`Erasure request for ${who}: ${r.status} — ${outcomeText(r)}.`);
        ctx.announce(`Erasure request ${r.status}.`);
      }
      participant.value = session.value = reason.value = '';
      await load();
    } catch (e) {
      status.fail(e);
    }
  };
  const form = h(
    'form',
    { class: 'card', 'aria-labelledby': 'erasure-form-title', onsubmit: (ev: Event) => void submit(ev) },
    h('h2', { id: 'erasure-form-title' }, 'New erasure request'),
    h('p', { class: 'muted' }, 'GDPR Art. 17: the participant’s tracks, own files and transcript lines are deleted and the composite is re-rendered without them — unless a legal hold covers the session: then the request is recorded as restricted, naming the hold. The request runs in the background; this page follows its progress.'),
    h('div', { class: 'grid' }, field('Participant id', participant), field('Session id (empty: all their sessions)', session), field('Reason', reason)),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Submit request')),
    status.el,
  );
  ctx.main.append(h('h1', {}, 'Erasure requests'), h('section', { class: 'card', 'aria-label': 'Requests' }, list), form);
  await load();
}

// ---------------------------------------------------------------- e-discovery exports (officer)

interface ExportRow {
  id: string;
  status: 'running' | 'done' | 'failed';
  selection: { holdId?: string; sessionIds?: string[]; query?: string };
  requestedBy: string;
  progress: { filesDone: number; filesTotal: number; pct: number };
  sessionIds: string[];
  bytes: number | null;
  manifestSha256: string | null;
  error: { code: string; message: string } | null;
  createdAt: string;
}

const EXPORT_POLL_MS = 1000;

function selectionText(s: ExportRow['selection']): string {
  if (s.holdId) return `hold ${s.holdId}`;
  if (s.query !== undefined) return `query “${s.query}”`;
  return `sessions ${(s.sessionIds ?? []).join(', ')}`;
}

export async function renderExports(ctx: Ctx): Promise<void> {
  const list = h('div', { class: 'table-wrap' }, h('p', { role: 'status' }, 'Loading…'));
  const kind = h('select', { name: 'kind' }, [h('option', { value: 'hold' }, 'Legal hold id'), h('option', { value: 'query' }, 'Transcript query'), h('option', { value: 'sessions' }, 'Session ids (comma-separated)')]);
  const value = h('input', { name: 'value', required: true, autocomplete: 'off' });
  const status = formStatus();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const load = async (): Promise<void> => {
    clearTimeout(timer);
    let res: { exports: ExportRow[] };
    try {
      res = await api('GET', '/exports');
    } catch (e) {
      if (ctx.alive()) list.replaceChildren(unavailable(e, 'Exports'));
      return;
    }
    if (!ctx.alive()) return;
    list.replaceChildren(
      res.exports.length === 0
        ? h('p', { class: 'muted' }, 'No exports yet.')
        : h(
            'table',
            { class: 'exports' },
            h('thead', {}, h('tr', {}, ['Requested', 'Selection', 'State', 'Sessions', 'Manifest SHA-256', ''].map((c) => h('th', { scope: 'col' }, c)))),
            h(
              'tbody',
              {},
              res.exports.map((x) =>
                h(
                  'tr',
                  { 'data-export': x.id, 'data-status': x.status },
                  h('td', {}, formatTime(x.createdAt)),
                  h('td', {}, selectionText(x.selection)),
                  h(
                    'td',
                    {},
                    x.status === 'running'
                      ? h('progress', { max: 100, value: x.progress.pct, 'aria-label': `Export ${x.progress.pct}% built` }, `${x.progress.pct}%`)
                      : x.status === 'failed'
                        ? h('span', { class: 'badge error', title: x.error?.message ?? '' }, `failed: ${x.error?.code ?? ''}`)
                        : h('span', { class: 'badge active' }, 'ready'),
                  ),
                  h('td', {}, String(x.sessionIds.length || '—')),
                  h('td', {}, x.manifestSha256 ? h('code', { class: 'hash' }, x.manifestSha256) : '—'),
                  h('td', {}, x.status === 'done' ? h('a', { class: 'button', href: `/api/v1/exports/${encodeURIComponent(x.id)}/archive`, download: '' }, 'Download archive') : null),
                ),
              ),
            ),
          ),
    );
    // Live progress while anything is still being built.
    if (res.exports.some((x) => x.status === 'running')) timer = setTimeout(() => void (ctx.alive() && load()), EXPORT_POLL_MS);
  };
  const form = h(
    'form',
    {
      class: 'card',
      'aria-labelledby': 'export-form-title',
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        const v = value.value.trim();
        const body = kind.value === 'hold' ? { holdId: v } : kind.value === 'query' ? { query: v } : { sessionIds: v.split(',').map((s) => s.trim()).filter(Boolean) };
        status.busy('Starting the export…');
        try {
          await api('POST', '/exports', body);
          status.ok('Export started: it appears below with its progress.');
          ctx.announce('Export started.');
          value.value = '';
          await load();
        } catch (e) {
          status.fail(e);
        }
      },
    },
    h('h2', { id: 'export-form-title' }, 'New e-discovery export'),
    h('p', { class: 'muted' }, 'A tar archive with media, transcripts (JSON, VTT, text), consent records, the audit extract and a manifest of SHA-256 hashes. Check a downloaded archive with `verbatim export verify`.'),
    h('div', { class: 'grid' }, field('Export by', kind), field('Hold id, query or sessions', value)),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Start export')),
    status.el,
  );
  ctx.main.append(h('h1', {}, 'Exports'), form, h('section', { class: 'card', 'aria-label': 'Exports' }, list));
  await load();
}
