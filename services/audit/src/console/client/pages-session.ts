/// <reference lib="dom" />
import { api, ApiError, qs, type Artifact, type SessionDetails, type Transcript, type TranscriptSegment } from './api.ts';
import type { Ctx } from './app.ts';
import { add, field, fill, formatBytes, formatOffset, formatTime, h } from './dom.ts';
import { errorBox } from './errors.ts';
import { timelineEvents } from './timeline.ts';

const ACTIVE = new Set(['recording', 'sealed', 'processing']);
const POLL_MS = 2000;

export function renderSessionLookup(ctx: Ctx): void {
  const id = h('input', { name: 'session', required: true, autocomplete: 'off', pattern: '[A-Za-z0-9][A-Za-z0-9_.:\\-]{0,127}' });
  ctx.main.append(
    h('h1', {}, 'Open a session'),
    h(
      'form',
      {
        class: 'card',
        onsubmit: (ev: Event) => {
          ev.preventDefault();
          ctx.navigate(`/console/sessions/${encodeURIComponent(id.value.trim())}`);
        },
      },
      field('Session id', id, 'Session ids appear in search results, the consent log and the audit log.'),
      h('button', { type: 'submit' }, 'Open'),
    ),
  );
  id.focus();
  const list = h('section', { class: 'card', 'aria-label': 'Recent sessions' }, h('p', { class: 'muted' }, 'Loading recent sessions…'));
  ctx.main.append(list);
  void renderRecentSessions(ctx, list);
}

interface SessionSummary {
  session: string;
  room: string;
  status: string;
  startedAt: string | null;
  endedAt: string | null;
  participants: number;
}

async function renderRecentSessions(ctx: Ctx, list: HTMLElement): Promise<void> {
  let res: { sessions: SessionSummary[] };
  try {
    res = await api('GET', `/sessions${qs({ limit: 50 })}`);
  } catch (e) {
    if (ctx.alive()) fill(list, errorBox(e));
    return;
  }
  if (!ctx.alive()) return;
  fill(
    list,
    h('h2', {}, 'Recent sessions'),
    res.sessions.length === 0
      ? h('p', { class: 'muted' }, 'No recording sessions yet.')
      : h(
          'table',
          {},
          h('thead', {}, h('tr', {}, ['Session', 'Room', 'Started', 'Status', 'Participants'].map((c) => h('th', { scope: 'col' }, c)))),
          h(
            'tbody',
            {},
            res.sessions.map((x) =>
              h('tr', {}, h('td', {}, h('a', { href: `/console/sessions/${encodeURIComponent(x.session)}` }, x.session)), h('td', {}, x.room), h('td', {}, formatTime(x.startedAt)), h('td', {}, x.status), h('td', {}, x.participants)),
            ),
          ),
        ),
  );
}

/** Where an artifact's bytes are served (HTTP Range, audited as a stream or download). */
export function contentUrl(session: string, a: Artifact): string {
  return a.contentUrl ?? `/api/v1/sessions/${encodeURIComponent(session)}/artifacts/${encodeURIComponent(a.id ?? a.key)}/content`;
}

const playable = (a: Artifact) => a.state !== 'deleted' && (a.contentType.startsWith('video/') || a.contentType.startsWith('audio/')) && a.kind !== 'track';

