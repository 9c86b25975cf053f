import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type Db } from '../../../db/database.ts';
import { SessionManifestSchema, type SessionManifest } from '../../lib/contracts/recording.ts';
import { parseRecording, RecordType } from '../../lib/recording/vrtp-format.ts';
import { runRecordersCommand, verifySessionDir } from '../../recorder/index.ts';
import { mergeReplicas, readTrackPackets, sessionClock } from '../../transcode/index.ts';
import { mediaClips, RtpSender } from '../../../testing/bots/rtp-sender.ts';
import { TEST_DATABASE_URL } from '../../../testing/databases.ts';
import { TEST_RECORDER_SECRET, startTestRecorder, type TestRecorder } from '../../../testing/recorder-harness.ts';
import { startTestSfu, type TestSfu } from '../../../testing/sfu-harness.ts';

/**
 * The recorder pool with real processes (issue 15): two recorders (separate processes, ports,
 * data dirs) on one shared database, an SFU discovering them in the registry, and an RTP
 * publisher ingested into the SFU. Recorders are killed with -9, drained, doubled (replicas).
 */
const schema = `pool_${randomBytes(4).toString('hex')}`;
let db: Db;
let recA: TestRecorder;
let recB: TestRecorder;
let sfu: TestSfu;
const senders: { stop(): void }[] = [];
const extra: { stop(): Promise<void> | void }[] = [];

const recorderEnv = (id: string, minPort: number) => ({
  DATABASE_URL: TEST_DATABASE_URL,
  DATABASE_SCHEMA: schema,
  RECORDER_ID: id,
  RECORDER_MIN_PORT: String(minPort),
  RECORDER_MAX_PORT: String(minPort + 999),
  RECORDER_RX: 'node',
});

beforeAll(async () => {
  db = await openDatabase({ url: TEST_DATABASE_URL, schema });
  [recA, recB] = await Promise.all([startTestRecorder(recorderEnv('rec-a', 41000)), startTestRecorder(recorderEnv('rec-b', 43000))]);
  sfu = await startTestSfu({ db, overrides: { RECORDER_DISCOVERY: 'registry', RECORDER_SECRET: TEST_RECORDER_SECRET, RECORDER_DEAD_AFTER_MS: 1500 } });
  await until(() => alive(sfu).join() === 'rec-a,rec-b', 15_000);
}, 60_000);

async function until(ok: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > end) throw new Error('timed out waiting for the recorder pool');
    await sleep(50);
  }
}

