import type { SessionDetails } from './api.ts';

export interface TimelineEvent {
  /** Epoch ms. */
  at: number;
  label: string;
  kind: 'join' | 'leave' | 'pause' | 'consent' | 'session' | 'other';
}

type ManifestEvent = NonNullable<SessionDetails['events']>[number];

/** The manifest's event types (services/sfu/src/recording-tap.ts, services/recorder) in words. */
function describe(e: ManifestEvent, who: string): { label: string; kind: TimelineEvent['kind'] } | null {
  const d = e.details ?? {};
  const track = e.track ? ` (${e.track})` : '';
  switch (e.type) {
    case 'session-started':
    case 'session-ended':
      return null; // the session's own start and end are shown from its row
    case 'participant-joined':
      return { label: `${who} joined`, kind: 'join' };
    case 'participant-left':
      return { label: `${who} left`, kind: 'leave' };
    case 'producer-added':
      return { label: `${who} started ${typeof d.kind === 'string' ? d.kind : 'a track'}${track}`, kind: 'join' };
    case 'producer-closed':
      return { label: `${who} stopped a track${track}`, kind: 'leave' };
    case 'producer-paused':
      return { label: `${who} paused${track}`, kind: 'pause' };
    case 'producer-resumed':
      return { label: `${who} resumed${track}`, kind: 'pause' };
    case 'consent':
      return { label: `${who}: consent ${text(d.decision ?? '?')}${d.method ? ` (${text(d.method)})` : ''}`, kind: 'consent' };
    case 'recording-on':
      return { label: `Recording switched on${d.by ? ` by ${text(d.by)}` : ''}`, kind: 'session' };
    case 'recording-off':
      return { label: `Recording switched off${d.by ? ` by ${text(d.by)}` : ''}`, kind: 'session' };
    case 'recorder-restarted':
      return { label: 'Recorder restarted (gap possible)', kind: 'other' };
    case 'track-failed':
      return { label: `${who || 'A track'} failed${track}${d.code ? `: ${text(d.code)}` : ''}`, kind: 'other' };
    default:
      return { label: `${who ? `${who}: ` : ''}${e.type.replace(/-/g, ' ')}${track}`, kind: 'other' };
  }
}

/**
 * Joins, leaves, pauses and consent on the session clock. The session's recorded
 * events are used when the API sends them; otherwise they are inferred from what
 * the recorder captured (each track segment's start and end, and its end reason)
 * and each participant's consent decision.
 */
export function timelineEvents(s: SessionDetails, names: Map<string, string>): TimelineEvent[] {
  const who = (p?: string | null) => (p ? (names.get(p) ?? p) : '');
  const ev: TimelineEvent[] = [];
  const push = (iso: string | null | undefined, label: string, kind: TimelineEvent['kind']) => {
    const at = iso ? Date.parse(iso) : NaN;
    if (Number.isFinite(at)) ev.push({ at, label, kind });
  };
  push(s.startedAt, 'Recording started', 'session');
  const events = s.events ?? [];
  for (const e of events) {
    const d = describe(e, who(e.participant));
    if (d) push(e.at, d.label, d.kind);
  }
  if (events.length === 0) {
    for (const t of s.tracks) {
      for (const g of t.segments) {
        push(g.startedAt, `${who(t.participant)}: ${t.kind} ${g.segment === 0 ? 'recording started' : 'recording resumed'}`, 'join');
        const paused = /pause/i.test(g.endReason);
        push(g.endedAt, `${who(t.participant)}: ${t.kind} ${paused ? 'paused' : `stopped (${g.endReason})`}${g.truncated ? ', truncated' : ''}`, paused ? 'pause' : 'leave');
      }
    }
  }
  if (!events.some((e) => e.type === 'consent')) {
    for (const p of s.participants) if (p.consent !== 'not-required') push(s.startedAt, `${p.name}: consent ${p.consent}${p.consentMethod ? ` (${p.consentMethod})` : ''}`, 'consent');
  }
  push(s.endedAt, `Recording ended${s.endReason ? ` (${s.endReason})` : ''}`, 'session');
  // Stable: same-time events keep their recorded order.
  return ev.map((e, i) => ({ e, i })).sort((a, b) => a.e.at - b.e.at || a.i - b.i).map((x) => x.e);
}

/** A detail value as words: strings and numbers as they are, anything else as JSON. */
function text(v: unknown): string {
  return typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' ? String(v) : JSON.stringify(v);
}