export async function renderSession(ctx: Ctx): Promise<void> {
  const id = ctx.params.id!;
  const t = ctx.query.get('t');
  const t0 = t === null || t.trim() === '' ? NaN : Number(t);
  // Only a play link (?t=) starts playback by itself; a plain visit waits for the user.
  const startAt = Number.isFinite(t0) && t0 >= 0 ? t0 : null;
  const focusParticipant = ctx.query.get('participant');

  const heading = h('h1', {}, 'Session ', h('code', {}, id));
  const status = h('section', { class: 'card status', 'aria-labelledby': 'status-title' });
  ctx.main.append(heading, status);
  let s: SessionDetails;
  try {
    s = await api<SessionDetails>('GET', `/sessions/${encodeURIComponent(id)}`);
  } catch (e) {
    if (ctx.alive()) status.replaceChildren(errorBox(e));
    return;
  }
  if (!ctx.alive()) return;
  paintStatus(status, s);

  // Live progress while the pipeline works; the whole page reloads once it is done.
  if (ACTIVE.has(s.status)) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const poll = async () => {
      try {
        const next = await api<SessionDetails>('GET', `/sessions/${encodeURIComponent(id)}`);
        if (!ctx.alive()) return;
        if (next.status !== s.status) ctx.announce(`Session ${id}: ${next.status}`);
        s = next;
        paintStatus(status, s);
        if (!ACTIVE.has(s.status)) {
          ctx.navigate(location.pathname + location.search, { replace: true });
          return;
        }
      } catch (e) {
        if (!ctx.alive()) return;
        if (!(e instanceof ApiError && e.network)) {
          status.append(errorBox(e));
          return;
        }
        // Network blips: keep polling, say so.
        paintStatus(status, s, 'Connection lost — retrying…');
      }
      timer = setTimeout(() => void poll(), POLL_MS);
    };
    timer = setTimeout(() => void poll(), POLL_MS);
    ctx.onLeave(() => clearTimeout(timer));
  }

  const canPlay = ctx.can('recordings.play');
  let deleted: DeletedArtifact[] = [];
  if (canPlay) {
    // The artifact list carries each file's content URL and what retention or erasure removed.
    try {
      const list = await api<{ artifacts: Artifact[]; deleted: DeletedArtifact[] }>('GET', `/sessions/${encodeURIComponent(id)}/artifacts`);
      s = { ...s, artifacts: list.artifacts };
      deleted = list.deleted ?? [];
    } catch (e) {
      if (!ctx.alive()) return;
      ctx.main.append(errorBox(e, 'Artifact list not available'));
    }
    if (!ctx.alive()) return;
  }
  const names = new Map(s.participants.map((p) => [p.participant, p.name]));
  if (ctx.can('holds.manage')) await renderHolds(ctx, s, status);
  if (!ctx.alive()) return;
  if (canPlay) await renderPlayer(ctx, s, names, startAt, focusParticipant);
  if (!ctx.alive()) return;
  ctx.main.append(participantsSection(s), timelineSection(s, names), artifactsSection(ctx, s, names, deleted));
}

interface HoldSummary {
  id: string;
  caseId: string;
  scope: { type: string; value: string };
  frozenSessionIds: string[];
}

/** The legal holds in force over this session (an officer sees why it cannot be deleted or erased). */
async function renderHolds(ctx: Ctx, s: SessionDetails, into: HTMLElement): Promise<void> {
  let holds: HoldSummary[];
  try {
    holds = (await api<{ holds: HoldSummary[] }>('GET', '/legal-holds')).holds;
  } catch {
    return; // the page is still useful without it; the holds page shows the error
  }
  if (!ctx.alive()) return;
  const participants = new Set(s.participants.map((p) => p.participant));
  const covering = holds.filter(
    (x) =>
      (x.scope.type === 'session' && x.scope.value === s.session) ||
      (x.scope.type === 'room' && x.scope.value === s.room) ||
      (x.scope.type === 'participant' && participants.has(x.scope.value)) ||
      (x.scope.type === 'query' && x.frozenSessionIds.includes(s.session)),
  );
  into.after(
    h(
      'p',
      { class: covering.length ? 'notice' : 'muted', 'data-testid': 'session-holds' },
      covering.length ? `Under legal hold: ${covering.map((x) => `${x.caseId} (${x.scope.type})`).join(', ')} — nothing of this session is deleted by retention or erasure while held.` : 'No legal hold covers this session.',
    ),
  );
}

function paintStatus(el: HTMLElement, s: SessionDetails, note?: string): void {
  const active = ACTIVE.has(s.status);
  fill(
    el,
    h('h2', { id: 'status-title' }, 'Processing status'),
    h(
      'dl',
      { class: 'facts' },
      h('dt', {}, 'Room'),
      h('dd', {}, s.room),
      h('dt', {}, 'Status'),
      h('dd', {}, h('span', { class: `badge ${s.status}`, 'data-testid': 'session-status' }, s.status)),
      h('dt', {}, 'Recorded'),
      h('dd', {}, `${formatTime(s.startedAt)} → ${formatTime(s.endedAt)}`),
      h('dt', {}, 'Transcript'),
      h('dd', {}, s.transcriptStatus ?? '—'),
      s.manifestSha256 ? [h('dt', {}, 'Manifest SHA-256'), h('dd', {}, h('code', { class: 'hash' }, s.manifestSha256))] : null,
    ),
    active || s.progress < 100
      ? h('div', { class: 'progress' }, h('label', { for: 'progress' }, `Progress: ${s.progress}%`), h('progress', { id: 'progress', max: 100, value: s.progress }, `${s.progress}%`))
      : null,
    active ? h('p', { class: 'muted' }, note ?? 'Processing — this page updates by itself.') : null,
    s.error ? h('div', { class: 'error', role: 'alert' }, h('strong', {}, s.error.code), h('p', {}, s.error.message ?? '')) : null,
  );
}

