import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../db/database.ts';
import { testBackends, type TestBackend } from '../../../testing/databases.ts';
import { RANK_WINDOW, bucketQuery, searchTranscripts } from './transcript-search.ts';

const backends = await testBackends();
afterAll(async () => {
  for (const b of backends) await b.cleanup();
});

const DAY = 86_400_000;
const FIRST = Date.parse('2024-01-01T09:00:00Z');
const SESSIONS = 60;
const PER_SESSION = 50;

/** Days covered by a bucketQuery() string, expanded back to single days. */
function coveredDays(q: string): number[] {
  const days: number[] = [];
  for (const [, level, n] of q.matchAll(/'K([ABC])(\d+)'/g)) {
    const size = level === 'A' ? 1 : level === 'B' ? 8 : 64;
    for (let d = Number(n) * size; d < (Number(n) + 1) * size; d++) days.push(d);
  }
  return days.sort((a, b) => a - b);
}

describe('bucketQuery', () => {
  it('covers exactly the days asked for, with coarse buckets where they fit', () => {
    let seed = 7;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let i = 0; i < 300; i++) {
      const lo = 19_000 + Math.floor(rand() * 400);
      const hi = lo + Math.floor(rand() * 300);
      const q = bucketQuery(lo, hi);
      expect(coveredDays(q)).toEqual(Array.from({ length: hi - lo + 1 }, (_, k) => lo + k));
      // At most 7 single days and 7 eight-day buckets at each end.
      expect(q.match(/KA/g)?.length ?? 0).toBeLessThanOrEqual(14);
      expect(q.match(/KB/g)?.length ?? 0).toBeLessThanOrEqual(14);
    }
    expect(bucketQuery(19_200, 19_263)).toBe(`'KC300'`);
  });
});

