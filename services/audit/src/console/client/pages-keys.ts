/// <reference lib="dom" />
import { api } from './api.ts';
import type { Ctx } from './app.ts';
import { field, formatTime, h } from './dom.ts';
import { errorBox } from './errors.ts';

/**
 * Users and API keys (admin): create a user with a key (optionally expiring), list users and
 * keys (prefix, created, last used, expiry, state), add a key, rotate, revoke, disable and
 * enable users. Everything goes through /api/v1 (GET /users, POST /keys, …), so the refusals
 * (LAST_ADMIN) and audit entries are the API's own.
 */

interface KeyRow {
  id: string;
  prefix: string;
  createdAt: string;
  lastUsedAt: string | null;
  expiresAt: string | null;
  revokedAt: string | null;
  rotatedFrom: string | null;
  state: 'active' | 'rotating' | 'revoked' | 'expired';
}
interface UserRow {
  id: string;
  name: string;
  role: string;
  createdAt: string;
  disabledAt: string | null;
  state: 'enabled' | 'disabled';
  keys: KeyRow[];
}
interface NewKey {
  user: { id: string; name: string; role: string };
  key: { prefix: string; expiresAt: string | null };
  apiKey: string;
}

const ROLE_LABELS: Record<string, string> = { compliance_officer: 'Compliance officer', auditor: 'Auditor', admin: 'Admin' };

/** A date input (a UTC day) → the end of that day, as the API wants it. */
const endOfDay = (day: string): string => new Date(`${day}T23:59:59Z`).toISOString();

