import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditLog } from '../../audit/index.ts';
import { testBackends } from '../../../testing/databases.ts';
import { FakeDeviceClient, ObservedAuditSink, type RecordedRequest, startTestSfu, type TestSfu } from '../../../testing/sfu-harness.ts';

/**
 * Property-based fuzzing of every signaling method (fixed seed, bounded time): arbitrary
 * payloads and near-valid ones (frames recorded from a real mediasoup-client exchange, then
 * mutated), sent on a joined participant's connection. Whatever arrives, the answer is a code,
 * never INTERNAL; the connection is never closed as INTERNAL; nothing escapes to the process;
 * the mediasoup workers are never lost; a clean participant still joins, publishes and receives
 * at the end; and the audit chain verifies.
 */
const SEED = Number(process.env.SFU_FUZZ_SEED ?? 12_012);
const TIME_LIMIT_MS = Number(process.env.SFU_FUZZ_TIME_MS ?? 35_000);
const MAX_RUNS = Number(process.env.SFU_FUZZ_RUNS ?? 1500);

const pg = (await testBackends())[1]!;
let sfu: TestSfu;
let audit: ObservedAuditSink;
let log: AuditLog;
let room: string;
const escaped: unknown[] = [];
const onEscape = (err: unknown) => escaped.push(err);

beforeAll(async () => {
  const db = await pg.open();
  log = new AuditLog(db);
  audit = new ObservedAuditSink(log);
  // Rate limits out of the way: the fuzz is about what each frame does, not about how many.
  sfu = await startTestSfu({ db, audit: () => audit, overrides: { SFU_SIGNALING_RATE_PER_SEC: 100_000, SFU_SIGNALING_BURST: 100_000, SFU_MAX_MESSAGE_BYTES: 16_384 } });
  process.on('uncaughtException', onEscape);
  process.on('unhandledRejection', onEscape);
  room = `fuzz-${randomBytes(3).toString('hex')}`;
  expect((await sfu.admin('POST', '/rooms', { id: room, flags: { consent: 'required', lockRecord: false } })).status).toBe(201);
});
afterAll(async () => {
  process.off('uncaughtException', onEscape);
  process.off('unhandledRejection', onEscape);
  await sfu?.close();
  await pg.cleanup();
});

let identities = 0;
async function token(identity = `p${++identities}`): Promise<string> {
  return (await sfu.admin('POST', `/rooms/${room}/tokens`, { identity, name: identity })).body.token as string;
}

/** A participant whose real exchange (join ... consume) seeds the near-valid frames of every method. */
async function participant(publisher: string): Promise<{ client: FakeDeviceClient; seeds: RecordedRequest[] }> {
  const client = await FakeDeviceClient.join(sfu.url, await token());
  const [audio] = await client.publish(['audio', 'video']);
  const consumer = await client.consume(publisher);
  const seeds = [
    ...client.exchange,
    { method: 'pauseProducer', data: { producerId: audio } },
    { method: 'resumeProducer', data: { producerId: audio } },
    { method: 'closeProducer', data: { producerId: audio } },
    { method: 'pauseConsumer', data: { consumerId: consumer.id } },
    { method: 'consent', data: { decision: 'granted', method: 'click' } },
    { method: 'setRecording', data: { enabled: false } },
    { method: 'setPreferredLayers', data: { consumerId: consumer.id, spatialLayer: 1, temporalLayer: 2 } },
    { method: 'raiseHand', data: { raised: true } },
    { method: 'promote', data: { peerId: 'nobody' } },
    { method: 'listPeers', data: {} },
    { method: 'ping', data: {} },
    { method: 'leave', data: {} },
  ];
  return { client, seeds };
}

const METHODS = ['join', 'setRtpCapabilities', 'createWebRtcTransport', 'connectWebRtcTransport', 'produce', 'pauseProducer', 'resumeProducer', 'closeProducer', 'consume', 'resumeConsumer', 'pauseConsumer', 'consent', 'setRecording', 'setPreferredLayers', 'raiseHand', 'promote', 'listPeers', 'ping', 'leave'];

