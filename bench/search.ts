/**
 * `npm run bench -- search [--quick]`: transcript search at scale (issue 5).
 *
 * Builds a synthetic corpus in a fresh schema of the local Postgres (BENCH_DATABASE_URL, else
 * TEST_DATABASE_URL, else postgres://postgres@127.0.0.1:5432/test): 10,000 recording sessions
 * over two years with 1,000,000 transcript segments (--quick: 1,000 / 100,000) of
 * meeting-like English with a Zipf word distribution, generated here from a seed (the same
 * corpus every run) and loaded through the real migrations and triggers, then VACUUM ANALYZE
 * (what autovacuum would do). It runs searchTranscripts() (services/audit/src/transcript-search.ts:
 * ranked, 20 per page, snippets) over five shapes, round-robin, 60 runs each (--quick: 20):
 *
 *   rare            a word in ~50 segments
 *   common          a word in ~10 % of segments (ranked over all matches this read 100k rows)
 *   phrase          "next quarter": a collocation of two common words
 *   common_range    the common word within one month
 *   common_speaker  the common word said by the busiest participant
 *
 *   p95_ms_postgres     worst p95 over the shapes (goal <= 20)
 *   p95_ms_pglite       the same shapes on embedded PGlite with 100,000 segments (--quick:
 *                       20,000) (report)
 *   insert_rows_per_s   segments/s into the indexed table, trigger on (report)
 *   audit_append_per_s  AuditLog.append with 4 concurrent writers on Postgres (report)
 *
 * details also holds words of 0.1-3 % frequency (between "rank all" and "newest window"),
 * the load average (the machine is shared) and the chosen terms. The schema and the PGlite
 * directory are removed at the end, also when the bench fails.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CompiledQuery, sql } from 'kysely';
import pg from 'pg';
import { openDatabase, type Db } from '../db/database.ts';
import { AuditLog } from '../services/audit/src/audit-log.ts';
import { searchTranscripts, type SearchParams } from '../services/audit/src/transcript-search.ts';
import { onCleanup } from './lib/children.ts';
import { atMost, machineInfo, reportOnly, round, type Metric, type SuiteResult } from './lib/results.ts';

const log = (msg: string) => process.stderr.write(`[bench search] ${msg}\n`);

// ---- corpus -----------------------------------------------------------------------------------

/** mulberry32: a small seeded PRNG, so every run searches the same corpus. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The head of the vocabulary, most frequent first: spoken meeting English, stop words
 * included (to_tsvector drops them, as it would in real transcripts). Content words are
 * chosen so no two share an English stem.
 */
const HEAD = `the we to and i that you it is of a so in this think know going on yeah for have
  be just like but with can do not what are they at our if need was about there all will
  project team right get customer one would because okay really time from next week then
  more how update should people make also data some maybe see out when sure release number
  by work plan up good want look an or thing back new any mean well first could budget
  question point last move call issue their change report today two quarter my client
  review meeting deadline risk sales product market price contract account support design
  test build launch deploy server invoice payment legal policy compliance record audit
  schedule agenda follow action item decision approve sign document draft final version
  email phone office travel hire train cost revenue margin forecast target goal metric
  board share stock fund loan bank rate interest tax quarterly annual monthly weekly daily
  morning afternoon evening monday tuesday wednesday thursday friday vendor partner supplier
  order ship deliver warehouse inventory stock logistics network security access password
  backup storage cloud system platform service feature bug fix patch ticket priority severity
  incident outage latency traffic capacity scale migrate database query index cache queue
  message event stream video audio camera microphone screen slide deck chart graph table
  summary detail context background history future present past problem solution option
  approach strategy tactic campaign brand message channel social media website page link`
  .split(/\s+/)
  .filter(Boolean);

