import { createHash, randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import { z } from 'zod';
import type { Database, ReviewSeverity } from '../../../../db/schema.ts';
import { RoomIdSchema } from '../../../lib/contracts/room.ts';
import { storableText } from '../../../lib/contracts/storable-text.ts';
import { VerbatimError } from '../../../lib/errors.ts';
import { DETECTORS } from './detectors.ts';
import { compileLexicon, parseLexicon, type CompiledLexicon } from './lexicon.ts';
import { compilePattern } from './patterns.ts';

/**
 * Supervision policies: what to flag (lexicon, detectors, patterns), where (scope: rooms,
 * participants, identity groups; empty = everywhere), how severe, who reviews, and which share
 * of in-scope sessions is drawn for review without a hit. Every change is a new immutable
 * version; the newest version of an enabled policy is in force.
 */

export const SEVERITIES = ['low', 'medium', 'high', 'critical'] as const satisfies readonly ReviewSeverity[];

export const PolicyDefinitionSchema = z
  .object({
    name: storableText(200).refine((s) => s.trim().length > 0, 'must not be blank'),
    description: storableText(2000).optional(),
    severity: z.enum(SEVERITIES),
    lexicon: z.array(z.string().max(1000)).max(500).default([]).describe('Entries: a word, a phrase ("text me"), A NEAR/n B, or NOT <phrase> (an exclusion).'),
    detectors: z.array(z.enum(DETECTORS)).max(DETECTORS.length).default([]),
    patterns: z
      .array(z.object({ name: storableText(100), regex: z.string().max(1000), label: storableText(100).optional() }).strict())
      .max(50)
      .default([])
      .describe('Regular expressions (linear-time subset) matched against the lower-cased text.'),
    scope: z
      .object({
        rooms: z.array(RoomIdSchema).max(1000).default([]),
        participants: z.array(storableText(200)).max(1000).default([]),
        groups: z.array(storableText(200)).max(100).default([]),
      })
      .strict()
      .default({ rooms: [], participants: [], groups: [] })
      .describe('Empty lists: every room / every speaker.'),
    samplingPercent: z.number().min(0).max(100).default(0).describe('Share of in-scope sessions sent to review without a hit.'),
    samplingSeed: storableText(200).optional().describe("Seed of the draw (default: the policy's id): the same seed draws the same sessions."),
    reviewers: z.array(storableText(200)).max(200).default([]).describe('User ids who may review its items; empty: every compliance officer.'),
    pseudonymise: z.boolean().default(false).describe('Reviewers see speakers as stable pseudonyms until they reveal one (audited; POST /review/pseudonyms/reveal).'),
    enabled: z.boolean().default(true),
  })
  .strict();
export type PolicyDefinition = z.output<typeof PolicyDefinitionSchema>;
export type PolicyInput = z.input<typeof PolicyDefinitionSchema>;

export interface CompiledPolicy {
  lexicon: CompiledLexicon;
}

export interface PolicyRecord {
  id: string;
  name: string;
  version: number;
  enabled: boolean;
  severity: ReviewSeverity;
  definition: PolicyDefinition;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
}

/** A policy version as evaluation uses it. */
export interface LoadedPolicy {
  id: string;
  name: string;
  version: number;
  severity: ReviewSeverity;
  definition: PolicyDefinition;
  compiled: CompiledPolicy;
  patterns: { name: string; label: string; re: RegExp }[];
  seed: string;
}

type Db = Kysely<Database>;
const json = <T>(v: unknown): T => (typeof v === 'string' ? (JSON.parse(v) as T) : (v as T));
const iso = (d: Date | string) => new Date(d).toISOString();

/** The seeded draw: a session is sampled when hash(seed, session) as a fraction of 2^48 is under the rate. */
export function sampled(seed: string, session: string, percent: number): boolean {
  if (percent <= 0) return false;
  const h = createHash('sha256').update(`${seed}\u0000${session}`).digest();
  return h.readUIntBE(0, 6) / 2 ** 48 < percent / 100;
}

/** Validates and compiles a definition: LEXICON_INVALID / PATTERN_INVALID with positions. */
export async function compilePolicy(db: Db, def: PolicyDefinition): Promise<CompiledPolicy> {
  def.patterns.forEach((p, i) => compilePattern(p.regex, p.name, i));
  const lexicon = await compileLexicon(db, parseLexicon(def.lexicon));
  if (lexicon.rules.length === 0 && def.detectors.length === 0 && def.patterns.length === 0 && def.samplingPercent === 0) {
    throw new VerbatimError('BAD_REQUEST', 'a policy needs a lexicon entry, a detector, a pattern or a sampling rate', { hint: 'Add at least one thing to flag.', details: { field: 'lexicon' } });
  }
  return { lexicon };
}

export function loadPolicy(row: { id: string; name: string; version: number; severity: ReviewSeverity; definition: unknown; compiled: unknown }): LoadedPolicy {
  const definition = json<PolicyDefinition>(row.definition);
  return {
    id: row.id,
    name: row.name,
    version: row.version,
    severity: row.severity,
    definition,
    compiled: json<CompiledPolicy>(row.compiled),
    patterns: definition.patterns.map((p, i) => ({ name: p.name, label: p.label ?? p.name.toUpperCase(), re: compilePattern(p.regex, p.name, i) })),
    seed: definition.samplingSeed ?? row.id,
  };
}

export class SupervisionPolicies {
  constructor(private readonly db: Db) {}

  private base() {
    return this.db
      .selectFrom('supervision_policies as p')
      .innerJoin('supervision_policy_versions as v', (j) => j.onRef('v.policy_id', '=', 'p.id').onRef('v.version', '=', 'p.current_version'))
      .select(['p.id', 'p.name', 'p.current_version as version', 'p.enabled', 'p.created_by', 'p.created_at', 'p.updated_at', 'v.severity', 'v.definition', 'v.compiled']);
  }

  async list(): Promise<PolicyRecord[]> {
    return (await this.base().orderBy('p.name').execute()).map(toRecord);
  }

  async get(id: string): Promise<PolicyRecord> {
    const row = await this.base().where('p.id', '=', id).executeTakeFirst();
    if (!row) throw new VerbatimError('NOT_FOUND', `no supervision policy ${id}`, { hint: 'List them with GET /api/v1/supervision/policies.', details: { policy: id } });
    return toRecord(row);
  }

  async versions(id: string): Promise<{ version: number; severity: ReviewSeverity; definition: PolicyDefinition; createdBy: string; createdAt: string }[]> {
    await this.get(id);
    const rows = await this.db.selectFrom('supervision_policy_versions').selectAll().where('policy_id', '=', id).orderBy('version', 'desc').execute();
    return rows.map((r) => ({ version: r.version, severity: r.severity, definition: json<PolicyDefinition>(r.definition), createdBy: r.created_by, createdAt: iso(r.created_at) }));
  }

  /** Every enabled policy's current version. */
  async inForce(): Promise<LoadedPolicy[]> {
    const rows = await this.base().where('p.enabled', '=', true).orderBy('p.name').execute();
    return rows.map((r) => loadPolicy(r));
  }

  async loadVersion(id: string, version: number): Promise<LoadedPolicy> {
    const row = await this.db
      .selectFrom('supervision_policies as p')
      .innerJoin('supervision_policy_versions as v', 'v.policy_id', 'p.id')
      .select(['p.id', 'p.name', 'v.version', 'v.severity', 'v.definition', 'v.compiled'])
      .where('p.id', '=', id)
      .where('v.version', '=', version)
      .executeTakeFirst();
    if (!row) throw new VerbatimError('NOT_FOUND', `no version ${version} of supervision policy ${id}`, { hint: 'List its versions with GET /api/v1/supervision/policies/{id}/versions.' });
    return loadPolicy(row);
  }

  async create(input: PolicyDefinition, actor: string): Promise<PolicyRecord> {
    const compiled = await compilePolicy(this.db, input);
    const id = randomUUID();
    await this.db.transaction().execute(async (tx) => {
      const clash = await tx.selectFrom('supervision_policies').select('id').where('name', '=', input.name).executeTakeFirst();
      if (clash) throw new VerbatimError('CONFLICT', `a supervision policy named ${JSON.stringify(input.name)} exists`, { hint: `Change it with PUT /api/v1/supervision/policies/${clash.id} (a new version).`, details: { policy: clash.id } });
      await tx.insertInto('supervision_policies').values({ id, name: input.name, current_version: 1, enabled: input.enabled, created_by: actor }).execute();
      await tx.insertInto('supervision_policy_versions').values({ policy_id: id, version: 1, definition: JSON.stringify(input), compiled: JSON.stringify(compiled), severity: input.severity, created_by: actor }).execute();
    });
    return this.get(id);
  }

  /** A new version; returns the policy before and after. */
  async update(id: string, input: PolicyDefinition, actor: string): Promise<{ before: PolicyRecord; after: PolicyRecord }> {
    const compiled = await compilePolicy(this.db, input);
    const before = await this.get(id);
    await this.db.transaction().execute(async (tx) => {
      const clash = await tx.selectFrom('supervision_policies').select('id').where('name', '=', input.name).where('id', '<>', id).executeTakeFirst();
      if (clash) throw new VerbatimError('CONFLICT', `another supervision policy is named ${JSON.stringify(input.name)}`, { hint: 'Pick another name.', details: { policy: clash.id } });
      const cur = await tx.selectFrom('supervision_policies').select('current_version').where('id', '=', id).forUpdate().executeTakeFirstOrThrow();
      const version = cur.current_version + 1;
      await tx.insertInto('supervision_policy_versions').values({ policy_id: id, version, definition: JSON.stringify(input), compiled: JSON.stringify(compiled), severity: input.severity, created_by: actor }).execute();
      await tx.updateTable('supervision_policies').set({ name: input.name, current_version: version, enabled: input.enabled, updated_at: new Date() }).where('id', '=', id).execute();
    });
    return { before, after: await this.get(id) };
  }
}

function toRecord(r: { id: string; name: string; version: number; enabled: boolean; created_by: string; created_at: Date; updated_at: Date; severity: ReviewSeverity; definition: unknown }): PolicyRecord {
  return { id: r.id, name: r.name, version: r.version, enabled: r.enabled, severity: r.severity, definition: json<PolicyDefinition>(r.definition), createdBy: r.created_by, createdAt: iso(r.created_at), updatedAt: iso(r.updated_at) };
}
