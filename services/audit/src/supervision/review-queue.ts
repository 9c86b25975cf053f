import { sql, type Kysely, type Selectable } from 'kysely';
import type { Database, ReviewDisposition, ReviewItemsTable, ReviewSeverity, ReviewState } from '../../../../db/schema.ts';
import { VerbatimError } from '../../../lib/errors.ts';
import type { Principal } from '../auth.ts';

/**
 * The review queue: items listed with filters, opened, assigned, annotated and decided. A
 * reviewer sees the items of the policies that name them as reviewer (or name no reviewers);
 * an item assigned to someone else is theirs to decide. no_issue, false_positive and violation
 * close an item; escalated keeps it open (state 'escalated') for a final decision.
 */

type Db = Kysely<Database>;

export const DISPOSITIONS = ['no_issue', 'false_positive', 'escalated', 'violation'] as const satisfies readonly ReviewDisposition[];

export interface ItemFilters {
  policy?: string | undefined;
  severity?: ReviewSeverity | undefined;
  state?: ReviewState | undefined;
  /** A user id, 'me' or 'unassigned'. */
  reviewer?: string | undefined;
  room?: string | undefined;
  session?: string | undefined;
  kind?: 'hit' | 'sample' | undefined;
  /** Spoken at or after / before (ISO instant or date). */
  from?: string | undefined;
  to?: string | undefined;
  page?: number | undefined;
  pageSize?: number | undefined;
}

export interface ReviewItem {
  id: string;
  policy: { id: string; name: string; version: number };
  severity: ReviewSeverity;
  kind: 'hit' | 'sample';
  session: string;
  room: string;
  participant: string | null;
  speaker: string | null;
  start: number;
  end: number;
  spokenAt: string;
  hits: number;
  removedHits: number;
  hitsRemovedAt: string | null;
  state: ReviewState;
  assignee: string | null;
  disposition: ReviewDisposition | null;
  reason: string | null;
  decidedBy: string | null;
  decidedAt: string | null;
  createdAt: string;
  /** The session page at the item's moment (the player starts at t). */
  playerUrl: string;
  /** First hit's words and snippet (list view). */
  preview?: { rule: string; matched: string; snippet: string } | null;
}

const iso = (d: Date | string | null) => (d === null ? null : new Date(d).toISOString());
const dayEnd = (s: string) => (/^\d{4}-\d{2}-\d{2}$/.test(s) ? new Date(Date.parse(`${s}T00:00:00Z`) + 86_400_000 - 1) : new Date(s));

export function playerUrl(session: string, start: number, participant: string | null): string {
  const q = new URLSearchParams({ t: String(start) });
  if (participant) q.set('participant', participant);
  return `/console/sessions/${encodeURIComponent(session)}?${q.toString()}`;
}

export class ReviewQueue {
  constructor(private readonly db: Db) {}

  /** The policy ids whose items this reviewer may see (every policy, or those naming them). */
  async visiblePolicies(p: Principal): Promise<{ ids: string[]; names: Map<string, string> }> {
    // Only names and reviewers: the queue asks on every page, and definitions can be large.
    const rows = await this.db
      .selectFrom('supervision_policies as sp')
      .innerJoin('supervision_policy_versions as v', (j) => j.onRef('v.policy_id', '=', 'sp.id').onRef('v.version', '=', 'sp.current_version'))
      .select(['sp.id', 'sp.name', sql<string>`(v.definition -> 'reviewers')::text`.as('reviewers')])
      .execute();
    const reviewersOf = (r: { reviewers: string | null }) => (r.reviewers ? (JSON.parse(r.reviewers) as string[]) : []);
    const mine = rows.filter((r) => reviewersOf(r).length === 0 || reviewersOf(r).includes(p.userId));
    return { ids: mine.map((x) => x.id), names: new Map(rows.map((x) => [x.id, x.name])) };
  }

