import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../../db/database.ts';
import { testBackends, type TestBackend } from '../../../../testing/databases.ts';
import { TEST_REDIS_URL } from '../../../../testing/transcode-worker.ts';
import { createLogger } from '../../../lib/logger.ts';
import { LocalArtifactStorage } from '../../../lib/storage/artifact-storage.ts';
import { buildAuditApp } from '../http/server.ts';
import { createUserWithKey } from '../key-lifecycle.ts';
import { detect, ibanValid, luhnValid } from './detectors.ts';
import { evaluateRegisteredTranscript } from './evaluate.ts';
import { parseLexiconEntry } from './lexicon.ts';
import { compilePattern, matchPattern } from './patterns.ts';
import { sampled } from './policies.ts';
import { STARTER_FINANCIAL_LEXICON } from './starter-lexicon.ts';

const logger = createLogger({ level: 'silent' });

describe('detectors', () => {
  it('finds card numbers written and spoken (Luhn), and not Luhn-invalid ones', () => {
    const spoken = 'My card is four one one one, one one one one, one one one one, one one one one, okay?';
    expect(detect(spoken).map((h) => [h.detector, h.value, spoken.slice(h.start, h.end)])).toEqual([['card', '4111111111111111', 'four one one one, one one one one, one one one one, one one one one']]);
    expect(detect('card 5555 5555 5555 4444 expires')[0]).toMatchObject({ detector: 'card', value: '5555555555554444', matched: '5555 5555 5555 4444' });
    expect(detect('number 4111 1111 1111 1112').filter((h) => h.detector === 'card')).toEqual([]);
    expect(detect('four double one, triple one, one one one one one one one one one one')[0]).toMatchObject({ detector: 'card', value: '4111111111111111' });
    expect(detect('five five five five, five five five five, five five five five, four four four four')[0]).toMatchObject({ detector: 'card', value: '5555555555554444' });
    expect(luhnValid('79927398713')).toBe(true);
  });
  it('finds IBANs (mod-97), SSNs, e-mail and phone numbers; "oh" alone is not a zero', () => {
    expect(ibanValid('GB82 WEST 1234 5698 7654 32')).toBe(true);
    expect(ibanValid('GB82 WEST 1234 5698 7654 33')).toBe(false);
    expect(detect('pay to DE89 3704 0044 0532 0130 00 today').map((h) => [h.detector, h.value])).toEqual([['iban', 'DE89370400440532013000']]);
    expect(detect('my social is 123-45-6789').map((h) => h.detector)).toEqual(['ssn']);
    expect(detect('my social is one two three four five six seven eight nine').map((h) => h.detector)).toEqual(['ssn']);
    expect(detect('666-45-6789 and 000-12-3456').filter((h) => h.detector === 'ssn')).toEqual([]);
    expect(detect('write to john dot smith at example dot com please').map((h) => h.value)).toEqual(['john.smith@example.com']);
    expect(detect('or a.b@bank.co.uk').map((h) => h.value)).toEqual(['a.b@bank.co.uk']);
    expect(detect('call me on 415 555 2671').map((h) => [h.detector, h.value])).toEqual([['phone', '4155552671']]);
    expect(detect('ring +44 20 7946 0958').map((h) => [h.detector, h.matched])).toEqual([['phone', '+44 20 7946 0958']]);
    expect(detect('oh, I see. five people came')).toEqual([]);
  });
});