afterAll(async () => {
  for (const s of senders) s.stop();
  for (const e of extra) await e.stop();
  await sfu?.close();
  await Promise.all([recA?.stop(), recB?.stop()]);
  await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db).catch(() => {});
  await db?.destroy();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const alive = (s: TestSfu) =>
  s.running.sfu.recorders!.list()
    .filter((m) => m.alive)
    .map((m) => m.key)
    .sort();
const placements = (s: TestSfu, room: string) => s.running.sfu.taps.get(room)?.placements() ?? [];
const byId = (id: string) => (id === 'rec-a' ? recA : recB);

/** An ingested publisher (Opus + VP8 over RTP) into `room`, sending until the test ends. */
async function publish(s: TestSfu, room: string, identity: string): Promise<void> {
  const res = await s.admin('POST', `/rooms/${room}/ingest`, {
    identity,
    name: identity.toUpperCase(),
    tracks: [
      { kind: 'audio', ssrc: 11110000 + senders.length, payloadType: 100 },
      { kind: 'video', ssrc: 22220000 + senders.length, payloadType: 101 },
    ],
  });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  const clips = mediaClips();
  const [audio, video] = res.body.tracks as { ip: string; rtpPort: number }[];
  for (const [clip, pt, ssrc, to] of [
    [clips.audio, 100, 11110000 + senders.length, audio!],
    [clips.video, 101, 22220000 + senders.length, video!],
  ] as const) {
    const sock = dgram.createSocket('udp4');
    const sender = new RtpSender(clip, pt, ssrc, (p) => sock.send(p, to.rtpPort, to.ip));
    sender.start();
    senders.push({ stop: () => (sender.stop(), sock.close()) });
  }
}

/** The sealed manifest of the room's session, wherever it was sealed. */
async function sealed(room: string, recorders: TestRecorder[]): Promise<{ dir: string; manifest: SessionManifest }> {
  let found: string | undefined;
  await expect
    .poll(
      () => {
        for (const r of recorders) {
          const roomDir = path.join(r.recordingsDir, room);
          if (!existsSync(roomDir)) continue;
          for (const s of readdirSync(roomDir)) if (existsSync(path.join(roomDir, s, 'manifest.json'))) found = path.join(roomDir, s);
        }
        return !!found;
      },
      { timeout: 20_000 },
    )
    .toBe(true);
  return { dir: found!, manifest: SessionManifestSchema.parse(JSON.parse(readFileSync(path.join(found!, 'manifest.json'), 'utf8'))) };
}

function rtpCount(file: string): number {
  return parseRecording(readFileSync(file), file).records.filter((r) => r.type === RecordType.RTP).length;
}

describe('recorder pool', () => {
  it("places a participant's tracks together; kill -9 of their recorder moves them to the other, and the sealed session lists both recorders' segments with one gap within the detection time", async () => {
    await sfu.admin('POST', '/rooms', { id: 'pool-failover', flags: { record: true } });
    await publish(sfu, 'pool-failover', 'alice');
    await expect.poll(() => placements(sfu, 'pool-failover').length, { timeout: 10_000 }).toBe(2);
    const first = placements(sfu, 'pool-failover');
    expect(new Set(first.map((p) => p.recorder)).size, 'one participant, one recorder').toBe(1);
    const victim = first[0]!.recorder;
    const survivor = victim === 'rec-a' ? 'rec-b' : 'rec-a';
    try {
      await failover(victim, survivor);
    } finally {
      // The victim comes back (same data dir and port) for the tests after this one.
      if (byId(victim).child.exitCode !== null || byId(victim).child.signalCode !== null) await byId(victim).restart();
      await until(() => alive(sfu).join() === 'rec-a,rec-b', 10_000);
    }
  });

  async function failover(victim: string, survivor: string): Promise<void> {
    await sleep(2500);
    const killedAt = Date.now();
    byId(victim).kill9();
    await expect.poll(() => placements(sfu, 'pool-failover').map((p) => p.recorder), { timeout: 5000, interval: 50 }).toEqual([survivor, survivor]);
    const movedMs = Date.now() - killedAt;
    await sleep(2500);
    expect((await sfu.admin('PUT', '/rooms/pool-failover/recording', { enabled: false })).status).toBe(200);
    const { dir, manifest } = await sealed('pool-failover', [byId(survivor)]);
    expect(manifest.tracks).toHaveLength(2);
    for (const t of manifest.tracks) {
      expect(new Set(t.segments.map((s) => s.recorder)), `${t.track} has segments of both recorders`).toEqual(new Set([victim, survivor]));
      for (const s of t.segments) expect(rtpCount(path.join(dir, s.file)), `${s.file} holds packets`).toBeGreaterThan(10);
      // The victim's last segment was left open by kill -9: sealed as after a crash, by the survivor.
      expect(t.segments.find((s) => s.recorder === victim)!.endReason).toBe('recorder-crash');
      const gaps = manifest.gaps.filter((g) => g.track === t.track);
      expect(gaps).toHaveLength(1);
      const gapMs = Date.parse(gaps[0]!.to) - Date.parse(gaps[0]!.from);
      console.log(`failover: ${t.kind} gap ${gapMs} ms (tracks moved ${movedMs} ms after kill -9)`);
      // Detection (RECORDER_DEAD_AFTER_MS / health at a third of it, ~0.5 s on a refused connection) plus the re-tap.
      expect(gapMs).toBeLessThanOrEqual(1500);
    }
    const verified = verifySessionDir(dir);
    expect(verified.problems, 'verbatim recording verify passes on the pooled session').toEqual([]);
    expect(manifest.events.filter((e) => e.type === 'track-moved')).toHaveLength(2);
    expect((await sfu.running.sfu.recorders!.metrics.moved.get()).values.find((v) => v.labels.reason === 'recorder-down')?.value).toBeGreaterThanOrEqual(2);
    expect(manifest.events.filter((e) => e.type === 'session-started')).toHaveLength(1);
    // The timeline the dead recorder was given (it was the session's home) came from the database.
    expect(manifest.events.map((e) => e.type)).toEqual(expect.arrayContaining(['recording-on', 'participant-joined', 'producer-added', 'recording-off', 'session-ended']));
    expect(manifest.participants.map((p) => p.id)).toEqual(['alice']);
    await expect.poll(async () => (await db.selectFrom('recording_sessions').select('status').where('id', '=', manifest.session).executeTakeFirst())?.status).toBe('sealed');
    const segRows = await db.selectFrom('track_segments').select('segment').where('session_id', '=', manifest.session).execute();
    expect(segRows.length).toBe(manifest.tracks.reduce((n, t) => n + t.segments.length, 0));
    // Sealed: the live rows go (right after the sealed rows are written and the job queued).
    await expect.poll(async () => (await db.selectFrom('live_segments').select('segment').where('session_id', '=', manifest.session).execute()).length).toBe(0);
  }

  it('a recorder with the wrong secret, and a forged registry row, get no tracks', async () => {
    const impostor = await startTestRecorder({ ...recorderEnv('rec-wrong', 45000), RECORDER_SECRET: 'a-different-secret-0123456789' });
    extra.push(impostor);
    // A row no recorder answers for with the secret: a fresh heartbeat, low load, huge capacity.
    const fake = http.createServer((_req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ v: 1, ok: true, instanceId: 'x', acceptingTracks: true, freeBytes: 1e12, tracks: 0, recorderId: 'rec-forged', state: 'active', proof: 'ab'.repeat(32) }));
    });
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
    extra.push({ stop: () => new Promise<void>((r) => fake.close(() => r())) });
    const beat = setInterval(() => {
      void db
        .insertInto('recorders')
        .values({ id: 'rec-forged', url: `http://127.0.0.1:${(fake.address() as AddressInfo).port}`, instance_id: 'x', host: 'nowhere', capacity: 1_000_000, load: 0, recordings_dir: '/nonexistent', heartbeat_at: sql<Date>`now()` })
        .onConflict((oc) => oc.column('id').doUpdateSet({ heartbeat_at: sql<Date>`now()` }))
        .execute()
        .catch(() => {});
    }, 200);
    extra.push({ stop: () => clearInterval(beat) });
    // Both are seen by the SFU (their rows are there) and neither is ever alive.
    await expect.poll(() => ['rec-wrong', 'rec-forged'].map((id) => sfu.running.sfu.recorders!.get(id) !== undefined), { timeout: 5000 }).toEqual([true, true]);
    await sleep(1500);
    expect(alive(sfu)).toEqual(['rec-a', 'rec-b']);
    expect((await sfu.running.sfu.recorders!.metrics.unproven.get()).values[0]?.value, 'both failed the proof').toBeGreaterThanOrEqual(2);
    await sfu.admin('POST', '/rooms', { id: 'pool-secret', flags: { record: true } });
    for (const who of ['bob', 'carol', 'dave']) await publish(sfu, 'pool-secret', who);
    await expect.poll(() => placements(sfu, 'pool-secret').length, { timeout: 10_000 }).toBe(6);
    await sleep(500);
    const used = new Set(placements(sfu, 'pool-secret').map((p) => p.recorder));
    expect([...used].every((r) => r === 'rec-a' || r === 'rec-b')).toBe(true);
    // Least loaded: three participants spread over both real recorders, each participant's tracks together.
    expect(used.size).toBe(2);
    for (const who of ['bob', 'carol', 'dave']) expect(new Set(placements(sfu, 'pool-secret').filter((p) => p.participant === who).map((p) => p.recorder)).size).toBe(1);
    const impostorFiles = existsSync(path.join(impostor.recordingsDir, 'pool-secret'));
    expect(impostorFiles, 'nothing recorded at the impostor').toBe(false);
    expect((await sfu.admin('PUT', '/rooms/pool-secret/recording', { enabled: false })).status).toBe(200);
    const { manifest } = await sealed('pool-secret', [recA, recB]);
    expect(manifest.tracks).toHaveLength(6);
  });

  it('draining a recorder moves its tracks off it make-before-break: no gap in the sealed session', async () => {
    await sfu.admin('POST', '/rooms', { id: 'pool-drain', flags: { record: true } });
    await publish(sfu, 'pool-drain', 'erin');
    await expect.poll(() => placements(sfu, 'pool-drain').length, { timeout: 10_000 }).toBe(2);
    const from = placements(sfu, 'pool-drain')[0]!.recorder;
    const to = from === 'rec-a' ? 'rec-b' : 'rec-a';
    try {
      await drain(from, to);
    } finally {
      await runRecordersCommand(['activate', from], () => {}, { db });
    }
  });

  async function drain(from: string, to: string): Promise<void> {
    await sleep(2000);
    // The operator's CLI sets the registry row; the recorder's health says so too at its next heartbeat.
    let said = '';
    expect(await runRecordersCommand(['drain', from], (s) => (said += s), { db })).toBe(0);
    expect(said).toBe(`${from}: draining\n`);
    await expect.poll(() => placements(sfu, 'pool-drain').map((p) => p.recorder), { timeout: 5000, interval: 50 }).toEqual([to, to]);
    await sleep(2000);
    expect((await sfu.admin('PUT', '/rooms/pool-drain/recording', { enabled: false })).status).toBe(200);
    const { dir, manifest } = await sealed('pool-drain', [recA, recB]);
    expect(path.dirname(path.dirname(dir))).toBe(byId(to).recordingsDir);
    for (const t of manifest.tracks) {
      expect(new Set(t.segments.map((s) => s.recorder))).toEqual(new Set([from, to]));
      const old = t.segments.find((s) => s.recorder === from)!;
      const next = t.segments.find((s) => s.recorder === to)!;
      // The new tap ran before the old one stopped.
      expect(next.firstArrivalUs!).toBeLessThanOrEqual(old.lastArrivalUs! + 40_000);
    }
    expect(manifest.gaps).toEqual([]);
    expect((await byId(from).api('GET', '/v1/health')).body.state).toBe('draining');
  }

  it('drain through the recorder API as well; an unknown id is refused by the CLI', async () => {
    expect((await recA.api('POST', '/v1/drain', { v: 1 })).body).toEqual({ recorderId: 'rec-a', state: 'draining' });
    await expect.poll(() => sfu.running.sfu.recorders!.get('rec-a')!.state, { timeout: 3000 }).toBe('draining');
    expect((await recA.api('POST', '/v1/drain', { v: 1, state: 'active' })).status).toBe(200);
    await expect.poll(() => sfu.running.sfu.recorders!.get('rec-a')!.state, { timeout: 3000 }).toBe('active');
    let said = '';
    expect(await runRecordersCommand(['drain', 'no-such-recorder'], (s) => (said += s), { db })).toBe(1);
    expect(said).toContain('no recorder no-such-recorder');
    said = '';
    expect(await runRecordersCommand(['list'], (s) => (said += s), { db })).toBe(0);
    expect(said).toMatch(/^rec-a\tactive\t/m);
  });
});