  async list(p: Principal, f: ItemFilters): Promise<{ items: ReviewItem[]; total: number; totalIsEstimate: boolean; page: number; pageSize: number }> {
    const page = f.page ?? 1;
    const pageSize = f.pageSize ?? 50;
    const { ids, names } = await this.visiblePolicies(p);
    if (ids.length === 0 || (f.policy && !ids.includes(f.policy))) return { items: [], total: 0, totalIsEstimate: false, page, pageSize };
    let q = this.db.selectFrom('review_items as i').where('i.policy_id', 'in', f.policy ? [f.policy] : ids);
    if (f.severity) q = q.where('i.severity', '=', f.severity);
    if (f.state) q = q.where('i.state', '=', f.state);
    if (f.kind) q = q.where('i.kind', '=', f.kind);
    if (f.room) q = q.where('i.room_id', '=', f.room);
    if (f.session) q = q.where('i.session_id', '=', f.session);
    if (f.reviewer === 'unassigned') q = q.where('i.assignee', 'is', null);
    else if (f.reviewer) q = q.where('i.assignee', '=', f.reviewer === 'me' ? p.userId : f.reviewer);
    if (f.from) q = q.where('i.spoken_at', '>=', new Date(f.from));
    if (f.to) q = q.where('i.spoken_at', '<=', dayEnd(f.to));
    // Counting a huge queue exactly costs more than the page: past 1,000 it is "more than 1,000".
    const CAP = 1_000;
    const [rows, count] = await Promise.all([
      q
        .selectAll('i')
        .select((eb) =>
          eb
            .selectFrom('review_hits as h')
            .select(sql<string>`json_build_object('rule', h.rule, 'matched', h.matched, 'snippet', h.snippet)::text`.as('p'))
            .whereRef('h.item_id', '=', 'i.id')
            .orderBy('h.seq')
            .orderBy('h.char_start')
            .limit(1)
            .as('preview'),
        )
        .orderBy('i.created_at', 'desc')
        .orderBy('i.id', 'desc')
        .limit(pageSize)
        .offset((page - 1) * pageSize)
        .execute(),
      this.db
        .selectFrom(q.select(sql`1`.as('one')).limit(CAP + 1).as('c'))
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .executeTakeFirstOrThrow(),
    ]);
    const n = Number(count.n);
    return {
      items: rows.map((r) => ({ ...toItem(r, names), preview: r.preview ? (JSON.parse(r.preview) as ReviewItem['preview']) : null })),
      total: Math.min(n, CAP),
      totalIsEstimate: n > CAP,
      page,
      pageSize,
    };
  }

