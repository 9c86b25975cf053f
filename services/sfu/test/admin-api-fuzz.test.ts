import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditLog } from '../../audit/index.ts';
import { testBackends } from '../../../testing/databases.ts';
import { FakeDeviceClient, ObservedAuditSink, TEST_API_SECRET, rawHttp, startTestSfu, type TestSfu } from '../../../testing/sfu-harness.ts';

/**
 * Property-based fuzzing of the SFU's HTTP server (fixed seed, bounded time): every admin API
 * route and the public ones, with arbitrary and near-valid methods, paths, headers and bodies,
 * sent as raw HTTP so nothing is normalised on the way. Each request is answered (with an
 * x-request-id), never 5xx except the documented 503s, every refusal is `{error: {code,
 * message}}`, every request is exactly one audit entry (served public pages none), nothing
 * escapes to the process, the SFU still serves a meeting at the end, and the audit chain verifies.
 */
const SEED = Number(process.env.SFU_FUZZ_SEED ?? 12_012);
const TIME_LIMIT_MS = Number(process.env.SFU_FUZZ_TIME_MS ?? 30_000);
const MAX_RUNS = Number(process.env.SFU_FUZZ_RUNS ?? 500);
/** 503s the admin API documents; any other 5xx is a bug. */
const DOCUMENTED_503 = new Set(['AUDIT_UNAVAILABLE', 'DRAINING', 'WORKER_DIED', 'CONSENT_NOT_STORED', 'PORTS_EXHAUSTED', 'RECORDER_UNAVAILABLE']);
const PUBLIC_PATHS = new Set(['/', '/healthz', '/metrics', '/meet', '/assets/meeting.js']);

const pg = (await testBackends())[1]!;
let sfu: TestSfu;
let audit: ObservedAuditSink;
let log: AuditLog;
const escaped: unknown[] = [];
const onEscape = (err: unknown) => escaped.push(err);
const ROOMS = ['fz-a', 'fz-b', 'fz-c'];

beforeAll(async () => {
  const db = await pg.open();
  log = new AuditLog(db);
  audit = new ObservedAuditSink(log);
  sfu = await startTestSfu({ db, audit: () => audit });
  process.on('uncaughtException', onEscape);
  process.on('unhandledRejection', onEscape);
  for (const id of ROOMS) expect((await sfu.admin('POST', '/rooms', { id, flags: { record: id === 'fz-a' } })).status).toBe(201);
});
afterAll(async () => {
  process.off('uncaughtException', onEscape);
  process.off('unhandledRejection', onEscape);
  await sfu?.close();
  await pg.cleanup();
});

const ROUTES: { method: string; path: string; body?: () => unknown }[] = [
  { method: 'GET', path: '/api/v1/rooms' },
  { method: 'POST', path: '/api/v1/rooms', body: () => ({ id: `r${randomId()}`, name: 'Board', flags: { record: true, consent: 'required', maxPublishers: 3 } }) },
  { method: 'GET', path: '/api/v1/rooms/:id' },
  { method: 'PATCH', path: '/api/v1/rooms/:id', body: () => ({ transcribe: true, language: 'de', retentionPolicy: 'p-1' }) },
  { method: 'DELETE', path: '/api/v1/rooms/:id' },
  { method: 'PUT', path: '/api/v1/rooms/:id/recording', body: () => ({ enabled: true }) },
  { method: 'POST', path: '/api/v1/rooms/:id/tokens', body: () => ({ identity: 'alice', name: 'Alice', ttlMinutes: 5 }) },
  { method: 'GET', path: '/api/v1/rooms/:id/peers' },
  { method: 'GET', path: '/api/v1/rooms/:id/stats' },
  { method: 'POST', path: '/api/v1/rooms/:id/promote', body: () => ({ peerId: 'alice' }) },
  { method: 'POST', path: '/api/v1/rooms/:id/ingest', body: () => ({ identity: 'cam', name: 'Camera', tracks: [{ kind: 'audio', ssrc: 1111, payloadType: 100 }] }) },
  { method: 'GET', path: '/api/v1/workers' },
  { method: 'POST', path: '/api/v1/drain', body: () => ({ enabled: false }) },
  { method: 'GET', path: '/healthz' },
  { method: 'GET', path: '/metrics' },
  { method: 'GET', path: '/meet' },
  { method: 'GET', path: '/assets/meeting.js' },
  { method: 'GET', path: '/' },
];
let ids = 0;
const randomId = () => `${++ids}${randomBytes(2).toString('hex')}`;

