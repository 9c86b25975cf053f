import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { mintJoinToken } from '../src/join-token.ts';
import { AuditLog } from '../../audit/index.ts';
import { OPUS_RTP_PARAMETERS, TEST_TOKEN_SECRET, TestSignalingClient, startTestSfu, type TestSfu } from '../../../testing/sfu-harness.ts';

let sfu: TestSfu;
beforeAll(async () => {
  sfu = await startTestSfu({ overrides: { SFU_SESSION_TIMEOUT_MS: 1500, SFU_RECLAIM_WINDOW_MS: 5000, SFU_MAX_MESSAGE_BYTES: 4096 } });
});
afterAll(async () => {
  await sfu?.close();
});

async function createRoom(flags: Record<string, unknown> = {}, id?: string) {
  const res = await sfu.admin('POST', '/rooms', { ...(id ? { id } : {}), flags });
  expect(res.status).toBe(201);
  return res.body as { room: { id: string }; roomSecret: string };
}
async function token(room: string, identity: string, name = identity) {
  const res = await sfu.admin('POST', `/rooms/${room}/tokens`, { identity, name, ttlMinutes: 5 });
  expect(res.status).toBe(201);
  return res.body.token as string;
}
async function joined(room: string, identity: string) {
  const c = await TestSignalingClient.connect(sfu.url);
  const r = await c.request('join', { token: await token(room, identity) });
  expect(r.ok, JSON.stringify(r.error)).toBe(true);
  return { c, join: r.data };
}

