import { createHash, randomInt } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { sql } from 'kysely';
import { afterAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../db/database.ts';
import type { VerbatimError } from '../../lib/errors.ts';
import { testBackends, type TestBackend } from '../../../testing/databases.ts';
import { CheckpointStore, HmacCheckpointSigner, writeCheckpoint } from './audit-checkpoints.ts';
import { AuditLog, GENESIS_HASH, canonicalJson, type AuditRecord } from './audit-log.ts';

const SECRET = 'audit-test-secret-0123456789';
const signer = new HmacCheckpointSigner(SECRET);
const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-audit-'));

/** Every test group gets a database of its own (a PGlite directory or a Postgres schema). */
const opened: { backend: TestBackend; dbs: Db[] }[] = [];
async function fresh(name: TestBackend['name']): Promise<Db> {
  const backend = (await testBackends()).find((b) => b.name === name)!;
  const db = await backend.open();
  opened.push({ backend, dbs: [db] });
  return db;
}
/** A second handle (its own connection pool, as another process would have) on the last fresh database. */
async function reopenLast(): Promise<Db> {
  const last = opened.at(-1)!;
  const db = await last.backend.open();
  last.dbs.push(db);
  return db;
}
afterAll(async () => {
  for (const { backend, dbs } of opened) {
    for (const db of dbs) await db.destroy().catch(() => {});
    await backend.cleanup();
  }
  for (const b of backends) await b.cleanup();
  rmSync(tmp, { recursive: true, force: true });
});

/** As a superuser bypassing the append-only trigger (session_replication_role = replica). */
async function bypass(db: Db, statement: ReturnType<typeof sql>): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await sql`set local session_replication_role = replica`.execute(trx);
    await statement.execute(trx);
  });
}

async function fill(log: AuditLog, n: number, from = 1): Promise<void> {
  for (let i = from; i < from + n; i++) {
    await log.append({
      action: i % 3 === 0 ? 'recording.download' : 'room.create',
      actor: { type: i % 2 ? 'user' : 'api_key', id: `actor-${i % 5}` },
      target: { type: 'room', id: `room-${i}` },
      details: { i, nested: { b: [1, 'two', { z: null, a: true }], a: 0.1 + 0.2 }, 'ümlaut key': 'ok' },
      clientAddress: `10.0.0.${i % 250}`,
    });
  }
}

const backends = await testBackends();

function hasUnstorableText(v: unknown): boolean {
  // eslint-disable-next-line no-control-regex -- NUL is exactly what it looks for
  if (typeof v === 'string') return /\u0000|\p{Cs}/u.test(v);
  if (Array.isArray(v)) return v.some(hasUnstorableText);
  if (v !== null && typeof v === 'object') return Object.entries(v).some(([k, x]) => hasUnstorableText(k) || hasUnstorableText(x));
  return false;
}