const nasty = fc.constantFrom<unknown>(-1, 0, 2 ** 53, 1e308, '', '\u0000', 'a\u0000b', '\uD800', '../..', 'a'.repeat(3000), '__proto__', null, true, [], {}, { toString: null }, JSON.parse('{"__proto__":{"x":1}}'), Array(200).fill('x'));
const anyJson = fc.oneof({ weight: 2, arbitrary: nasty }, { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }) }, { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }) });
const junkSegment = fc.oneof(
  fc.constantFrom('nope', '..', '%2e%2e', '..%2F..%2Fx', '%00', 'a%00b', '%E0%A4%A', '%', '%zz', '%F0%9F%8E%A4', '%ED%A0%80', 'a'.repeat(150), 'a'.repeat(250), 'x;y', 'a b', '~', '*', ''),
  fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 12 }).map((s) => encodeURIComponent(s)),
);
/** A room id: mostly an existing room, so requests get past routing and into the handlers. */
const segment = fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...ROOMS) }, { weight: 2, arbitrary: junkSegment });
const pathArb = fc.oneof(
  { weight: 1, arbitrary: fc.array(segment, { minLength: 0, maxLength: 5 }).map((segs) => `/${segs.join('/')}`) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom('/api/v1', '/api', '/api/v2', '/ws', '//api/v1/rooms', '/api/v1/rooms/', '/API/V1/ROOMS'), fc.webPath()).map(([a, b]) => a + b) },
);
const methodArb = fc.oneof({ weight: 8, arbitrary: fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS') }, { weight: 1, arbitrary: fc.constantFrom('PROPFIND', 'TRACE', 'SEARCH', 'get', 'CONNECT', 'M-SEARCH') });
const headerValue = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 60 });
const headersArb = fc.record({
  auth: fc.oneof({ weight: 6, arbitrary: fc.constant('good' as const) }, { weight: 1, arbitrary: fc.constantFrom('wrong', 'none', 'basic', 'empty', 'long') }),
  contentType: fc.constantFrom('application/json', 'application/json', 'text/plain', 'none', 'application/json; charset=utf-16', 'multipart/form-data; boundary=x', 'application/x-www-form-urlencoded'),
  extra: fc.array(fc.tuple(fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,15}$/), headerValue), { maxLength: 3 }),
  upgrade: fc.integer({ min: 0, max: 19 }).map((n) => n === 0),
  huge: fc.integer({ min: 0, max: 39 }).map((n) => n === 0),
});
type Body = { kind: 'none' } | { kind: 'near'; mutations: { at: number; value: unknown; drop: boolean }[] } | { kind: 'json'; value: unknown } | { kind: 'text'; text: string };
const bodyArb: fc.Arbitrary<Body> = fc.oneof(
  { weight: 1, arbitrary: fc.constant({ kind: 'none' as const }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('near' as const), mutations: fc.array(fc.record({ at: fc.nat(), value: anyJson, drop: fc.boolean() }), { maxLength: 2 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('json' as const), value: anyJson }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('text' as const), text: fc.oneof(fc.string({ unit: 'binary', maxLength: 80 }), fc.constantFrom('{', 'null', '[]', '{"id":', 'x'.repeat(70_000))) }) },
);
/** Mostly a real route with its own method; sometimes another method, or a path of its own. */
const targetArb = fc.oneof(
  { weight: 8, arbitrary: fc.tuple(fc.nat(ROUTES.length - 1), segment, fc.integer({ min: 0, max: 9 }), methodArb).map(([i, id, n, m]) => ({ route: i, method: n === 0 ? m : ROUTES[i]!.method, path: ROUTES[i]!.path.replace(':id', id) })) },
  { weight: 2, arbitrary: fc.record({ route: fc.nat(ROUTES.length - 1), method: methodArb, path: pathArb }) },
);
const requestArb = fc.record({ target: targetArb, query: fc.option(fc.webQueryParameters(), { nil: undefined }), headers: headersArb, body: bodyArb });
type Req = typeof requestArb extends fc.Arbitrary<infer T> ? T : never;

