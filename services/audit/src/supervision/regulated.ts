import type { Db } from '../../../../db/database.ts';
import { VerbatimError } from '../../../lib/errors.ts';

/**
 * The regulated list (issue 13 item 4): identities, and groups of identities, that the SFU
 * records in every room they join. The SFU reads the same tables at each join
 * (services/sfu/src/regulated-attendance.ts); here they are managed, each change returned
 * with its before and after for the audit entry.
 */

export interface RegulatedSubject {
  kind: 'identity' | 'group';
  value: string;
  reason: string;
  addedBy: string;
  addedAt: string;
  /** A group's members (identities); absent for an identity. */
  members?: string[];
}

export class RegulatedList {
  constructor(private readonly db: Db) {}

  async list(): Promise<RegulatedSubject[]> {
    const rows = await this.db.selectFrom('regulated_subjects').selectAll().orderBy('kind').orderBy('value').execute();
    const members = await this.db.selectFrom('identity_group_members').selectAll().orderBy('participant_id').execute();
    return rows.map((r) => ({
      kind: r.kind,
      value: r.value,
      reason: r.reason,
      addedBy: r.added_by,
      addedAt: new Date(r.added_at).toISOString(),
      ...(r.kind === 'group' ? { members: members.filter((m) => m.group_name === r.value).map((m) => m.participant_id) } : {}),
    }));
  }

  async add(s: { kind: 'identity' | 'group'; value: string; reason: string; addedBy: string }): Promise<RegulatedSubject> {
    const inserted = await this.db
      .insertInto('regulated_subjects')
      .values({ kind: s.kind, value: s.value, reason: s.reason, added_by: s.addedBy })
      .onConflict((oc) => oc.columns(['kind', 'value']).doNothing())
      .returning('value')
      .executeTakeFirst();
    if (!inserted) {
      throw new VerbatimError('CONFLICT', `${s.kind} ${s.value} is already regulated`, { hint: 'List the regulated subjects with GET /api/v1/capture/regulated.', details: { kind: s.kind, value: s.value } });
    }
    return (await this.find(s.kind, s.value))!;
  }

  async remove(kind: 'identity' | 'group', value: string): Promise<RegulatedSubject> {
    const before = await this.find(kind, value);
    if (!before) throw new VerbatimError('NOT_FOUND', `${kind} ${value} is not regulated`, { hint: 'List the regulated subjects with GET /api/v1/capture/regulated.', details: { kind, value } });
    await this.db.deleteFrom('regulated_subjects').where('kind', '=', kind).where('value', '=', value).execute();
    return before;
  }

  private async find(kind: 'identity' | 'group', value: string): Promise<RegulatedSubject | undefined> {
    return (await this.list()).find((s) => s.kind === kind && s.value === value);
  }
}