describe.each(backends)('audit log ($name)', (backend: TestBackend) => {
  const skip = !backend.available;

  it.skipIf(skip)('serializes concurrent writers into one unforked chain, seqs 1..200', async () => {
    const db = await fresh(backend.name);
    // Postgres: a second pool stands in for a second process.
    const dbs = [db];
    if (backend.name === 'postgres') {
      dbs.push(await reopenLast());
    }
    const logs = dbs.map((d) => new AuditLog(d));
    const perWriter: number[][] = [[], [], [], []];
    await Promise.all(
      perWriter.map(async (mine, w) => {
        for (let i = 0; i < 50; i++) {
          const { seq, hash } = await logs[w % logs.length]!.append({ action: 'write', actor: { type: 'service', id: `writer-${w}` }, details: { w, i } });
          expect(hash).toMatch(/^[0-9a-f]{64}$/);
          mine.push(seq);
        }
      }),
    );
    const log = logs[0]!;
    const res = await log.verify({ pageSize: 64 });
    expect(res).toMatchObject({ ok: true, checked: 200 });
    expect(res.firstBroken).toBeUndefined();
    const all: AuditRecord[] = [];
    for (let after = 0; ; after = all.at(-1)!.seq) {
      const page = await log.entries({ afterSeq: after, limit: 77 });
      if (page.length === 0) break;
      all.push(...page);
    }
    expect(all.map((e) => e.seq)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
    expect(all[0]!.prev_hash).toBe(GENESIS_HASH);
    for (let i = 1; i < all.length; i++) expect(all[i]!.prev_hash).toBe(all[i - 1]!.hash);
    expect(new Set(all.map((e) => e.prev_hash)).size).toBe(200);
    // Each writer's own appends keep their order.
    for (const [w, mine] of perWriter.entries()) {
      expect(mine).toEqual([...mine].sort((a, b) => a - b));
      expect(all.filter((e) => e.actor_id === `writer-${w}`).map((e) => (e.details as { i: number }).i)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    }
    expect(await log.head()).toEqual({ seq: 200, hash: all[199]!.hash });
  });

  it.skipIf(skip)('hashes exactly what it stores: SHA-256(prev_hash + canonical JSON), `at` survives the timestamptz round trip', async () => {
    const db = await fresh(backend.name);
    const log = new AuditLog(db);
    const times = ['2024-02-29T23:59:59.999Z', '2024-01-01T00:00:00.000Z', '1999-12-31T12:00:00.001Z', '2038-01-19T03:14:08.500Z'];
    for (const t of times) await log.append({ action: 'tick', at: new Date(t), details: { t, undef: undefined, when: new Date(t) } });
    const rows = await log.entries();
    expect(rows.map((r) => r.at)).toEqual(times);
    // The driver's own Date parsing agrees too.
    const dates = await db.selectFrom('audit_log').select(['seq', 'at']).orderBy('seq').execute();
    expect(dates.map((d) => d.at.toISOString())).toEqual(times);
    // Independent recomputation of entry 2 from the spec.
    const r = rows[1]!;
    expect(r.details).toEqual({ t: times[1], when: times[1] });
    const canonical = `{"action":"tick","actor_id":null,"actor_type":"anonymous","at":"${times[1]}","client_address":null,"details":{"t":"${times[1]}","when":"${times[1]}"},"seq":2,"target_id":null,"target_type":null}`;
    expect(canonicalJson({ seq: r.seq, at: r.at, actor_type: r.actor_type, actor_id: r.actor_id, action: r.action, target_type: r.target_type, target_id: r.target_id, details: r.details, client_address: r.client_address })).toBe(canonical);
    expect(r.hash).toBe(createHash('sha256').update(rows[0]!.hash + canonical).digest('hex'));
    expect(canonicalJson({ b: [{ d: 1, c: 2 }], a: 'x y' })).toBe('{"a":"x y","b":[{"c":2,"d":1}]}');
    // Bad input is refused before it can poison the chain.
    for (const bad of [{ action: '' }, { action: 'x', details: { s: 'nul\u0000' } }, { action: 'x', details: { n: Number.NaN } }, { action: 'x', at: new Date('invalid') }, { action: 'x', actor: { type: 'root' as 'user' } }]) {
      await expect(log.append(bad)).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    }
    expect((await log.verify()).checked).toBe(times.length);
  });

  it.skipIf(skip)('any JSON details hash the same after the jsonb round trip (property)', async () => {
    const db = await fresh(backend.name);
    const log = new AuditLog(db);
    let appended = 0;
    await fc.assert(
      fc.asyncProperty(fc.dictionary(fc.string({ unit: 'binary' }), fc.jsonValue()), fc.option(fc.string({ unit: 'binary' })), async (details, actorId) => {
        const unstorable = hasUnstorableText([details, actorId]);
        try {
          await log.append({ action: 'prop', actor: { type: 'user', id: actorId }, details });
          appended++;
        } catch (err) {
          expect(unstorable, String(err)).toBe(true);
          expect((err as VerbatimError).code).toBe('BAD_REQUEST');
          return;
        }
        expect(unstorable).toBe(false);
        const res = await log.verify();
        expect(res.firstBroken).toBeUndefined();
        expect(res.checked).toBe(appended);
      }),
      { numRuns: 60 },
    );
    expect(appended).toBeGreaterThan(10);
  });

  it.skipIf(skip)('refuses UPDATE, DELETE and TRUNCATE through the trigger', async () => {
    const db = await fresh(backend.name);
    const log = new AuditLog(db);
    await fill(log, 5);
    const before = await log.entries();
    for (const stmt of [sql`update audit_log set action = 'x' where seq = 3`, sql`update audit_log set details = '{}'`, sql`delete from audit_log where seq = 5`, sql`delete from audit_log`, sql`truncate audit_log`]) {
      await expect(stmt.execute(db)).rejects.toThrow(/audit_log is append-only: (UPDATE|DELETE|TRUNCATE) refused/);
    }
    await writeCheckpoint(db, new CheckpointStore(path.join(tmp, `trigger-${backend.name}`)), signer);
    for (const stmt of [sql`update audit_checkpoints set seq = 1`, sql`delete from audit_checkpoints`, sql`truncate audit_checkpoints`]) {
      await expect(stmt.execute(db)).rejects.toThrow(/audit_checkpoints is append-only/);
    }
    // Through the typed API and inside a transaction alike.
    await expect(db.deleteFrom('audit_log').where('seq', '=', 1).execute()).rejects.toThrow(/append-only/);
    expect(await log.entries()).toEqual(before);
    expect((await log.verify()).ok).toBe(true);
  });

  it.skipIf(skip)('names exactly the tampered entry, whatever field was changed', async () => {
    const db = await fresh(backend.name);
    const log = new AuditLog(db);
    const N = 40;
    await fill(log, N);
    const original = new Map((await log.entries({ limit: N })).map((e) => [e.seq, e]));
    const tampers: { field: string; reason: string; set: (seq: number) => ReturnType<typeof sql> }[] = [
      { field: 'action', reason: 'hash-mismatch', set: (s) => sql`update audit_log set action = 'recording.delete' where seq = ${s}` },
      { field: 'actor_id', reason: 'hash-mismatch', set: (s) => sql`update audit_log set actor_id = 'mallory' where seq = ${s}` },
      { field: 'actor_type', reason: 'hash-mismatch', set: (s) => sql`update audit_log set actor_type = 'service' where seq = ${s}` },
      { field: 'target_id', reason: 'hash-mismatch', set: (s) => sql`update audit_log set target_id = 'room-other' where seq = ${s}` },
      { field: 'details', reason: 'hash-mismatch', set: (s) => sql`update audit_log set details = jsonb_set(details, '{i}', '999') where seq = ${s}` },
      { field: 'details (key added)', reason: 'hash-mismatch', set: (s) => sql`update audit_log set details = details || '{"extra": 1}' where seq = ${s}` },
      { field: 'at', reason: 'hash-mismatch', set: (s) => sql`update audit_log set at = at + interval '1 second' where seq = ${s}` },
      { field: 'at (1 µs)', reason: 'hash-mismatch', set: (s) => sql`update audit_log set at = at + interval '1 microsecond' where seq = ${s}` },
      { field: 'client_address', reason: 'hash-mismatch', set: (s) => sql`update audit_log set client_address = '203.0.113.9' where seq = ${s}` },
      { field: 'client_address (null)', reason: 'hash-mismatch', set: (s) => sql`update audit_log set client_address = null where seq = ${s}` },
      { field: 'prev_hash', reason: 'prev-hash-mismatch', set: (s) => sql`update audit_log set prev_hash = ${'ab'.repeat(32)} where seq = ${s}` },
      { field: 'hash', reason: 'hash-mismatch', set: (s) => sql`update audit_log set hash = ${'cd'.repeat(32)} where seq = ${s}` },
    ];
    for (const t of tampers) {
      const seq = randomInt(1, N + 1);
      await bypass(db, t.set(seq));
      const res = await log.verify({ pageSize: 7 });
      expect(res.ok, `${t.field} @ ${seq}`).toBe(false);
      expect(res.firstBroken, `${t.field} @ ${seq}`).toMatchObject({ seq, reason: t.reason });
      expect(res.checked).toBe(seq - 1);
      await expect(log.assertIntact()).rejects.toMatchObject({ code: 'AUDIT_CHAIN_BROKEN', details: { seq } });
      // No checkpoint is ever signed over a tampered chain.
      await expect(writeCheckpoint(db, new CheckpointStore(path.join(tmp, `tamper-${backend.name}`)), signer)).rejects.toMatchObject({ code: 'CHECKPOINT_MISMATCH' });
      // Put it back exactly: the chain verifies again (so the detection above is real).
      const o = original.get(seq)!;
      await bypass(db, sql`update audit_log set action = ${o.action}, actor_type = ${o.actor_type}, actor_id = ${o.actor_id}, target_id = ${o.target_id}, details = ${JSON.stringify(o.details)}::jsonb, at = ${o.at}::timestamptz, client_address = ${o.client_address}, prev_hash = ${o.prev_hash}, hash = ${o.hash} where seq = ${seq}`);
      expect(await log.verify(), `restored ${t.field} @ ${seq}`).toMatchObject({ ok: true, checked: N });
    }

    // A smarter forger re-hashes the entry it changed: the next entry's link gives it away.
    const seq = randomInt(2, N);
    const o = original.get(seq)!;
    const forgedDetails = { ...o.details, i: -1 };
    const forgedHash = createHash('sha256')
      .update(o.prev_hash + canonicalJson({ seq, at: o.at, actor_type: o.actor_type, actor_id: o.actor_id, action: o.action, target_type: o.target_type, target_id: o.target_id, details: forgedDetails, client_address: o.client_address }))
      .digest('hex');
    await bypass(db, sql`update audit_log set details = ${JSON.stringify(forgedDetails)}::jsonb, hash = ${forgedHash} where seq = ${seq}`);
    expect((await log.verify()).firstBroken).toMatchObject({ seq: seq + 1, reason: 'prev-hash-mismatch' });
  });

  it.skipIf(skip)('reports the entry after a deleted one as a seq gap', async () => {
    const db = await fresh(backend.name);
    const log = new AuditLog(db);
    await fill(log, 30);
    await bypass(db, sql`delete from audit_log where seq = 17`);
    expect((await log.verify({ pageSize: 10 })).firstBroken).toMatchObject({ seq: 18, reason: 'seq-gap' });
    await bypass(db, sql`delete from audit_log where seq = 1`);
    expect((await log.verify()).firstBroken).toMatchObject({ seq: 2, reason: 'seq-gap' });
  });
});
