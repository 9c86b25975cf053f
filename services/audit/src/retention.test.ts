import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../db/database.ts';
import { testBackends, type TestBackend } from '../../../testing/databases.ts';
import { LocalArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { AuditLog } from './audit-log.ts';
import {
  DAY_MS,
  LegalHolds,
  RetentionSweeper,
  decideDeletions,
  scheduleSweeper,
  type RetentionHold,
  type RetentionKind,
  type RetentionPolicy,
  type RetentionSession,
} from './retention.ts';

const KINDS: RetentionKind[] = ['media', 'transcript', 'raw'];
const BASE = Date.UTC(2026, 0, 1);

// ---------------------------------------------------------------- the oracle, written from the rules

/** Held: a hold not released whose scope names the session, its room, one of its participants, or froze it. */
function oracleHeld(s: RetentionSession, holds: RetentionHold[]): boolean {
  return holds.some(
    (h) =>
      h.releasedAt === null &&
      ((h.scopeType === 'session' && h.scopeValue === s.id) ||
        (h.scopeType === 'room' && h.scopeValue === s.roomId) ||
        (h.scopeType === 'participant' && s.participants.includes(h.scopeValue)) ||
        (h.scopeType === 'query' && h.frozenSessionIds.includes(s.id))),
  );
}

/** Expired: ended, not in flight, some policy applies, none keeps the kind forever, and now ≥ end + the longest. */
function oracleExpired(now: number, s: RetentionSession, kind: RetentionKind, policies: RetentionPolicy[]): boolean {
  if (s.endedAt === null || s.status === 'recording' || s.status === 'processing') return false;
  const field = kind === 'media' ? 'media_days' : kind === 'transcript' ? 'transcript_days' : 'raw_days';
  const days = policies
    .filter((p) => p.scope === 'default' || (p.scope === 'room' && p.name === s.policy) || (p.scope === 'tag' && (s.tags ?? []).includes(p.name)))
    .map((p) => p[field]);
  if (days.length === 0 || days.includes(null)) return false;
  return now >= s.endedAt.getTime() + Math.max(...(days as number[])) * DAY_MS;
}

const rooms = ['r1', 'r2', 'r3'];
const people = ['p1', 'p2', 'p3', 'p4'];
const words = ['merger', 'budget', 'launch'];
const daysArb = fc.option(fc.integer({ min: 0, max: 60 }), { nil: null, freq: 4 });

const policiesArb = fc.uniqueArray(
  fc.record({
    name: fc.constantFrom('std', 'long', 'short', 'legal', 'hr'),
    scope: fc.constantFrom('default' as const, 'room' as const, 'tag' as const),
    media_days: daysArb,
    transcript_days: daysArb,
    raw_days: daysArb,
  }),
  { selector: (p) => p.name, maxLength: 5 },
);

const sessionsArb = fc
  .array(
    fc.record({
      roomId: fc.constantFrom(...rooms),
      endedAt: fc.option(fc.integer({ min: -100, max: 100 }).map((d) => new Date(BASE + d * DAY_MS + 1234)), { nil: null, freq: 6 }),
      status: fc.constantFrom('done', 'done', 'failed', 'sealed', 'recording', 'processing'),
      policy: fc.option(fc.constantFrom('std', 'long', 'short', 'legal', 'hr', 'missing'), { nil: null }),
      tags: fc.subarray(['std', 'long', 'short', 'legal', 'hr']),
      participants: fc.subarray(people),
      kinds: fc.subarray(KINDS),
      words: fc.subarray(words),
    }),
    { maxLength: 12 },
  )
  .map((ss) => ss.map((s, i) => ({ ...s, id: `s${i}` })));

type Event = { t: 'sweep'; now: number } | { t: 'place'; scopeType: RetentionHold['scopeType']; value: string } | { t: 'release'; which: number };
const eventArb: fc.Arbitrary<Event> = fc.oneof(
  // Clock jumps: each sweep's now is anywhere in ±250 days of BASE, forwards or backwards of the last.
  fc.record({ t: fc.constant('sweep' as const), now: fc.integer({ min: -250 * DAY_MS, max: 250 * DAY_MS }).map((d) => BASE + d) }),
  fc.oneof(
    fc.record({ t: fc.constant('place' as const), scopeType: fc.constant('session' as const), value: fc.integer({ min: 0, max: 12 }).map((i) => `s${i}`) }),
    fc.record({ t: fc.constant('place' as const), scopeType: fc.constant('room' as const), value: fc.constantFrom(...rooms) }),
    fc.record({ t: fc.constant('place' as const), scopeType: fc.constant('participant' as const), value: fc.constantFrom(...people) }),
    fc.record({ t: fc.constant('place' as const), scopeType: fc.constant('query' as const), value: fc.constantFrom(...words) }),
  ),
  fc.record({ t: fc.constant('release' as const), which: fc.nat(20) }),
);

describe('decideDeletions (property)', () => {
  it('never returns a held item and returns every expired unheld item, across holds placed/released and clock jumps', () => {
    fc.assert(
      fc.property(policiesArb, sessionsArb, fc.array(eventArb, { minLength: 1, maxLength: 25 }), (policies, generated, events) => {
        // Live state: the kinds each session still has, and the holds so far.
        const sessions: (RetentionSession & { words: string[]; kinds: RetentionKind[] })[] = generated.map((s) => ({ ...s, kinds: [...s.kinds] }));
        const holds: RetentionHold[] = [];
        for (const e of events) {
          if (e.t === 'place') {
            // A query hold freezes the sessions whose transcript (still present) matches now.
            const frozen = e.scopeType === 'query' ? sessions.filter((s) => s.kinds.includes('transcript') && s.words.includes(e.value)).map((s) => s.id) : [];
            holds.push({ id: `h${holds.length}`, scopeType: e.scopeType, scopeValue: e.value, frozenSessionIds: frozen, releasedAt: null });
            continue;
          }
          if (e.t === 'release') {
            const open = holds.filter((h) => h.releasedAt === null);
            if (open.length > 0) open[e.which % open.length]!.releasedAt = new Date(BASE);
            continue;
          }
          const got = decideDeletions(new Date(e.now), sessions, policies, holds);
          const gotKeys = got.map((d) => `${d.sessionId}|${d.kind}`);
          expect(new Set(gotKeys).size).toBe(gotKeys.length); // no duplicates
          const expected: string[] = [];
          for (const s of sessions) {
            for (const k of s.kinds) if (!oracleHeld(s, holds) && oracleExpired(e.now, s, k, policies)) expected.push(`${s.id}|${k}`);
          }
          // Never a held item:
          for (const d of got) expect(oracleHeld(sessions.find((s) => s.id === d.sessionId)!, holds), `${d.sessionId} is held`).toBe(false);
          // Exactly the expired unheld items (so every one of them, and nothing unexpired or absent):
          expect([...gotKeys].sort()).toEqual([...expected].sort());
          for (const d of got) {
            expect(d.expiresAt.getTime()).toBeLessThanOrEqual(e.now);
            const s = sessions.find((x) => x.id === d.sessionId)!;
            s.kinds = s.kinds.filter((k) => k !== d.kind); // the sweep deleted it
          }
        }
      }),
      { numRuns: 500 },
    );
  });

  it('the longest applicable retention wins; keep-forever beats any duration; no policy keeps', () => {
    const s: RetentionSession = { id: 's', roomId: 'r', endedAt: new Date(BASE), status: 'done', policy: 'room-long', participants: [] };
    const pol = (name: string, scope: RetentionPolicy['scope'], d: number | null): RetentionPolicy => ({ name, scope, media_days: d, transcript_days: d, raw_days: d });
    const at = (days: number) => new Date(BASE + days * DAY_MS);
    const policies = [pol('default', 'default', 7), pol('room-long', 'room', 30), pol('other-room', 'room', 1)];
    expect(decideDeletions(at(10), [s], policies, [])).toEqual([]);
    const due = decideDeletions(at(30), [s], policies, []);
    expect(due.map((d) => [d.kind, d.policy])).toEqual([['media', 'room-long'], ['transcript', 'room-long'], ['raw', 'room-long']]);
    expect(decideDeletions(at(1000), [s], [...policies, pol('forever', 'tag', null)], [])).toHaveLength(3); // tag not on the session
    expect(decideDeletions(at(1000), [{ ...s, tags: ['forever'] }], [...policies, pol('forever', 'tag', null)], [])).toEqual([]);
    expect(decideDeletions(at(1000), [s], [], [])).toEqual([]);
  });
});

describe('scheduleSweeper', () => {
  it('registers one repeatable job scheduler', async () => {
    const calls: unknown[][] = [];
    await scheduleSweeper({ upsertJobScheduler: async (...a: unknown[]) => void calls.push(a) }, 3_600_000);
    expect(calls).toEqual([['retention-sweeper', { every: 3_600_000 }, { name: 'retention.sweep', data: {} }]]);
    await expect(scheduleSweeper({ upsertJobScheduler: async () => {} }, 10)).rejects.toMatchObject({ code: 'BAD_REQUEST' });
  });
});

// ---------------------------------------------------------------- integration

const backends = await testBackends();
const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-retention-'));
const toClose: Db[] = [];
const toCleanup: TestBackend[] = [...backends];
/** A database of its own for each test (a PGlite directory or a Postgres schema). */
async function fresh(name: TestBackend['name']): Promise<Db> {
  const backend = (await testBackends()).find((b) => b.name === name)!;
  toCleanup.push(backend);
  const db = await backend.open();
  toClose.push(db);
  return db;
}
afterAll(async () => {
  for (const db of toClose) await db.destroy().catch(() => {});
  for (const b of toCleanup) await b.cleanup();
  rmSync(tmp, { recursive: true, force: true });
});

const NOW = new Date('2026-06-01T00:00:00Z');
const daysAgo = (d: number) => new Date(NOW.getTime() - d * DAY_MS);
const officer = { type: 'user' as const, id: 'officer-1' };

interface Seeded {
  keys: string[];
  rawDir: string;
}

async function seedSession(db: Db, storage: LocalArtifactStorage, recordingsDir: string, id: string, room: string, endedDaysAgo: number, participant: string, text: string): Promise<Seeded> {
  const rawDir = path.join(recordingsDir, room, id);
  mkdirSync(rawDir, { recursive: true });
  writeFileSync(path.join(rawDir, 't-0.vrtp'), `raw ${id}`);
  writeFileSync(path.join(rawDir, 'manifest.json'), '{}');
  await db
    .insertInto('recording_sessions')
    .values({ id, room_id: room, started_at: daysAgo(endedDaysAgo + 0.1), ended_at: daysAgo(endedDaysAgo), status: 'done', manifest_path: path.join(rawDir, 'manifest.json'), manifest_sha256: 'x' })
    .execute();
  await db.insertInto('session_participants').values({ session_id: id, participant_id: participant, name: participant, consent_decision: 'granted', consent_method: 'click' }).execute();
  await db.insertInto('tracks').values({ session_id: id, track_id: 't', participant_id: participant, kind: 'audio', codec: '{}' }).execute();
  await db
    .insertInto('track_segments')
    .values({ session_id: id, track_id: 't', segment: 0, file: 't-0.vrtp', ssrc: 1, bytes: 5, sha256: 'x', rtp_packets: 1, rtcp_packets: 0, started_at: daysAgo(endedDaysAgo + 0.1), ended_at: daysAgo(endedDaysAgo), end_reason: 'stop', truncated: false })
    .execute();
  const keys: string[] = [];
  for (const [name, kind] of [['composite.mp4', 'composite'], ['transcript.vtt', 'transcript-vtt']] as const) {
    const src = path.join(tmp, `${id}-${name}`);
    writeFileSync(src, `${kind} of ${id}`);
    const key = `sessions/${room}/${id}/${name}`;
    const stored = await storage.put(key, src);
    await db.insertInto('artifacts').values({ session_id: id, key, kind, participant_id: null, content_type: 'application/octet-stream', bytes: stored.bytes, sha256: stored.sha256, storage: 'local' }).execute();
    keys.push(key);
  }
  await db.insertInto('transcript_segments').values({ session_id: id, seq: 0, participant_id: participant, speaker: participant, start_seconds: 0, end_seconds: 1, text, language: 'en' }).execute();
  return { keys, rawDir };
}

describe.each(backends)('retention sweeper and legal holds ($name)', (backend: TestBackend) => {
  it.skipIf(!backend.available)('deletes expired unheld content with tombstones and audit entries, keeps held sessions, dry-runs, re-applies after release', async () => {
    const db = await fresh(backend.name);
    const root = path.join(tmp, backend.name);
    const storage = new LocalArtifactStorage(path.join(root, 'artifacts'));
    const recordingsDir = path.join(root, 'recordings');
    const audit = new AuditLog(db);
    const holds = new LegalHolds(db, audit);
    const sweeper = new RetentionSweeper({ db, storage, audit, recordingsDir, now: () => NOW });

    await db.insertInto('rooms').values({ id: 'r2', name: 'board', flags: JSON.stringify({ retentionPolicy: 'board' }), secret_hash: 'x' }).execute();
    await db
      .insertInto('retention_policies')
      .values([
        { name: 'standard', scope: 'default', media_days: 10, transcript_days: 10, raw_days: 5 },
        { name: 'board', scope: 'room', media_days: 365, transcript_days: null, raw_days: 30 },
      ])
      .execute();

    const s = {
      expired: await seedSession(db, storage, recordingsDir, 'expired', 'r1', 20, 'alice', 'weekly sync about the roadmap'),
      heldSession: await seedSession(db, storage, recordingsDir, 'held-session', 'r1', 20, 'bob', 'quarterly numbers'),
      heldParticipant: await seedSession(db, storage, recordingsDir, 'held-participant', 'r1', 20, 'carol', 'hiring plans'),
      heldQuery: await seedSession(db, storage, recordingsDir, 'held-query', 'r1', 20, 'dave', 'the merger with Acme is confidential'),
      board: await seedSession(db, storage, recordingsDir, 'board', 'r2', 20, 'erin', 'board minutes'),
      recent: await seedSession(db, storage, recordingsDir, 'recent', 'r1', 2, 'frank', 'standup'),
    };

    const h1 = await holds.place({ caseId: 'CASE-1', reason: 'litigation', scopeType: 'session', scopeValue: 'held-session', placedBy: officer });
    await holds.place({ caseId: 'CASE-2', reason: 'custodian', scopeType: 'participant', scopeValue: 'carol', placedBy: officer });
    const q = await holds.place({ caseId: 'CASE-3', reason: 'merger inquiry', scopeType: 'query', scopeValue: 'merger Acme', placedBy: officer });
    expect(q.frozenSessionIds).toEqual(['held-query']);
    // A session that matches the query only after placement is not frozen by it.
    const late = await seedSession(db, storage, recordingsDir, 'late-merger', 'r1', 20, 'gina', 'more on the merger with Acme');

    expect((await holds.isHeld('held-session')).held).toBe(true);
    expect((await holds.isHeld('held-participant', undefined, officer)).held).toBe(true);
    expect((await holds.isHeld('held-query')).held).toBe(true);
    expect((await holds.isHeld('late-merger')).held).toBe(false);
    expect((await holds.isHeld('expired')).held).toBe(false);

    const exists = async (keys: string[]) => Promise.all(keys.map((k) => storage.exists(k)));
    const count = async (table: 'artifacts' | 'transcript_segments' | 'track_segments', id: string) =>
      Number((await db.selectFrom(table).select((eb) => eb.fn.countAll<number>().as('n')).where('session_id', '=', id).executeTakeFirstOrThrow()).n);
    const untouched = async (id: string, seeded: Seeded) => {
      expect(await exists(seeded.keys), id).toEqual([true, true]);
      expect(await count('artifacts', id), id).toBe(2);
      expect(await count('transcript_segments', id), id).toBe(1);
      expect(await count('track_segments', id), id).toBe(1);
      expect(readdirSync(seeded.rawDir).sort(), id).toEqual(['manifest.json', 't-0.vrtp']);
    };
    const gone = async (id: string, seeded: Seeded) => {
      expect(await exists(seeded.keys), id).toEqual([false, false]);
      expect(await count('artifacts', id), id).toBe(0);
      expect(await count('transcript_segments', id), id).toBe(0);
      expect(await count('track_segments', id), id).toBe(0);
      expect(existsSync(seeded.rawDir), id).toBe(false);
    };
    const auditActions = async () => (await audit.entries({ limit: 1000 })).map((e) => e.action);

    // Dry run: lists, deletes nothing, writes exactly one audit entry.
    const before = (await auditActions()).length;
    const dry = await sweeper.sweep({ dryRun: true });
    const listed = dry.decisions.map((d) => `${d.sessionId}|${d.kind}`).sort();
    expect(listed).toEqual(['expired|media', 'expired|raw', 'expired|transcript', 'late-merger|media', 'late-merger|raw', 'late-merger|transcript'].sort());
    expect((await auditActions()).slice(before)).toEqual(['retention.dry_run']);
    for (const [id, seeded] of Object.entries({ ...s, late })) {
      expect(await exists(seeded.keys), id).toEqual([true, true]);
      expect(existsSync(seeded.rawDir), id).toBe(true);
    }
    expect(await db.selectFrom('tombstones').selectAll().execute()).toEqual([]);

    // A clock jumped backwards deletes nothing.
    expect((await sweeper.sweep({ now: new Date('2026-01-01T00:00:00Z') })).deleted).toEqual([]);

    // The sweep.
    const res = await sweeper.sweep();
    expect(res.deleted.map((d) => `${d.sessionId}|${d.kind}`).sort()).toEqual(listed);
    await gone('expired', s.expired);
    await gone('late-merger', late);
    await untouched('held-session', s.heldSession);
    await untouched('held-participant', s.heldParticipant);
    await untouched('held-query', s.heldQuery);
    await untouched('recent', s.recent);
    // The board room's policy (media 365 days, transcripts forever, raw 30) outlasts the default (10/10/5): the longest wins.
    await untouched('board', s.board);

    const tomb = await db.selectFrom('tombstones').select(['session_id', 'kind', 'item', 'policy']).orderBy('id').execute();
    expect(new Set(tomb.map((t) => t.session_id))).toEqual(new Set(res.deleted.map((d) => d.sessionId)));
    expect(tomb.filter((t) => t.session_id === 'expired').map((t) => [t.kind, t.item.startsWith(recordingsDir) ? path.basename(t.item) : t.item]).sort()).toEqual(
      [
        ['media', 'sessions/r1/expired/composite.mp4'],
        ['transcript', 'sessions/r1/expired/transcript.vtt'],
        ['transcript', 'transcript_segments:1'],
        ['raw', 'manifest.json'],
        ['raw', 't-0.vrtp'],
      ].sort(),
    );
    const deletes = (await audit.entries({ limit: 1000 })).filter((e) => e.action === 'retention.delete');
    expect(deletes).toHaveLength(res.deleted.length);
    expect(deletes.every((e) => e.target_type === 'session' && e.actor_type === 'service')).toBe(true);

    // Idempotent: a second sweep finds nothing more.
    expect((await sweeper.sweep()).decisions).toEqual([]);

    // Releasing the session hold re-applies retention at the next sweep.
    await holds.release(h1.id, officer, 'case closed');
    expect((await holds.isHeld('held-session')).held).toBe(false);
    await expect(holds.release(h1.id, officer)).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    const after = await sweeper.sweep();
    expect(after.deleted.map((d) => `${d.sessionId}|${d.kind}`).sort()).toEqual(['held-session|media', 'held-session|raw', 'held-session|transcript']);
    await gone('held-session', s.heldSession);
    await untouched('held-participant', s.heldParticipant);
    await untouched('held-query', s.heldQuery);

    const actions = await auditActions();
    expect(actions.filter((a) => a === 'legal_hold.place')).toHaveLength(3);
    expect(actions.filter((a) => a === 'legal_hold.release')).toHaveLength(1);
    expect(actions.filter((a) => a === 'legal_hold.check')).toHaveLength(1);
    const verified = await audit.verify();
    expect(verified.ok).toBe(true);
    expect(verified.checked).toBe(actions.length);
  });

  it.skipIf(!backend.available)('a hold placed after planning stops the deletion (re-check under the hold lock)', async () => {
    const db = await fresh(backend.name);
    const root = path.join(tmp, `${backend.name}-race`);
    const storage = new LocalArtifactStorage(path.join(root, 'artifacts'));
    const recordingsDir = path.join(root, 'recordings');
    const audit = new AuditLog(db);
    const holds = new LegalHolds(db, audit);
    await db.insertInto('retention_policies').values({ name: 'standard', scope: 'default', media_days: 1, transcript_days: 1, raw_days: 1 }).execute();
    const seeded = await seedSession(db, storage, recordingsDir, 'sx', 'r9', 5, 'zed', 'hello');
    const sweeper = new RetentionSweeper({ db, storage, audit, recordingsDir, now: () => NOW });
    const plan = sweeper.plan.bind(sweeper);
    // The hold lands between the plan and the deletion.
    sweeper.plan = async (now?: Date) => {
      const decisions = await plan(now);
      await holds.place({ caseId: 'C', reason: 'late', scopeType: 'room', scopeValue: 'r9', placedBy: officer });
      return decisions;
    };
    const res = await sweeper.sweep();
    expect(res.decisions).toHaveLength(3);
    expect(res.deleted).toEqual([]);
    expect(res.skippedHeld).toHaveLength(3);
    expect(await Promise.all(seeded.keys.map((k) => storage.exists(k)))).toEqual([true, true]);
    expect(existsSync(path.join(seeded.rawDir, 't-0.vrtp'))).toBe(true);
    expect((await audit.verify()).ok).toBe(true);
  });
});
