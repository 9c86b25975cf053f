import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { testBackends, type TestBackend } from '../../../../testing/databases.ts';
import { TEST_REDIS_URL } from '../../../../testing/transcode-worker.ts';
import { createLogger } from '../../../lib/logger.ts';
import { AuditLog } from '../audit-log.ts';
import { buildAuditApp } from '../http/server.ts';
import { createUserWithKey } from '../key-lifecycle.ts';
import { evaluateRegisteredTranscript } from './evaluate.ts';

const backends = await testBackends();
afterAll(async () => {
  for (const b of backends) await b.cleanup();
});

describe.each(backends)('pseudonymised review ($name)', (backend: TestBackend) => {
  it.skipIf(!backend.available)('reviewers see stable pseudonyms until they reveal one (audited, to them only); other policies show names', { timeout: 60_000 }, async () => {
    const db = await backend.open();
    const app = buildAuditApp({ db, logger: createLogger({ level: 'silent' }), failedAuthPerMinute: 0, redisUrl: TEST_REDIS_URL, queuePrefix: `t${randomBytes(4).toString('hex')}` });
    await app.ready();
    try {
      const keys: Record<string, { key: string; id: string }> = {};
      for (const who of ['ann', 'ben']) {
        const k = await createUserWithKey(db, { name: who, role: 'compliance_officer' });
        keys[who] = { key: k.apiKey, id: k.user.id };
      }
      const call = async (who: string, method: 'GET' | 'POST', url: string, payload?: unknown) => {
        const r = await app.inject({ method, url: `/api/v1${url}`, headers: { authorization: `Bearer ${keys[who]!.key}` }, ...(payload !== undefined ? { payload: payload as object } : {}) });
        return { status: r.statusCode, json: r.json<Record<string, any>>() };
      };
      const blind = (await call('ann', 'POST', '/supervision/policies', { name: 'Blind conduct', severity: 'high', lexicon: ['guarantee'], pseudonymise: true })).json.policy as { id: string };
      const named = (await call('ann', 'POST', '/supervision/policies', { name: 'Named conduct', severity: 'low', lexicon: ['guarantee'] })).json.policy as { id: string };
      // Two meetings: carol speaks in both, dave in one.
      for (const [session, who] of [['m1', ['carol', 'dave']], ['m2', ['carol']]] as const) {
        await db.insertInto('recording_sessions').values({ id: session, room_id: 'desk', started_at: '2026-01-05T10:00:00Z', status: 'done', transcript_status: 'done' }).execute();
        await db
          .insertInto('transcript_segments')
          .values(who.map((w, i) => ({ session_id: session, seq: i, participant_id: w, speaker: w.toUpperCase(), start_seconds: i * 3, end_seconds: i * 3 + 2, text: 'I guarantee those returns', language: 'en' })))
          .execute();
        await evaluateRegisteredTranscript(db, session);
      }
      const items = async (who: string, policy: string) => ((await call(who, 'GET', `/review/items?policy=${policy}`)).json.items as any[]).map((i) => ({ id: i.id, session: i.session, participant: i.participant, speaker: i.speaker, url: i.playerUrl, pseudonymised: i.pseudonymised ?? false }));

      const seen = await items('ann', blind.id);
      expect(seen).toHaveLength(3);
      // No names anywhere: not as participant, speaker or in the player link.
      for (const i of seen) {
        expect(i.participant).toMatch(/^Speaker [A-Z2-9]{4}-[A-Z2-9]{4}$/);
        expect(i.speaker).toBe(i.participant);
        expect(JSON.stringify(i)).not.toMatch(/carol|dave|CAROL|DAVE/);
        expect(i.pseudonymised).toBe(true);
      }
      // Stable: carol is the same pseudonym on both sessions' items, dave another; the same for every reviewer.
      const carol = seen.filter((i) => i.session === 'm2')[0]!.participant;
      expect(seen.filter((i) => i.participant === carol).map((i) => i.session).sort()).toEqual(['m1', 'm2']);
      expect(new Set(seen.map((i) => i.participant)).size).toBe(2);
      expect((await items('ben', blind.id)).map((i) => i.participant).sort()).toEqual(seen.map((i) => i.participant).sort());
      const detail = (await call('ann', 'GET', `/review/items/${seen[0]!.id}`)).json;
      expect(JSON.stringify(detail.hitList)).not.toMatch(/carol|dave/);
      // The other policy names its speakers.
      expect((await items('ann', named.id)).map((i) => i.participant).sort()).toEqual(['carol', 'carol', 'dave']);

      // Ann reveals carol: audited; from now on ann sees carol's name on this policy, dave stays a pseudonym; ben still sees pseudonyms.
      const revealed = await call('ann', 'POST', '/review/pseudonyms/reveal', { policy: blind.id, pseudonym: carol });
      expect(revealed.json).toMatchObject({ participant: 'carol', speaker: 'CAROL', pseudonym: carol });
      const after = await items('ann', blind.id);
      expect(after.map((i) => i.participant).sort()).toEqual([seen.find((i) => i.participant !== carol)!.participant, 'carol', 'carol']);
      expect(after.find((i) => i.participant === 'carol')!.url).toContain('participant=carol');
      expect((await items('ben', blind.id)).every((i) => i.pseudonymised)).toBe(true);
      expect((await call('ann', 'POST', '/review/pseudonyms/reveal', { policy: blind.id, pseudonym: 'Speaker AAAA-AAAA' })).json.error.code).toBe('NOT_FOUND');
      expect((await call('ann', 'POST', '/review/pseudonyms/reveal', { policy: blind.id, pseudonym: 'carol' })).status).toBe(400);
      const entry = await db.selectFrom('audit_log').select(['actor_id', 'target_type', 'target_id', 'details']).where('action', '=', 'review.pseudonym.reveal').orderBy('seq').execute();
      expect(entry.map((e) => [e.actor_id, e.target_type, e.target_id])).toEqual([[keys.ann!.id, 'participant', 'carol']]);
      expect((await new AuditLog(db).verify()).ok).toBe(true);
    } finally {
      await app.close();
      await db.destroy();
    }
  });
});
