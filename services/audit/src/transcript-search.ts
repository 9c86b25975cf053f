import { createHash } from 'node:crypto';
import { sql, type Kysely, type RawBuilder } from 'kysely';
import type { Database } from '../../../db/schema.ts';
import { VerbatimError } from '../../lib/errors.ts';

/**
 * Full-text search over transcript segments (GET /api/v1/search).
 *
 * Ranking trade-off. Ranking every match of a common word means reading every matching
 * row (100k rows for a word in 10 % of 1M segments: 100+ ms). Instead a search ranks at
 * most RANK_WINDOW matches: all of them when there are no more, otherwise the RANK_WINDOW
 * *newest* (by when they were spoken), best-ranked first. The response says so
 * (`rankedMatches`, `rankedSince`, `totalIsEstimate`); older matches of a common word are
 * reached by narrowing the search (`to`/`from`, a participant, a room, a phrase). Rare words,
 * phrases and narrow filters rank all their matches.
 *
 * How the newest matches are found cheaply: tsv also holds key lexemes for the day, 8-day and
 * 64-day bucket of `spoken_at`, the participant and the room (migration 0008). The user's
 * query, the filters and a time window are separate conditions on its GIN index; GIN
 * intersects their posting lists (skipping through the long ones), so only rows matching all
 * of them are read from the table. The window starts at the newest day and grows backwards,
 * sized by the match density seen so far, until it holds RANK_WINDOW + 1 matches or covers
 * the whole range.
 */

type Db = Kysely<Database>;

/** At most this many matches are ranked (and can be paged through: 25 pages of 20). */
export const RANK_WINDOW = 500;
/** The first window spans this fraction of the searched time range. */
const FIRST_WINDOW_FRACTION = 1 / 128;
/** Grow a window by this much over what the observed density says is needed. */
const WINDOW_MARGIN = 1.3;
/** A session's matches are all ranked (a long meeting has a few thousand segments); a bound all the same. */
const SESSION_CAP = 20_000;
/** After this many windowed steps the rest of the range is searched in one step. */
const MAX_STEPS = 6;
const DAY_MS = 86_400_000;
const MARK_START = '\uE000';
const MARK_STOP = '\uE001';
const HEADLINE_OPTIONS = `StartSel=${MARK_START}, StopSel=${MARK_STOP}, MaxWords=35, MinWords=15, MaxFragments=2, FragmentDelimiter=" … "`;

export interface SearchParams {
  /** Web-search syntax (websearch_to_tsquery('english')). */
  q: string;
  room?: string | undefined;
  participant?: string | undefined;
  session?: string | undefined;
  /** ISO-8601 instant, or a date (from: its UTC midnight; to: through its UTC end). */
  from?: string | undefined;
  to?: string | undefined;
  page?: number | undefined;
  pageSize?: number | undefined;
}

export interface SearchHit {
  session: string;
  room: string;
  seq: number;
  speaker: string;
  participant: string;
  start: number;
  end: number;
  /** HTML: the transcript text escaped, matches in <mark>…</mark>. */
  snippet: string;
  rank: number;
  /** When the segment was spoken (session start + offset). */
  at: string;
  playUrl: string;
}

export interface SearchResult {
  query: string;
  page: number;
  pageSize: number;
  /** Matches of the query and filters: exact, or an estimate when totalIsEstimate. */
  total: number;
  totalIsEstimate: boolean;
  /** How many matches were ranked (and can be paged through): all of them, or the newest RANK_WINDOW (SESSION_CAP within one session). */
  rankedMatches: number;
  /** When only the newest matches were ranked: when the oldest of them was spoken; else null. */
  rankedSince: string | null;
  hits: SearchHit[];
  /** Hits of this page with redacted spans (shown as [LABEL] unless the search was asked to reveal them). */
  redactedHits: number;
}

/**
 * Redacted texts of the page's rows that need it, by `${session}\0${seq}` (supervision/redaction.ts),
 * each label replaced by `mark(label)`: a placeholder that ts_headline leaves alone, put back as [LABEL] after.
 */