const SYLLABLES = 'ba be bi bo bu da de di do du fa fe fi fo ka ke ki ko ku la le li lo lu ma me mi mo mu na ne ni no nu pa pe pi po pu ra re ri ro ru sa se si so su ta te ti to tu va ve vi vo vu za ze zi zo zu'.split(' ');
const CODAS = ['', 'n', 'r', 'l', 'x', 'nd', 'rk', 'st', 'lm', 'th'];

/** The vocabulary: HEAD, then made-up words (the long tail of names, jargon and rare words). */
export function vocabulary(size: number, rand: () => number): string[] {
  const words = [...new Set(HEAD)];
  const seen = new Set(words);
  while (words.length < size) {
    const n = 2 + Math.floor(rand() * 3);
    let w = '';
    for (let i = 0; i < n; i++) w += SYLLABLES[Math.floor(rand() * SYLLABLES.length)];
    w += CODAS[Math.floor(rand() * CODAS.length)];
    if (!seen.has(w)) {
      seen.add(w);
      words.push(w);
    }
  }
  return words;
}

/** Cumulative Zipf (s = 1.05) weights for sampling by rank with a binary search. */
function zipfCdf(n: number, s = 1.05): Float64Array {
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let r = 0; r < n; r++) {
    sum += 1 / (r + 1) ** s;
    cdf[r] = sum;
  }
  for (let r = 0; r < n; r++) cdf[r]! /= sum;
  return cdf;
}

function sampleRank(cdf: Float64Array, u: number): number {
  let lo = 0;
  let hi = cdf.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cdf[mid]! < u) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

const FIRST = 'Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy Rupert Sybil Trent Uma Victor Wendy Xavier Yara Zoe Amir Bea Chen Dmitri Eva Farid Gita Hana Ines Jon Kai Lena Mateo Nora Omar Priya Quinn Rosa Sanjay Tomas'.split(' ');
const LAST = 'Smith Jones Garcia Khan Muller Rossi Novak Silva Tanaka Kim Nguyen Okafor Larsen Dubois Costa Ivanova Haddad Cohen Berg Moreau Walsh Schmidt Park Ali'.split(' ');
/** Collocations spoken as phrases; the phrase shape searches the first. */
const PHRASES = [
  ['next', 'quarter'],
  ['action', 'item'],
  ['follow', 'up'],
  ['sales', 'forecast'],
];

export interface CorpusSpec {
  sessions: number;
  segmentsPerSession: number;
  rooms: number;
  people: number;
  /** First session start; sessions are spread evenly (with jitter) over `days`. */
  from: Date;
  days: number;
  seed: number;
}

export interface SessionRow {
  id: string;
  room_id: string;
  started_at: Date;
  ended_at: Date;
}

export interface SegmentBatch {
  session_id: string[];
  seq: number[];
  participant_id: string[];
  speaker: string[];
  start_seconds: number[];
  end_seconds: number[];
  text: string[];
}

/** What the generator knows about its corpus, to pick query terms of a known frequency. */
export interface CorpusStats {
  segments: number;
  /** Segments containing each word (by surface form). */
  docFreq: Map<string, number>;
  /** Segments per participant id. */
  perParticipant: Map<string, number>;
}

/**
 * Generates sessions in time order (as a live system inserts them) and calls `sink` with
 * batches of segments. Each room has regulars, so some people speak far more than others.
 */
