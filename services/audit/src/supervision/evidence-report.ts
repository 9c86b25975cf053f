import { sql, type Kysely } from 'kysely';
import type { Database } from '../../../../db/schema.ts';

/**
 * The review evidence report (FINRA 3110-style supervision evidence) over [from, to]: per policy
 * and per reviewer, items created, decisions made, by disposition, the median time from an
 * item's creation to its decision, and the sessions the random sample drew.
 */

type Db = Kysely<Database>;

export interface ReportCounts {
  created: number;
  sampled: number;
  reviewed: number;
  byDisposition: { no_issue: number; false_positive: number; escalated: number; violation: number };
  medianSecondsToDecision: number | null;
}

export interface EvidenceReport {
  from: string;
  to: string;
  generatedAt: string;
  policies: (ReportCounts & { policy: string; name: string; reviewers: (Omit<ReportCounts, 'created' | 'sampled'> & { reviewer: string })[] })[];
  sample: { policy: string; policyVersion: number; session: string; room: string; drawnAt: string; state: string; disposition: string | null }[];
}

const zero = () => ({ no_issue: 0, false_positive: 0, escalated: 0, violation: 0 });

export async function evidenceReport(db: Db, from: Date, to: Date): Promise<EvidenceReport> {
  const policies = await db.selectFrom('supervision_policies').select(['id', 'name']).orderBy('name').execute();
  const created = await db
    .selectFrom('review_items')
    .select(['policy_id', 'kind', (eb) => eb.fn.countAll<number>().as('n')])
    .where('created_at', '>=', from)
    .where('created_at', '<=', to)
    .groupBy(['policy_id', 'kind'])
    .execute();
  const decided = await sql<{ policy_id: string; decided_by: string; disposition: string; n: number; median: number | null }>`
    select i.policy_id, d.decided_by, d.disposition, count(*)::int as n,
           percentile_cont(0.5) within group (order by extract(epoch from d.decided_at - i.created_at)) as median
      from review_decisions d join review_items i on i.id = d.item_id
     where d.decided_at >= ${from} and d.decided_at <= ${to}
     group by grouping sets ((i.policy_id, d.decided_by, d.disposition), (i.policy_id, d.decided_by), (i.policy_id, d.disposition), (i.policy_id))`.execute(db);
  // grouping sets: NULL columns mark the rolled-up rows; tell them apart by which are NULL.
  const sample = await db
    .selectFrom('review_items')
    .select(['policy_id', 'policy_version', 'session_id', 'room_id', 'created_at', 'state', 'disposition'])
    .where('kind', '=', 'sample')
    .where('created_at', '>=', from)
    .where('created_at', '<=', to)
    .orderBy('policy_id')
    .orderBy('session_id')
    .execute();
  const rows = decided.rows;
  const num = (v: unknown) => (v === null || v === undefined ? null : Math.round(Number(v) * 1000) / 1000);
  return {
    from: from.toISOString(),
    to: to.toISOString(),
    generatedAt: new Date().toISOString(),
    policies: policies.map((p) => {
      const mine = rows.filter((r) => r.policy_id === p.id);
      const total = mine.find((r) => r.decided_by === null && r.disposition === null);
      const byDisposition = zero();
      for (const r of mine.filter((x) => x.decided_by === null && x.disposition !== null)) byDisposition[r.disposition as keyof typeof byDisposition] = Number(r.n);
      const reviewers = [...new Set(mine.filter((r) => r.decided_by !== null).map((r) => r.decided_by))].sort().map((reviewer) => {
        const t = mine.find((r) => r.decided_by === reviewer && r.disposition === null);
        const by = zero();
        for (const r of mine.filter((x) => x.decided_by === reviewer && x.disposition !== null)) by[r.disposition as keyof typeof by] = Number(r.n);
        return { reviewer, reviewed: Number(t?.n ?? 0), byDisposition: by, medianSecondsToDecision: num(t?.median) };
      });
      return {
        policy: p.id,
        name: p.name,
        created: Number(created.find((c) => c.policy_id === p.id && c.kind === 'hit')?.n ?? 0),
        sampled: Number(created.find((c) => c.policy_id === p.id && c.kind === 'sample')?.n ?? 0),
        reviewed: Number(total?.n ?? 0),
        byDisposition,
        medianSecondsToDecision: num(total?.median),
        reviewers,
      };
    }),
    sample: sample.map((s) => ({ policy: s.policy_id, policyVersion: s.policy_version, session: s.session_id, room: s.room_id, drawnAt: new Date(s.created_at).toISOString(), state: s.state, disposition: s.disposition })),
  };
}

const cell = (v: string | number | null | undefined) => {
  const s = v === null || v === undefined ? '' : String(v);
  // Quoted when needed; a leading = + - @ is defused so a spreadsheet does not run it.
  const safe = /^[=+\-@\t\r]/.test(s) ? `'${s}` : s;
  return /[",\n\r]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
};

/** One table: a row per policy, per policy and reviewer, and per sampled session. */
export function evidenceReportCsv(r: EvidenceReport): string {
  const head = ['row', 'policy_id', 'policy', 'reviewer', 'created', 'sampled', 'reviewed', 'no_issue', 'false_positive', 'escalated', 'violation', 'median_seconds_to_decision', 'session', 'room', 'drawn_at', 'state', 'disposition'];
  const lines = [head.join(',')];
  const names = new Map(r.policies.map((p) => [p.policy, p.name]));
  for (const p of r.policies) {
    const d = p.byDisposition;
    lines.push(['policy', p.policy, p.name, '', p.created, p.sampled, p.reviewed, d.no_issue, d.false_positive, d.escalated, d.violation, p.medianSecondsToDecision, '', '', '', '', ''].map(cell).join(','));
    for (const v of p.reviewers) {
      const b = v.byDisposition;
      lines.push(['reviewer', p.policy, p.name, v.reviewer, '', '', v.reviewed, b.no_issue, b.false_positive, b.escalated, b.violation, v.medianSecondsToDecision, '', '', '', '', ''].map(cell).join(','));
    }
  }
  for (const s of r.sample) lines.push(['sample', s.policy, names.get(s.policy) ?? '', '', '', '', '', '', '', '', '', '', s.session, s.room, s.drawnAt, s.state, s.disposition].map(cell).join(','));
  return `${lines.join('\r\n')}\r\n`;
}
