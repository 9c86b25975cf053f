import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { AuditLog } from '../../audit/index.ts';
import { testBackends } from '../../../testing/databases.ts';
import {
  FakeDeviceClient,
  OPUS_RTP_PARAMETERS,
  ObservedAuditSink,
  TEST_TOKEN_SECRET,
  TestSignalingClient,
  rawHttp,
  startTestSfu,
  type TestSfu,
} from '../../../testing/sfu-harness.ts';
import { mintJoinToken } from '../src/join-token.ts';

/**
 * The attacker's findings of issue 12 against the SFU, one regression each: what a hostile or
 * buggy client sends is refused with a stable 4xx code before it reaches mediasoup, and one
 * participant cannot exhaust what everyone shares.
 */
const pg = (await testBackends())[1]!;
let sfu: TestSfu;
let audit: ObservedAuditSink;
const RECLAIM_MS = 1500;

beforeAll(async () => {
  const db = await pg.open();
  audit = new ObservedAuditSink(new AuditLog(db));
  sfu = await startTestSfu({ db, audit: () => audit, overrides: { SFU_RECLAIM_WINDOW_MS: RECLAIM_MS } });
});
afterAll(async () => {
  await sfu?.close();
  await pg.cleanup();
});

let rooms = 0;
async function createRoom(flags: Record<string, unknown> = {}): Promise<string> {
  const id = `h${++rooms}-${randomBytes(3).toString('hex')}`;
  const res = await sfu.admin('POST', '/rooms', { id, flags });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return id;
}
async function token(room: string, identity: string, name = identity): Promise<string> {
  const res = await sfu.admin('POST', `/rooms/${room}/tokens`, { identity, name, ttlMinutes: 5 });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.token as string;
}
async function joined(room: string, identity: string): Promise<TestSignalingClient & { join: any }> {
  const c = await TestSignalingClient.connect(sfu.url);
  const r = await c.request('join', { token: await token(room, identity) });
  expect(r.ok, JSON.stringify(r.error)).toBe(true);
  return Object.assign(c, { join: r.data });
}
/** A request, or null once the server has closed the connection (a request then never gets an answer). */
function requestOrClosed(c: TestSignalingClient, method: string, data: unknown): Promise<any> {
  if (c.closed) return Promise.resolve(null);
  return new Promise((resolve) => {
    const onClose = () => resolve(null);
    c.ws.once('close', onClose);
    void c.request(method, data).then((r) => {
      c.ws.off('close', onClose);
      resolve(r);
    });
  });
}
const dtls = () => ({ role: 'client', fingerprints: [{ algorithm: 'sha-256', value: [...randomBytes(32)].map((b) => b.toString(16).padStart(2, '0')).join(':') }] });
const code = (r: { ok: boolean; error?: { code: string } }) => (r.ok ? 'ok' : r.error!.code);