async function renderPlayer(ctx: Ctx, s: SessionDetails, names: Map<string, string>, startAt: number | null, focus: string | null): Promise<void> {
  const section = h('section', { class: 'card player', 'aria-labelledby': 'player-title' }, h('h2', { id: 'player-title' }, 'Recording and transcript'));
  ctx.main.append(section);
  const sources = s.artifacts.filter(playable).sort((a, b) => rankSource(a, focus) - rankSource(b, focus));
  let transcript: Transcript | null = null;
  let transcriptError: unknown = null;
  if (ctx.can('recordings.view')) {
    try {
      transcript = await api<Transcript>('GET', `/sessions/${encodeURIComponent(s.session)}/transcript`);
    } catch (e) {
      transcriptError = e;
    }
  }
  if (!ctx.alive()) return;

  // Every range request is an audited stream: fetch ahead only when asked to play.
  const video = h('video', { controls: true, preload: startAt !== null ? 'auto' : 'metadata', playsinline: true, 'aria-label': 'Session recording', 'data-testid': 'player' });
  const playNote = h('p', { class: 'muted', role: 'status' });
  if (sources.length === 0) {
    section.append(h('p', {}, s.status === 'done' ? 'No playable media is stored for this session (deleted by retention or erasure?).' : 'Media appears here once processing is done.'));
  } else {
    const select = h(
      'select',
      { name: 'source' },
      sources.map((a, i) => h('option', { value: String(i) }, sourceLabel(a, names))),
    );
    const load = (a: Artifact, at: number | null, autoplay: boolean) => {
      video.src = contentUrl(s.session, a);
      video.dataset.kind = a.kind;
      if (at === null && !autoplay) return;
      video.addEventListener(
        'loadedmetadata',
        () => {
          if (at !== null) video.currentTime = Math.min(at, Number.isFinite(video.duration) ? video.duration : at);
          if (autoplay)
            video.play().catch(() => {
              playNote.textContent = `Ready at ${formatOffset(at ?? 0)} — press play.`;
            });
        },
        { once: true },
      );
    };
    select.addEventListener('change', () => {
      const wasPlaying = !video.paused;
      load(sources[Number(select.value)]!, video.currentTime, wasPlaying);
    });
    video.addEventListener('error', () => {
      playNote.textContent = `This browser cannot play ${sourceLabel(sources[Number(select.value)]!, names)}. Choose another source or download it.`;
    });
    add(section, sources.length > 1 ? field('Play', select) : null, video, playNote);
    load(sources[0]!, startAt, startAt !== null);
    ctx.onLeave(() => video.pause());
  }

  if (transcriptError) section.append(errorBox(transcriptError, 'Transcript not available'));
  else if (transcript) {
    let shown = transcriptList(transcript.segments, video, focus, transcript.transcriptStatus);
    section.append(shown);
    // Redacted spans show as [LABEL]; a role with redaction.reveal may show them, which is audited.
    if (transcript.redacted && ctx.can('redaction.reveal')) {
      const reveal: HTMLButtonElement = h('button', {
        type: 'button',
        onclick: async () => {
          reveal.disabled = true;
          try {
            const clear = await api<Transcript>('GET', `/sessions/${encodeURIComponent(s.session)}/transcript?reveal=true`);
            if (!ctx.alive()) return;
            const next = transcriptList(clear.segments, video, focus, clear.transcriptStatus);
            shown.replaceWith(next);
            shown = next;
            reveal.remove();
            ctx.announce('Redacted text shown; this was recorded in the audit trail.');
          } catch (e) {
            reveal.disabled = false;
            section.append(errorBox(e, 'Could not show the redacted text'));
          }
        },
      }, 'Show redacted text (audited)');
      section.append(h('p', { class: 'muted' }, 'Card numbers and other redacted spans are shown as labels. ', reveal));
    }
  }
}

/** The composite first; then the focused participant's own files, theirs before the audio-only WAV. */
function rankSource(a: Artifact, focus: string | null): number {
  if (a.kind === 'composite') return 0;
  const mine = focus !== null && a.participant === focus ? 0 : 2;
  return 1 + mine + (a.kind === 'participant-av' ? 0 : 1);
}

