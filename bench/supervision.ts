/**
 * `npm run bench -- supervision [--quick]`: supervision policies at scale (issue 13).
 *
 * In a fresh schema of the local Postgres (BENCH_DATABASE_URL, else TEST_DATABASE_URL, else
 * postgres://postgres@127.0.0.1:5432/test), through the real migrations and triggers:
 *
 *   backfill_s_per_1m_segments  one policy (a 50-entry lexicon: the shipped starter's entries
 *                               plus corpus words of 0.05-0.5 % frequency, and all 5 detectors)
 *                               run over every stored segment by evaluatePolicy(), the code of
 *                               the background run; the search bench's seeded corpus (10,000
 *                               sessions × 100 segments) with 0.2 % of segments carrying a
 *                               spoken card number, an off-channel phrase or an e-mail address.
 *                               --quick: 100,000 segments, the time scaled to 1,000,000 (goal <= 60)
 *   flag_latency_ms_p95         a transcript of 20 segments registered (one transaction), then
 *                               evaluateRegisteredTranscript() (what the registration hook calls)
 *                               until ReviewQueue.list shows its items (goal <= 1000)
 *   queue_p95_ms                ReviewQueue.list (a page of 50, with the first hit's preview and
 *                               the capped count) with five filter shapes at 100,000 items
 *                               (--quick: 20,000) (goal <= 50)
 *
 * The schema is removed at the end, also when the bench fails.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import os from 'node:os';
import pg from 'pg';
import { openDatabase } from '../db/database.ts';
import type { Principal } from '../services/audit/src/auth.ts';
import { evaluatePolicy, evaluateRegisteredTranscript } from '../services/audit/src/supervision/evaluate.ts';
import { PolicyDefinitionSchema, SupervisionPolicies } from '../services/audit/src/supervision/policies.ts';
import { ReviewQueue, type ItemFilters } from '../services/audit/src/supervision/review-queue.ts';
import { STARTER_FINANCIAL_LEXICON } from '../services/audit/src/supervision/starter-lexicon.ts';
import { onCleanup } from './lib/children.ts';
import { atMost, machineInfo, reportOnly, round, type Metric, type SuiteResult } from './lib/results.ts';
import { generateCorpus, prng, type CorpusSpec } from './search.ts';

const log = (msg: string) => process.stderr.write(`[bench supervision] ${msg}\n`);

const INJECT = [
  'my card is four one one one one one one one one one one one one one one one',
  'just text me on my personal phone',
  'write to john dot smith at example dot com',
  'we guarantee those returns',
  'the number is five five five five five five five five five five five five four four four four',
];

function p95(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return round(s[Math.min(s.length - 1, Math.ceil(0.95 * s.length) - 1)]!, 2);
}

export async function runSupervisionBench(opts: { quick: boolean }): Promise<SuiteResult> {
  const started = Date.now();
  const startedAt = new Date().toISOString();
  const url = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
  const metrics: Record<string, Metric> = {};
  const details: Record<string, unknown> = { database: url.replace(/\/\/[^@]*@/, '//'), loadAvgAtStart: os.loadavg().map((x) => round(x, 2)) };
  const spec: CorpusSpec = { sessions: opts.quick ? 1_000 : 10_000, segmentsPerSession: 100, rooms: 200, people: 3000, from: new Date('2024-01-01T00:00:00Z'), days: 730, seed: 42 };
  const queueItems = opts.quick ? 20_000 : 100_000;

  const schema = `bench_supervision_${randomBytes(4).toString('hex')}`;
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
    // ---- corpus
    const rand = prng(7);
    let injected = 0;
    const tl = performance.now();
    const stats = await generateCorpus(
      spec,
      async (rows) => {
        await pool.query(
          `insert into recording_sessions (id, room_id, started_at, ended_at, status, transcript_status, progress)
           select id, room, s, e, 'done', 'done', 100 from unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[]) as u(id, room, s, e)`,
          [rows.map((s) => s.id), rows.map((s) => s.room_id), rows.map((s) => s.started_at.toISOString()), rows.map((s) => s.ended_at.toISOString())],
        );
      },
      async (b) => {
        for (let i = 0; i < b.text.length; i++) {
          if (rand() < 0.002) {
            b.text[i] = `${b.text[i]} ${INJECT[Math.floor(rand() * INJECT.length)]}.`;
            injected++;
          }
        }
        await pool.query(
          `insert into transcript_segments (session_id, seq, participant_id, speaker, start_seconds, end_seconds, text, language)
           select *, 'en' from unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::float8[], $6::float8[], $7::text[])`,
          [b.session_id, b.seq, b.participant_id, b.speaker, b.start_seconds, b.end_seconds, b.text],
        );
      },
    );
    await pool.query('vacuum analyze transcript_segments');
    await pool.query('vacuum analyze recording_sessions');
    details.corpus = { segments: stats.segments, sessions: spec.sessions, injected, loadS: round((performance.now() - tl) / 1000, 1) };
    log(`loaded ${stats.segments} segments (${injected} with something to flag)`);

    // ---- the 50-entry lexicon: the starter's entries, then corpus words of 0.05-0.5 % frequency
    const lexicon = [...(STARTER_FINANCIAL_LEXICON.lexicon ?? [])];
    const lo = stats.segments * 0.0005;
    const hi = stats.segments * 0.005;
    const words = [...stats.docFreq.entries()].filter(([w, n]) => n >= lo && n <= hi && /^[a-z]{4,}$/.test(w)).map(([w]) => w);
    for (const w of words) {
      if (lexicon.length >= 50) break;
      lexicon.push(w);
    }
    const def = PolicyDefinitionSchema.parse({ ...STARTER_FINANCIAL_LEXICON, name: 'bench', lexicon, detectors: ['card', 'iban', 'ssn', 'email', 'phone'] });
    const policies = new SupervisionPolicies(db);
    const created = await policies.create(def, 'bench');
    const loaded = await policies.loadVersion(created.id, created.version);
    details.lexicon = { entries: lexicon.length, rules: loaded.compiled.lexicon.rules.length, exclusions: lexicon.filter((e) => e.startsWith('NOT ')).length };

    // ---- backfill
    const tb = performance.now();
    const result = await evaluatePolicy(db, loaded);
    const backfillS = (performance.now() - tb) / 1000;
    const per1m = round((backfillS * 1_000_000) / stats.segments, 1);
    details.backfill = { ...result, seconds: round(backfillS, 2), segments: stats.segments };
    log(`backfill: ${JSON.stringify(details.backfill)}`);
    metrics.backfill_s_per_1m_segments = atMost(
      per1m,
      60,
      's',
      `${stats.segments} segments in ${round(backfillS, 1)} s${stats.segments < 1_000_000 ? `, scaled ×${round(1_000_000 / stats.segments, 1)} to 1,000,000 (--quick)` : ''}; ${lexicon.length}-entry lexicon + 5 detectors; ${result.items} items, ${result.hits} hits`,
    );

    // ---- flag latency: registration → items visible
    const queue = new ReviewQueue(db);
    const officer: Principal = { userId: 'bench-officer', userName: 'bench', role: 'compliance_officer' };
    const latencies: number[] = [];
    const runs = opts.quick ? 15 : 40;
    for (let r = 0; r < runs; r++) {
      const session = `flag-${r}`;
      await db.insertInto('recording_sessions').values({ id: session, room_id: 'room-1', started_at: new Date(), status: 'processing' }).execute();
      const segs = Array.from({ length: 20 }, (_, i) => ({
        session_id: session,
        seq: i,
        participant_id: `p-${i % 3}`,
        speaker: `P${i % 3}`,
        start_seconds: i * 4,
        end_seconds: i * 4 + 3,
        text: i === 7 ? INJECT[0]! : i === 13 ? INJECT[1]! : 'we went through the agenda and the quarterly numbers for the project',
        language: 'en',
      }));
      const t0 = performance.now();
      await db.transaction().execute(async (tx) => {
        await tx.insertInto('transcript_segments').values(segs).execute();
        await tx.updateTable('recording_sessions').set({ status: 'done', transcript_status: 'done' }).where('id', '=', session).execute();
      });
      await evaluateRegisteredTranscript(db, session);
      const visible = await queue.list(officer, { session });
      latencies.push(performance.now() - t0);
      if (visible.items.length === 0) throw new Error(`no items visible for ${session}`);
    }
    metrics.flag_latency_ms_p95 = atMost(p95(latencies), 1000, 'ms', `${runs} transcripts of 20 segments (a spoken card number, an off-channel phrase), 1 policy in force; registration commit → evaluation → items listed`);
    details.flagLatencyMs = { p50: round([...latencies].sort((a, b) => a - b)[Math.floor(latencies.length / 2)]!, 2), p95: p95(latencies) };

    // ---- queue at N items
    await pool.query('truncate review_items cascade');
    const policyIds: string[] = [created.id];
    for (let i = 0; i < 4; i++) policyIds.push((await policies.create({ ...def, name: `bench-${i}`, severity: (['low', 'medium', 'high', 'critical'] as const)[i]! }, 'bench')).id);
    const qrand = prng(11);
    const states = ['open', 'open', 'open', 'escalated', 'closed'] as const;
    const sessionIds = (await db.selectFrom('recording_sessions').select(['id', 'room_id', 'started_at']).execute());
    for (let i = 0; i < queueItems; i += 2000) {
      const rows = Array.from({ length: Math.min(2000, queueItems - i) }, (_, k) => {
        const s = sessionIds[Math.floor(qrand() * sessionIds.length)]!;
        const state = states[Math.floor(qrand() * states.length)]!;
        const pi = Math.floor(qrand() * policyIds.length);
        return {
          id: randomUUID(),
          policy_id: policyIds[pi]!,
          policy_version: 1,
          severity: (['high', 'low', 'medium', 'high', 'critical'] as const)[pi]!,
          kind: 'hit' as const,
          session_id: s.id,
          room_id: s.room_id,
          participant_id: `p-${i + k}`,
          speaker: 'P',
          start_seconds: 10,
          end_seconds: 12,
          spoken_at: new Date(new Date(s.started_at).getTime() + 10_000),
          hit_count: 1,
          state,
          assignee: qrand() < 0.3 ? (qrand() < 0.5 ? 'bench-officer' : 'other-officer') : null,
          created_at: new Date(Date.parse('2024-01-01T00:00:00Z') + qrand() * 730 * 86_400_000),
        };
      });
      await db.insertInto('review_items').values(rows).execute();
    }
    await pool.query('vacuum analyze review_items');
    await pool.query('vacuum analyze review_hits');
    const shapes: Record<string, ItemFilters> = {
      open: { state: 'open' },
      policy_severity: { policy: policyIds[2]!, severity: 'medium', state: 'open' },
      mine: { reviewer: 'me', state: 'open' },
      room: { room: 'room-17' },
      month: { from: '2025-03-01', to: '2025-03-31', state: 'open' },
    };
    const perShape: Record<string, { p50: number; p95: number; total: number }> = {};
    const qruns = opts.quick ? 20 : 50;
    for (const [name, f] of Object.entries(shapes)) {
      const times: number[] = [];
      let total = 0;
      for (let r = 0; r < qruns; r++) {
        const t = performance.now();
        const res = await queue.list(officer, { ...f, pageSize: 50 });
        times.push(performance.now() - t);
        total = res.total;
      }
      perShape[name] = { p50: round([...times].sort((a, b) => a - b)[Math.floor(times.length / 2)]!, 2), p95: p95(times), total };
    }
    details.queueShapes = perShape;
    const worst = Object.entries(perShape).sort((a, b) => b[1].p95 - a[1].p95)[0]!;
    metrics.queue_p95_ms = atMost(worst[1].p95, 50, 'ms', `worst shape: ${worst[0]}; ${queueItems} items${opts.quick ? ' (--quick)' : ''}, pages of 50 with preview and count, ${qruns} runs per shape`);
    metrics.backfill_items = reportOnly(result.items, 'items', `${result.hits} hits over ${result.sessions} sessions`);
  } finally {
    await pool.end();
    await closeDb();
    await dropSchema();
  }
  return { suite: 'supervision', machine: machineInfo(), startedAt, durationS: round((Date.now() - started) / 1000, 1), quick: opts.quick, metrics, details };
}