describe('sealing a session whose recorder is gone', () => {
  it('any recorder of the pool seals it from the database, with the dead recorder\'s open segments', async () => {
    // What an SFU does, straight at the control API: a session on rec-a alone.
    const session = `orphan-${randomBytes(3).toString('hex')}`;
    const started = await recA.api('POST', '/v1/tracks', {
      v: 1,
      room: 'pool-orphan',
      session,
      track: 'solo-audio',
      participant: { id: 'solo', name: 'Solo' },
      kind: 'audio',
      codec: { mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 100, parameters: {} },
      ssrc: 777,
      headerExtensions: [],
      consent: { decision: 'granted', method: 'pre-accepted' },
    });
    expect(started.status).toBe(201);
    expect((await recA.api('POST', `/v1/sessions/${session}/events`, { v: 1, room: 'pool-orphan', events: [{ at: new Date().toISOString(), type: 'recording-on', details: { by: 'admin' } }] })).status).toBe(204);
    const sock = dgram.createSocket('udp4');
    const sender = new RtpSender(mediaClips().audio, 100, 777, (p) => sock.send(p, started.body.rtpPort, started.body.ip));
    sender.start();
    try {
      await sleep(1500);
      recA.kill9();
      await sleep(1800); // its heartbeat goes stale
      // rec-b never held this session: it opens it from the database and seals it.
      const ended = await recB.api('POST', `/v1/sessions/${session}/end`, { v: 1, room: 'pool-orphan', reason: 'sealer' });
      expect(ended.status, JSON.stringify(ended.body)).toBe(200);
      const manifest = SessionManifestSchema.parse(JSON.parse(readFileSync(ended.body.manifestPath, 'utf8')));
      expect(manifest.tracks.map((t) => t.track)).toEqual(['solo-audio']);
      const seg = manifest.tracks[0]!.segments;
      expect(seg).toHaveLength(1);
      expect(seg[0]!.endReason).toBe('recorder-crash');
      expect(rtpCount(path.join(path.dirname(ended.body.manifestPath), seg[0]!.file))).toBeGreaterThan(40);
      expect(manifest.events.map((e) => e.type)).toEqual(['session-started', 'recording-on', 'session-ended']);
      expect(manifest.participants.map((p) => p.id)).toEqual(['solo']);
    } finally {
      sender.stop();
      sock.close();
      await recA.restart();
      await until(() => alive(sfu).join() === 'rec-a,rec-b', 10_000);
    }
    // Back on its disk, rec-a finds the session sealed elsewhere and does not reopen it.
    const reopened = await recA.api('POST', `/v1/sessions/${session}/events`, { v: 1, room: 'pool-orphan', events: [{ at: new Date().toISOString(), type: 'recording-on', details: {} }] });
    expect(reopened.body.error?.code).toBe('SESSION_ENDED');
  });
});