describe('admin API', () => {
  it('refuses missing or wrong API secret', async () => {
    expect((await sfu.admin('GET', '/rooms', undefined, { auth: null })).body.error.code).toBe('UNAUTHORIZED');
    const wrong = await sfu.admin('GET', '/rooms', undefined, { auth: 'nope' });
    expect(wrong.status).toBe(401);
    expect(wrong.body.error.code).toBe('UNAUTHORIZED');
  });

  it('validates bodies with stable codes', async () => {
    const bad = await sfu.admin('POST', '/rooms', { flags: { consent: 'maybe' } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe('BAD_REQUEST');
    expect(bad.body.error.message).toContain('consent');
    const unknownFlag = await sfu.admin('POST', '/rooms', { flags: { recrod: true } });
    expect(unknownFlag.status).toBe(400);
    const notJson = await sfu.admin('POST', '/rooms', '{oops');
    expect(notJson.status).toBe(400);
    expect(notJson.body.error.code).toBe('BAD_REQUEST');
    const huge = await sfu.admin('POST', '/rooms', { name: 'x'.repeat(100_000) });
    expect(huge.status).toBe(413);
    expect(huge.body.error.code).toBe('MESSAGE_TOO_LARGE');
    const missing = await sfu.admin('GET', '/rooms/nope');
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe('ROOM_NOT_FOUND');
    const badId = await sfu.admin('GET', '/rooms/..%2Fetc');
    expect(badId.status).toBe(400);
  });

  it('creates rooms with defaults and rejects duplicates', async () => {
    const { room } = await createRoom({ record: true }, 'dup-room');
    expect(room).toMatchObject({ id: 'dup-room', flags: { record: true, lockRecord: false, consent: 'notify', maxPublishers: 50, notifyJoining: false } });
    expect((await sfu.admin('POST', '/rooms', { id: 'dup-room' })).body.error.code).toBe('ROOM_EXISTS');
  });
});

describe('signaling: bad input keeps the connection and room healthy', () => {
  it('answers malformed, oversized, wrong-version and unknown messages with codes', async () => {
    const { room } = await createRoom();
    const { c } = await joined(room.id, 'robust');
    expect((await c.sendRaw('{not json')).error.code).toBe('MESSAGE_MALFORMED');
    expect((await c.sendRaw(JSON.stringify({ v: 2, id: 50, method: 'ping', data: {} }), 50)).error.code).toBe('UNSUPPORTED_VERSION');
    expect((await c.sendRaw(JSON.stringify({ v: 1, id: 51, method: 'selfDestruct', data: {} }), 51)).error.code).toBe('MESSAGE_MALFORMED');
    const missingField = await c.sendRaw(JSON.stringify({ v: 1, id: 52, method: 'createWebRtcTransport', data: { direction: 'sideways' } }), 52);
    expect(missingField.error.code).toBe('MESSAGE_MALFORMED');
    expect(missingField.error.message).toContain('direction');
    expect((await c.sendRaw(JSON.stringify({ v: 1, id: 53, method: 'ping', data: {}, pad: 'x'.repeat(10_000) }))).error.code).toBe('MESSAGE_TOO_LARGE');
    expect((await c.request('consume', { transportId: 'nope', producerId: 'nope' })).error.code).toBe('TRANSPORT_NOT_FOUND');
    // Still connected, still joined, room still usable by others.
    expect((await c.request('ping')).ok).toBe(true);
    expect((await c.request('listPeers')).data.peers.map((p: { id: string }) => p.id)).toEqual(['robust']);
    const other = await joined(room.id, 'other');
    expect((await other.c.request('listPeers')).data.peers).toHaveLength(2);
    c.close();
    other.c.close();
  });

  it('requires join first, and rejects forged, expired and unknown-room tokens', async () => {
    const { room } = await createRoom();
    const c = await TestSignalingClient.connect(sfu.url);
    expect((await c.request('listPeers')).error.code).toBe('NOT_JOINED');
    const good = await token(room.id, 'eve');
    const forged = mintJoinToken('not-the-server-secret-123456', { room: room.id, identity: 'eve', name: 'Eve', ttlMinutes: 5 }).token;
    expect((await c.request('join', { token: forged })).error.code).toBe('TOKEN_INVALID');
    expect((await c.request('join', { token: `${good.slice(0, -2)}xx` })).error.code).toBe('TOKEN_INVALID');
    const expired = mintJoinToken(TEST_TOKEN_SECRET, { room: room.id, identity: 'eve', name: 'Eve', ttlMinutes: 1, now: Date.now() - 5 * 60_000 }).token;
    const exp = await c.request('join', { token: expired });
    expect(exp.error.code).toBe('TOKEN_EXPIRED');
    expect(exp.error.hint).toBeTruthy();
    const ghost = mintJoinToken(TEST_TOKEN_SECRET, { room: 'no-such-room', identity: 'eve', name: 'Eve', ttlMinutes: 5 }).token;
    expect((await c.request('join', { token: ghost })).error.code).toBe('ROOM_NOT_FOUND');
    // The same connection can still join with a valid token.
    expect((await c.request('join', { token: good })).ok).toBe(true);
    expect((await c.request('join', { token: good })).error.code).toBe('ALREADY_JOINED');
    c.close();
  });
});

describe('room flags', () => {
  it('lockRecord: only the room secret or the admin key toggles recording', async () => {
    const { room, roomSecret } = await createRoom({ lockRecord: true });
    const { c } = await joined(room.id, 'host');
    const locked = await c.request('setRecording', { enabled: true });
    expect(locked.error.code).toBe('RECORDING_LOCKED');
    expect((await c.request('setRecording', { enabled: true, roomSecret: 'wrong-secret' })).error.code).toBe('RECORDING_LOCKED');
    const ok = await c.request('setRecording', { enabled: true, roomSecret });
    expect(ok.ok).toBe(true);
    expect(ok.data.recording).toBe(true);
    const byAdmin = await sfu.admin('PUT', `/rooms/${room.id}/recording`, { enabled: false });
    expect(byAdmin.body.room.recording).toBe(false);
    const note = await c.waitFor((n) => n.notification === 'recordingState' && n.data.recording === false);
    expect(note.data.consent).toBe('notify');
    // Unlocked rooms: any participant may toggle.
    const open = await createRoom({ lockRecord: false });
    const p = await joined(open.room.id, 'someone');
    expect((await p.c.request('setRecording', { enabled: true })).data.recording).toBe(true);
    c.close();
    p.c.close();
  });

  it('maxPublishers: a publisher beyond the cap is refused, existing publishers may add tracks', async () => {
    const { room } = await createRoom({ maxPublishers: 1 });
    const a = await joined(room.id, 'pub-a');
    const b = await joined(room.id, 'pub-b');
    const ta = await a.c.request('createWebRtcTransport', { direction: 'send' });
    const tb = await b.c.request('createWebRtcTransport', { direction: 'send' });
    expect((await a.c.request('produce', { transportId: ta.data.id, kind: 'audio', rtpParameters: OPUS_RTP_PARAMETERS(1111) })).ok).toBe(true);
    const refused = await b.c.request('produce', { transportId: tb.data.id, kind: 'audio', rtpParameters: OPUS_RTP_PARAMETERS(2222) });
    expect(refused.error.code).toBe('MAX_PUBLISHERS');
    expect((await a.c.request('produce', { transportId: ta.data.id, kind: 'audio', rtpParameters: OPUS_RTP_PARAMETERS(3333) })).ok).toBe(true);
    // b heard about a's producers and can still consume once it states capabilities.
    const np = await b.c.waitFor((n) => n.notification === 'newProducer');
    expect(np.data.peerId).toBe('pub-a');
    const rb = await b.c.request('createWebRtcTransport', { direction: 'recv' });
    expect((await b.c.request('consume', { transportId: rb.data.id, producerId: np.data.producerId })).error.code).toBe('CANNOT_CONSUME');
    a.c.close();
    b.c.close();
  });

  it('record flag: recording starts with the first producer and everyone is told', async () => {
    const { room } = await createRoom({ record: true, consent: 'required' });
    const a = await joined(room.id, 'rec-a');
    expect(a.join.consentNeeded).toBe(true);
    expect(a.join.recording).toMatchObject({ recording: false, consent: 'required', recordingYou: false });
    const t = await a.c.request('createWebRtcTransport', { direction: 'send' });
    await a.c.request('produce', { transportId: t.data.id, kind: 'audio', rtpParameters: OPUS_RTP_PARAMETERS(4444) });
    const st = await a.c.waitFor((n) => n.notification === 'recordingState' && n.data.recording);
    expect(st.data.recordingYou).toBe(false);
    const granted = await a.c.request('consent', { decision: 'granted' });
    expect(granted.data.recordingYou).toBe(true);
    expect((await sfu.admin('GET', `/rooms/${room.id}`)).body.room.recording).toBe(true);
    a.c.close();
  });
});

describe('audit trail', () => {
  it('room creation, flag changes, recording toggles (admin, participant, automatic) and consent decisions are hash-chained audit entries', async () => {
    const log = new AuditLog(sfu.running.db);
    const { room } = await createRoom({ record: true, consent: 'required' });
    const patched = await sfu.admin('PATCH', `/rooms/${room.id}`, { transcribe: true });
    expect(patched.status).toBe(200);
    // A PATCH changes only what it names.
    expect(patched.body.flags).toMatchObject({ record: true, consent: 'required', transcribe: true });
    const a = await joined(room.id, 'aud-a');
    const t = await a.c.request('createWebRtcTransport', { direction: 'send' });
    const produced = await a.c.request('produce', { transportId: t.data.id, kind: 'audio', rtpParameters: OPUS_RTP_PARAMETERS(5555) });
    expect(produced.ok, JSON.stringify(produced.error)).toBe(true);
    await a.c.waitFor((n) => n.notification === 'recordingState' && n.data.recording);
    expect((await a.c.request('consent', { decision: 'declined' })).ok).toBe(true);
    expect((await a.c.request('setRecording', { enabled: false })).ok).toBe(true);
    expect((await sfu.admin('PUT', `/rooms/${room.id}/recording`, { enabled: true })).status).toBe(200);
    a.c.close();
    type Row = { action: string; actor_type: string | null; actor_id: string | null; details: Record<string, unknown> };
    let mine: Row[] = [];
    await expect
      .poll(async () => {
        const rows = await sfu.running.db.selectFrom('audit_log').select(['action', 'actor_type', 'actor_id', 'details', 'target_id']).where('target_id', 'in', [room.id, 'aud-a']).orderBy('seq').execute();
        mine = rows.map((r) => ({ ...r, details: (typeof r.details === 'string' ? JSON.parse(r.details) : r.details) as Record<string, unknown> }));
        return mine.map((r) => r.action);
      })
      .toEqual(['room.create', 'room.flags', 'recording.toggle', 'consent.event', 'recording.toggle', 'recording.toggle']);
    expect(mine[0]).toMatchObject({ actor_type: 'api_key', actor_id: 'sfu-admin' });
    expect(mine[1]!.details).toMatchObject({ before: { transcribe: false }, after: { transcribe: true } });
    expect(mine[2]).toMatchObject({ actor_type: 'service', actor_id: 'sfu', details: { recording: true, by: 'auto:first-producer' } });
    expect(mine[3]).toMatchObject({ actor_type: 'user', actor_id: 'participant:aud-a', details: { decision: 'declined', method: 'click', policy: 'required', room: room.id } });
    expect(mine[4]).toMatchObject({ actor_type: 'user', actor_id: 'participant:aud-a', details: { recording: false, by: 'peer:aud-a' } });
    expect(mine[5]).toMatchObject({ actor_type: 'api_key', actor_id: 'sfu-admin', details: { recording: true, by: 'admin' } });
    expect((await log.verify()).ok).toBe(true);
  });
});

describe('operations', () => {
  it('drain mode refuses new rooms and joins, existing sessions continue', async () => {
    const { room } = await createRoom();
    const a = await joined(room.id, 'stayer');
    const tok = await token(room.id, 'latecomer');
    expect((await sfu.admin('POST', '/drain', { enabled: true })).body.draining).toBe(true);
    const refusedRoom = await sfu.admin('POST', '/rooms', {});
    expect(refusedRoom.status).toBe(503);
    expect(refusedRoom.body.error.code).toBe('DRAINING');
    const late = await TestSignalingClient.connect(sfu.url);
    expect((await late.request('join', { token: tok })).error.code).toBe('DRAINING');
    expect((await a.c.request('listPeers')).ok).toBe(true);
    expect((await fetch(`${sfu.url}/healthz`).then((r) => r.json())).draining).toBe(true);
    await sfu.admin('POST', '/drain', { enabled: false });
    expect((await late.request('join', { token: tok })).ok).toBe(true);
    a.c.close();
    late.close();
  });

  it('closes silent sessions after the timeout; the identity reclaims its consent within the window', async () => {
    const { room } = await createRoom({ record: true, consent: 'required' });
    // autoPong off: this client ignores keepalive pings, like a frozen tab.
    const ws = new WebSocket(`${sfu.url.replace('http', 'ws')}/ws`, { autoPong: false });
    await new Promise((r) => ws.once('open', r));
    const tok = await token(room.id, 'sleepy');
    const send = (id: number, method: string, data: unknown) =>
      new Promise<any>((resolve) => {
        ws.on('message', function onMsg(raw) {
          const f = JSON.parse((raw as Buffer).toString());
          if (f.id === id) {
            ws.off('message', onMsg);
            resolve(f);
          }
        });
        ws.send(JSON.stringify({ v: 1, id, method, data }));
      });
    expect((await send(1, 'join', { token: tok })).ok).toBe(true);
    expect((await send(2, 'consent', { decision: 'granted' })).ok).toBe(true);
    const closed = await new Promise<{ code: number; reason: string }>((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    expect(closed).toEqual({ code: 4001, reason: 'SESSION_TIMEOUT' });
    const peers = await sfu.admin('GET', `/rooms/${room.id}/peers`);
    expect(peers.body.peers).toHaveLength(0);
    const back = await joined(room.id, 'sleepy');
    expect(back.join.reclaimed).toBe(true);
    expect(back.join.consentNeeded).toBe(false);
    // Same identity from a second tab replaces the first session.
    const tab2 = await joined(room.id, 'sleepy');
    expect(tab2.join.reclaimed).toBe(true);
    await back.c.waitFor((n) => n.notification === 'sessionReplaced');
    back.c.close();
    tab2.c.close();
  });

  it('exposes Prometheus metrics and per-room stats', async () => {
    const { room } = await createRoom();
    const a = await joined(room.id, 'stats-a');
    const t = await a.c.request('createWebRtcTransport', { direction: 'send' });
    await a.c.request('produce', { transportId: t.data.id, kind: 'audio', rtpParameters: OPUS_RTP_PARAMETERS(5555) });
    const stats = await sfu.admin('GET', `/rooms/${room.id}/stats`);
    expect(stats.status).toBe(200);
    expect(stats.body.peers[0].producers[0].kind).toBe('audio');
    expect(stats.body.peers[0].transports[0].stats[0].type).toBe('webrtc-transport');
    const metrics = await fetch(`${sfu.url}/metrics`).then((r) => r.text());
    expect(metrics).toMatch(/verbatim_sfu_producers\{[^}]*kind="audio"[^}]*\} [1-9]/);
    expect(metrics).toMatch(/verbatim_sfu_signaling_errors_total\{[^}]*code="MESSAGE_MALFORMED"/);
    a.c.close();
  });

  it('replaces a worker that dies; its rooms close and their clients are told', async () => {
    const { room } = await createRoom();
    const a = await joined(room.id, 'crash-a');
    const before = sfu.running.sfu.pool.pids();
    expect(before).toHaveLength(1);
    process.kill(before[0]!, 'SIGKILL');
    const note = await a.c.waitFor((n) => n.notification === 'roomClosed', 10_000);
    expect(note.data.code).toBe('WORKER_DIED');
    await expect.poll(() => sfu.running.sfu.pool.pids().length, { timeout: 10_000 }).toBe(1);
    expect(sfu.running.sfu.pool.pids()[0]).not.toBe(before[0]);
    // The room itself persists: rejoining opens it on the new worker.
    const again = await joined(room.id, 'crash-a');
    expect(again.join.room.id).toBe(room.id);
    const metrics = await fetch(`${sfu.url}/metrics`).then((r) => r.text());
    expect(metrics).toMatch(/verbatim_sfu_worker_deaths_total\{[^}]*\} 1/);
    again.c.close();
  });
});