export async function generateCorpus(
  spec: CorpusSpec,
  onSessions: (rows: SessionRow[]) => Promise<void>,
  sink: (batch: SegmentBatch) => Promise<void>,
  batchSize = 10_000,
): Promise<CorpusStats> {
  const rand = prng(spec.seed);
  const vocab = vocabulary(30_000, rand);
  const cdf = zipfCdf(vocab.length);
  const people = Array.from({ length: spec.people }, (_, i) => ({
    id: `p-${String(i).padStart(5, '0')}`,
    name: `${FIRST[i % FIRST.length]} ${LAST[Math.floor(i / FIRST.length) % LAST.length]}`,
  }));
  const roomMembers = Array.from({ length: spec.rooms }, () => Array.from({ length: 12 }, () => Math.floor(rand() ** 2 * spec.people)));
  const stats: CorpusStats = { segments: 0, docFreq: new Map(), perParticipant: new Map() };
  const span = spec.days * 86_400_000;
  const sessions: SessionRow[] = [];
  for (let s = 0; s < spec.sessions; s++) {
    const t = spec.from.getTime() + ((s + rand() * 0.5) / spec.sessions) * span;
    sessions.push({ id: `bs-${String(s).padStart(6, '0')}`, room_id: `room-${Math.floor(rand() * spec.rooms)}`, started_at: new Date(Math.floor(t / 1000) * 1000), ended_at: new Date(0) });
  }
  let batch = emptyBatch();
  const flush = async () => {
    if (batch.seq.length === 0) return;
    await sink(batch);
    batch = emptyBatch();
  };
  const words: string[] = [];
  for (let si = 0; si < sessions.length; si += 500) {
    const chunk = sessions.slice(si, si + 500);
    // Segments of these sessions first (ended_at needs their length), then the session rows.
    const pending: SegmentBatch[] = [];
    for (const session of chunk) {
      const members = roomMembers[Number(session.room_id.slice(5))]!;
      const present = [...new Set(Array.from({ length: 2 + Math.floor(rand() * 5) }, () => (rand() < 0.8 ? members[Math.floor(rand() * members.length)]! : Math.floor(rand() * spec.people))))];
      let clock = rand() * 5;
      for (let seq = 0; seq < spec.segmentsPerSession; seq++) {
        const who = people[present[Math.floor(rand() * present.length)]!]!;
        const len = 6 + Math.floor(rand() * 22);
        words.length = 0;
        for (let w = 0; w < len; w++) {
          if (rand() < 0.003) words.push(...PHRASES[Math.floor(rand() * PHRASES.length)]!);
          else words.push(vocab[sampleRank(cdf, rand())]!);
        }
        for (const w of new Set(words)) stats.docFreq.set(w, (stats.docFreq.get(w) ?? 0) + 1);
        stats.perParticipant.set(who.id, (stats.perParticipant.get(who.id) ?? 0) + 1);
        const dur = 2 + rand() * 10;
        const first = words[0]!;
        batch.session_id.push(session.id);
        batch.seq.push(seq);
        batch.participant_id.push(who.id);
        batch.speaker.push(who.name);
        batch.start_seconds.push(round(clock, 2));
        batch.end_seconds.push(round(clock + dur, 2));
        batch.text.push(`${first[0]!.toUpperCase()}${first.slice(1)} ${words.slice(1).join(' ')}.`);
        clock += dur + rand() * 3;
        stats.segments++;
        if (batch.seq.length >= batchSize) {
          pending.push(batch);
          batch = emptyBatch();
        }
      }
      session.ended_at = new Date(session.started_at.getTime() + Math.ceil(clock) * 1000);
    }
    await onSessions(chunk);
    for (const b of pending) await sink(b);
  }
  await flush();
  return stats;
}

function emptyBatch(): SegmentBatch {
  return { session_id: [], seq: [], participant_id: [], speaker: [], start_seconds: [], end_seconds: [], text: [] };
}

// ---- loading ------------------------------------------------------------------------------------

const SPEC_FROM = new Date('2024-01-01T00:00:00Z');

interface Loaded {
  stats: CorpusStats;
  sessions: number;
  insertS: number;
  vacuumS: number;
}

