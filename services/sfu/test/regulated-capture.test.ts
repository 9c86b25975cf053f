import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../db/database.ts';
import { Bot } from '../../../testing/bots/bot.ts';
import { TEST_RECORDER_SECRET, startTestRecorder, type TestRecorder } from '../../../testing/recorder-harness.ts';
import { startTestSfu, type TestSfu } from '../../../testing/sfu-harness.ts';
import { SessionManifestSchema, type SessionManifest } from '../../lib/contracts/recording.ts';
import { createLogger } from '../../lib/logger.ts';
import { Reconciler } from '../../audit/index.ts';

let rec: TestRecorder;
let sfu: TestSfu;
let db: Db;
beforeAll(async () => {
  rec = await startTestRecorder();
  // The SFU on the recorder's database, as in a deployment: attendance and sealed sessions side by side for reconciliation.
  db = await rec.openDb();
  // Regulated through a group: the SFU resolves membership at each join.
  await db.insertInto('regulated_subjects').values({ kind: 'group', value: 'trading-desk', reason: 'FINRA 3110', added_by: 'user:test' }).execute();
  await db.insertInto('identity_groups').values({ name: 'trading-desk' }).execute();
  await db.insertInto('identity_group_members').values({ group_name: 'trading-desk', participant_id: 'rita' }).execute();
  sfu = await startTestSfu({ db, overrides: { RECORDER_URL: rec.url, RECORDER_SECRET: TEST_RECORDER_SECRET } });
}, 60_000);
afterAll(async () => {
  await sfu?.close();
  await db?.destroy();
  await rec?.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function botJoin(room: string, identity: string): Promise<{ bot: Bot; states: any[] }> {
  const { token } = (await sfu.admin('POST', `/rooms/${room}/tokens`, { identity, name: identity.toUpperCase() })).body;
  const states: any[] = [];
  const bot = await Bot.join(sfu.url, token, identity, { publish: true, consume: false, kinds: ['audio'] });
  bot.sig.onNotification = (name, data) => name === 'recordingState' && states.push(data);
  return { bot, states };
}

/** The room's sealed session (manifest on disk, rows in the database). */
async function sealed(room: string, startedAfter = 0): Promise<SessionManifest> {
  const roomDir = path.join(rec.recordingsDir, room);
  let manifest: SessionManifest | undefined;
  await expect
    .poll(
      async () => {
        for (const s of readdirSync(roomDir)) {
          try {
            const m = SessionManifestSchema.parse(JSON.parse(readFileSync(path.join(roomDir, s, 'manifest.json'), 'utf8')));
            if (Date.parse(m.startedAt) >= startedAfter) manifest = m;
          } catch {
            // not sealed yet
          }
        }
        return !!manifest && (await db.selectFrom('recording_sessions').select('status').where('id', '=', manifest.session).executeTakeFirst())?.status === 'sealed';
      },
      { timeout: 20_000 },
    )
    .toBe(true);
  return manifest!;
}

const reconcile = (from: number) =>
  new Reconciler({ db, storage: undefined, audit: { append: async () => ({}) }, logger: createLogger({ level: 'silent' }), gapSeconds: 5 }).compare({ from: new Date(from), to: new Date(Date.now() + 60_000) });

describe('capture assurance on the SFU', () => {
  it('a regulated identity joining an unflagged room is recorded; the others are told and keep their consent rules', { timeout: 90_000 }, async () => {
    const t0 = Date.now();
    // Not flagged for recording, and consent required: without the regulated participant nothing would be recorded.
    await sfu.admin('POST', '/rooms', { id: 'desk-call', flags: { record: false, consent: 'required' } });
    const otto = await botJoin('desk-call', 'otto');
    await sleep(1000);
    expect((await sfu.admin('GET', '/rooms/desk-call')).body.room.recording).toBe(false);
    const rita = await botJoin('desk-call', 'rita');
    await expect.poll(() => otto.states.at(-1), { timeout: 10_000 }).toMatchObject({ recording: true, recordingYou: false, consent: 'required' });
    expect((await sfu.admin('GET', '/rooms/desk-call')).body.room.recording).toBe(true);
    // Nobody switches recording off under a regulated publisher.
    const off = await sfu.admin('PUT', '/rooms/desk-call/recording', { enabled: false });
    expect(off.status).toBe(409);
    expect(off.body.error.code).toBe('RECORDING_REQUIRED');
    await sleep(3000);
    rita.bot.close();
    otto.bot.close();

    const manifest = await sealed('desk-call');
    // Only rita's track: otto never consented in this required-consent room.
    expect(manifest.tracks.map((t) => [t.participant, t.kind])).toEqual([['rita', 'audio']]);
    expect(manifest.tracks[0]!.segments[0]!.rtpPackets).toBeGreaterThan(100);
    expect(manifest.participants.find((p) => p.id === 'rita')?.consent).toMatchObject({ decision: 'not-required', ref: 'regulated' });
    // The toggle's audit entry names why recording started.
    const toggles = await db.selectFrom('audit_log').select('details').where('action', '=', 'recording.toggle').execute();
    expect(toggles.map((t) => (typeof t.details === 'string' ? JSON.parse(t.details) : t.details))).toEqual([expect.objectContaining({ recording: true, by: 'auto:regulated' })]);
    expect(manifest.events.find((e) => e.type === 'participant-joined' && e.participant === 'rita')?.details).toMatchObject({ regulated: true });

    // The SFU's attendance record of the regulated identity, the reconciliation's input.
    await expect
      .poll(async () => (await db.selectFrom('regulated_attendance').selectAll().execute()).map((r) => ({ room: r.room_id, who: r.participant_id, produced: !!r.first_produced_at, left: !!r.left_at })), { timeout: 10_000 })
      .toEqual([{ room: 'desk-call', who: 'rita', produced: true, left: true }]);
    // Reconciliation finds her attendance covered by her track: no exception for it.
    const r = await reconcile(t0);
    expect(r.summary).toMatchObject({ attendanceChecked: 1, sessionsChecked: 1, tracksChecked: 1 });
    expect(r.exceptions.filter((e) => e.kind === 'joined_not_recorded' || e.kind === 'recorder_gap')).toEqual([]);
  });

  it('a recorder killed for a while under a regulated publisher: the gap in her track is a reconciliation exception', { timeout: 120_000 }, async () => {
    const t0 = Date.now();
    await sfu.admin('POST', '/rooms', { id: 'desk-crash', flags: { record: false } });
    const rita = await botJoin('desk-crash', 'rita');
    await sleep(2500);
    rec.kill9();
    const killedAt = Date.now();
    await sleep(7000);
    await rec.restart();
    await sleep(3000);
    rita.bot.close();
    const manifest = await sealed('desk-crash', t0);
    const track = manifest.tracks.find((t) => t.participant === 'rita')!;
    expect(track.segments.map((x) => x.endReason)[0]).toBe('recorder-crash');
    const r = await reconcile(t0);
    const gaps = r.exceptions.filter((e) => e.kind === 'recorder_gap');
    expect(gaps.map((g) => [g.session, g.participant, g.track])).toEqual([[manifest.session, 'rita', track.track]]);
    expect(Number(gaps[0]!.details.seconds)).toBeGreaterThan(6);
    expect(Math.abs(Date.parse(gaps[0]!.from!) - killedAt)).toBeLessThan(1500);
    expect(r.exceptions.filter((e) => e.kind === 'joined_not_recorded' && e.room === 'desk-crash')).toEqual([]);
  });
});
