/// <reference lib="dom" />
import type { RecorderView } from '../../http/routes/recorders.ts';
import { api } from './api.ts';
import type { Ctx } from './app.ts';
import { formatBytes, formatTime, h } from './dom.ts';
import { errorBox } from './errors.ts';

/** How long ago, in words a person on call reads at a glance. */
function ago(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

/**
 * The recording tier: each recorder's liveness and load, and the raw segments still on its disk
 * waiting for object storage (storage down or slow). A recorder whose disk is lost takes that
 * backlog with it, so a growing one is what this page is for.
 */
export async function renderRecorders(ctx: Ctx): Promise<void> {
  const out = h('div', {}, h('p', { role: 'status' }, 'Loading…'));
  ctx.main.append(h('h1', {}, 'Recorders'), out);
  let res: { recorders: RecorderView[]; backlog: { segments: number; bytes: number } };
  try {
    res = await api('GET', '/recorders');
  } catch (e) {
    if (ctx.alive()) out.replaceChildren(errorBox(e));
    return;
  }
  if (!ctx.alive()) return;
  const { recorders, backlog } = res;
  const uploads = (r: RecorderView) => {
    if (!r.uploads) return h('span', { class: 'muted' }, 'raw upload off');
    if (r.uploads.segments === 0) return 'none waiting';
    return h(
      'span',
      { class: 'warn', 'data-testid': `backlog-${r.id}` },
      `${r.uploads.segments} segment${r.uploads.segments === 1 ? '' : 's'}, ${formatBytes(r.uploads.bytes)}`,
      r.uploads.oldestQueuedAt ? ` · oldest queued ${formatTime(r.uploads.oldestQueuedAt)}` : '',
      r.uploads.lastError ? h('br') : null,
      r.uploads.lastError ? h('small', {}, `${r.uploads.failedAttempts} failed attempts; last: ${r.uploads.lastError}`) : null,
    );
  };
  out.replaceChildren(
    h(
      'p',
      { class: backlog.segments > 0 ? 'card warn' : 'card', 'data-testid': 'backlog-total', role: 'status' },
      backlog.segments > 0
        ? `${backlog.segments} raw segment${backlog.segments === 1 ? '' : 's'} (${formatBytes(backlog.bytes)}) are on recorder disks only, waiting for object storage.`
        : 'Every sealed raw segment has reached object storage.',
    ),
    recorders.length === 0
      ? h('p', {}, 'No recorder is registered.')
      : h(
          'table',
          { class: 'recorders' },
          h('thead', {}, h('tr', {}, ['Recorder', 'Host', 'State', 'Heartbeat', 'Tracks', 'Upload backlog'].map((c) => h('th', { scope: 'col' }, c)))),
          h(
            'tbody',
            {},
            recorders.map((r) =>
              h(
                'tr',
                { 'data-recorder': r.id },
                h('td', {}, r.id),
                h('td', {}, r.host),
                h('td', {}, r.alive ? r.state : h('span', { class: 'warn' }, `${r.state}, not answering`)),
                h('td', {}, ago(r.heartbeatAgeMs)),
                h('td', {}, `${r.tracks} / ${r.capacity}`),
                h('td', {}, uploads(r)),
              ),
            ),
          ),
        ),
  );
}