/** Loads a corpus through `exec` (one statement per batch; arrays as parameters, unnest on the server). */
async function loadCorpus(spec: CorpusSpec, exec: (text: string, params: unknown[]) => Promise<void>): Promise<Omit<Loaded, 'vacuumS'>> {
  let insertS = 0;
  let loaded = 0;
  let sessions = 0;
  const timed = async (text: string, params: unknown[]) => {
    const t = performance.now();
    await exec(text, params);
    insertS += (performance.now() - t) / 1000;
  };
  const stats = await generateCorpus(
    spec,
    async (rows) => {
      sessions += rows.length;
      await timed(
        `insert into recording_sessions (id, room_id, started_at, ended_at, status, transcript_status, progress)
         select id, room, s, e, 'done', 'done', 100 from unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[]) as u(id, room, s, e)`,
        [rows.map((s) => s.id), rows.map((s) => s.room_id), rows.map((s) => s.started_at.toISOString()), rows.map((s) => s.ended_at.toISOString())],
      );
    },
    async (b) => {
      await timed(
        `insert into transcript_segments (session_id, seq, participant_id, speaker, start_seconds, end_seconds, text, language)
         select *, 'en' from unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::float8[], $6::float8[], $7::text[])`,
        [b.session_id, b.seq, b.participant_id, b.speaker, b.start_seconds, b.end_seconds, b.text],
      );
      loaded += b.seq.length;
      if (loaded % 200_000 === 0) log(`loaded ${loaded} segments (${round(loaded / insertS, 0)} rows/s)`);
    },
  );
  return { stats, sessions, insertS };
}

// ---- queries --------------------------------------------------------------------------------------

interface Shape {
  name: string;
  params: SearchParams;
}

/** The benchmark's query shapes, with terms picked from the corpus' own word counts. */
async function pickShapes(db: Db, stats: CorpusStats): Promise<{ shapes: Shape[]; sweep: Shape[]; terms: Record<string, unknown> }> {
  const isIndexed = async (w: string) => (await sql<{ n: number }>`select length(to_tsvector('english', ${w}))::int as n`.execute(db)).rows[0]!.n > 0;
  const byFreq = [...stats.docFreq.entries()].map(([w, n]) => ({ w, f: n / stats.segments }));
  const closest = async (target: number, pool = byFreq) => {
    const sorted = [...pool].sort((a, b) => Math.abs(Math.log(a.f / target)) - Math.abs(Math.log(b.f / target)));
    for (const c of sorted.slice(0, 50)) if (await isIndexed(c.w)) return c;
    throw new Error(`no indexed word near frequency ${target}`);
  };
  const common = await closest(0.1);
  const rare = await closest(50 / 1_000_000);
  const busiest = [...stats.perParticipant.entries()].sort((a, b) => b[1] - a[1])[0]!;
  const shapes: Shape[] = [
    { name: 'rare', params: { q: rare.w } },
    { name: 'common', params: { q: common.w } },
    { name: 'phrase', params: { q: `"${PHRASES[0]!.join(' ')}"` } },
    { name: 'common_range', params: { q: common.w, from: '2025-06-01', to: '2025-06-30' } },
    { name: 'common_speaker', params: { q: common.w, participant: busiest[0] } },
  ];
  // Not in the goal: words between rare and common, where neither "rank all" nor the
  // newest-first window is obviously cheap.
  const sweep: Shape[] = [];
  for (const f of [0.001, 0.003, 0.01, 0.03]) {
    const c = await closest(f);
    sweep.push({ name: `word_${(f * 100).toFixed(1)}pct`, params: { q: c.w } });
  }
  const terms = {
    common: { word: common.w, docFrequency: round(common.f, 4) },
    rare: { word: rare.w, segments: Math.round(rare.f * stats.segments) },
    phrase: PHRASES[0]!.join(' '),
    speaker: { participant: busiest[0], segments: busiest[1] },
  };
  return { shapes, sweep, terms };
}

interface ShapeResult {
  p50: number;
  p95: number;
  max: number;
  runs: number;
  total: number;
  totalIsEstimate: boolean;
  rankedMatches: number;
  hits: number;
}

/**
 * Runs the shapes round-robin (`runs` times each, after 3 warm-up rounds), so that load from
 * elsewhere on the machine falls on all of them alike.
 */
