import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../db/database.ts';
import { SESSION_MANIFEST_VERSION, type SessionManifest } from '../../lib/contracts/recording.ts';
import { readManifest, writeSessionManifest } from '../../lib/recording/manifest-file.ts';
import { testBackends, type TestBackend } from '../../../testing/databases.ts';
import { SessionStore } from '../../recorder/index.ts';
import { sessionTimeline } from './session-timeline.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-timeline-'));
const backends = await testBackends();
afterAll(async () => {
  for (const b of backends) await b.cleanup();
  rmSync(tmp, { recursive: true, force: true });
});

const at = (s: number) => new Date(Date.UTC(2024, 4, 1, 9, 0, s, 250)).toISOString();
const manifest = (session: string, events: SessionManifest['events']): SessionManifest => ({
  format: 'verbatim-session',
  version: SESSION_MANIFEST_VERSION,
  room: 'room-t',
  session,
  startedAt: at(0),
  endedAt: at(59),
  endReason: 'ended',
  participants: [{ id: 'alice', name: 'Alice', consent: { decision: 'granted', method: 'click', at: at(2) } }],
  tracks: [],
  gaps: [],
  events,
  dropped: {},
});

const events: SessionManifest['events'] = [
  { at: at(0), type: 'session-started', details: {} },
  { at: at(1), type: 'participant-joined', participant: 'alice', details: { name: 'Alice Ünal' } },
  { at: at(2), type: 'consent', participant: 'alice', details: { decision: 'granted', method: 'click', policy: 'required', nested: { list: [1, 'two', null], flag: true } } },
  { at: at(3), type: 'producer-paused', participant: 'alice', track: 'alice-audio', details: {} },
  // Two events at the same instant keep their manifest order.
  { at: at(4), type: 'recording-off', details: { by: 'admin' } },
  { at: at(4), type: 'recording-on', details: { by: 'admin', transcribe: true } },
  { at: at(59), type: 'session-ended', details: { reason: 'ended' } },
];

describe.each(backends)('session timeline ($name)', (backend: TestBackend) => {
  const skip = !backend.available;
  let db: Db;
  afterAll(async () => {
    await db?.destroy();
  });

  it.skipIf(skip)('sealing stores the manifest events; the timeline reads back exactly what the manifest holds', async () => {
    db = await backend.open();
    const dir = mkdtempSync(path.join(tmp, 'sess-'));
    const m = manifest('tl-1', events);
    const { path: manifestPath, sha256 } = writeSessionManifest(dir, m);
    await new SessionStore(db).registerSealed(m, manifestPath, sha256);
    const timeline = await sessionTimeline(db, 'tl-1');
    // What GET /api/v1/sessions/:id gave from manifest.json: the same events, each with its keys in the
    // same order (inside `details`, jsonb keeps its own key order: equal objects, not equal bytes).
    const fromManifest = readManifest(dir).events;
    expect(timeline).toEqual(fromManifest);
    expect(timeline.map((e) => Object.keys(e))).toEqual(fromManifest.map((e) => Object.keys(e)));
    expect(timeline).toEqual(events);
    expect(await sessionTimeline(db, 'no-such-session')).toEqual([]);
  });

  it.skipIf(skip)('a re-seal replaces the rows; replaceTimeline rewrites them (an erasure) and deleting the session removes them', async () => {
    const store = new SessionStore(db);
    const m = manifest('tl-2', events);
    await store.registerSealed(m, '/nowhere/manifest.json', '0'.repeat(64));
    await store.registerSealed(manifest('tl-2', events.slice(0, 2)), '/nowhere/manifest.json', '1'.repeat(64));
    expect(await sessionTimeline(db, 'tl-2')).toEqual(events.slice(0, 2));
    expect(await sessionTimeline(db, 'tl-1')).toEqual(events); // other sessions untouched

    const erased = [...events.filter((e) => e.participant !== 'alice'), { at: at(70), type: 'erasure', details: { request: 'r-1' } }];
    await db.transaction().execute((tx) => new SessionStore(tx).replaceTimeline('tl-1', erased));
    expect(await sessionTimeline(db, 'tl-1')).toEqual(erased);

    await store.registerSealed(manifest('tl-3', []), '/nowhere/manifest.json', '2'.repeat(64));
    expect(await sessionTimeline(db, 'tl-3')).toEqual([]);
    await db.deleteFrom('recording_sessions').where('id', '=', 'tl-2').execute();
    expect(await db.selectFrom('session_events').select('ordinal').where('session_id', '=', 'tl-2').execute()).toEqual([]);
  });

  it.skipIf(skip)('stores a long meeting in batches, in order', async () => {
    const many = Array.from({ length: 2500 }, (_, i) => ({ at: new Date(Date.UTC(2024, 4, 1, 9) + i * 1000).toISOString(), type: i % 2 ? 'producer-paused' : 'producer-resumed', participant: `p${i % 7}`, track: `p${i % 7}-audio`, details: { i } }));
    await new SessionStore(db).registerSealed(manifest('tl-long', many), '/nowhere/manifest.json', '3'.repeat(64));
    expect(await sessionTimeline(db, 'tl-long')).toEqual(many);
  });

  it.skipIf(skip)('sessions sealed before the timeline was stored get it from their manifest once (recorder start-up backfill)', async () => {
    const store = new SessionStore(db);
    const dir = mkdtempSync(path.join(tmp, 'old-'));
    const m = manifest('tl-old', events);
    const { path: manifestPath, sha256 } = writeSessionManifest(dir, m);
    await store.registerSealed(m, manifestPath, sha256);
    // As a database migrated from before session_events: the rows are absent.
    await db.deleteFrom('session_events').where('session_id', '=', 'tl-old').execute();
    await store.registerSealed(manifest('tl-gone', events), path.join(tmp, 'deleted-by-retention', 'manifest.json'), '4'.repeat(64));
    await db.deleteFrom('session_events').where('session_id', '=', 'tl-gone').execute();
    expect(await sessionTimeline(db, 'tl-old')).toEqual([]);

    expect(await store.backfillTimelines()).toBe(1);
    expect(await sessionTimeline(db, 'tl-old')).toEqual(events);
    expect(await sessionTimeline(db, 'tl-gone')).toEqual([]);
    // Once filled in, nothing is left to do.
    expect(await store.backfillTimelines()).toBe(0);
  });
});