/** The raw bytes of one request; near-valid bodies start from the route's valid body. */
function build(req: Req): { raw: Buffer; method: string; path: string } {
  const r = { ...req, ...req.target };
  const route = ROUTES[r.route];
  let body: string | undefined;
  if (r.body.kind === 'near') {
    const valid = (route?.body?.() ?? {}) as Record<string, unknown>;
    for (const m of r.body.mutations) {
      const keys = Object.keys(valid);
      const key = keys.length > 0 ? keys[m.at % keys.length]! : 'x';
      if (m.drop) delete valid[key];
      else valid[key] = JSON.parse(JSON.stringify(m.value ?? null));
    }
    body = JSON.stringify(valid);
  } else if (r.body.kind === 'json') body = JSON.stringify(r.body.value ?? null);
  else if (r.body.kind === 'text') body = r.body.text;
  const auth = { good: `Bearer ${TEST_API_SECRET}`, wrong: 'Bearer not-the-secret', none: undefined, basic: 'Basic YWRtaW46YWRtaW4=', empty: '', long: `Bearer ${'x'.repeat(4000)}` }[r.headers.auth];
  const lines = [`${r.method} ${r.path}${r.query ? `?${r.query}` : ''} HTTP/1.1`, 'Host: sfu.test'];
  if (auth !== undefined) lines.push(`Authorization: ${auth}`);
  if (body !== undefined && r.headers.contentType !== 'none') lines.push(`Content-Type: ${r.headers.contentType}`);
  for (const [name, value] of r.headers.extra) if (!/^(host|content-length|transfer-encoding|connection|expect)$/i.test(name)) lines.push(`${name}: ${value}`);
  if (r.headers.upgrade) lines.push('Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==');
  else lines.push('Connection: close');
  if (r.headers.huge) lines.push(`X-Huge: ${'h'.repeat(20_000)}`);
  const bytes = body !== undefined ? Buffer.from(body, 'utf8') : undefined;
  if (bytes) lines.push(`Content-Length: ${bytes.length}`);
  return { raw: Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), bytes ?? Buffer.alloc(0)]), method: r.method, path: r.path };
}

describe('SFU HTTP fuzz', () => {
  it(`every request is answered with a code, never an undocumented 5xx, and audited exactly once (seed ${SEED})`, async () => {
    const statuses = new Map<string, number>();
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(requestArb, { minLength: 1, maxLength: 3 }), async (requests) => {
        runs++;
        for (const r of requests) {
          const { raw, method, path } = build(r);
          const what = raw.subarray(0, 300).toString('latin1');
          const res = await rawHttp(sfu.url, raw);
          expect(res.status, `no answer (${res.error}) to ${what}`).toBeGreaterThan(0);
          if (res.status === 101) {
            // A well-formed WebSocket upgrade on /ws: a signaling connection, not an admin request.
            expect(path.split('?')[0]).toBe('/ws');
            statuses.set('101 ok', (statuses.get('101 ok') ?? 0) + 1);
            continue;
          }
          const requestId = res.headers['x-request-id'];
          expect(requestId, `no x-request-id for ${what}`).toBeTruthy();
          let code = 'ok';
          if (res.status >= 400 && method !== 'HEAD') {
            const parsed = JSON.parse(res.body) as { error?: { code?: unknown; message?: unknown } };
            expect(typeof parsed.error?.code, `no {error: {code}} for ${what}: ${res.body.slice(0, 200)}`).toBe('string');
            expect(typeof parsed.error?.message).toBe('string');
            code = parsed.error!.code as string;
          }
          statuses.set(`${res.status} ${code}`, (statuses.get(`${res.status} ${code}`) ?? 0) + 1);
          if (res.status >= 500) expect(res.status === 503 && DOCUMENTED_503.has(code), `${res.status} ${code} for ${what}: ${res.body.slice(0, 300)}`).toBe(true);
          const servedPublic = res.status < 400 && ['GET', 'HEAD'].includes(method) && PUBLIC_PATHS.has(path.split('?')[0]!);
          expect(audit.forRequest(requestId!).length, `audit entries for ${res.status} ${what}`).toBe(servedPublic ? 0 : 1);
        }
        expect(escaped).toEqual([]);
      }),
      { seed: SEED, numRuns: MAX_RUNS, interruptAfterTimeLimit: TIME_LIMIT_MS, endOnFailure: true },
    );
    console.log(`SFU HTTP fuzz: ${runs} runs\n  ${[...statuses].sort().map(([k, n]) => `${k}×${n}`).join('\n  ')}`);
    expect(runs).toBeGreaterThan(50);
    expect(escaped).toEqual([]);

    // Still serving: drain off, a fresh room, a meeting in it; the audit chain verifies.
    expect((await sfu.admin('POST', '/drain', { enabled: false })).status).toBe(200);
    const room = `after-${randomId()}`;
    expect((await sfu.admin('POST', '/rooms', { id: room })).status).toBe(201);
    const tok = async (identity: string) => (await sfu.admin('POST', `/rooms/${room}/tokens`, { identity, name: identity })).body.token as string;
    const a = await FakeDeviceClient.join(sfu.url, await tok('a'));
    const [audio] = await a.publish(['audio']);
    const b = await FakeDeviceClient.join(sfu.url, await tok('b'));
    await b.consume(audio!);
    a.close();
    b.close();
    expect((await log.verify()).ok).toBe(true);
  });
});
