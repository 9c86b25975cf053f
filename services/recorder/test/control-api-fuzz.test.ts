import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z, type ZodType } from 'zod';
import type { Db } from '../../../db/database.ts';
import { TEST_RECORDER_SECRET, startTestRecorder, type TestRecorder } from '../../../testing/recorder-harness.ts';
import { fromJsonSchema, hostileBytes, hostileSegment, mutatedBody, refusalCode, send, sendBytes, type FuzzRequest, type FuzzResponse } from '../../../testing/http-fuzz.ts';
import { AuditLog } from '../../audit/index.ts';
import { RECORDER_CONTROL_ROUTES, RECORDER_ID_RE, type RecorderControlRoute } from '../../lib/contracts/recorder-control.ts';
import { ErrorCodes } from '../../lib/errors.ts';

/**
 * Property-based fuzzing of the recorder control API, as a real process: every route of
 * RECORDER_CONTROL_ROUTES (so a new route is fuzzed without a change here) with near-valid and
 * hostile path ids, bodies (mutations of bodies generated from the contract's schemas), secrets,
 * content types, methods, and bytes that are not HTTP. Each answer is below 500 (or a documented
 * 503/507), every refusal carries `{error: {code}}` and is one audit entry, a served request
 * none; at the end the process is alive, nothing was written outside RECORDINGS_DIR, every
 * directory and session row has a well-formed id, every session the fuzz opened can still be
 * sealed, and the audit chain verifies. Fixed seed, bounded by runs and time.
 */
const SEED = Number(process.env.FUZZ_SEED ?? 20_120_612);
const RUNS = Number(process.env.FUZZ_RUNS ?? 800);
const TIME_LIMIT_MS = Number(process.env.FUZZ_TIME_LIMIT_MS ?? 35_000);
/** What a recorder may answer when it cannot take a track (capacity, not input). */
const DOCUMENTED_5XX = new Set(['RECORDER_UNAVAILABLE', 'DISK_FULL']);

/** Ids that exist or are about to, so that requests reach sessions and tracks, not only refusals. */
const KNOWN: Record<string, readonly unknown[]> = {
  room: ['room1', 'room2'],
  session: ['fz-1', 'fz-2', 'fz-3'],
  track: ['t-a', 't-b'],
  id: ['alice', 'bob'],
  participant: ['alice', 'bob'],
  at: ['2024-06-01T10:00:00.000Z'],
};
const SECRET = `Bearer ${TEST_RECORDER_SECRET}`;
const caller = fc.oneof(
  { weight: 5, arbitrary: fc.constant<Record<string, string>>({ authorization: SECRET }) },
  { weight: 1, arbitrary: fc.constantFrom<Record<string, string>>({}, { authorization: 'Bearer wrong' }, { authorization: `Bearer ${'x'.repeat(9000)}` }, { authorization: 'Basic cmVjOnJlYw==' }, { authorization: `${SECRET} ` }) },
);
const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'];

type Generated = { kind: 'http'; route: string; req: FuzzRequest } | { kind: 'bytes'; route: string; bytes: string };

const jsonSchemaOf = (schema: ZodType | undefined) => (schema ? (z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>) : undefined);

function requestFor(key: RecorderControlRoute): fc.Arbitrary<Generated> {
  const spec: { auth: boolean; params?: ZodType; body?: ZodType; query?: ZodType } = RECORDER_CONTROL_ROUTES[key];
  const [method, url] = key.split(' ') as [string, string];
  const names = [...url.matchAll(/:(\w+)/g)].map((m) => m[1]!);
  const params = jsonSchemaOf(spec.params) as { properties?: Record<string, Record<string, unknown>> } | undefined;
  const segments = names.map((n) => hostileSegment(fromJsonSchema(params?.properties?.[n], KNOWN, n).map(String)));
  const body = spec.body ? fc.oneof({ weight: 19, arbitrary: mutatedBody(fromJsonSchema(jsonSchemaOf(spec.body), KNOWN)) }, { weight: 1, arbitrary: fc.constant(null) }) : fc.oneof({ weight: 9, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: mutatedBody(fc.constant({})) });
  const query = spec.query ? fc.constantFrom('', '?resetLag=1', '?resetLag=%00', '?resetLag=1&resetLag=2', '?__proto__[x]=1') : fc.constantFrom('', '', '', '?x=%zz', '?__proto__[x]=1');
  return fc
    .record({
      segments: fc.tuple(...segments),
      body,
      query,
      who: caller,
      m: fc.oneof({ weight: 9, arbitrary: fc.constant(method) }, { weight: 1, arbitrary: fc.constantFrom(...METHODS) }),
      contentType: fc.oneof({ weight: 9, arbitrary: fc.constant('application/json') }, { weight: 1, arbitrary: fc.constantFrom('text/plain', 'application/x-www-form-urlencoded', 'application/octet-stream') }),
      pad: fc.oneof({ weight: 30, arbitrary: fc.constant<Record<string, string>>({}) }, { weight: 1, arbitrary: fc.constant({ 'x-pad': 'p'.repeat(20_000) }) }),
    })
    .map(({ segments: values, body: b, query: q, who, m, contentType, pad }) => {
      let i = 0;
      const p = url.replace(/:\w+/g, () => values[i++]!);
      const headers: Record<string, string> = { ...who, ...pad, ...(b !== null ? { 'content-type': contentType, 'content-length': String(Buffer.byteLength(b)) } : {}) };
      return { kind: 'http' as const, route: key, req: { method: m, path: `${p}${q}`, headers, ...(b !== null ? { body: b } : {}) } };
    });
}

