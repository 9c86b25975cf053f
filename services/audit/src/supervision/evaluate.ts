import { randomUUID } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import type { Database } from '../../../../db/schema.ts';
import { detect } from './detectors.ts';
import { matchPattern } from './patterns.ts';
import { sampled, SupervisionPolicies, type LoadedPolicy } from './policies.ts';

/**
 * Runs policies over stored transcript segments and files what they find in the review queue.
 * One policy version, one session and one speaker make one item; its hits (segment, rule,
 * character span) join it. Everything is keyed (review_items_key, review_hits_key), so running
 * again over the same transcripts adds nothing twice. The lexicon is matched by Postgres (the
 * GIN index on the english tsvector narrows, verbatim_lexicon decides); detectors and patterns
 * run here on the segment text.
 */

type Db = Kysely<Database>;

export interface EvaluationResult {
  sessions: number;
  /** Items created or joined (hits and samples). */
  items: number;
  /** Hits found (already filed ones included). */
  hits: number;
  sampled: number;
  /** Where the time went (ms): the lexicon query, reading segments and running detectors/patterns, filing. */
  timings: { lexiconMs: number; textMs: number; fileMs: number };
}

interface SegmentRow {
  session_id: string;
  seq: number;
  participant_id: string;
  speaker: string;
  start_seconds: number;
  end_seconds: number;
  text: string;
}

interface Hit {
  seg: SegmentRow;
  rule: string;
  ruleKind: 'lexicon' | 'detector' | 'pattern';
  label: string;
  start: number;
  end: number;
  matched: string;
}

interface SessionRow {
  id: string;
  room_id: string;
  started_at: Date;
}

export interface EvaluateOptions {
  /** Only these sessions (a registered transcript); default: every session with a transcript. */
  sessionIds?: readonly string[];
  /** Sessions per round trip (default 500). */
  chunkSessions?: number;
  onProgress?: (done: number, total: number, sofar: EvaluationResult) => Promise<void>;
}

const OPEN = '\u27e6';
const CLOSE = '\u27e7';
const SNIPPET_CONTEXT = 60;

/** The speakers a policy's scope names (participants and members of its groups); null = everyone. */
async function scopeSpeakers(db: Db, p: LoadedPolicy): Promise<Set<string> | null> {
  const { participants, groups } = p.definition.scope;
  if (participants.length === 0 && groups.length === 0) return null;
  const members = groups.length > 0 ? await db.selectFrom('identity_group_members').select('participant_id').where('group_name', 'in', groups).execute() : [];
  return new Set([...participants, ...members.map((m) => m.participant_id)]);
}

async function sessionsInScope(db: Db, p: LoadedPolicy, speakers: Set<string> | null, only?: readonly string[]): Promise<SessionRow[]> {
  if (only && only.length === 0) return [];
  let q = db
    .selectFrom('recording_sessions as rs')
    .select(['rs.id', 'rs.room_id', 'rs.started_at'])
    .where((eb) => eb.exists(eb.selectFrom('transcript_segments as ts').select(sql`1`.as('one')).whereRef('ts.session_id', '=', 'rs.id')));
  if (only) q = q.where('rs.id', 'in', [...only]);
  if (p.definition.scope.rooms.length > 0) q = q.where('rs.room_id', 'in', p.definition.scope.rooms);
  if (speakers) {
    if (speakers.size === 0) return [];
    q = q.where((eb) => eb.exists(eb.selectFrom('transcript_segments as ts').select(sql`1`.as('one')).whereRef('ts.session_id', '=', 'rs.id').where('ts.participant_id', 'in', [...speakers])));
  }
  return q.orderBy('rs.id').execute();
}

/**
 * Lexicon hits of one chunk of sessions: one query; Postgres marks the matched words. The GIN
 * index (english) picks the candidates; each candidate's verbatim_lexicon vector is made once
 * (offset 0 keeps the planner from inlining it into every rule's test).
 */