describe('lexicon and pattern syntax', () => {
  it('parses words, phrases, NEAR and NOT; refuses bad entries with their position', () => {
    expect(parseLexiconEntry('guarantee', 0)).toMatchObject({ kind: 'phrase', text: 'guarantee' });
    expect(parseLexiconEntry('"text me"', 0)).toMatchObject({ kind: 'phrase', text: 'text me' });
    expect(parseLexiconEntry('call NEAR/5 cell', 0)).toMatchObject({ kind: 'near', a: 'call', b: 'cell', within: 5 });
    expect(parseLexiconEntry('NOT "no guarantee"', 0)).toMatchObject({ kind: 'exclude', text: 'no guarantee' });
    const bad = (s: string) => {
      try {
        parseLexiconEntry(s, 3);
      } catch (e) {
        return (e as { code: string; details: { entry: number; position: number } }).code + '@' + (e as { details: { position: number } }).details.position;
      }
      return 'ok';
    };
    expect(bad('call NEAR/x cell')).toBe('LEXICON_INVALID@10');
    expect(bad('call NEAR/99 cell')).toBe('LEXICON_INVALID@10');
    expect(bad('"text me')).toBe('LEXICON_INVALID@0');
    expect(bad('buy & sell')).toBe('LEXICON_INVALID@4');
    expect(bad('call NEAR/5')).toBe('LEXICON_INVALID@11');
  });
  it('runs patterns on the linear-time engine; refuses what it cannot run, with the position', () => {
    const re = compilePattern('(a+)+b', 'nested', 0);
    // Catastrophic for a backtracking engine; linear here (no timing assertion: it simply returns).
    expect(matchPattern(re, 'a'.repeat(100_000))).toEqual([]);
    expect(matchPattern(compilePattern('acct[- ]?\\d{4}', 'acct', 0), 'ACCT-1234 and acct 99')).toEqual([{ start: 0, end: 9, matched: 'ACCT-1234' }]);
    const code = (src: string) => {
      try {
        compilePattern(src, 'p', 0);
        return 'ok';
      } catch (e) {
        return `${(e as { code: string }).code}@${(e as { details: { position: number } }).details.position}`;
      }
    };
    expect(code('(a)\\1')).toBe('PATTERN_INVALID@4');
    expect(code('ab(c')).toBe('PATTERN_INVALID@4');
    expect(code('ab[')).toBe('PATTERN_INVALID@3');
    expect(code('x*')).toBe('PATTERN_INVALID@0');
  });
  it('draws the sample from hash(seed, session): the same seed draws the same sessions', () => {
    const sessions = Array.from({ length: 400 }, (_, i) => `s${i}`);
    const a = sessions.filter((s) => sampled('seed-1', s, 25));
    expect(sessions.filter((s) => sampled('seed-1', s, 25))).toEqual(a);
    expect(a.length).toBeGreaterThan(60);
    expect(a.length).toBeLessThan(140);
    expect(sessions.filter((s) => sampled('seed-2', s, 25))).not.toEqual(a);
    expect(sessions.filter((s) => sampled('seed-1', s, 0))).toEqual([]);
  });
});

const CARD_SPOKEN = 'Sure, my card number is four one one one one one one one one one one one one one one one.';
const OFF_CHANNEL = 'Better text me on my personal phone about it.';

const backends = await testBackends();