describe('signaling input is checked before it reaches mediasoup', () => {
  it('produce with encodings[0].maxBitrate = {"toString": null} is MESSAGE_MALFORMED; the worker and the process carry on', async () => {
    const room = await createRoom();
    const c = await joined(room, 'mallory');
    const t = await c.request('createWebRtcTransport', { direction: 'send' });
    const pids = sfu.running.sfu.pool.pids();
    const frame = `{"v":1,"id":900,"method":"produce","data":{"transportId":"${t.data.id}","kind":"audio","rtpParameters":{"codecs":[{"mimeType":"audio/opus","payloadType":100,"clockRate":48000,"channels":2}],"encodings":[{"ssrc":1234,"maxBitrate":{"toString":null}}]}}}`;
    const r = await c.sendRaw(frame, 900);
    expect(r.error.code).toBe('MESSAGE_MALFORMED');
    expect(r.error.message).toContain('encodings.0.maxBitrate');
    // The same worker still serves: a valid produce on it works, and closing the socket is clean.
    expect(code(await c.request('produce', { transportId: t.data.id, kind: 'audio', rtpParameters: OPUS_RTP_PARAMETERS(1234) }))).toBe('ok');
    c.close();
    const other = await FakeDeviceClient.join(sfu.url, await token(room, 'after'));
    expect(await other.publish()).toHaveLength(2);
    expect(sfu.running.sfu.pool.pids()).toEqual(pids);
    other.close();
  });

  it('refuses wrong types and out-of-range values in rtpParameters, dtlsParameters and rtpCapabilities', async () => {
    const room = await createRoom();
    const c = await joined(room, 'fuzzy');
    const t = await c.request('createWebRtcTransport', { direction: 'send' });
    const base = OPUS_RTP_PARAMETERS(4321);
    const bad: unknown[] = [
      { ...base, encodings: [{ ssrc: 2 ** 32 }] },
      { ...base, encodings: [{ ssrc: 1, rtx: { ssrc: 'x' } }] },
      { ...base, encodings: [{ ssrc: 1, scalabilityMode: 'L99T99' }] },
      { ...base, encodings: [{ ssrc: 1, maxBitrate: 1e12 }] },
      { ...base, codecs: [{ ...base.codecs[0], payloadType: 300 }] },
      { ...base, codecs: [{ ...base.codecs[0], parameters: { apt: { nested: 1 } } }] },
      { ...base, headerExtensions: [{ uri: 'urn:evil', id: 1 }] },
      { ...base, mid: '../x' },
      { ...base, rtcp: { cname: 'a\u0000b' } },
      { ...base, unknownField: 1 },
    ];
    for (const rtpParameters of bad) {
      expect(code(await c.request('produce', { transportId: t.data.id, kind: 'audio', rtpParameters })), JSON.stringify(rtpParameters)).toBe('MESSAGE_MALFORMED');
    }
    for (const dtlsParameters of [{ fingerprints: [] }, { fingerprints: [{ algorithm: 'md5', value: 'AA' }] }, { role: 'boss', fingerprints: dtls().fingerprints }, { fingerprints: [{ algorithm: 'sha-1', value: dtls().fingerprints[0]!.value }] }]) {
      expect(code(await c.request('connectWebRtcTransport', { transportId: t.data.id, dtlsParameters }))).toBe('MESSAGE_MALFORMED');
    }
    expect(code(await c.request('setRtpCapabilities', { rtpCapabilities: { codecs: [{ kind: 'audio', mimeType: 'audio/opus', clockRate: 48000 }] } }))).toBe('MESSAGE_MALFORMED');
    expect(code(await c.request('produce', { transportId: t.data.id, kind: 'audio', rtpParameters: base, appData: { __proto__x: 1, deep: [[[[[[[1]]]]]]] } }))).toBe('MESSAGE_MALFORMED');
    // Deeply nested JSON is refused before any schema walks it.
    const deep = `{"v":1,"id":77,"method":"ping","data":{"x":${'['.repeat(5000)}${']'.repeat(5000)}}}`;
    expect((await c.sendRaw(deep, 77)).error.code).toBe('MESSAGE_MALFORMED');
    // Ids are closed patterns: no "/", "..", NUL or control characters.
    for (const producerId of ['../x', 'a/b', 'a\u0000b', 'a\nb', '']) {
      expect(code(await c.request('pauseProducer', { producerId }))).toBe('MESSAGE_MALFORMED');
    }
    expect(code(await c.request('ping'))).toBe('ok');
    c.close();
  });

  it('semantics are 4xx codes: produce on a recv transport, kind/codec mismatch, duplicate SSRC/MID, second connect, consume on a send transport, unknown ids', async () => {
    const room = await createRoom();
    const c = await joined(room, 'semantic');
    const send = (await c.request('createWebRtcTransport', { direction: 'send' })).data.id;
    const recv = (await c.request('createWebRtcTransport', { direction: 'recv' })).data.id;
    const opus = OPUS_RTP_PARAMETERS(5001);
    expect(code(await c.request('produce', { transportId: recv, kind: 'audio', rtpParameters: opus }))).toBe('WRONG_DIRECTION');
    expect(code(await c.request('produce', { transportId: send, kind: 'video', rtpParameters: opus }))).toBe('KIND_MISMATCH');
    const vp8 = { codecs: [{ mimeType: 'video/VP8', payloadType: 101, clockRate: 90000 }], encodings: [{ ssrc: 5002 }] };
    expect(code(await c.request('produce', { transportId: send, kind: 'audio', rtpParameters: vp8 }))).toBe('KIND_MISMATCH');
    expect(code(await c.request('produce', { transportId: send, kind: 'audio', rtpParameters: { ...opus, mid: 'm0' } }))).toBe('ok');
    expect(code(await c.request('produce', { transportId: send, kind: 'audio', rtpParameters: OPUS_RTP_PARAMETERS(5001) }))).toBe('DUPLICATE_STREAM');
    expect(code(await c.request('produce', { transportId: send, kind: 'audio', rtpParameters: { ...OPUS_RTP_PARAMETERS(5003), mid: 'm0' } }))).toBe('DUPLICATE_STREAM');
    expect(code(await c.request('produce', { transportId: send, kind: 'video', rtpParameters: { ...vp8, encodings: [{ ssrc: 5004, rtx: { ssrc: 5004 } }] } }))).toBe('DUPLICATE_STREAM');
    expect(code(await c.request('produce', { transportId: send, kind: 'video', rtpParameters: { ...vp8, encodings: [{ ssrc: 5005, rtx: { ssrc: 5001 } }] } }))).toBe('DUPLICATE_STREAM');
    expect(code(await c.request('produce', { transportId: send, kind: 'video', rtpParameters: vp8 }))).toBe('ok');
    const params = dtls();
    expect(code(await c.request('connectWebRtcTransport', { transportId: send, dtlsParameters: params }))).toBe('ok');
    expect(code(await c.request('connectWebRtcTransport', { transportId: send, dtlsParameters: params }))).toBe('ALREADY_CONNECTED');
    const other = await joined(room, 'semantic-2');
    const np = { data: other.join.producers[0] as { producerId: string } };
    const otherSend = (await other.request('createWebRtcTransport', { direction: 'send' })).data.id;
    expect(code(await other.request('setRtpCapabilities', { rtpCapabilities: sfu.running.sfu.rooms.get(room)!.router.rtpCapabilities }))).toBe('ok');
    expect(code(await other.request('consume', { transportId: otherSend, producerId: np.data.producerId }))).toBe('WRONG_DIRECTION');
    expect(code(await other.request('consume', { transportId: 'nope', producerId: np.data.producerId }))).toBe('TRANSPORT_NOT_FOUND');
    const otherRecv = (await other.request('createWebRtcTransport', { direction: 'recv' })).data.id;
    expect(code(await other.request('consume', { transportId: otherRecv, producerId: 'a1b2c3' }))).toBe('PRODUCER_NOT_FOUND');
    expect(code(await other.request('resumeConsumer', { consumerId: 'a1b2c3' }))).toBe('CONSUMER_NOT_FOUND');
    expect(code(await other.request('pauseProducer', { producerId: np.data.producerId }))).toBe('PRODUCER_NOT_FOUND');
    expect(code(await other.request('consume', { transportId: otherRecv, producerId: np.data.producerId }))).toBe('ok');
    c.close();
    other.close();
  });
});