function sourceLabel(a: Artifact, names: Map<string, string>): string {
  if (a.kind === 'composite') return 'Composite (everyone)';
  const who = a.participant ? (names.get(a.participant) ?? a.participant) : 'unknown';
  return a.kind === 'participant-wav' ? `${who} — audio (WAV)` : `${who} — own file (${a.key.split('.').pop()?.toUpperCase()})`;
}

/** The transcript, kept in step with the player: the line being spoken is highlighted and scrolled into view. */
function transcriptList(segments: TranscriptSegment[], video: HTMLVideoElement, focus: string | null, status: string | null): HTMLElement {
  if (segments.length === 0) return h('p', { class: 'muted' }, `No transcript (${status ?? 'none'}).`);
  const items = segments.map((seg) =>
    h(
      'li',
      { class: `segment${focus && seg.participant === focus ? ' focus' : ''}`, 'data-start': seg.start, 'data-seq': seg.seq },
      h(
        'button',
        {
          type: 'button',
          class: 'seek',
          'aria-label': `Play from ${formatOffset(seg.start)}, ${seg.speaker}`,
          onclick: () => {
            video.currentTime = seg.start;
            void video.play().catch(() => {});
          },
        },
        formatOffset(seg.start),
      ),
      h('span', { class: 'speaker' }, seg.speaker),
      h('span', { class: 'text' }, seg.text),
    ),
  );
  const list = h('ol', { class: 'transcript', 'aria-label': 'Transcript', tabindex: 0 }, items);
  let current = -1;
  const sync = () => {
    const t = video.currentTime;
    let idx = -1;
    for (let i = 0; i < segments.length; i++) {
      const seg = segments[i]!;
      if (seg.start <= t + 0.05 && t < Math.max(seg.end, seg.start + 0.5)) idx = i;
      if (seg.start > t) break;
    }
    if (idx === current) return;
    if (current >= 0) {
      items[current]!.classList.remove('active');
      items[current]!.removeAttribute('aria-current');
    }
    current = idx;
    if (idx < 0) return;
    const el = items[idx]!;
    el.classList.add('active');
    el.setAttribute('aria-current', 'true');
    // Scroll the transcript box only, never the page under the user.
    const top = el.getBoundingClientRect().top - list.getBoundingClientRect().top + list.scrollTop;
    if (top < list.scrollTop || top + el.offsetHeight > list.scrollTop + list.clientHeight) list.scrollTop = Math.max(0, top - list.clientHeight / 3);
  };
  video.addEventListener('timeupdate', sync);
  video.addEventListener('seeked', sync);
  return h('div', { class: 'transcript-wrap' }, h('h3', {}, 'Transcript'), list);
}

function participantsSection(s: SessionDetails): HTMLElement {
  return h(
    'section',
    { class: 'card', 'aria-labelledby': 'participants-title' },
    h('h2', { id: 'participants-title' }, `Participants (${s.participants.length})`),
    s.participants.length === 0
      ? h('p', { class: 'muted' }, 'None recorded.')
      : h(
          'div',
          { class: 'table-wrap' },
          h(
            'table',
            {},
            h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'Participant id'), h('th', { scope: 'col' }, 'Consent'), h('th', { scope: 'col' }, 'Method'), h('th', { scope: 'col' }, 'Tracks'))),
            h(
              'tbody',
              {},
              s.participants.map((p) =>
                h(
                  'tr',
                  {},
                  h('td', {}, p.name),
                  h('td', {}, h('code', {}, p.participant)),
                  h('td', {}, h('span', { class: `badge ${p.consent}` }, p.consent)),
                  h('td', {}, p.consentMethod ?? '—'),
                  h(
                    'td',
                    {},
                    s.tracks
                      .filter((t) => t.participant === p.participant)
                      .map((t) => t.kind)
                      .join(', ') || '—',
                  ),
                ),
              ),
            ),
          ),
        ),
  );
}