let rec: TestRecorder;
let db: Db;
let dataDirBefore: string[];
beforeAll(async () => {
  rec = await startTestRecorder();
  db = await rec.openDb();
  dataDirBefore = readdirSync(rec.dataDir).filter((f) => f !== 'recordings');
});
afterAll(async () => {
  await rec?.stop();
  await db?.destroy();
});

const auditCount = async () => Number((await db.selectFrom('audit_log').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);

describe('recorder control API fuzz', () => {
  it(`every route × secret × hostile input (seed ${SEED}): no undocumented 5xx, refusals coded and audited once, nothing outside RECORDINGS_DIR, every session still sealable`, { timeout: 120_000 }, async () => {
    const routes = Object.keys(RECORDER_CONTROL_ROUTES) as RecorderControlRoute[];
    const arbitrary = fc.oneof(
      { weight: 24, arbitrary: fc.oneof(...routes.map(requestFor)) },
      { weight: 1, arbitrary: fc.tuple(fc.constantFrom('/v1/', '/', '/v2/'), hostileSegment(fc.stringMatching(/^[a-z]{1,8}$/)), fc.constantFrom(...METHODS)).map(([base, seg, m]) => ({ kind: 'http' as const, route: 'unrouted', req: { method: m, path: `${base}${seg}`, headers: { authorization: SECRET } } })) },
      { weight: 1, arbitrary: hostileBytes.map((b) => ({ kind: 'bytes' as const, route: 'not HTTP', bytes: b.bytes })) },
    );
    const failures: string[] = [];
    const hit = new Map<string, number>();
    const statuses = new Map<number, number>();
    let runs = 0;
    // Every failing request is collected (a complete request to replay; no shrinking), not just the first.
    await fc.assert(
      fc.asyncProperty(arbitrary, async (g) => {
        runs++;
        hit.set(g.route, (hit.get(g.route) ?? 0) + 1);
        const before = await auditCount();
        let res: FuzzResponse;
        try {
          res = g.kind === 'http' ? await send(rec.url, g.req) : await sendBytes(rec.url, g.bytes);
        } catch (err) {
          failures.push(`${show(g)}: no answer (${(err as Error).message})`);
          return true;
        }
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        const problems: string[] = [];
        const head = g.kind === 'http' && g.req.method === 'HEAD';
        const { code, problem } = res.status >= 400 && !head ? refusalCode(res) : {};
        if (res.status === 0) problems.push('no HTTP answer');
        if (problem) problems.push(problem);
        else if (code !== undefined && !(code in ErrorCodes)) problems.push(`unknown code ${code}`);
        if (res.status >= 500 && !(code !== undefined && DOCUMENTED_5XX.has(code))) problems.push(`status ${res.status}`);
        // Refusals of the request (4xx) are audited once; served requests and capacity failures are not.
        const expected = res.status >= 400 && res.status < 500 ? 1 : 0;
        const delta = (await auditCount()) - before;
        if (delta !== expected) problems.push(`${delta} audit entries, expected ${expected}`);
        if (problems.length > 0) failures.push(`${show(g)} → ${res.status} ${res.text.slice(0, 160)}: ${problems.join('; ')}`);
        return true;
      }),
      { seed: SEED, numRuns: RUNS, interruptAfterTimeLimit: TIME_LIMIT_MS },
    );
    expect(failures, `${runs} requests, statuses ${JSON.stringify(Object.fromEntries(statuses))}`).toEqual([]);
    expect(routes.filter((r) => !hit.has(r)), JSON.stringify(Object.fromEntries(hit))).toEqual([]);
    expect([...statuses.keys()].some((s) => s >= 200 && s < 300), JSON.stringify(Object.fromEntries(statuses))).toBe(true);

    // The process is alive and nothing was written outside RECORDINGS_DIR, under names that are ids.
    expect(rec.child.exitCode).toBeNull();
    expect((await send(rec.url, { method: 'GET', path: '/v1/health', headers: {} })).status).toBe(200);
    expect(readdirSync(rec.dataDir).filter((f) => f !== 'recordings')).toEqual(dataDirBefore);
    for (const room of readdirSync(rec.recordingsDir)) {
      expect(room).toMatch(RECORDER_ID_RE);
      for (const session of readdirSync(path.join(rec.recordingsDir, room))) {
        expect(session).toMatch(RECORDER_ID_RE);
        expect(statSync(path.join(rec.recordingsDir, room, session)).isDirectory()).toBe(true);
      }
    }
    const rows = await db.selectFrom('recording_sessions').select(['id', 'room_id', 'status']).execute();
    for (const r of rows) expect(r.id).toMatch(RECORDER_ID_RE);
    // Whatever the fuzz put into an open session, it can still be sealed (stored in the database).
    for (const r of rows.filter((x) => x.status === 'recording')) {
      const end = await send(rec.url, { method: 'POST', path: `/v1/sessions/${r.id}/end`, headers: { authorization: SECRET, 'content-type': 'application/json' }, body: JSON.stringify({ v: 1, room: r.room_id, reason: 'fuzz done' }) });
      expect([r.id, end.status, end.text.slice(0, 200)]).toEqual([r.id, 200, expect.any(String)]);
    }
    expect(await new AuditLog(db).verify()).toMatchObject({ ok: true, checked: await auditCount() });
  });
});

function show(g: Generated): string {
  return g.kind === 'http' ? `${g.req.method} ${g.req.path.slice(0, 200)} ${JSON.stringify(g.req.headers).slice(0, 120)} ${(g.req.body ?? '').slice(0, 300)}` : `bytes ${JSON.stringify(g.bytes.slice(0, 120))}`;
}