  /** One item the reviewer may see, or NOT_FOUND / REVIEW_OUT_OF_SCOPE. */
  async item(p: Principal, id: string): Promise<ReviewItem> {
    const row = await this.db.selectFrom('review_items').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) throw new VerbatimError('NOT_FOUND', `no review item ${id}`, { hint: 'List the queue with GET /api/v1/review/items.', details: { item: id } });
    const { ids, names } = await this.visiblePolicies(p);
    if (!ids.includes(row.policy_id)) {
      throw new VerbatimError('REVIEW_OUT_OF_SCOPE', `review item ${id} belongs to a policy you are not a reviewer of`, { hint: "Ask an officer who reviews this policy, or have the policy's reviewers changed.", details: { item: id, policy: row.policy_id } });
    }
    return toItem(row, names);
  }

  async details(p: Principal, id: string) {
    const item = await this.item(p, id);
    const [hits, notes, decisions] = await Promise.all([
      this.db.selectFrom('review_hits').select(['seq', 'participant_id', 'rule', 'rule_kind', 'label', 'matched', 'snippet', 'char_start', 'char_end', 'start_seconds', 'end_seconds']).where('item_id', '=', id).orderBy('seq').orderBy('char_start').execute(),
      this.db.selectFrom('review_notes').select(['id', 'author', 'body', 'created_at']).where('item_id', '=', id).orderBy('id').execute(),
      this.db.selectFrom('review_decisions').select(['disposition', 'reason', 'decided_by', 'decided_at', 'hold_id', 'export_id']).where('item_id', '=', id).orderBy('id').execute(),
    ]);
    return {
      ...item,
      hitList: hits.map((h) => ({ seq: h.seq, participant: h.participant_id, rule: h.rule, ruleKind: h.rule_kind, label: h.label, matched: h.matched, snippet: h.snippet, charStart: h.char_start, charEnd: h.char_end, start: h.start_seconds, end: h.end_seconds, playerUrl: playerUrl(item.session, h.start_seconds, h.participant_id) })),
      notes: notes.map((n) => ({ id: n.id, author: n.author, body: n.body, at: iso(n.created_at) })),
      decisions: decisions.map((d) => ({ disposition: d.disposition, reason: d.reason, decidedBy: d.decided_by, at: iso(d.decided_at), holdId: d.hold_id, exportId: d.export_id })),
    };
  }

  /** Assigns (or with null unassigns) an item the caller may see. */
  async assign(p: Principal, id: string, assignee: string | null): Promise<{ before: string | null; item: ReviewItem }> {
    const item = await this.item(p, id);
    if (item.state === 'closed') throw closed(item);
    if (assignee) {
      const user = await this.db.selectFrom('users').select(['id', 'role', 'disabled_at']).where('id', '=', assignee).executeTakeFirst();
      if (!user || user.disabled_at || user.role !== 'compliance_officer') {
        throw new VerbatimError('BAD_REQUEST', `user ${assignee} is not an enabled compliance officer`, { hint: 'Assign to a compliance officer (GET /api/v1/users lists them).', details: { field: 'assignee' } });
      }
    }
    await this.db.updateTable('review_items').set({ assignee, assigned_at: assignee ? new Date() : null, updated_at: new Date() }).where('id', '=', id).execute();
    return { before: item.assignee, item: await this.item(p, id) };
  }

  async note(p: Principal, id: string, body: string): Promise<{ id: number }> {
    await this.item(p, id);
    const r = await this.db.insertInto('review_notes').values({ item_id: id, author: p.userId, body }).returning('id').executeTakeFirstOrThrow();
    return { id: r.id };
  }

  /**
   * Checks a decision can be made (reason, scope, state) before anything it starts (a hold, an
   * export) happens; `commit` then records it, in one transaction that re-checks the state.
   */
  async checkDecision(p: Principal, id: string, reason: string | undefined): Promise<ReviewItem> {
    if (!reason || reason.trim() === '') throw new VerbatimError('REASON_REQUIRED', 'a review decision needs its reason', { hint: 'Say why (e.g. "client was told returns are not guaranteed").', details: { field: 'reason' } });
    const item = await this.item(p, id);
    if (item.state === 'closed') throw closed(item);
    if (item.assignee && item.assignee !== p.userId) {
      throw new VerbatimError('REVIEW_OUT_OF_SCOPE', `review item ${id} is assigned to ${item.assignee}`, { hint: 'Only its assignee decides it; reassign it first.', details: { item: id, assignee: item.assignee } });
    }
    return item;
  }

  async commit(p: Principal, id: string, d: { disposition: ReviewDisposition; reason: string; holdId?: string | null; exportId?: string | null }): Promise<ReviewItem> {
    const now = new Date();
    await this.db.transaction().execute(async (tx) => {
      const state: ReviewState = d.disposition === 'escalated' ? 'escalated' : 'closed';
      const r = await tx
        .updateTable('review_items')
        .set({ state, disposition: d.disposition, reason: d.reason, decided_by: p.userId, decided_at: now, updated_at: now })
        .where('id', '=', id)
        .where('state', '<>', 'closed')
        .executeTakeFirst();
      if (Number(r.numUpdatedRows) === 0) throw closed({ id, disposition: null, decidedAt: null });
      await tx.insertInto('review_decisions').values({ item_id: id, disposition: d.disposition, reason: d.reason, decided_by: p.userId, decided_at: now, hold_id: d.holdId ?? null, export_id: d.exportId ?? null }).execute();
    });
    return this.item(p, id);
  }
}

function closed(item: { id: string; disposition: string | null; decidedAt: string | null }): VerbatimError {
  return new VerbatimError('REVIEW_CLOSED', `review item ${item.id} is already closed${item.disposition ? ` (${item.disposition}${item.decidedAt ? ` at ${item.decidedAt}` : ''})` : ''}`, {
    hint: 'A closed item keeps its decision; add a note instead.',
    details: { item: item.id, disposition: item.disposition },
  });
}

/** A review_items row as selected (the columns toItem reads). */
type ItemRow = Omit<Selectable<ReviewItemsTable>, 'assigned_at' | 'updated_at'>;

function toItem(r: ItemRow, names: Map<string, string>): ReviewItem {
  const participant = r.participant_id || null;
  return {
    id: r.id,
    policy: { id: r.policy_id, name: names.get(r.policy_id) ?? r.policy_id, version: r.policy_version },
    severity: r.severity,
    kind: r.kind,
    session: r.session_id,
    room: r.room_id,
    participant,
    speaker: r.speaker || null,
    start: r.start_seconds,
    end: r.end_seconds,
    spokenAt: iso(r.spoken_at)!,
    hits: r.hit_count,
    removedHits: r.removed_hits,
    hitsRemovedAt: iso(r.hits_removed_at),
    state: r.state,
    assignee: r.assignee,
    disposition: r.disposition,
    reason: r.reason,
    decidedBy: r.decided_by,
    decidedAt: iso(r.decided_at),
    createdAt: iso(r.created_at)!,
    playerUrl: playerUrl(r.session_id, r.start_seconds, participant),
  };
}
