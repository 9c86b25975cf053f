import type { Db } from '../../../db/database.ts';

/**
 * The consent log as evidence: every grant and decline the SFU reported, queryable by
 * participant, session or room, and exportable as CSV (what a compliance officer hands a
 * regulator or a data subject) from the API (GET /api/v1/consent?format=csv) and the CLI.
 */
export interface ConsentEventView {
  id: number;
  room: string;
  session: string | null;
  participant: string;
  participantName: string | null;
  policy: string;
  decision: string;
  method: string;
  clientInfo: unknown;
  at: string;
}

export interface ConsentQuery {
  participant?: string | undefined;
  session?: string | undefined;
  room?: string | undefined;
  /** Cursor: events with a larger id. */
  after?: number | undefined;
  limit?: number | undefined;
}

export async function listConsentEvents(db: Db, q: ConsentQuery): Promise<ConsentEventView[]> {
  let sel = db.selectFrom('consent_events').selectAll().where('id', '>', q.after ?? 0);
  if (q.participant) sel = sel.where('participant_id', '=', q.participant);
  if (q.session) sel = sel.where('session_id', '=', q.session);
  if (q.room) sel = sel.where('room_id', '=', q.room);
  const rows = await sel.orderBy('id').limit(q.limit ?? 500).execute();
  return rows.map((r) => ({
    id: Number(r.id),
    room: r.room_id,
    session: r.session_id,
    participant: r.participant_id,
    participantName: r.participant_name,
    policy: r.policy,
    decision: r.decision,
    method: r.method,
    clientInfo: typeof r.client_info === 'string' ? (JSON.parse(r.client_info) as unknown) : r.client_info,
    at: new Date(r.created_at).toISOString(),
  }));
}

const CSV_COLUMNS = ['id', 'at', 'room', 'session', 'participant', 'participantName', 'policy', 'decision', 'method', 'clientInfo'] as const;

/** RFC 4180; cells that a spreadsheet would run as a formula are prefixed with ' (CSV injection). */
export function consentCsv(events: readonly ConsentEventView[]): string {
  const cell = (v: unknown): string => {
    let s = v === null || v === undefined ? '' : typeof v === 'string' ? v : typeof v === 'number' ? String(v) : JSON.stringify(v);
    if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
    return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  const lines = [CSV_COLUMNS.join(','), ...events.map((e) => CSV_COLUMNS.map((c) => cell(e[c])).join(','))];
  return `${lines.join('\r\n')}\r\n`;
}