export interface SearchRedaction {
  redact?: (rows: { session_id: string; seq: number; text: string }[], mark: (label: string) => string) => Promise<Map<string, { text: string; spans: number }>>;
  /** Show redacted spans in clear: `redact` only counts the hits that hold any (the caller audits the reveal). */
  reveal?: boolean;
}

/** Private-use characters (never in a transcript: MARK_* are stripped the same way) standing for labels in a redacted headline. */
const LABEL_BASE = 0xe010;
const LABEL_MAX = 0x7f0;

interface Candidate {
  session_id: string;
  seq: number;
  /** spoken_at, epoch milliseconds. */
  t: number;
  rank: number;
}

export async function searchTranscripts(db: Db, params: SearchParams, redaction: SearchRedaction = {}): Promise<SearchResult> {
  const page = params.page ?? 1;
  const pageSize = params.pageSize ?? 20;
  const from = params.from ? bound(params.from, 'from') : undefined;
  const to = params.to ? bound(params.to, 'to') : undefined;
  if (from && to && from.getTime() > to.getTime()) throw badRequest('from is after to', 'from');
  const tsq = sql`websearch_to_tsquery('english', ${params.q})`;

  const indexed = sql`ts.tsv`; // holds the key lexemes too (migration 0008)
  // Exact conditions, plus their lexemes as separate index conditions (GIN intersects them).
  const filters: RawBuilder<unknown>[] = [sql`${indexed} @@ ${tsq}`];
  if (params.session) filters.push(sql`ts.session_id = ${params.session}`);
  if (params.participant) filters.push(sql`ts.participant_id = ${params.participant}`, sql`${indexed} @@ ${keyLexeme('p', params.participant)}::tsquery`);
  if (params.room) filters.push(sql`ts.room_id = ${params.room}`, sql`${indexed} @@ ${keyLexeme('r', params.room)}::tsquery`);
  // Time conditions on an expression the btree cannot serve: the bucket lexemes are the index
  // path for time (a BitmapAnd with the btree would read every row of the range from it).
  const spokenAt = sql`(ts.spoken_at + interval '0 s')`;
  if (from) filters.push(sql`${spokenAt} >= ${from.toISOString()}::timestamptz`);
  if (to) filters.push(sql`${spokenAt} <= ${to.toISOString()}::timestamptz`);

  // Each step is one GIN scan of all conditions, then a sort of its (bounded) matches. The
  // order is on the expression too, so that the planner never walks the spoken_at btree
  // instead, reading every row of the window (or of all time) to find the matches.
  const step = (extra: RawBuilder<unknown>[], limit: number) =>
    sql<Candidate>`select ts.session_id, ts.seq, extract(epoch from ts.spoken_at)::float8 * 1000 as t, ts_rank_cd(ts.tsv, ${tsq}) as rank
      from transcript_segments ts
      where ${sql.join([...filters, ...extra], sql` and `)}
      order by ${spokenAt} desc, ts.session_id desc, ts.seq desc
      limit ${limit}`
      .execute(db)
      .then((r) => r.rows);

  let candidates: Candidate[] = [];
  let truncated = false;
  let span: { lo: number; hi: number } | undefined;
  const cap = params.session ? SESSION_CAP : RANK_WINDOW;
  if (params.session) {
    candidates = await step([], cap + 1);
  } else {
    span = await timeSpan(db, from, to);
    if (span) {
      // Walk back from the newest day in windows [loDay, hiDay] (whole UTC days).
      let hiDay = Math.floor(span.hi / DAY_MS);
      const firstDay = Math.floor(span.lo / DAY_MS);
      let days = Math.max(1, Math.ceil((hiDay - firstDay + 1) * FIRST_WINDOW_FRACTION));
      let covered = 0;
      for (let i = 0; hiDay >= firstDay; i++) {
        const want = RANK_WINDOW + 1 - candidates.length;
        const loDay = i >= MAX_STEPS ? firstDay : Math.max(firstDay, hiDay - days + 1);
        const last = loDay === firstDay;
        // Without a lower bound the last step needs no buckets: "everything older" is a filter.
        const window =
          last && !from ? sql`${spokenAt} < ${new Date((hiDay + 1) * DAY_MS).toISOString()}::timestamptz` : sql`${indexed} @@ ${bucketQuery(loDay, hiDay)}::tsquery`;
        const rows = await step([window], want);
        candidates.push(...rows);
        covered += hiDay - loDay + 1;
        if (candidates.length > RANK_WINDOW || last) break;
        hiDay = loDay - 1;
        const density = candidates.length / covered;
        const needed = (RANK_WINDOW + 1 - candidates.length) * WINDOW_MARGIN;
        // No match yet: the rest of the range at once (the query is rare; GIN alone is cheap).
        // Likewise when the window would take most of what is left.
        days = density > 0 ? Math.max(days, Math.ceil(needed / density)) : Number.POSITIVE_INFINITY;
        if (days * 2 >= hiDay - firstDay + 1) days = Number.POSITIVE_INFINITY;
      }
    }
  }
  if (candidates.length > cap) {
    truncated = true;
    candidates = candidates.slice(0, cap);
  }

  let total = candidates.length;
  let rankedSince: string | null = null;
  if (truncated) {
    const oldest = candidates.at(-1)!.t;
    rankedSince = new Date(oldest).toISOString();
    // Assume the rest is spread in time like the newest ones: a rough figure, flagged as such.
    total = span ? Math.max(cap + 1, Math.round((cap * (span.hi - span.lo)) / Math.max(1, span.hi - oldest))) : cap + 1;
  }

  const ranked = candidates
    .map((c) => ({ ...c, rank: Number(c.rank), t: Number(c.t) }))
    .sort((a, b) => b.rank - a.rank || b.t - a.t || (a.session_id < b.session_id ? -1 : a.session_id > b.session_id ? 1 : a.seq - b.seq));
  const pageRows = ranked.slice((page - 1) * pageSize, page * pageSize);
  const { hits, redactedHits } = pageRows.length === 0 ? { hits: [], redactedHits: 0 } : await pageHits(db, tsq, pageRows, redaction);
  return { query: params.q, page, pageSize, total, totalIsEstimate: truncated, rankedMatches: candidates.length, rankedSince, hits, redactedHits };
}