describe('one participant cannot exhaust shared resources', () => {
  it('999 createWebRtcTransport: the transport limit holds, the flood is rate-limited and cut off, others keep working', async () => {
    const room = await createRoom();
    const c = await joined(room, 'hog');
    const codes: Record<string, number> = {};
    for (let i = 0; i < 999; i++) {
      const r = await requestOrClosed(c, 'createWebRtcTransport', { direction: 'send' });
      if (!r) break;
      codes[code(r)] = (codes[code(r)] ?? 0) + 1;
    }
    expect(c.closed).toEqual({ code: 1008, reason: 'RATE_LIMITED' });
    expect(codes.ok).toBe(4); // SFU_MAX_TRANSPORTS_PER_PEER
    expect(codes.LIMIT_EXCEEDED).toBeGreaterThan(100);
    expect(codes.RATE_LIMITED).toBeGreaterThan(100);
    expect(Object.keys(codes).sort()).toEqual(['LIMIT_EXCEEDED', 'RATE_LIMITED', 'ok']);
    // Its transports (and ports) went with it; everyone else still gets transports.
    await expect.poll(() => sfu.running.sfu.rooms.get(room)?.peers.has('hog')).toBe(false);
    const ok = await FakeDeviceClient.join(sfu.url, await token(room, 'fair'));
    const [audioId] = await ok.publish(['audio']);
    const viewer = await FakeDeviceClient.join(sfu.url, await token(room, 'viewer'));
    await viewer.consume(audioId!);
    ok.close();
    viewer.close();
  });

  it('producers and consumers per participant are capped with LIMIT_EXCEEDED', async () => {
    const room = await createRoom();
    const c = await joined(room, 'many-tracks');
    const t = (await c.request('createWebRtcTransport', { direction: 'send' })).data.id;
    const results = [];
    for (let i = 0; i < 10; i++) results.push(code(await c.request('produce', { transportId: t, kind: 'audio', rtpParameters: OPUS_RTP_PARAMETERS(7000 + i) })));
    expect(results).toEqual([...Array(8).fill('ok'), 'LIMIT_EXCEEDED', 'LIMIT_EXCEEDED']);
    const r = await c.request('produce', { transportId: t, kind: 'audio', rtpParameters: OPUS_RTP_PARAMETERS(7100) });
    expect(r.error.hint).toContain('SFU_MAX_PRODUCERS_PER_PEER');
    c.close();
  });
});