function timelineSection(s: SessionDetails, names: Map<string, string>): HTMLElement {
  const events = timelineEvents(s, names);
  const origin = s.startedAt ? Date.parse(s.startedAt) : (events[0]?.at ?? 0);
  const end = s.endedAt ? Date.parse(s.endedAt) : Math.max(origin + 1, ...events.map((e) => e.at));
  const span = Math.max(1, end - origin);
  const pct = (x: number) => `${(Math.min(Math.max(x - origin, 0), span) / span) * 100}%`;
  // One lane per participant: when each of their tracks was being recorded.
  const lanes = [...new Set(s.tracks.map((t) => t.participant))].map((p) =>
    h(
      'div',
      { class: 'lane' },
      h('span', { class: 'lane-name' }, names.get(p) ?? p),
      h(
        'div',
        { class: 'lane-bar', 'aria-hidden': 'true' },
        s.tracks
          .filter((t) => t.participant === p)
          .flatMap((t) => t.segments.filter((g) => g.startedAt && g.endedAt).map((g) => ({ t, g })))
          .map(({ t, g }) => {
            const a = Date.parse(g.startedAt!);
            const b = Date.parse(g.endedAt!);
            const span = h('span', { class: `on ${t.kind}`, title: `${t.kind} ${formatTime(g.startedAt)} – ${formatTime(g.endedAt)}` });
            span.style.left = pct(a);
            span.style.width = `calc(${pct(b)} - ${pct(a)})`;
            return span;
          }),
      ),
    ),
  );
  return h(
    'section',
    { class: 'card', 'aria-labelledby': 'timeline-title' },
    h('h2', { id: 'timeline-title' }, 'Timeline'),
    lanes.length ? h('div', { class: 'lanes' }, lanes) : null,
    h(
      'ol',
      { class: 'timeline' },
      events.map((e) => h('li', { class: `ev ${e.kind}` }, h('span', { class: 'time' }, formatOffset((e.at - origin) / 1000)), h('span', {}, e.label), h('span', { class: 'muted abs' }, formatTime(new Date(e.at).toISOString())))),
    ),
  );
}

interface DeletedArtifact {
  item: string;
  kind: string;
  state: string;
  deletedAt: string;
  reason: string;
  policy: string | null;
}

function artifactsSection(ctx: Ctx, s: SessionDetails, names: Map<string, string>, deleted: DeletedArtifact[]): HTMLElement {
  const canDownload = ctx.can('recordings.play');
  return h(
    'section',
    { class: 'card', 'aria-labelledby': 'artifacts-title' },
    h('h2', { id: 'artifacts-title' }, `Artifacts (${s.artifacts.length})`),
    canDownload ? h('p', { class: 'muted' }, 'Every download is recorded in the audit trail.') : null,
    s.artifacts.length === 0
      ? h('p', { class: 'muted' }, ACTIVE.has(s.status) ? 'Artifacts appear when processing is done.' : 'No artifacts.')
      : h(
          'div',
          { class: 'table-wrap' },
          h(
            'table',
            { class: 'artifacts' },
            h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'File'), h('th', { scope: 'col' }, 'Kind'), h('th', { scope: 'col' }, 'Participant'), h('th', { scope: 'col' }, 'Size'), h('th', { scope: 'col' }, 'SHA-256'), canDownload ? h('th', { scope: 'col' }, 'Download') : null)),
            h(
              'tbody',
              {},
              s.artifacts.map((a) => {
                const name = a.key.split('/').pop() ?? a.key;
                return h(
                  'tr',
                  { 'data-key': a.key },
                  h('td', {}, h('code', {}, name)),
                  h('td', {}, a.kind, a.state && a.state !== 'stored' ? h('span', { class: 'badge' }, ` ${a.state}`) : null),
                  h('td', {}, a.participant ? (names.get(a.participant) ?? a.participant) : '—'),
                  h('td', { class: 'num', title: `${a.bytes} bytes` }, formatBytes(a.bytes)),
                  h('td', {}, h('code', { class: 'hash' }, a.sha256)),
                  canDownload ? h('td', {}, a.state === 'deleted' ? '—' : h('a', { href: contentUrl(s.session, a), download: name, 'aria-label': `Download ${name}` }, 'Download')) : null,
                );
              }),
              deleted.map((d) =>
                h(
                  'tr',
                  { class: 'deleted', 'data-item': d.item },
                  h('td', {}, h('code', {}, d.item.split('/').pop() ?? d.item)),
                  h('td', {}, d.kind, ' ', h('span', { class: 'badge' }, d.state)),
                  h('td', { colspan: canDownload ? 4 : 3 }, `${d.state} ${formatTime(d.deletedAt)} — ${d.reason}${d.policy ? ` (policy ${d.policy})` : ''}`),
                ),
              ),
            ),
          ),
        ),
  );
}