/** Snippets and details for one page of ranked rows: ts_headline runs on these rows only. */
async function pageHits(db: Db, tsq: RawBuilder<unknown>, rows: { session_id: string; seq: number; rank: number }[], redaction: SearchRedaction): Promise<{ hits: SearchHit[]; redactedHits: number }> {
  const keys = sql.join(rows.map((r) => sql`(${r.session_id}, ${r.seq}::int)`));
  const details = await sql<{
    session_id: string;
    seq: number;
    room_id: string;
    speaker: string;
    participant_id: string;
    start_seconds: number;
    end_seconds: number;
    headline: string;
    spoken_at: string;
    text: string;
  }>`select ts.session_id, ts.seq, ts.room_id, ts.speaker, ts.participant_id, ts.start_seconds, ts.end_seconds, ts.text,
        ts_headline('english', translate(ts.text, ${MARK_START + MARK_STOP}, ''), ${tsq}, ${HEADLINE_OPTIONS}) as headline,
        to_char(ts.spoken_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as spoken_at
      from transcript_segments ts
      where (ts.session_id, ts.seq) in (${keys})`.execute(db);
  const byKey = new Map(details.rows.map((d) => [`${d.session_id}\u0000${d.seq}`, d]));
  // Redacted rows are highlighted again from their redacted text, so the snippet never holds a redacted span.
  const labels: string[] = [];
  const mark = (label: string) => {
    let i = labels.indexOf(label);
    if (i < 0 && labels.length < LABEL_MAX) i = labels.push(label) - 1;
    return String.fromCharCode(LABEL_BASE + Math.max(i, 0));
  };
  const redacted = redaction.redact ? await redaction.redact(details.rows.map((d) => ({ ...d, text: stripLabelChars(d.text) })), mark) : new Map<string, { text: string }>();
  const present = [...redacted.entries()].filter(([k]) => byKey.has(k));
  if (present.length > 0 && !redaction.reveal) {
    const texts = JSON.stringify(present.map(([, r]) => r.text));
    const again = await sql<{ i: number; headline: string }>`select (x.i - 1)::int as i, ts_headline('english', translate(x.t, ${MARK_START + MARK_STOP}, ''), ${tsq}, ${HEADLINE_OPTIONS}) as headline
      from jsonb_array_elements_text(${texts}::jsonb) with ordinality as x(t, i)`.execute(db);
    for (const a of again.rows) byKey.get(present[a.i]![0])!.headline = a.headline;
  }
  const hits = rows.flatMap((r) => {
    const d = byKey.get(`${r.session_id}\u0000${r.seq}`);
    // Deleted between the two queries (retention, erasure): drop it rather than show a stale hit.
    if (!d) return [];
    return [
      {
        session: d.session_id,
        room: d.room_id,
        seq: d.seq,
        speaker: d.speaker,
        participant: d.participant_id,
        start: d.start_seconds,
        end: d.end_seconds,
        snippet: present.length > 0 && !redaction.reveal ? unmarkLabels(markup(d.headline), labels) : markup(d.headline),
        rank: r.rank,
        at: d.spoken_at,
        playUrl: `/play/${encodeURIComponent(d.session_id)}?t=${d.start_seconds}`,
      },
    ];
  });
  return { hits, redactedHits: present.length };
}

