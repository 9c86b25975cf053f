import { randomUUID } from 'node:crypto';
import type { Db } from '../../../../db/database.ts';
import { VerbatimError } from '../../../lib/errors.ts';
import type { FfmpegRunner } from '../../../lib/media/ffmpeg-runner.ts';
import { detect } from './detectors.ts';

/**
 * Redaction (issue 13 item 5). What is redacted: every detector hit (card numbers, IBANs, SSNs,
 * e-mail addresses, phone numbers; found again at each read, so a detector's improvement
 * applies to old transcripts too) and the spans officers marked (redaction_spans). Roles
 * without `redaction.reveal` see a label (`[CARD NUMBER]`) in search snippets and transcripts;
 * those with it see labels too unless they ask to reveal, which is audited. The original text
 * stays in the database. Redacted exports replace each span's audio with a tone over exactly
 * the span's words (whisper.cpp word timing) in the media on the session timeline.
 */

export interface RedactionSpan {
  /** [start, end) in the segment text's UTF-16 code units. */
  start: number;
  end: number;
  label: string;
  source: 'detector' | 'officer';
}

export interface TimedSpan extends RedactionSpan {
  seq: number;
  participant: string;
  /** Session seconds the span was said in. */
  from: number;
  to: number;
  /** false: the segment had no word timing, so the whole segment's time is used. */
  exact: boolean;
}

interface SegmentRow {
  seq: number;
  participant_id: string;
  start_seconds: number | string;
  end_seconds: number | string;
  text: string;
  words?: unknown;
}

/** Detector hits and officer spans of one segment, overlapping ones merged (the first label wins), in text order. */
export function redactionSpans(text: string, officer: readonly Omit<RedactionSpan, 'source'>[] = []): RedactionSpan[] {
  const all: RedactionSpan[] = [
    ...detect(text).map((h) => ({ start: h.start, end: h.end, label: h.label, source: 'detector' as const })),
    ...officer.map((o) => ({ ...o, source: 'officer' as const })),
  ].sort((a, b) => a.start - b.start || b.end - a.end);
  const out: RedactionSpan[] = [];
  for (const s of all) {
    const last = out.at(-1);
    if (last && s.start < last.end) last.end = Math.max(last.end, s.end);
    else out.push({ ...s });
  }
  return out;
}

/** The text with each span replaced by its label in brackets (or by what `mark` makes of it). */
export function redactText(text: string, spans: readonly RedactionSpan[], mark: (label: string) => string = (l) => `[${l}]`): string {
  let out = '';
  let at = 0;
  for (const s of spans) {
    out += `${text.slice(at, s.start)}${mark(s.label)}`;
    at = s.end;
  }
  return out + text.slice(at);
}

/**
 * When a character span was said: from the first to the last word it touches. Words are found
 * in the text in order (whisper.cpp's words are the segment text split at spaces); without
 * word timing the whole segment is used (exact false), so redaction errs on the side of more.
 */
export function spanTimes(text: string, words: readonly { text: string; start: number; end: number }[] | null | undefined, span: { start: number; end: number }, segment: { start: number; end: number }): { from: number; to: number; exact: boolean } {
  let cursor = 0;
  let from = Infinity;
  let to = -Infinity;
  for (const w of words ?? []) {
    const at = text.indexOf(w.text, cursor);
    if (at < 0) continue;
    cursor = at + w.text.length;
    if (at < span.end && span.start < cursor) {
      from = Math.min(from, w.start);
      to = Math.max(to, w.end);
    }
  }
  return from <= to ? { from, to, exact: true } : { from: segment.start, to: segment.end, exact: false };
}

function wordsOf(row: SegmentRow): { text: string; start: number; end: number }[] | null {
  if (row.words === null || row.words === undefined) return null;
  return (typeof row.words === 'string' ? JSON.parse(row.words) : row.words) as { text: string; start: number; end: number }[];
}

/** Officer-marked spans of some segments, by `${session}\0${seq}`. */
export async function officerSpans(db: Db, keys: readonly { session: string; seq: number }[]): Promise<Map<string, Omit<RedactionSpan, 'source'>[]>> {
  const out = new Map<string, Omit<RedactionSpan, 'source'>[]>();
  const sessions = [...new Set(keys.map((k) => k.session))];
  if (sessions.length === 0) return out;
  const wanted = new Set(keys.map((k) => segmentKey(k.session, k.seq)));
  const rows = await db.selectFrom('redaction_spans').select(['session_id', 'seq', 'char_start', 'char_end', 'label']).where('session_id', 'in', sessions).orderBy('char_start').execute();
  for (const r of rows) {
    const k = segmentKey(r.session_id, r.seq);
    if (!wanted.has(k)) continue;
    out.set(k, [...(out.get(k) ?? []), { start: r.char_start, end: r.char_end, label: r.label }]);
  }
  return out;
}

export const segmentKey = (session: string, seq: number) => `${session}\u0000${seq}`;

/**
 * Redacted texts of the rows that have anything to redact. `mark` replaces each label (search
 * snippets put a placeholder there, so the label's own words are never highlighted as a match).
 */
export async function redactRows(db: Db, rows: readonly { session_id: string; seq: number; text: string }[], mark?: (label: string) => string): Promise<Map<string, { text: string; spans: number }>> {
  const officer = await officerSpans(db, rows.map((r) => ({ session: r.session_id, seq: r.seq })));
  const out = new Map<string, { text: string; spans: number }>();
  for (const r of rows) {
    const k = segmentKey(r.session_id, r.seq);
    const spans = redactionSpans(r.text, officer.get(k));
    if (spans.length > 0) out.set(k, { text: redactText(r.text, spans, mark), spans: spans.length });
  }
  return out;
}

