import { afterAll, describe, expect, it } from 'vitest';
import { testBackends, type TestBackend } from '../../../testing/databases.ts';
import { TestSignalingClient, startTestSfu } from '../../../testing/sfu-harness.ts';

const backends = await testBackends();
afterAll(async () => {
  for (const b of backends) await b.cleanup();
});

describe.each(backends)('room flags survive an SFU restart ($name)', (backend: TestBackend) => {
  it.skipIf(!backend.available)('keeps flags, recording state and secret across a restart', async () => {
    const flags = { record: true, lockRecord: true, consent: 'required', transcribe: true, language: 'de', retentionPolicy: 'mifid-5y', maxPublishers: 7, notifyJoining: true, mode: 'allhands', speakers: ['u1', 'keynote'], lastN: 3 };
    let db = await backend.open();
    let sfu = await startTestSfu({ db });
    const created = await sfu.admin('POST', '/rooms', { id: `persist-${backend.name}`, name: 'Board meeting', flags });
    expect(created.status).toBe(201);
    await sfu.admin('PUT', `/rooms/persist-${backend.name}/recording`, { enabled: true });
    await sfu.admin('POST', '/rooms', { id: `closed-${backend.name}` });
    await sfu.admin('DELETE', `/rooms/closed-${backend.name}`);
    await sfu.close();
    await db.destroy();

    // A new process: new database handle, new workers, same storage.
    db = await backend.open();
    sfu = await startTestSfu({ db });
    const got = await sfu.admin('GET', `/rooms/persist-${backend.name}`);
    expect(got.body.room).toMatchObject({ name: 'Board meeting', flags, recording: true, open: false });
    const c = await TestSignalingClient.connect(sfu.url);
    const tok = (await sfu.admin('POST', `/rooms/persist-${backend.name}/tokens`, { identity: 'u1', name: 'U1' })).body.token;
    const join = await c.request('join', { token: tok });
    expect(join.data.room.flags).toEqual(flags);
    expect(join.data.recording.recording).toBe(true);
    // lockRecord still needs the secret issued before the restart.
    expect((await c.request('setRecording', { enabled: false })).error.code).toBe('RECORDING_LOCKED');
    expect((await c.request('setRecording', { enabled: false, roomSecret: created.body.roomSecret })).ok).toBe(true);
    const closed = await sfu.admin('POST', `/rooms/closed-${backend.name}/tokens`, { identity: 'u2', name: 'U2' });
    expect(closed.body.error.code).toBe('ROOM_CLOSED');
    c.close();
    await sfu.close();
    await db.destroy();
  });
});