describe.each(backends)('supervision on $name', (backend: TestBackend) => {
  let db: Db;
  let app: FastifyInstance;
  let dir: string | undefined;
  const keys: Record<string, { key: string; id: string }> = {};
  const auth = (who: string) => ({ authorization: `Bearer ${keys[who]!.key}` });
  const call = async (who: string, method: 'GET' | 'POST' | 'PUT', url: string, payload?: unknown) => {
    const r = await app.inject({ method, url: `/api/v1${url}`, headers: auth(who), ...(payload !== undefined ? { payload: payload as object } : {}) });
    return { status: r.statusCode, json: r.headers['content-type']?.toString().startsWith('application/json') ? r.json<Record<string, any>>() : undefined, body: r.body };
  };
  let started = 0;
  /** A session's transcript as the finalize job registers it (one transaction), then its hook. */
  const register = async (session: string, room: string, segments: { who: string; text: string; start: number }[]) => {
    await db.insertInto('recording_sessions').values({ id: session, room_id: room, started_at: new Date(Date.UTC(2026, 0, 5, 10, 0, started++)), status: 'processing' }).execute();
    await db.transaction().execute(async (tx) => {
      await tx.deleteFrom('transcript_segments').where('session_id', '=', session).execute();
      await tx
        .insertInto('transcript_segments')
        .values(segments.map((s, i) => ({ session_id: session, seq: i, participant_id: s.who, speaker: s.who.toUpperCase(), start_seconds: s.start, end_seconds: s.start + 2, text: s.text, language: 'en' })))
        .execute();
      await tx.updateTable('recording_sessions').set({ status: 'done', transcript_status: 'done' }).where('id', '=', session).execute();
    });
    return evaluateRegisteredTranscript(db, session);
  };

  beforeAll(async () => {
    if (!backend.available) return;
    db = await backend.open();
    for (const [who, role] of [['officer', 'compliance_officer'], ['officer2', 'compliance_officer'], ['admin', 'admin'], ['auditor', 'auditor']] as const) {
      const k = await createUserWithKey(db, { name: who, role });
      keys[who] = { key: k.apiKey, id: k.user.id };
    }
    dir = mkdtempSync(path.join(os.tmpdir(), 'verbatim-supervision-'));
    // Storage and an exports directory: an escalation can start an export.
    app = buildAuditApp({ db, logger, failedAuthPerMinute: 0, redisUrl: TEST_REDIS_URL, queuePrefix: `t${randomBytes(4).toString('hex')}`, storage: new LocalArtifactStorage(path.join(dir, 'store')), exportsDir: path.join(dir, 'exports') });
    await app.ready();
  }, 120_000);
  afterAll(async () => {
    await app?.close();
    await db?.destroy();
    await backend.cleanup();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it.skipIf(!backend.available)('flags a spoken card number and an off-channel phrase in a registered transcript; backfills and re-runs without duplicates', async () => {
    // A transcript stored before the policy exists: the policy's background run finds it.
    await register('before-1', 'desk', [{ who: 'carol', text: 'We can guarantee those returns, call me on my cell tonight.', start: 3 }]);

    const bad = await call('officer', 'POST', '/supervision/policies', { name: 'bad', severity: 'high', lexicon: ['guarantee', 'call NEAR/x cell'] });
    expect(bad.status).toBe(400);
    expect(bad.json!.error).toMatchObject({ code: 'LEXICON_INVALID', details: { entry: 1, position: 10 } });
    const badRe = await call('admin', 'POST', '/supervision/policies', { name: 'bad', severity: 'high', patterns: [{ name: 'x', regex: '(\\w+)\\s\\1' }] });
    expect(badRe.json!.error).toMatchObject({ code: 'PATTERN_INVALID', details: { position: 8 } });
    expect((await call('auditor', 'POST', '/supervision/policies', { name: 'x', severity: 'low', lexicon: ['x'] })).status).toBe(403);

    const created = await call('officer', 'POST', '/supervision/policies', {
      name: 'Conduct',
      severity: 'high',
      lexicon: ['guarantee', 'text me', 'my personal phone', 'call NEAR/5 cell', 'NOT "no guarantee"'],
      detectors: ['card', 'ssn'],
    });
    expect(created.status).toBe(201);
    const policy = created.json!.policy as { id: string; version: number };
    const run = created.json!.run as { id: string };
    expect(run.id).toBeTruthy();
    await expect.poll(async () => (await call('officer', 'GET', `/supervision/runs/${run.id}`)).json!.status, { timeout: 30_000, interval: 100 }).toBe('done');
    const runDone = (await call('officer', 'GET', `/supervision/runs/${run.id}`)).json!;
    expect(runDone.progress).toMatchObject({ sessionsDone: 1, sessionsTotal: 1, pct: 100 });
    const before = (await call('officer', 'GET', '/review/items?session=before-1')).json!;
    expect(before.items).toHaveLength(1);
    expect(before.items[0].preview.matched).toMatch(/guarantee/i);

    // The registration path: segments registered, then the policies in force run over them.
    const r = await register('meet-1', 'desk', [
      { who: 'alice', text: 'Good morning, shall we begin?', start: 0 },
      { who: 'bob', text: CARD_SPOKEN, start: 4.5 },
      { who: 'alice', text: OFF_CHANNEL, start: 9 },
      { who: 'alice', text: 'There is no guarantee of returns.', start: 12 },
    ]);
    expect(r.items).toBe(2);
    const list = (await call('officer', 'GET', '/review/items?session=meet-1')).json!;
    expect(list.items.map((i: any) => [i.participant, i.policy.version, i.hits]).sort()).toEqual([
      ['alice', 1, 2],
      ['bob', 1, 1],
    ]);
    const bob = list.items.find((i: any) => i.participant === 'bob');
    expect(bob.playerUrl).toBe('/console/sessions/meet-1?t=4.5&participant=bob');
    const bobItem = (await call('officer', 'GET', `/review/items/${bob.id}`)).json!;
    expect(bobItem.hitList).toEqual([expect.objectContaining({ rule: 'detector:card', label: 'CARD NUMBER', start: 4.5, end: 6.5, matched: 'four one one one one one one one one one one one one one one one' })]);
    expect(CARD_SPOKEN.slice(bobItem.hitList[0].charStart, bobItem.hitList[0].charEnd)).toBe(bobItem.hitList[0].matched);
    const alice = (await call('officer', 'GET', `/review/items/${list.items.find((i: any) => i.participant === 'alice').id}`)).json!;
    expect(alice.hitList.map((h: any) => [h.rule, h.matched])).toEqual([
      ['lexicon:text me', 'text me'],
      ['lexicon:my personal phone', 'my personal phone'],
    ]);

    // Running again (hook and backfill) files nothing twice.
    await register('meet-1b', 'desk', [{ who: 'dan', text: 'nothing here', start: 0 }]);
    expect((await evaluateRegisteredTranscript(db, 'meet-1')).items).toBe(2);
    const rerun = await call('officer', 'POST', `/supervision/policies/${policy.id}/runs`);
    expect(rerun.status).toBe(202);
    await expect.poll(async () => (await call('officer', 'GET', `/supervision/runs/${rerun.json!.id}`)).json!.status, { timeout: 30_000, interval: 100 }).toBe('done');
    const all = await db.selectFrom('review_items').select(['session_id', 'participant_id', 'hit_count']).orderBy('session_id').orderBy('participant_id').execute();
    expect(all).toEqual([
      { session_id: 'before-1', participant_id: 'carol', hit_count: 2 },
      { session_id: 'meet-1', participant_id: 'alice', hit_count: 2 },
      { session_id: 'meet-1', participant_id: 'bob', hit_count: 1 },
    ]);
    expect(Number((await db.selectFrom('review_hits').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n)).toBe(5);

    // A transcript registered again replaces its segments: nothing is counted as removed, nothing doubled.
    await db.transaction().execute(async (tx) => {
      const rows = await tx.selectFrom('transcript_segments').select(['session_id', 'seq', 'participant_id', 'speaker', 'start_seconds', 'end_seconds', 'text', 'language']).where('session_id', '=', 'meet-1').execute();
      await tx.deleteFrom('transcript_segments').where('session_id', '=', 'meet-1').execute();
      await tx.insertInto('transcript_segments').values(rows).execute();
    });
    await evaluateRegisteredTranscript(db, 'meet-1');
    expect((await call('officer', 'GET', `/review/items/${bob.id}`)).json!).toMatchObject({ hits: 1, removedHits: 0 });
    expect((await call('officer', 'GET', `/review/items/${alice.id}`)).json!).toMatchObject({ hits: 2, removedHits: 0 });

    // A change is a new version, audited with before and after; its run files version-2 items.
    const upd = await call('admin', 'PUT', `/supervision/policies/${policy.id}`, { name: 'Conduct', severity: 'critical', lexicon: ['whatsapp'], detectors: ['card'] });
    expect(upd.status).toBe(200);
    expect(upd.json!.policy).toMatchObject({ version: 2, severity: 'critical' });
    const entry = await db.selectFrom('audit_log').select(['details']).where('action', '=', 'supervision_policy.update').executeTakeFirstOrThrow();
    const details: any = typeof entry.details === 'string' ? JSON.parse(entry.details) : entry.details;
    expect(details.before).toMatchObject({ version: 1, severity: 'high' });
    expect(details.after).toMatchObject({ version: 2, severity: 'critical' });
    await expect.poll(async () => (await call('officer', 'GET', `/supervision/runs/${upd.json!.run.id}`)).json!.status, { timeout: 30_000, interval: 100 }).toBe('done');
    expect((await call('officer', 'GET', `/review/items?policy=${policy.id}&severity=critical`)).json!.items.map((i: any) => i.participant)).toEqual(['bob']);

    // An erased segment takes its hits with it; the item records that.
    await db.deleteFrom('transcript_segments').where('session_id', '=', 'meet-1').where('participant_id', '=', 'alice').execute();
    const aliceAfter = (await call('officer', 'GET', `/review/items/${alice.id}`)).json!;
    expect(aliceAfter).toMatchObject({ hits: 0, removedHits: 2, hitList: [] });
    expect(aliceAfter.hitsRemovedAt).toBeTruthy();
  });

  it.skipIf(!backend.available)('decisions: reason required, reviewer scope, closed items, escalation with a hold; audited; in the evidence report (JSON and CSV)', async () => {
    const p = (await call('officer', 'POST', '/supervision/policies', { name: 'Scoped', severity: 'medium', lexicon: ['zanzibar'], reviewers: [keys.officer!.id], scope: { rooms: ['trading'], participants: [], groups: [] } })).json!.policy;
    await register('trade-1', 'trading', [{ who: 'eve', text: 'The Zanzibar deal closes Friday.', start: 1 }]);
    await register('trade-2', 'trading', [{ who: 'eve', text: 'Zanzibar again.', start: 2 }]);
    await register('other-1', 'desk', [{ who: 'eve', text: 'Zanzibar elsewhere.', start: 2 }]);
    const items = ((await call('officer', 'GET', `/review/items?policy=${p.id}`)).json!.items as any[]).sort((x, y) => x.session.localeCompare(y.session));
    expect(items.map((i) => i.session)).toEqual(['trade-1', 'trade-2']);
    const [a, b] = items;

    // Not a reviewer of this policy: neither listed nor decidable.
    expect((await call('officer2', 'GET', `/review/items?policy=${p.id}`)).json!.items).toEqual([]);
    const out = await call('officer2', 'POST', `/review/items/${a.id}/decision`, { disposition: 'no_issue', reason: 'fine' });
    expect(out.status).toBe(403);
    expect(out.json!.error.code).toBe('REVIEW_OUT_OF_SCOPE');
    const noReason = await call('officer', 'POST', `/review/items/${a.id}/decision`, { disposition: 'violation' });
    expect(noReason.status).toBe(400);
    expect(noReason.json!.error.code).toBe('REASON_REQUIRED');

    expect((await call('officer', 'POST', `/review/items/${a.id}/assign`, { assignee: 'me' })).json!.assignee).toBe(keys.officer!.id);
    expect((await call('officer', 'GET', `/review/items?reviewer=me`)).json!.items.map((i: any) => i.id)).toEqual([a.id]);
    expect((await call('officer', 'POST', `/review/items/${a.id}/notes`, { body: 'Deal name is confidential.' })).status).toBe(201);
    const decided = await call('officer', 'POST', `/review/items/${a.id}/decision`, { disposition: 'violation', reason: 'MNPI discussed on a recorded line' });
    expect(decided.status).toBe(200);
    expect(decided.json!.item).toMatchObject({ state: 'closed', disposition: 'violation', decidedBy: keys.officer!.id });
    const again = await call('officer', 'POST', `/review/items/${a.id}/decision`, { disposition: 'no_issue', reason: 'changed my mind' });
    expect(again.status).toBe(409);
    expect(again.json!.error.code).toBe('REVIEW_CLOSED');

    const esc = await call('officer', 'POST', `/review/items/${b.id}/decision`, { disposition: 'escalated', reason: 'needs legal', hold: { caseId: 'CASE-7' }, export: true });
    expect(esc.status).toBe(200);
    expect(esc.json!.item.state).toBe('escalated');
    await expect.poll(async () => (await call('officer', 'GET', `/exports/${esc.json!.exportId}`)).json!.status, { timeout: 30_000, interval: 100 }).toBe('done');
    expect((await call('officer', 'GET', `/exports/${esc.json!.exportId}`)).json!.sessionIds).toEqual(['trade-2']);
    expect(await db.selectFrom('review_decisions').select(['disposition', 'hold_id', 'export_id']).where('item_id', '=', b.id).execute()).toEqual([{ disposition: 'escalated', hold_id: esc.json!.holdId, export_id: esc.json!.exportId }]);
    const noEscalation = await call('officer', 'POST', `/review/items/${b.id}/decision`, { disposition: 'no_issue', reason: 'x', hold: { caseId: 'C' } });
    expect(noEscalation.json!.error).toMatchObject({ code: 'BAD_REQUEST', details: { field: 'hold' } });
    const hold = await db.selectFrom('legal_holds').selectAll().where('id', '=', esc.json!.holdId).executeTakeFirstOrThrow();
    expect(hold).toMatchObject({ case_id: 'CASE-7', scope_type: 'session', scope_value: 'trade-2' });
    expect((await call('officer', 'POST', `/review/items/${b.id}/decision`, { disposition: 'no_issue', reason: 'legal cleared it' })).json!.item.state).toBe('closed');

    // Every view and decision is in the audit chain.
    const trail = await db.selectFrom('audit_log').select(['action', 'target_id', 'actor_id']).where('target_id', '=', a.id).orderBy('seq').execute();
    expect(trail.map((t) => t.action)).toEqual(['review.item.assign', 'review.item.note', 'review.item.decide']);
    // Refusals are audited too (the route table's refusal entries), with their codes.
    const refusals = await db.selectFrom('audit_log').select(['action', 'details']).where('action', 'in', ['auth.denied', 'request.rejected']).execute();
    const codes = refusals.map((r) => ((typeof r.details === 'string' ? JSON.parse(r.details) : r.details) as { code: string }).code);
    expect(codes).toEqual(expect.arrayContaining(['REVIEW_OUT_OF_SCOPE', 'REASON_REQUIRED', 'REVIEW_CLOSED']));
    expect((await call('officer', 'GET', `/review/items/${a.id}`)).status).toBe(200);
    expect(await db.selectFrom('audit_log').select('action').where('target_id', '=', a.id).where('action', '=', 'review.item.view').execute()).toHaveLength(1);

    const report = await call('auditor', 'GET', '/review/report?from=2020-01-01&to=2100-01-01');
    expect(report.status).toBe(200);
    const scoped = report.json!.policies.find((x: any) => x.policy === p.id);
    expect(scoped).toMatchObject({ name: 'Scoped', created: 2, sampled: 0, reviewed: 3, byDisposition: { violation: 1, escalated: 1, no_issue: 1, false_positive: 0 } });
    expect(scoped.reviewers).toEqual([expect.objectContaining({ reviewer: keys.officer!.id, reviewed: 3 })]);
    expect(scoped.medianSecondsToDecision).toBeGreaterThanOrEqual(0);
    const csv = await call('officer', 'GET', '/review/report?from=2020-01-01&to=2100-01-01&format=csv');
    expect(csv.status).toBe(200);
    expect(csv.body.split('\r\n')[0]).toMatch(/^row,policy_id,policy,reviewer,created,sampled,reviewed,no_issue,false_positive,escalated,violation,median_seconds_to_decision/);
    expect(csv.body).toContain(`policy,${p.id},Scoped,,2,0,3,1,0,1,1,`);
    expect((await call('officer', 'GET', '/review/report?from=2026-02-01&to=2026-01-01')).json!.error.code).toBe('BAD_REQUEST');
  });

  it.skipIf(!backend.available)('samples in-scope sessions by hash(seed, session): the same seed draws the same sessions', async () => {
    const sessions = Array.from({ length: 12 }, (_, i) => `sample-${String(i).padStart(2, '0')}`);
    for (const s of sessions) await register(s, 'sampled-room', [{ who: 'zed', text: 'routine update', start: 0 }]);
    const mk = async (name: string, seed: string) =>
      (await call('officer', 'POST', '/supervision/policies', { name, severity: 'low', samplingPercent: 40, samplingSeed: seed, scope: { rooms: ['sampled-room'], participants: [], groups: [] } })).json!;
    const drawn = async (created: any) => {
      await expect.poll(async () => (await call('officer', 'GET', `/supervision/runs/${created.run.id}`)).json!.status, { timeout: 30_000, interval: 100 }).toBe('done');
      return ((await call('officer', 'GET', `/review/items?policy=${created.policy.id}&kind=sample&pageSize=200`)).json!.items as any[]).map((i) => i.session).sort();
    };
    const one = await drawn(await mk('Sample A', 'q1-2026'));
    const two = await drawn(await mk('Sample B', 'q1-2026'));
    expect(one).toEqual(sessions.filter((s) => sampled('q1-2026', s, 40)));
    expect(two).toEqual(one);
    expect(one.length).toBeGreaterThan(0);
    const report = (await call('officer', 'GET', '/review/report?from=2020-01-01&to=2100-01-01')).json!;
    expect(report.sample.filter((s: any) => s.room === 'sampled-room').length).toBe(one.length * 2);
  });

  it.skipIf(!backend.available)('scope by identity group: only its members are flagged', async () => {
    expect((await call('admin', 'PUT', '/supervision/groups/traders', { description: 'desk traders', members: ['ivy', 'jon'] })).status).toBe(200);
    const p = (await call('officer', 'POST', '/supervision/policies', { name: 'Traders only', severity: 'high', lexicon: ['kilimanjaro'], scope: { rooms: [], participants: [], groups: ['traders'] } })).json!.policy;
    await register('group-1', 'floor', [
      { who: 'ivy', text: 'Kilimanjaro is the code name.', start: 0 },
      { who: 'kim', text: 'Kilimanjaro? Never heard of it.', start: 3 },
    ]);
    const items = (await call('officer', 'GET', `/review/items?policy=${p.id}`)).json!.items as any[];
    expect(items.map((i) => i.participant)).toEqual(['ivy']);
    const entry = await db.selectFrom('audit_log').select('details').where('action', '=', 'identity_group.put').executeTakeFirstOrThrow();
    expect(typeof entry.details === 'string' ? JSON.parse(entry.details) : entry.details).toMatchObject({ before: [], after: ['ivy', 'jon'] });
  });

  it.skipIf(!backend.available)('the starter lexicon compiles and flags off-channel talk', async () => {
    const created = await call('admin', 'POST', '/supervision/policies', STARTER_FINANCIAL_LEXICON);
    expect(created.status).toBe(201);
    await register('starter-1', 'desk', [
      { who: 'fay', text: 'Just WhatsApp me, and delete this chat afterwards.', start: 0 },
      { who: 'gus', text: 'Past performance is not guaranteed.', start: 3 },
    ]);
    const items = (await call('officer', 'GET', `/review/items?policy=${created.json!.policy.id}&session=starter-1`)).json!.items as any[];
    expect(items.map((i) => i.participant)).toEqual(['fay']);
  });
});