async function lexiconHits(db: Db, p: LoadedPolicy, sessionIds: string[], speakers: Set<string> | null): Promise<Hit[]> {
  const lex = p.compiled.lexicon;
  if (lex.rules.length === 0 || !lex.prefilter) return [];
  const rules = JSON.stringify(lex.rules.map((r) => r.query));
  const rows = await sql<SegmentRow & { rule: number; hl: string }>`
    select ts.session_id, ts.seq, ts.participant_id, ts.speaker, ts.start_seconds, ts.end_seconds, ts.text, r.ord::int as rule,
           ts_headline('verbatim_lexicon', ts.text, r.q::tsquery, ${`StartSel=${OPEN}, StopSel=${CLOSE}, HighlightAll=true`}) as hl
      from transcript_segments ts
      cross join lateral (select to_tsvector('verbatim_lexicon', ts.text) as v offset 0) x
      join lateral jsonb_array_elements_text(${rules}::jsonb) with ordinality as r(q, ord) on x.v @@ r.q::tsquery
     where ts.session_id in (${sql.join(sessionIds)})
       and ts.tsv @@ ${lex.prefilter}::tsquery
       ${lex.exclusion ? sql`and not (x.v @@ ${lex.exclusion}::tsquery)` : sql``}
       ${speakers ? sql`and ts.participant_id in (${sql.join([...speakers])})` : sql``}`.execute(db);
  return rows.rows.map((r) => {
    const seg: SegmentRow = { session_id: r.session_id, seq: r.seq, participant_id: r.participant_id, speaker: r.speaker, start_seconds: r.start_seconds, end_seconds: r.end_seconds, text: r.text };
    const marks = highlighted(r.hl, r.text);
    const start = marks.length > 0 ? marks[0]!.start : 0;
    const end = marks.length > 0 ? marks[marks.length - 1]!.end : r.text.length;
    const matched = marks.length > 0 ? marks.map((m) => r.text.slice(m.start, m.end)).join(' ') : r.text;
    return { seg, rule: `lexicon:${lex.rules[r.rule - 1]!.source}`, ruleKind: 'lexicon' as const, label: 'LEXICON', start, end, matched };
  });
}

/** The marked words of a ts_headline(HighlightAll) as spans of the original text; [] if it did not reproduce the text. */
function highlighted(hl: string, text: string): { start: number; end: number }[] {
  const out: { start: number; end: number }[] = [];
  let plain = '';
  let open = -1;
  for (const ch of hl) {
    if (ch === OPEN) open = plain.length;
    else if (ch === CLOSE) {
      if (open >= 0) out.push({ start: open, end: plain.length });
      open = -1;
    } else plain += ch;
  }
  return plain === text ? out : [];
}

function textHits(p: LoadedPolicy, segs: SegmentRow[]): Hit[] {
  const out: Hit[] = [];
  const detectors = p.definition.detectors;
  for (const seg of segs) {
    if (detectors.length > 0) {
      for (const d of detect(seg.text, detectors)) out.push({ seg, rule: `detector:${d.detector}`, ruleKind: 'detector', label: d.label, start: d.start, end: d.end, matched: d.matched });
    }
    for (const pat of p.patterns) {
      for (const m of matchPattern(pat.re, seg.text)) out.push({ seg, rule: `pattern:${pat.name}`, ruleKind: 'pattern', label: pat.label, start: m.start, end: m.end, matched: m.matched });
    }
  }
  return out;
}

function snippet(text: string, start: number, end: number): string {
  const from = Math.max(0, start - SNIPPET_CONTEXT);
  const to = Math.min(text.length, end + SNIPPET_CONTEXT);
  return `${from > 0 ? '…' : ''}${text.slice(from, to)}${to < text.length ? '…' : ''}`;
}