async function measureShapes(db: Db, shapes: Shape[], runs: number): Promise<Record<string, ShapeResult>> {
  const ms = new Map<string, number[]>(shapes.map((s) => [s.name, []]));
  const last = new Map<string, Awaited<ReturnType<typeof searchTranscripts>>>();
  for (let i = -3; i < runs; i++) {
    for (const shape of shapes) {
      const t = performance.now();
      const r = await searchTranscripts(db, shape.params);
      if (i >= 0) ms.get(shape.name)!.push(performance.now() - t);
      last.set(shape.name, r);
    }
  }
  const out: Record<string, ShapeResult> = {};
  for (const shape of shapes) {
    const r = last.get(shape.name)!;
    if (r.hits.length === 0) throw new Error(`shape ${shape.name} (${JSON.stringify(shape.params)}) found nothing`);
    const sorted = ms.get(shape.name)!.sort((a, b) => a - b);
    out[shape.name] = {
      p50: round(percentile(sorted, 0.5), 2),
      p95: round(percentile(sorted, 0.95), 2),
      max: round(sorted.at(-1)!, 2),
      runs,
      total: r.total,
      totalIsEstimate: r.totalIsEstimate,
      rankedMatches: r.rankedMatches,
      hits: r.hits.length,
    };
  }
  return out;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
}

/** AuditLog.append from `writers` concurrent loops for `seconds`: appends per second. */
async function auditAppendRate(db: Db, writers: number, seconds: number): Promise<{ perS: number; appends: number; verified: boolean }> {
  const audit = new AuditLog(db);
  const until = performance.now() + seconds * 1000;
  let appends = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: writers }, async (_, w) => {
      while (performance.now() < until) {
        await audit.append({ action: 'search', actor: { type: 'user', id: `bench-${w}` }, target: { type: 'transcripts' }, details: { query: 'budget', n: appends } });
        appends++;
      }
    }),
  );
  const wall = (performance.now() - t0) / 1000;
  const verified = (await audit.verify()).ok;
  return { perS: round(appends / wall, 1), appends, verified };
}

// ---- the suite -------------------------------------------------------------------------------------