describe('names and ids at the admin API and at join', () => {
  it('NUL, control characters and lone surrogates in names are 400 at mint and room creation, TOKEN_INVALID at join', async () => {
    const room = await createRoom();
    for (const name of ['Eve\u0000', 'Eve\uD800', 'a\u0007b', 'x\uDC00y']) {
      const minted = await sfu.admin('POST', `/rooms/${room}/tokens`, { identity: 'eve', name });
      expect(minted.status, name).toBe(400);
      expect(minted.body.error.code).toBe('BAD_REQUEST');
      const created = await sfu.admin('POST', '/rooms', { name });
      expect(created.status).toBe(400);
    }
    expect((await sfu.admin('PATCH', `/rooms/${room}`, { retentionPolicy: 'p\u0000' })).status).toBe(400);
    for (const identity of ['a/b', 'a..b', '..', 'a\u0000']) expect((await sfu.admin('POST', `/rooms/${room}/tokens`, { identity, name: 'x' })).status, identity).toBe(400);
    // Names that are fine stay fine, emoji (surrogate pairs) included.
    expect((await sfu.admin('POST', `/rooms/${room}/tokens`, { identity: 'zoe', name: 'Zoë 🎤 李' })).status).toBe(201);
    // A token carrying such a name (minted with the secret, bypassing the API) does not join.
    const c = await TestSignalingClient.connect(sfu.url);
    for (const name of ['Eve\u0000', 'Eve\uD800']) {
      const forged = mintJoinToken(TEST_TOKEN_SECRET, { room, identity: 'eve', name, ttlMinutes: 5 }).token;
      expect(code(await c.request('join', { token: forged }))).toBe('TOKEN_INVALID');
    }
    const slash = mintJoinToken(TEST_TOKEN_SECRET, { room, identity: '../x', name: 'x', ttlMinutes: 5 }).token;
    expect(code(await c.request('join', { token: slash }))).toBe('TOKEN_INVALID');
    c.close();
  });
});

