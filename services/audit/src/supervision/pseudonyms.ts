import { createHmac, randomBytes } from 'node:crypto';
import type { Db } from '../../../../db/database.ts';
import { VerbatimError } from '../../../lib/errors.ts';
import type { Principal } from '../auth.ts';
import { playerUrl, ReviewQueue, type ReviewItem } from './review-queue.ts';

/**
 * Pseudonymised review (issue 13 item 6): under a policy with `pseudonymise`, reviewers see each
 * speaker as a pseudonym ("Speaker 7KQ2-M4XA") that is the same on every item of the policy, so
 * a pattern across items stays visible without naming anyone. A reviewer reveals one speaker
 * at a time (audited by the route); from then on that reviewer sees the name on that policy's
 * items. Pseudonyms are an HMAC of policy and participant under a key kept in the database.
 */

const KEY_NAME = 'review-pseudonyms-v1';
const ALPHABET = 'ABCDEFGHJKLMNPQRSTUVWXYZ23456789';

export function pseudonymOf(key: Buffer, policyId: string, participantId: string): string {
  const mac = createHmac('sha256', key).update(`${policyId}\u0000${participantId}`).digest();
  let s = '';
  for (let i = 0; i < 8; i++) s += ALPHABET[mac[i]! % ALPHABET.length];
  return `Speaker ${s.slice(0, 4)}-${s.slice(4)}`;
}

export class Pseudonyms {
  private key: Promise<Buffer> | undefined;

  constructor(private readonly db: Db) {}

  /** The key, made on first use by whichever process gets there first (insert-or-keep), then read back. */
  private keyOnce(): Promise<Buffer> {
    this.key ??= (async () => {
      await this.db.insertInto('pseudonym_keys').values({ name: KEY_NAME, key: randomBytes(32).toString('base64') }).onConflict((oc) => oc.column('name').doNothing()).execute();
      const row = await this.db.selectFrom('pseudonym_keys').select('key').where('name', '=', KEY_NAME).executeTakeFirstOrThrow();
      return Buffer.from(row.key, 'base64');
    })().catch((err: unknown) => {
      this.key = undefined;
      throw err;
    });
    return this.key;
  }

  /** Policies (id → whether the version of each item pseudonymises) among these items. */
  private async pseudonymising(items: readonly Pick<ReviewItem, 'policy'>[]): Promise<Set<string>> {
    const keys = [...new Set(items.map((i) => `${i.policy.id}\u0000${i.policy.version}`))];
    if (keys.length === 0) return new Set();
    const rows = await this.db
      .selectFrom('supervision_policy_versions')
      .select(['policy_id', 'version', 'definition'])
      .where('policy_id', 'in', [...new Set(items.map((i) => i.policy.id))])
      .execute();
    const on = new Set<string>();
    for (const r of rows) {
      const def = (typeof r.definition === 'string' ? JSON.parse(r.definition) : r.definition) as { pseudonymise?: boolean };
      if (def.pseudonymise) on.add(`${r.policy_id}\u0000${r.version}`);
    }
    return new Set(keys.filter((k) => on.has(k)));
  }

  /** The items as this reviewer may see them: speakers of pseudonymising policies replaced unless revealed to them. */
  async apply<T extends ReviewItem & { hitList?: { participant: string; playerUrl: string; start: number }[] }>(p: Principal, items: T[]): Promise<(T & { pseudonymised?: boolean })[]> {
    const on = await this.pseudonymising(items);
    if (on.size === 0) return items;
    const key = await this.keyOnce();
    const revealed = new Set(
      (await this.db.selectFrom('pseudonym_reveals').select(['policy_id', 'participant_id']).where('revealed_to', '=', p.userId).execute()).map((r) => `${r.policy_id}\u0000${r.participant_id}`),
    );
    return items.map((item) => {
      if (!item.participant || !on.has(`${item.policy.id}\u0000${item.policy.version}`) || revealed.has(`${item.policy.id}\u0000${item.participant}`)) return item;
      const alias = pseudonymOf(key, item.policy.id, item.participant);
      // The player link would name the participant: it opens the moment without a speaker filter.
      return {
        ...item,
        participant: alias,
        speaker: alias,
        playerUrl: playerUrl(item.session, item.start, null),
        pseudonymised: true,
        ...(item.hitList ? { hitList: item.hitList.map((h) => ({ ...h, participant: alias, playerUrl: playerUrl(item.session, h.start, null) })) } : {}),
      };
    });
  }

  /** Reveals the speaker behind a pseudonym of a policy to this reviewer (the caller audits it). */
  async reveal(p: Principal, policyId: string, pseudonym: string): Promise<{ policy: string; pseudonym: string; participant: string; speaker: string }> {
    if (!(await new ReviewQueue(this.db).visiblePolicies(p)).ids.includes(policyId)) {
      throw new VerbatimError('REVIEW_OUT_OF_SCOPE', `you are not a reviewer of policy ${policyId}`, { hint: "The policy's reviewers list names who may review (and reveal) its items.", details: { policy: policyId } });
    }
    const key = await this.keyOnce();
    const speakers = await this.db.selectFrom('review_items').select(['participant_id', 'speaker']).distinct().where('policy_id', '=', policyId).where('participant_id', '!=', '').execute();
    const hit = speakers.find((s) => pseudonymOf(key, policyId, s.participant_id) === pseudonym);
    if (!hit) throw new VerbatimError('NOT_FOUND', `no speaker ${pseudonym} in the items of policy ${policyId}`, { hint: 'Take the pseudonym from a review item of that policy.', details: { policy: policyId, pseudonym } });
    await this.db
      .insertInto('pseudonym_reveals')
      .values({ policy_id: policyId, participant_id: hit.participant_id, revealed_to: p.userId })
      .onConflict((oc) => oc.columns(['policy_id', 'participant_id', 'revealed_to']).doNothing())
      .execute();
    return { policy: policyId, pseudonym, participant: hit.participant_id, speaker: hit.speaker };
  }
}