export async function runSearchBench(opts: { quick: boolean }): Promise<SuiteResult> {
  const started = Date.now();
  const startedAt = new Date().toISOString();
  const url = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
  const metrics: Record<string, Metric> = {};
  const details: Record<string, unknown> = { database: url.replace(/\/\/[^@]*@/, '//'), loadAvgAtStart: os.loadavg().map((x) => round(x, 2)) };
  const runs = opts.quick ? 20 : 60;
  const pgSpec: CorpusSpec = { sessions: opts.quick ? 1_000 : 10_000, segmentsPerSession: 100, rooms: 200, people: 3000, from: SPEC_FROM, days: 730, seed: 42 };

  // Postgres: a schema of our own, dropped at the end whatever happens.
  const schema = `bench_search_${randomBytes(4).toString('hex')}`;
  const dropSchema = onCleanup(`drop schema ${schema}`, async () => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    await c.query(`drop schema if exists "${schema}" cascade`);
    await c.end();
  });
  const db = await openDatabase({ url, schema });
  const closeDb = onCleanup('close postgres', () => db.destroy());
  const pool = new pg.Pool({ connectionString: url, max: 1, options: `-c search_path=${schema}` });
  try {
    log(`postgres: loading ${pgSpec.sessions * pgSpec.segmentsPerSession} segments into schema ${schema}`);
    const loaded = await loadCorpus(pgSpec, async (text, params) => {
      await pool.query(text, params);
    });
    const segments = loaded.stats.segments;
    metrics.insert_rows_per_s = reportOnly(
      round(segments / loaded.insertS, 0),
      'rows/s',
      `${segments} segments in batches of 10,000 (multi-row INSERT ... SELECT unnest), GIN + btree indexes and the session trigger live, one connection`,
    );
    // What autovacuum would have done by the time anyone searches (the test server runs without it).
    const tv = performance.now();
    await pool.query('vacuum analyze transcript_segments');
    await pool.query('vacuum analyze recording_sessions');
    details.postgresLoad = { segments, sessions: loaded.sessions, insertS: round(loaded.insertS, 1), vacuumAnalyzeS: round((performance.now() - tv) / 1000, 1) };

    const { shapes, sweep, terms } = await pickShapes(db, loaded.stats);
    details.terms = terms;
    const perShape = await measureShapes(db, shapes, runs);
    details.loadAvgAfterShapes = os.loadavg().map((x) => round(x, 2));
    for (const s of shapes) {
      const r = perShape[s.name]!;
      log(`postgres ${s.name}: ${JSON.stringify(r)}`);
      metrics[`p95_ms_postgres_${s.name}`] = reportOnly(r.p95, 'ms', `p50 ${r.p50} ms; ${JSON.stringify(s.params)}; total ${r.total}${r.totalIsEstimate ? ' (estimate)' : ''}, ranked ${r.rankedMatches}`);
    }
    const worst = Object.entries(perShape).sort((a, b) => b[1].p95 - a[1].p95)[0]!;
    metrics.p95_ms_postgres = atMost(worst[1].p95, 20, 'ms', `worst shape: ${worst[0]}; ${segments} segments, ${runs} runs per shape, 20 hits per page with snippets`);
    details.postgresShapes = perShape;
    const sweepRaw = await measureShapes(db, sweep, Math.min(runs, 30));
    const sweepResults = Object.fromEntries(sweep.map((s) => [s.name, { q: s.params.q, ...sweepRaw[s.name]! }]));
    log(`postgres sweep: ${JSON.stringify(sweepResults)}`);
    details.postgresFrequencySweep = sweepResults;

    const audit = await auditAppendRate(db, 4, opts.quick ? 2 : 5);
    if (!audit.verified) throw new Error('audit chain did not verify after the concurrent appends');
    metrics.audit_append_per_s = reportOnly(audit.perS, 'appends/s', `AuditLog.append, 4 concurrent writers on Postgres, ${audit.appends} appends, chain verified`);
  } finally {
    await pool.end();
    await closeDb();
    await dropSchema();
  }

  // PGlite: the embedded database, fewer rows (WASM, one process).
  const liteSpec: CorpusSpec = { ...pgSpec, sessions: opts.quick ? 200 : 1_000 };
  const dir = mkdtempSync(path.join(os.tmpdir(), 'verbatim-bench-search-'));
  const removeDir = onCleanup('remove pglite dir', async () => rmSync(dir, { recursive: true, force: true }));
  const lite = await openDatabase({ pgliteDir: path.join(dir, 'db') });
  const closeLite = onCleanup('close pglite', () => lite.destroy());
  try {
    log(`pglite: loading ${liteSpec.sessions * liteSpec.segmentsPerSession} segments`);
    const loaded = await loadCorpus(liteSpec, async (text, params) => {
      await lite.executeQuery(CompiledQuery.raw(text, params));
    });
    await sql`vacuum analyze transcript_segments`.execute(lite);
    const { shapes, terms } = await pickShapes(lite, loaded.stats);
    const perShape = await measureShapes(lite, shapes, opts.quick ? 10 : 30);
    log(`pglite: ${JSON.stringify(perShape)}`);
    const worst = Object.entries(perShape).sort((a, b) => b[1].p95 - a[1].p95)[0]!;
    metrics.p95_ms_pglite = reportOnly(worst[1].p95, 'ms', `worst shape: ${worst[0]}; ${loaded.stats.segments} segments (WASM, in-process), ${opts.quick ? 10 : 30} runs per shape`);
    metrics.insert_rows_per_s_pglite = reportOnly(round(loaded.stats.segments / loaded.insertS, 0), 'rows/s', 'same batches into PGlite');
    details.pglite = { segments: loaded.stats.segments, terms, shapes: perShape };
  } finally {
    await closeLite();
    await removeDir();
  }

  return { suite: 'search', machine: machineInfo(), startedAt, durationS: round((Date.now() - started) / 1000, 1), quick: opts.quick, metrics, details };
}