export async function renderKeys(ctx: Ctx): Promise<void> {
  const name = h('input', { name: 'name', required: true, autocomplete: 'off' });
  const role = h('select', { name: 'role' }, Object.entries(ROLE_LABELS).map(([v, l]) => h('option', { value: v }, l)));
  const expires = h('input', { name: 'expiresAt', type: 'date' });
  const grace = h('input', { name: 'graceHours', type: 'number', min: 0, max: 720, step: 'any', inputmode: 'decimal', placeholder: 'server default (24)' });
  const status = h('div', { class: 'form-status', 'aria-live': 'polite' });
  const created = h('div', { 'aria-live': 'polite' });
  const list = h('div', { class: 'table-wrap' }, h('p', { role: 'status' }, 'Loading…'));
  const ok = (msg: string) => {
    status.replaceChildren(h('p', { class: 'ok', role: 'status' }, msg));
    ctx.announce(msg);
  };
  const fail = (e: unknown) => status.replaceChildren(errorBox(e));

  /** The one place a plain key is ever shown: right after it was made. */
  const showKey = (r: NewKey, note: string) => {
    const keyField = h('input', { type: 'text', readonly: true, value: r.apiKey, 'aria-label': 'New API key', class: 'mono' });
    created.replaceChildren(
      h(
        'div',
        { class: 'card ok' },
        h('strong', {}, 'Copy this key now — it is shown only once.'),
        keyField,
        h('p', { class: 'muted' }, `Key ${r.key.prefix} for ${r.user.name}, ${r.key.expiresAt ? `expires ${formatTime(r.key.expiresAt)}` : 'does not expire'}.${note ? ` ${note}` : ''}`),
      ),
    );
    keyField.select();
  };

  /** Runs one change, then reloads the list; refusals (e.g. LAST_ADMIN) are shown above it. */
  const act = async (question: string | null, run: () => Promise<string>): Promise<void> => {
    if (question && !confirm(question)) return;
    status.replaceChildren(h('p', { role: 'status' }, 'Working…'));
    try {
      ok(await run());
    } catch (e) {
      fail(e);
    }
    await load();
  };

  const keyItem = (u: UserRow, k: KeyRow) =>
    h(
      'li',
      { 'data-key': k.prefix, 'data-state': k.state },
      h('code', {}, k.prefix),
      ' ',
      h('span', { class: `badge ${k.state}` }, k.state),
      h(
        'small',
        { class: 'muted' },
        ` created ${formatTime(k.createdAt)} · last used ${k.lastUsedAt ? formatTime(k.lastUsedAt) : 'never'} · ${k.expiresAt ? `expires ${formatTime(k.expiresAt)}` : 'no expiry'}`,
        k.state === 'rotating' && k.revokedAt ? ` · refused from ${formatTime(k.revokedAt)}` : '',
      ),
      k.state === 'active'
        ? h(
            'button',
            {
              type: 'button',
              class: 'secondary',
              'aria-label': `Rotate key ${k.prefix}`,
              onclick: () =>
                act(`Rotate key ${k.prefix} of ${u.name}? A new key is shown once; the old one keeps working for the grace period.`, async () => {
                  const hours = grace.value.trim() === '' ? undefined : Number(grace.value);
                  const r = await api<NewKey & { oldRevokedAt: string }>('POST', `/keys/${encodeURIComponent(k.id)}/rotate`, hours === undefined ? {} : { graceHours: hours });
                  showKey({ ...r, user: { id: u.id, name: u.name, role: u.role } }, `The old key ${k.prefix} is refused from ${formatTime(r.oldRevokedAt)}.`);
                  return `Rotated key ${k.prefix}.`;
                }),
            },
            'Rotate',
          )
        : null,
      k.state === 'active' || k.state === 'rotating'
        ? h(
            'button',
            {
              type: 'button',
              class: 'danger',
              'aria-label': `Revoke key ${k.prefix}`,
              onclick: () =>
                act(`Revoke key ${k.prefix} of ${u.name} now? Requests with it, and console sessions opened with it, are refused at once.`, async () => {
                  const r = await api<{ sessionsEnded: number }>('POST', `/keys/${encodeURIComponent(k.id)}/revoke`, {});
                  return `Revoked key ${k.prefix}${r.sessionsEnded ? ` and ended ${r.sessionsEnded} console session(s)` : ''}.`;
                }),
            },
            'Revoke',
          )
        : null,
    );

  const userActions = (u: UserRow) => [
    h(
      'button',
      {
        type: 'button',
        class: 'secondary',
        'aria-label': `Add a key for ${u.name}`,
        onclick: () =>
          act(null, async () => {
            const r = await api<NewKey>('POST', `/users/${encodeURIComponent(u.id)}/keys`, expires.value ? { expiresAt: endOfDay(expires.value) } : {});
            showKey(r, '');
            return `Added key ${r.key.prefix} for ${u.name}.`;
          }),
      },
      'Add key',
    ),
    u.state === 'enabled'
      ? h(
          'button',
          {
            type: 'button',
            class: 'danger',
            'aria-label': `Disable ${u.name}`,
            onclick: () =>
              act(`Disable ${u.name}? Every key of theirs and their console sessions are refused at once.`, async () => {
                const r = await api<{ sessionsEnded: number }>('POST', `/users/${encodeURIComponent(u.id)}/disable`, {});
                return `Disabled ${u.name}${r.sessionsEnded ? ` and ended ${r.sessionsEnded} console session(s)` : ''}.`;
              }),
          },
          'Disable',
        )
      : h(
          'button',
          {
            type: 'button',
            class: 'secondary',
            'aria-label': `Enable ${u.name}`,
            onclick: () =>
              act(null, async () => {
                await api('POST', `/users/${encodeURIComponent(u.id)}/enable`, {});
                return `Enabled ${u.name}.`;
              }),
          },
          'Enable',
        ),
  ];

  const userRow = (u: UserRow) =>
    h(
      'tr',
      { 'data-user': u.id, 'data-name': u.name, 'data-state': u.state },
      h('td', {}, u.name, u.id === ctx.me.user.id ? h('small', { class: 'muted' }, ' (you)') : null),
      h('td', {}, ROLE_LABELS[u.role] ?? u.role),
      h('td', {}, h('span', { class: `badge ${u.state === 'enabled' ? 'active' : 'failed'}` }, u.state), u.disabledAt ? h('small', { class: 'muted' }, ` since ${formatTime(u.disabledAt)}`) : null),
      h('td', {}, u.keys.length ? h('ul', { class: 'keys' }, u.keys.map((k) => keyItem(u, k))) : h('span', { class: 'muted' }, 'no keys')),
      h('td', {}, h('div', { class: 'actions' }, userActions(u))),
    );

  async function load(): Promise<void> {
    let users: UserRow[];
    try {
      users = (await api<{ users: UserRow[] }>('GET', '/users')).users;
    } catch (e) {
      if (ctx.alive()) list.replaceChildren(errorBox(e));
      return;
    }
    if (!ctx.alive()) return;
    list.replaceChildren(
      h(
        'table',
        { class: 'users' },
        h('thead', {}, h('tr', {}, ['User', 'Role', 'State', 'API keys', 'Actions'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, users.map(userRow)),
      ),
    );
  }

  const form = h(
    'form',
    {
      class: 'card',
      onsubmit: (ev: Event) => {
        ev.preventDefault();
        return act(null, async () => {
          const r = await api<NewKey>('POST', '/keys', { name: name.value.trim(), role: role.value, ...(expires.value ? { expiresAt: endOfDay(expires.value) } : {}) });
          showKey(r, '');
          name.value = '';
          return `Created ${r.user.name} (${r.user.role}).`;
        });
      },
    },
    h('h2', {}, 'Create a user and API key'),
    h('div', { class: 'grid' }, field('Name', name), field('Role', role), field('Expires (optional)', expires, 'Also used by "Add key".')),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Create')),
  );
  ctx.main.append(
    h('h1', {}, 'Users and API keys'),
    form,
    created,
    status,
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'users-title' },
      h('h2', { id: 'users-title' }, 'Users'),
      h('div', { class: 'grid' }, field('Rotation grace (hours)', grace, 'How long a rotated key keeps working; empty: the server default.')),
      list,
    ),
  );
  name.focus();
  await load();
}