describe('join tokens', () => {
  it('only the canonical encoding verifies: a last character that decodes to the same bytes is TOKEN_INVALID', async () => {
    const room = await createRoom();
    const good = await token(room, 'canon');
    const [body, sig] = good.split('.') as [string, string];
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    // A 32-byte signature is 43 characters: the last one carries 2 unused bits.
    const twin = (s: string) => s.slice(0, -1) + alphabet[alphabet.indexOf(s.at(-1)!) ^ 1];
    expect(Buffer.from(twin(sig), 'base64url')).toEqual(Buffer.from(sig, 'base64url'));
    const c = await TestSignalingClient.connect(sfu.url);
    for (const variant of [`${body}.${twin(sig)}`, `${body}.${sig}=`, `${body}.${sig.slice(0, 10)}!${sig.slice(10)}`, `${body}=.${sig}`, `${body}.${sig}.x`]) {
      expect(code(await c.request('join', { token: variant })), variant.slice(-6)).toBe('TOKEN_INVALID');
    }
    expect(code(await c.request('join', { token: good }))).toBe('ok');
    c.close();
  });

  it('a token joins once: after leave it is TOKEN_REUSED; a reload or a reconnect within the reclaim window may use it again', async () => {
    const room = await createRoom();
    const tok = await token(room, 'once');
    const a = await TestSignalingClient.connect(sfu.url);
    expect(code(await a.request('join', { token: tok }))).toBe('ok');
    // A reload while the old tab is still connected replaces it.
    const b = await TestSignalingClient.connect(sfu.url);
    expect(code(await b.request('join', { token: tok }))).toBe('ok');
    // A dropped connection may come back within the reclaim window.
    b.ws.terminate();
    await expect.poll(() => sfu.running.sfu.rooms.get(room)?.peers.has('once')).toBe(false);
    const back = await TestSignalingClient.connect(sfu.url);
    const again = await back.request('join', { token: tok });
    expect(code(again)).toBe('ok');
    expect(again.data.reclaimed).toBe(true);
    // After leave, the token is spent.
    expect(code(await back.request('leave'))).toBe('ok');
    const reuse = await back.request('join', { token: tok });
    expect(code(reuse)).toBe('TOKEN_REUSED');
    expect(reuse.error.hint).toBeTruthy();
    // And after a disconnect, once the reclaim window has passed.
    const tok2 = await token(room, 'late');
    const d = await TestSignalingClient.connect(sfu.url);
    expect(code(await d.request('join', { token: tok2 }))).toBe('ok');
    d.ws.terminate();
    await new Promise((r) => setTimeout(r, RECLAIM_MS + 300));
    expect(code(await back.request('join', { token: tok2 }))).toBe('TOKEN_REUSED');
    a.close();
    back.close();
  });
});

describe('ghost peers', () => {
  it('a participant whose socket closes while the room router is being created is not left behind', async () => {
    const pool = sfu.running.sfu.pool;
    const original = pool.createRouter.bind(pool);
    for (let i = 0; i < 3; i++) {
      const room = await createRoom();
      const tok = await token(room, `ghost-${i}`);
      let release!: () => void;
      let entered!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const inCreate = new Promise<void>((r) => (entered = r));
      pool.createRouter = async (options) => {
        entered();
        await gate;
        return original(options);
      };
      try {
        const ws = new WebSocket(`${sfu.url.replace('http', 'ws')}/ws`);
        await new Promise((r) => ws.once('open', r));
        ws.send(JSON.stringify({ v: 1, id: 1, method: 'join', data: { token: tok } }));
        await inCreate;
        ws.terminate();
        // Let the server see the close while the join is still waiting for its router.
        await new Promise((r) => setTimeout(r, 300));
      } finally {
        pool.createRouter = original;
        release();
      }
      await expect.poll(() => sfu.running.sfu.rooms.get(room)?.peers.size ?? 0).toBe(0);
      await new Promise((r) => setTimeout(r, 200));
      expect((await sfu.admin('GET', `/rooms/${room}/peers`)).body.peers).toEqual([]);
    }
  });
});

describe('the SFU HTTP server refuses before routing with {error: {code}} and an audit entry', () => {
  it('bad URL encoding, 414, 431, a malformed request line and a bad WebSocket upgrade', async () => {
    const cases: [string, number, string][] = [
      ['GET /api/v1/rooms/%E0%A4%A HTTP/1.1\r\nHost: x\r\n\r\n', 400, 'BAD_REQUEST'],
      [`GET /api/v1/rooms/${'a'.repeat(300)} HTTP/1.1\r\nHost: x\r\n\r\n`, 414, 'URI_TOO_LONG'],
      [`GET /api/v1/rooms HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(20_000)}\r\n\r\n`, 431, 'HEADERS_TOO_LARGE'],
      ['GARBAGE\r\n\r\n', 400, 'BAD_REQUEST'],
      ['GET /nope HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n', 404, 'NOT_FOUND'],
      ['GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 99\r\n\r\n', 400, 'BAD_REQUEST'],
    ];
    for (const [request, status, errorCode] of cases) {
      const res = await rawHttp(sfu.url, request);
      expect(res.status, `${request.slice(0, 40)}: ${res.error}`).toBe(status);
      expect(JSON.parse(res.body).error.code).toBe(errorCode);
      const requestId = res.headers['x-request-id']!;
      await expect.poll(() => audit.forRequest(requestId).length).toBe(1);
      expect(audit.forRequest(requestId)[0]).toMatchObject({ action: 'request.rejected', details: { status, code: errorCode } });
    }
  });
});