/** Files one chunk's hits and samples: items upserted on their key, hits inserted once, counts recomputed. */
async function file(db: Db, p: LoadedPolicy, sessions: Map<string, SessionRow>, hits: Hit[], samples: SessionRow[]): Promise<number> {
  const buckets = new Map<string, Hit[]>();
  for (const h of hits) {
    const k = `${h.seg.session_id}\u0000${h.seg.participant_id}`;
    const list = buckets.get(k);
    if (list) list.push(h);
    else buckets.set(k, [h]);
  }
  const at = (s: SessionRow, seconds: number) => new Date(new Date(s.started_at).getTime() + Math.round(seconds * 1000));
  const itemRows = [
    ...[...buckets.values()].map((list) => {
      const s = sessions.get(list[0]!.seg.session_id)!;
      const start = Math.min(...list.map((h) => h.seg.start_seconds));
      return {
        id: randomUUID(),
        policy_id: p.id,
        policy_version: p.version,
        severity: p.severity,
        kind: 'hit' as const,
        session_id: s.id,
        room_id: s.room_id,
        participant_id: list[0]!.seg.participant_id,
        speaker: list[0]!.seg.speaker,
        start_seconds: start,
        end_seconds: Math.max(...list.map((h) => h.seg.end_seconds)),
        spoken_at: at(s, start),
      };
    }),
    ...samples.map((s) => ({ id: randomUUID(), policy_id: p.id, policy_version: p.version, severity: p.severity, kind: 'sample' as const, session_id: s.id, room_id: s.room_id, participant_id: '', speaker: '', start_seconds: 0, end_seconds: 0, spoken_at: at(s, 0) })),
  ];
  if (itemRows.length === 0) return 0;
  const ids = new Map<string, string>();
  for (let i = 0; i < itemRows.length; i += 1000) {
    const rows = await db
      .insertInto('review_items')
      .values(itemRows.slice(i, i + 1000))
      .onConflict((oc) => oc.constraint('review_items_key').doUpdateSet({ updated_at: sql`now()` }))
      .returning(['id', 'session_id', 'participant_id', 'kind'])
      .execute();
    for (const r of rows) if (r.kind === 'hit') ids.set(`${r.session_id}\u0000${r.participant_id}`, r.id);
  }
  const hitRows = [...buckets.entries()].flatMap(([k, list]) =>
    list.map((h) => ({
      item_id: ids.get(k)!,
      session_id: h.seg.session_id,
      seq: h.seg.seq,
      participant_id: h.seg.participant_id,
      rule: h.rule.slice(0, 300),
      rule_kind: h.ruleKind,
      label: h.label,
      matched: h.matched.slice(0, 1000),
      snippet: snippet(h.seg.text, h.start, h.end),
      char_start: h.start,
      char_end: h.end,
      start_seconds: h.seg.start_seconds,
      end_seconds: h.seg.end_seconds,
    })),
  );
  for (let i = 0; i < hitRows.length; i += 1000) {
    await db.insertInto('review_hits').values(hitRows.slice(i, i + 1000)).onConflict((oc) => oc.constraint('review_hits_key').doNothing()).execute();
  }
  const touched = [...ids.values()];
  for (let i = 0; i < touched.length; i += 1000) {
    await sql`
      update review_items i set hit_count = c.n, start_seconds = c.s, end_seconds = c.e
        from (select item_id, count(*)::int as n, min(start_seconds) as s, max(end_seconds) as e from review_hits where item_id in (${sql.join(touched.slice(i, i + 1000))}) group by item_id) c
       where i.id = c.item_id`.execute(db);
  }
  return itemRows.length;
}

/** Runs one policy version over the transcripts (all, or the sessions given). */
export async function evaluatePolicy(db: Db, p: LoadedPolicy, opts: EvaluateOptions = {}): Promise<EvaluationResult> {
  const speakers = await scopeSpeakers(db, p);
  const sessions = await sessionsInScope(db, p, speakers, opts.sessionIds);
  const result: EvaluationResult = { sessions: sessions.length, items: 0, hits: 0, sampled: 0, timings: { lexiconMs: 0, textMs: 0, fileMs: 0 } };
  const since = (t: number) => performance.now() - t;
  const chunk = opts.chunkSessions ?? 500;
  const textRules = p.definition.detectors.length > 0 || p.patterns.length > 0;
  for (let i = 0; i < sessions.length; i += chunk) {
    const part = sessions.slice(i, i + chunk);
    const ids = part.map((s) => s.id);
    const byId = new Map(part.map((s) => [s.id, s]));
    let t = performance.now();
    const hits = await lexiconHits(db, p, ids, speakers);
    result.timings.lexiconMs += since(t);
    t = performance.now();
    if (textRules) {
      let q = db.selectFrom('transcript_segments').select(['session_id', 'seq', 'participant_id', 'speaker', 'start_seconds', 'end_seconds', 'text']).where('session_id', 'in', ids);
      if (speakers) q = q.where('participant_id', 'in', [...speakers]);
      hits.push(...textHits(p, await q.execute()));
    }
    result.timings.textMs += since(t);
    t = performance.now();
    const samples = part.filter((s) => sampled(p.seed, s.id, p.definition.samplingPercent));
    result.items += await file(db, p, byId, hits, samples);
    result.timings.fileMs += since(t);
    result.hits += hits.length;
    result.sampled += samples.length;
    await opts.onProgress?.(Math.min(sessions.length, i + chunk), sessions.length, result);
  }
  return result;
}

/**
 * Every policy in force over one session's registered transcript: what the transcript
 * registration calls (the transcode finalize, through the compliance service's public surface).
 */
export async function evaluateRegisteredTranscript(db: Db, sessionId: string): Promise<EvaluationResult> {
  const total: EvaluationResult = { sessions: 0, items: 0, hits: 0, sampled: 0, timings: { lexiconMs: 0, textMs: 0, fileMs: 0 } };
  for (const p of await new SupervisionPolicies(db).inForce()) {
    const r = await evaluatePolicy(db, p, { sessionIds: [sessionId] });
    total.sessions = Math.max(total.sessions, r.sessions);
    total.items += r.items;
    total.hits += r.hits;
    total.sampled += r.sampled;
    total.timings.lexiconMs += r.timings.lexiconMs;
    total.timings.textMs += r.timings.textMs;
    total.timings.fileMs += r.timings.fileMs;
  }
  return total;
}