describe('recorder pool with RECORDER_REPLICAS=2', () => {
  it('taps each producer to both recorders; the two copies merge by sequence number into one stream', async () => {
    const sfu2 = await startTestSfu({ db, overrides: { RECORDER_DISCOVERY: 'registry', RECORDER_SECRET: TEST_RECORDER_SECRET, RECORDER_REPLICAS: 2 } });
    try {
      await expect.poll(() => alive(sfu2), { timeout: 15_000 }).toEqual(['rec-a', 'rec-b']);
      await sfu2.admin('POST', '/rooms', { id: 'pool-replicas', flags: { record: true } });
      await publish(sfu2, 'pool-replicas', 'frank');
      await expect.poll(() => placements(sfu2, 'pool-replicas').length, { timeout: 10_000 }).toBe(4);
      for (const kind of ['audio', 'video']) {
        const copies = placements(sfu2, 'pool-replicas').filter((p) => p.track.includes(`-${kind}-`));
        expect(new Set(copies.map((c) => c.recorder)), `${kind} copies on different recorders`).toEqual(new Set(['rec-a', 'rec-b']));
      }
      await sleep(3000);
      expect((await sfu2.admin('PUT', '/rooms/pool-replicas/recording', { enabled: false })).status).toBe(200);
      const { dir, manifest } = await sealed('pool-replicas', [recA, recB]);
      expect(manifest.gaps).toEqual([]);
      for (const t of manifest.tracks) {
        expect(new Set(t.segments.map((s) => s.copy ?? 0))).toEqual(new Set([0, 1]));
        const pieces = t.segments.map((s) => ({ t: readTrackPackets(readFileSync(path.join(dir, s.file)), s.file) }));
        const r = mergeReplicas(pieces);
        expect(r.pieces, `${t.kind}: both copies line up into one stream`).toHaveLength(1);
        const most = Math.max(...pieces.map((p) => p.t.packets.length));
        expect(r.pieces[0]!.t.packets.length).toBeGreaterThanOrEqual(most);
        const seqs = r.pieces[0]!.t.packets.map((p) => p.seq);
        expect(new Set(seqs).size).toBe(seqs.length);
      }
      expect(verifySessionDir(dir).problems).toEqual([]);
      // The transcode read path takes both copies as one stream per track.
      const clock = await sessionClock(path.join(dir, 'manifest.json'));
      expect(clock.tracks).toHaveLength(2);
      expect(clock.durationSeconds).toBeGreaterThan(2);
    } finally {
      await sfu2.close();
    }
  });
});