/** Every redaction span of a session with the time it was said, in seq order. */
export async function sessionRedactions(db: Db, session: string): Promise<{ segments: (SegmentRow & { spans: RedactionSpan[] })[]; timed: TimedSpan[] }> {
  const rows = await db.selectFrom('transcript_segments').select(['seq', 'participant_id', 'start_seconds', 'end_seconds', 'text', 'words']).where('session_id', '=', session).orderBy('seq').execute();
  const officer = await officerSpans(db, rows.map((r) => ({ session, seq: r.seq })));
  const segments = rows.map((r) => ({ ...r, spans: redactionSpans(r.text, officer.get(segmentKey(session, r.seq))) }));
  const timed = segments.flatMap((r) =>
    r.spans.map((s) => ({ ...s, seq: r.seq, participant: r.participant_id, ...spanTimes(r.text, wordsOf(r), s, { start: Number(r.start_seconds), end: Number(r.end_seconds) }) })),
  );
  return { segments, timed };
}

/** An officer marks a span of a segment for redaction (the segment must exist and the span lie within its text). */
export async function markSpan(db: Db, m: { session: string; seq: number; start: number; end: number; label: string; by: string }): Promise<TimedSpan> {
  const row = await db.selectFrom('transcript_segments').select(['seq', 'participant_id', 'start_seconds', 'end_seconds', 'text', 'words']).where('session_id', '=', m.session).where('seq', '=', m.seq).executeTakeFirst();
  if (!row) throw new VerbatimError('NOT_FOUND', `session ${m.session} has no transcript segment ${m.seq}`, { hint: 'Take seq from GET /api/v1/sessions/{id}/transcript.', details: { session: m.session, seq: m.seq } });
  if (!(m.start >= 0 && m.end > m.start && m.end <= row.text.length)) {
    throw new VerbatimError('BAD_REQUEST', `span [${m.start}, ${m.end}) is not within segment ${m.seq}'s ${row.text.length} characters`, { hint: 'Give 0 <= start < end <= the text length (UTF-16 code units).', details: { field: 'start' } });
  }
  const t = spanTimes(row.text, wordsOf(row), m, { start: Number(row.start_seconds), end: Number(row.end_seconds) });
  await db
    .insertInto('redaction_spans')
    .values({ id: randomUUID(), session_id: m.session, seq: m.seq, char_start: m.start, char_end: m.end, start_seconds: t.from, end_seconds: t.to, label: m.label, source: 'officer', created_by: m.by })
    .onConflict((oc) => oc.columns(['session_id', 'seq', 'char_start', 'char_end', 'label']).doNothing())
    .execute();
  return { start: m.start, end: m.end, label: m.label, source: 'officer', seq: m.seq, participant: row.participant_id, ...t };
}

/** Merged [from, to) time ranges (seconds), for the tone filter. */
export function mergeRanges(ranges: readonly { from: number; to: number }[]): { from: number; to: number }[] {
  const out: { from: number; to: number }[] = [];
  for (const r of [...ranges].sort((a, b) => a.from - b.from)) {
    const last = out.at(-1);
    if (last && r.from <= last.to) last.to = Math.max(last.to, r.to);
    else out.push({ ...r });
  }
  return out;
}

/** The tone that replaces redacted speech. */
export const TONE_HZ = 1000;
const TONE_AMPLITUDE = 0.25;

/**
 * An aeval filter: inside the ranges every channel is a 1 kHz sine, elsewhere the input
 * sample itself, so the cut is exact to the sample and the format (rate, layout) is kept.
 */
export function toneFilter(ranges: readonly { from: number; to: number }[]): string {
  const inside = ranges.map((r) => `between(t,${r.from.toFixed(3)},${r.to.toFixed(3)})`).join('+');
  return `aeval=exprs='if(${inside || '0'},${TONE_AMPLITUDE}*sin(2*PI*${TONE_HZ}*t),val(ch))':channel_layout=same`;
}

/** Audio codec for a redacted copy, by container (video is copied as is). */
const AUDIO_CODEC: Record<string, string[]> = {
  '.wav': ['-c:a', 'pcm_s16le'],
  '.mp4': ['-c:a', 'aac', '-b:a', '128k'],
};

/** Containers whose media is on the session timeline and can be redacted exactly. */
export function redactableMedia(kind: string, file: string): boolean {
  return (kind === 'composite' || kind === 'participant-wav') && Object.hasOwn(AUDIO_CODEC, extOf(file));
}

function extOf(file: string): string {
  const i = file.lastIndexOf('.');
  return i < 0 ? '' : file.slice(i).toLowerCase();
}

/** Writes `output`: `input` with a tone over the ranges (session seconds) and its video copied. */
export async function redactMedia(runner: FfmpegRunner, input: string, output: string, ranges: readonly { from: number; to: number }[], opts: { signal?: AbortSignal } = {}): Promise<void> {
  const codec = AUDIO_CODEC[extOf(output)];
  if (!codec) throw new VerbatimError('INTERNAL', `no redaction encoding for ${output}`);
  await runner.run(
    {
      inputs: [{ path: input }],
      filterComplex: `[0:a]${toneFilter(mergeRanges(ranges))}[red]`,
      outputOptions: ['-map', '0:v?', '-map', '[red]', '-c:v', 'copy', ...codec, '-fflags', '+bitexact', '-map_metadata', '-1'],
      output,
    },
    opts,
  );
}