/** Values that have broken parsers before: edges of every type mediasoup serializes. */
const nasty = fc.constantFrom<unknown>(
  -1, 0, -0, 0.5, 127, 128, 255, 256, 2 ** 31, 2 ** 32, 2 ** 53, -(2 ** 53), 1e308, -1e308,
  '', '\u0000', 'a\u0000b', '\uD800', '\uDC00x', '../..', '/', '%2e%2e', 'a'.repeat(5000), '__proto__', 'constructor', 'toString', 'L99T99', 'sha-1',
  true, false, null, [], {}, [null], { toString: null }, { valueOf: null }, { toString: 1 }, JSON.parse('{"__proto__":{"polluted":1}}'), Array(300).fill(1),
);
/** Values a schema accepts but mediasoup may still refuse: the paths behind the schema. */
const plausible = fc.oneof(
  fc.integer({ min: 0, max: 0xffffffff }),
  fc.integer({ min: 0, max: 300 }),
  fc.constantFrom('audio/opus', 'video/VP8', 'video/H264', 'video/VP9', 'video/rtx', 'audio/PCMU', 'audio/rtx', 'send', 'recv', 'audio', 'video', 'client', 'server', 'auto', 'r0', 'r1', 'L1T3', 'S3T3', '0', '1'),
  fc.constantFrom('urn:ietf:params:rtp-hdrext:sdes:mid', 'urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id', 'urn:3gpp:video-orientation', 'urn:mediasoup:params:rtp-hdrext:packet-id'),
  fc.record({ ssrc: fc.integer({ min: 1, max: 0xffffffff }) }),
);
const anyJson = fc.oneof(
  { weight: 3, arbitrary: nasty },
  { weight: 2, arbitrary: plausible },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 4 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
);
/** Field names of mediasoup's parameter types (and mediasoup-client's), where a wrong value hurts most. */
const FIELDS = ['ssrc', 'maxBitrate', 'scalabilityMode', 'dtx', 'codecPayloadType', 'mid', 'msid', 'rid', 'rtx', 'payloadType', 'clockRate', 'channels', 'parameters', 'rtcpFeedback', 'mimeType', 'uri', 'id', 'encrypt', 'cname', 'reducedSize', 'role', 'fingerprints', 'algorithm', 'value', 'preferredPayloadType', 'preferredId', 'direction', 'kind', 'transportId', 'producerId', 'consumerId', 'token', '__proto__'];

type Mutation = { whole: boolean; at: number; op: 'replace' | 'delete' | 'insert' | 'wrap'; key: string; value: unknown };
const mutation: fc.Arbitrary<Mutation> = fc.record({
  // Mostly inside `data`; sometimes the envelope (v, id, method) too.
  whole: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
  at: fc.nat(),
  op: fc.constantFrom('replace', 'replace', 'delete', 'insert', 'insert', 'wrap'),
  key: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...FIELDS) }, { weight: 1, arbitrary: fc.string({ maxLength: 8 }) }),
  value: anyJson,
});

/** Every object/array node and leaf of a JSON value, with the way to reach it. */
function paths(v: unknown, at: (string | number)[] = []): (string | number)[][] {
  const out = [at];
  if (v && typeof v === 'object') for (const [k, child] of Object.entries(v)) out.push(...paths(child, [...at, Array.isArray(v) ? Number(k) : k]));
  return out;
}
const isObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);
function mutate(frame: Record<string, unknown>, m: Mutation): Record<string, unknown> {
  const inData = paths(frame).filter((p) => p.length > 0 && (m.whole || p[0] === 'data'));
  const all = inData.length > 0 ? inData : paths(frame).filter((p) => p.length > 0);
  // An insert goes into an object (a field mediasoup reads), everything else anywhere.
  const objects = all.filter((p) => isObject(p.reduce<any>((o, k) => o[k], frame)));
  const pool = m.op === 'insert' && objects.length > 0 ? objects : all;
  const target = pool[m.at % pool.length]!;
  const parent = target.slice(0, -1).reduce<any>((o, k) => o[k], frame);
  const last = target.at(-1)!;
  // A fresh copy each time (JSON keeps an own "__proto__" key): generated values are shared.
  const value = JSON.parse(JSON.stringify(m.value ?? null)) as unknown;
  if (m.op === 'replace') parent[last] = value;
  else if (m.op === 'delete') {
    if (Array.isArray(parent)) parent.splice(Number(last), 1);
    else delete parent[last];
  }
  else if (m.op === 'wrap') parent[last] = [parent[last]];
  else if (isObject(parent[last])) Object.defineProperty(parent[last], m.key, { value, enumerable: true, configurable: true, writable: true });
  else parent[last] = value;
  return frame;
}

type Frame = { kind: 'near'; seed: number; mutations: Mutation[] } | { kind: 'arbitrary'; method: string; data: unknown; v: unknown } | { kind: 'text'; text: string } | { kind: 'binary'; bytes: Uint8Array };
const frameArb: fc.Arbitrary<Frame> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('near' as const), seed: fc.nat(), mutations: fc.array(mutation, { minLength: 0, maxLength: 3 }) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('arbitrary' as const), method: fc.oneof(fc.constantFrom(...METHODS), fc.string({ maxLength: 12 })), data: anyJson, v: fc.oneof(fc.constant(1), anyJson) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('text' as const), text: fc.oneof(fc.string({ unit: 'binary', maxLength: 200 }), fc.constantFrom('{', '[]', 'null', '{"v":1}', '{"v":1,"id":-1,"method":"ping"}', `{"v":1,"id":1,"method":"ping","data":${'['.repeat(3000)}${']'.repeat(3000)}}`)) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('binary' as const), bytes: fc.uint8Array({ maxLength: 64 }) }) },
);