/** The time range to search: the first and last segment, clipped to from/to (two btree probes). */
async function timeSpan(db: Db, from: Date | undefined, to: Date | undefined): Promise<{ lo: number; hi: number } | undefined> {
  const r = await sql<{ lo: Date | null; hi: Date | null }>`select min(spoken_at) as lo, max(spoken_at) as hi from transcript_segments`.execute(db);
  const row = r.rows[0];
  if (!row?.lo || !row.hi) return undefined;
  const lo = Math.max(new Date(row.lo).getTime(), from?.getTime() ?? -Infinity);
  const hi = Math.min(new Date(row.hi).getTime(), to?.getTime() ?? Infinity);
  return lo <= hi ? { lo, hi } : undefined;
}

/** A tsquery of the lexeme transcript_search_keys() gives a participant ('p') or room ('r'). */
function keyLexeme(kind: 'p' | 'r', id: string): string {
  return `'K${kind.toUpperCase()}${createHash('md5').update(id, 'utf8').digest('hex')}'`;
}

/**
 * A tsquery OR-ing the fewest bucket lexemes that cover days [lo, hi] exactly
 * (buckets of 1, 8 and 64 days, aligned; see migration 0008).
 */
export function bucketQuery(lo: number, hi: number): string {
  const parts: string[] = [];
  let d = lo;
  while (d <= hi) {
    if (d % 64 === 0 && d + 63 <= hi) {
      parts.push(`'KC${d / 64}'`);
      d += 64;
    } else if (d % 8 === 0 && d + 7 <= hi) {
      parts.push(`'KB${d / 8}'`);
      d += 8;
    } else {
      parts.push(`'KA${d}'`);
      d += 1;
    }
  }
  return parts.length === 1 ? parts[0]! : `(${parts.join(' | ')})`;
}

function bound(v: string, which: 'from' | 'to'): Date {
  if (/^\d{4}-\d{2}-\d{2}$/.test(v)) {
    const d = new Date(`${v}T00:00:00.000Z`);
    return which === 'from' ? d : new Date(d.getTime() + DAY_MS - 1);
  }
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) throw badRequest(`${which} is not a valid instant`, which);
  return d;
}

function badRequest(message: string, field: string): VerbatimError {
  return new VerbatimError('BAD_REQUEST', message, { hint: 'See GET /docs/json for the API.', details: { field } });
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

function stripLabelChars(text: string): string {
  return text.replace(/[\uE010-\uE7FF]/g, '');
}

function unmarkLabels(html: string, labels: readonly string[]): string {
  return html.replace(/[\uE010-\uE7FF]/g, (c) => escapeHtml(`[${labels[c.charCodeAt(0) - LABEL_BASE] ?? 'REDACTED'}]`));
}

function markup(headline: string): string {
  return escapeHtml(headline).replaceAll(MARK_START, '<mark>').replaceAll(MARK_STOP, '</mark>');
}