describe.each(backends)('transcript search ($name)', (backend: TestBackend) => {
  const skip = !backend.available;
  let db: Db;

  /** Every "alpha" segment, newest first, computed without the search's keys or windows. */
  const oracle = async (where = sql`true`) =>
    (
      await sql<{ session_id: string; seq: number; at: Date }>`
        select ts.session_id, ts.seq, rs.started_at + ts.start_seconds * interval '1 second' as at
        from transcript_segments ts join recording_sessions rs on rs.id = ts.session_id
        where to_tsvector('english', ts.text) @@ websearch_to_tsquery('english', 'alpha') and ${where}
        order by at desc, ts.session_id desc, ts.seq desc`.execute(db)
    ).rows;
  const key = (h: { session?: string; session_id?: string; seq: number }) => `${h.session ?? h.session_id}:${h.seq}`;

  beforeAll(async () => {
    if (skip) return;
    db = await backend.open();
    // 60 sessions on 60 consecutive days in 3 rooms, 50 segments each; "alpha" in 3 of 5 segments,
    // said 1-3 times (so ranks differ); "omega" only in the oldest session.
    const sessions = Array.from({ length: SESSIONS }, (_, i) => ({
      id: `s${String(i).padStart(3, '0')}`,
      room_id: `room-${i % 3}`,
      started_at: new Date(FIRST + i * DAY + (i % 4) * 3_600_000),
      status: 'done' as const,
    }));
    await db.insertInto('recording_sessions').values(sessions).execute();
    const segments = sessions.flatMap((s, i) =>
      Array.from({ length: PER_SESSION }, (_, seq) => {
        const alpha = seq % 5 < 3 ? Array.from({ length: 1 + ((seq + i) % 3) }, () => 'alpha').join(' beta ') : 'gamma';
        const omega = i === 0 && seq < 4 ? ' omega' : '';
        return {
          session_id: s.id,
          seq,
          participant_id: `p${(seq + i) % 5}`,
          speaker: `Speaker ${(seq + i) % 5}`,
          start_seconds: seq * 30,
          end_seconds: seq * 30 + 20,
          text: `We discussed ${alpha} today${omega}.`,
          language: 'en',
        };
      }),
    );
    for (let i = 0; i < segments.length; i += 500) await db.insertInto('transcript_segments').values(segments.slice(i, i + 500)).execute();
    await sql`analyze transcript_segments`.execute(db);
  });
  afterAll(async () => {
    await db?.destroy();
  });

  it.skipIf(skip)('the trigger keeps spoken_at and room_id, and moves them with the session', async () => {
    const row = await db.selectFrom('transcript_segments').select(['spoken_at', 'room_id']).where('session_id', '=', 's001').where('seq', '=', 2).executeTakeFirstOrThrow();
    expect(new Date(row.spoken_at).toISOString()).toBe(new Date(FIRST + DAY + 3_600_000 + 60_000).toISOString());
    expect(row.room_id).toBe('room-1');
    // Key lexemes are not reachable from a query: the 'english' configuration lowercases.
    const day = Math.floor(new Date(row.spoken_at).getTime() / DAY);
    for (const q of [`KA${day}`, `"KA${day}"`, `KA${day}:*`, `~KA${day}`]) expect((await searchTranscripts(db, { q })).hits, q).toEqual([]);
    expect((await sql<{ n: number }>`select count(*)::int as n from transcript_segments where tsv @@ ${`'KA${day}'`}::tsquery`.execute(db)).rows[0]!.n).toBe(PER_SESSION);

    await db.insertInto('recording_sessions').values({ id: 'moved', room_id: 'room-x', started_at: '2020-01-01T00:00:00Z', status: 'done' }).execute();
    await db.insertInto('transcript_segments').values({ session_id: 'moved', seq: 0, participant_id: 'p9', speaker: 'Nine', start_seconds: 10, end_seconds: 12, text: 'zeta', language: 'en' }).execute();
    await db.updateTable('recording_sessions').set({ started_at: '2020-02-01T00:00:00Z', room_id: 'room-y' }).where('id', '=', 'moved').execute();
    const moved = await searchTranscripts(db, { q: 'zeta', room: 'room-y', from: '2020-02-01', to: '2020-02-01' });
    expect(moved.hits.map((h) => [h.session, h.room, h.at])).toEqual([['moved', 'room-y', '2020-02-01T00:00:10.000Z']]);
    expect((await searchTranscripts(db, { q: 'zeta', room: 'room-x' })).hits).toEqual([]);
    await db.deleteFrom('recording_sessions').where('id', '=', 'moved').execute();
  });

  it.skipIf(skip)(`a word with more than ${RANK_WINDOW} matches: the newest ${RANK_WINDOW} are ranked, the total is an estimate`, async () => {
    const all = await oracle();
    expect(all.length).toBeGreaterThan(RANK_WINDOW);
    const first = await searchTranscripts(db, { q: 'alpha', pageSize: 100 });
    expect(first).toMatchObject({ totalIsEstimate: true, rankedMatches: RANK_WINDOW, rankedSince: new Date(all[RANK_WINDOW - 1]!.at).toISOString() });
    // Time extrapolation: within a factor of 1.5 of the real count here (matches are even in time).
    expect(first.total).toBeGreaterThan(all.length / 1.5);
    expect(first.total).toBeLessThan(all.length * 1.5);

    // Paging through every page yields exactly the newest RANK_WINDOW matches, once each,
    // best rank first and newest first among equal ranks.
    const seen: string[] = [];
    let prev: { rank: number; at: string } | undefined;
    for (let page = 1; ; page++) {
      const r = await searchTranscripts(db, { q: 'alpha', pageSize: 100, page });
      if (r.hits.length === 0) break;
      for (const h of r.hits) {
        if (prev) expect(prev.rank > h.rank || (prev.rank === h.rank && prev.at >= h.at), `${JSON.stringify(prev)} before ${JSON.stringify(h)}`).toBe(true);
        prev = { rank: h.rank, at: h.at };
        expect(h.snippet).toContain('<mark>alpha</mark>');
        seen.push(key(h));
      }
    }
    expect(seen).toHaveLength(RANK_WINDOW);
    expect(new Set(seen)).toEqual(new Set(all.slice(0, RANK_WINDOW).map(key)));
    // Ranked by density: a segment saying "alpha" three times comes before one saying it once.
    expect(first.hits[0]!.snippet.match(/<mark>alpha<\/mark>/g)).toHaveLength(3);
  });

  it.skipIf(skip)('fewer matches than the window: every match ranked, the total exact', async () => {
    const omega = await searchTranscripts(db, { q: 'omega' });
    expect(omega).toMatchObject({ total: 4, totalIsEstimate: false, rankedMatches: 4, rankedSince: null });
    expect(omega.hits.map(key).sort()).toEqual(['s000:0', 's000:1', 's000:2', 's000:3']);

    // A participant's matches in a date range: compared with the plain query.
    const from = new Date(FIRST + 20 * DAY).toISOString();
    const to = new Date(FIRST + 40 * DAY).toISOString();
    const expected = await oracle(sql`ts.participant_id = 'p2' and rs.started_at + ts.start_seconds * interval '1 second' between ${from}::timestamptz and ${to}::timestamptz`);
    expect(expected.length).toBeGreaterThan(20);
    expect(expected.length).toBeLessThan(RANK_WINDOW);
    const seen: string[] = [];
    for (let page = 1; page <= Math.ceil(expected.length / 100); page++) {
      const r = await searchTranscripts(db, { q: 'alpha', participant: 'p2', from, to, page, pageSize: 100 });
      expect(r).toMatchObject({ total: expected.length, totalIsEstimate: false, rankedMatches: expected.length });
      for (const h of r.hits) {
        expect(h.participant).toBe('p2');
        expect(h.at >= from && h.at <= to).toBe(true);
        seen.push(key(h));
      }
    }
    expect(seen.sort()).toEqual(expected.map(key).sort());
  });

  it.skipIf(skip)('room and session filters, alone and with the window', async () => {
    const since = new Date(FIRST + 30 * DAY).toISOString();
    const expected = await oracle(sql`rs.room_id = 'room-2' and rs.started_at >= ${since}::timestamptz`);
    expect(expected.length).toBeGreaterThan(100);
    expect(expected.length).toBeLessThan(RANK_WINDOW);
    const seen: string[] = [];
    for (let page = 1; page <= Math.ceil(expected.length / 100); page++) {
      const r = await searchTranscripts(db, { q: 'alpha', room: 'room-2', from: since, page, pageSize: 100 });
      expect(r).toMatchObject({ total: expected.length, totalIsEstimate: false });
      for (const h of r.hits) {
        expect(h.room).toBe('room-2');
        seen.push(key(h));
      }
    }
    expect(seen.sort()).toEqual(expected.map(key).sort());
    // Over all time the room has more matches than are ranked: the newest of them, all in the room.
    const all = await oracle(sql`rs.room_id = 'room-2'`);
    expect(all.length).toBeGreaterThan(RANK_WINDOW);
    const room = await searchTranscripts(db, { q: 'alpha', room: 'room-2', page: 1, pageSize: 100 });
    expect(room).toMatchObject({ totalIsEstimate: true, rankedMatches: RANK_WINDOW, rankedSince: new Date(all[RANK_WINDOW - 1]!.at).toISOString() });
    expect(room.hits.every((h) => h.room === 'room-2')).toBe(true);

    const session = await searchTranscripts(db, { q: 'alpha', session: 's010' });
    expect(session).toMatchObject({ total: 30, totalIsEstimate: false });
    expect(session.hits.every((h) => h.session === 's010')).toBe(true);
    expect(session.hits[0]).toMatchObject({ playUrl: `/play/s010?t=${session.hits[0]!.start}` });

    // Nothing in range, an unknown participant: empty, not an error.
    expect((await searchTranscripts(db, { q: 'alpha', from: '2030-01-01' })).hits).toEqual([]);
    expect((await searchTranscripts(db, { q: 'alpha', participant: 'nobody' })).total).toBe(0);
  });
});