/** How a connection ended: its close code and reason, once the close handshake is done. */
function closeOf(client: FakeDeviceClient): Promise<{ code: number; reason: string }> {
  const sig = client.sig;
  if (sig.closed) return Promise.resolve(sig.closed);
  return new Promise((resolve) => sig.ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
}

/** Sends one frame and resolves its answer (every frame gets exactly one), or how the connection closed. */
function exchange(client: FakeDeviceClient, payload: string | Buffer): Promise<any> {
  const ws = client.sig.ws;
  if (ws.readyState !== ws.OPEN) return closeOf(client).then((closed) => ({ closed }));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer within 10 s to ${String(payload).slice(0, 200)}`)), 10_000);
    const done = (v: unknown) => {
      clearTimeout(timer);
      ws.off('message', onMessage);
      ws.off('close', onClose);
      resolve(v);
    };
    const onMessage = (raw: Buffer) => {
      const f = JSON.parse(raw.toString());
      if (!f.notification) done(f);
    };
    const onClose = (code: number, reason: Buffer) => done({ closed: { code, reason: reason.toString() } });
    ws.on('message', onMessage);
    ws.on('close', onClose);
    ws.send(payload);
  });
}

describe('signaling fuzz', () => {
  it(`no frame gets INTERNAL, closes a connection as INTERNAL, escapes, or costs a worker (seed ${SEED})`, async () => {
    const publisher = await FakeDeviceClient.join(sfu.url, await token('publisher'));
    const [published] = await publisher.publish(['audio']);
    const workers = sfu.running.sfu.pool.pids();
    let p = await participant(published!);
    const seen = new Map<string, Map<string, number>>();
    const note = (method: string, code: string) => {
      const m = seen.get(method) ?? new Map<string, number>();
      m.set(code, (m.get(code) ?? 0) + 1);
      seen.set(method, m);
    };
    let id = 1_000_000;
    let runs = 0;

    await fc.assert(
      fc.asyncProperty(fc.array(frameArb, { minLength: 1, maxLength: 6 }), async (frames) => {
        runs++;
        // A participant that left, or was closed for a stated reason, is replaced by a fresh one.
        const peer = sfu.running.sfu.rooms.get(room)?.peers.get(p.client.joined.peerId);
        if (!peer || peer.closed || p.client.sig.ws.readyState !== p.client.sig.ws.OPEN) {
          p.client.close();
          await closeOf(p.client);
          p = await participant(published!);
        }
        for (const f of frames) {
          let payload: string | Buffer;
          let method: string;
          if (f.kind === 'near') {
            const seed = p.seeds[f.seed % p.seeds.length]!;
            method = seed.method;
            const frame = { v: 1, id: ++id, method: seed.method, data: structuredClone(seed.data) } as Record<string, unknown>;
            for (const m of f.mutations) mutate(frame, m);
            payload = JSON.stringify(frame);
          } else if (f.kind === 'arbitrary') {
            method = typeof f.method === 'string' && METHODS.includes(f.method) ? f.method : '(unknown)';
            payload = JSON.stringify({ v: f.v, id: ++id, method: f.method, data: f.data });
          } else if (f.kind === 'text') {
            method = '(text)';
            payload = f.text;
          } else {
            method = '(binary)';
            payload = Buffer.from(f.bytes);
          }
          const answer = await exchange(p.client, payload);
          if (answer.closed) {
            // Closed for a stated reason (never INTERNAL): the next run starts a new participant.
            expect(answer.closed.reason, `closed after ${String(payload).slice(0, 300)}`).not.toBe('INTERNAL');
            note(method, `closed:${answer.closed.code} ${answer.closed.reason}`);
            break;
          }
          note(method, answer.ok ? 'ok' : answer.error.code);
          expect(answer.ok || answer.error.code !== 'INTERNAL', `INTERNAL for ${String(payload).slice(0, 500)}: ${JSON.stringify(answer.error)}`).toBe(true);
        }
        expect(escaped).toEqual([]);
      }),
      { seed: SEED, numRuns: MAX_RUNS, interruptAfterTimeLimit: TIME_LIMIT_MS, endOnFailure: true },
    );

    // What the fuzz saw, per method (a fixed seed makes this reproducible).
    console.log(
      `signaling fuzz: ${runs} runs\n${[...seen].map(([m, codes]) => `  ${m}: ${[...codes].map(([c, n]) => `${c}×${n}`).join(' ')}`).join('\n')}`,
    );
    expect(runs).toBeGreaterThan(50);
    expect(sfu.running.sfu.pool.pids()).toEqual(workers);
    expect(escaped).toEqual([]);

    // A clean participant joins, publishes and receives; the audit chain verifies.
    p.client.close();
    const clean = await FakeDeviceClient.join(sfu.url, await token('clean'));
    const [cleanAudio] = await clean.publish(['audio']);
    await publisher.consume(cleanAudio!);
    clean.close();
    publisher.close();
    expect((await log.verify()).ok).toBe(true);
  });
});
