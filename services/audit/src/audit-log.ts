import { createHash } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import type { AuditActorType, Database } from '../../../db/schema.ts';
import type { AuditEntryInput, AuditSink } from '../../lib/audit-sink.ts';
import { VerbatimError } from '../../lib/errors.ts';

/**
 * The hash-chained audit trail. Every entry carries the hash of the one before it:
 *
 *   hash = SHA-256_hex(prev_hash + canonicalJson({seq, at, actor_type, actor_id, action,
 *                                                  target_type, target_id, details, client_address}))
 *
 * with prev_hash of entry 1 = 64 zeros, canonical JSON = keys sorted recursively, no
 * whitespace, and `at` the ISO-8601 UTC string with milliseconds. Appends are serialized
 * by a transaction-scoped advisory lock, so concurrent writers (threads, processes, hosts)
 * never fork the chain. The table refuses UPDATE/DELETE/TRUNCATE (trigger, migration 0004);
 * whoever bypasses that is caught by verify(), and a truncated tail or a chain rewritten with
 * recomputed hashes by the signed checkpoints outside the database (audit-checkpoints.ts).
 */

type Db = Kysely<Database>;

export const GENESIS_HASH = '0'.repeat(64);
/** pg_advisory_xact_lock key of appends ("VRBT" 0xA0D1; checkpoints take 0xC4E0). */
const APPEND_LOCK = 0x5652_4254_a0d1;
const PAGE_SIZE = 1000;
const MAX_DETAILS_BYTES = 256 * 1024;
const ACTOR_TYPES = ['user', 'api_key', 'service', 'anonymous'] as const satisfies readonly AuditActorType[];
/** `at` exactly as hashed, read back independent of the driver's timestamp parsing (µs kept: a µs edit must show). */
const AT_SQL = sql<string>`to_char(at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

export type { AuditEntryInput } from '../../lib/audit-sink.ts';

/** An entry as hashed and stored. */
export interface AuditEntry {
  seq: number;
  at: string;
  actor_type: AuditActorType | null;
  actor_id: string | null;
  action: string;
  target_type: string | null;
  target_id: string | null;
  details: Record<string, unknown>;
  client_address: string | null;
}

export interface AuditRecord extends AuditEntry {
  prev_hash: string;
  hash: string;
}

export interface AuditHead {
  seq: number;
  hash: string;
}

export type BreakReason = 'hash-mismatch' | 'prev-hash-mismatch' | 'seq-gap';

export interface BrokenEntry {
  /** The first entry that does not check out. */
  seq: number;
  reason: BreakReason;
  message: string;
}

export interface VerifyResult {
  ok: boolean;
  /** Entries that checked out, from seq 1, before the first break. */
  checked: number;
  /** The chain's last entry as read (null: empty). */
  head: AuditHead | null;
  firstBroken?: BrokenEntry;
}

export interface VerifyOptions {
  pageSize?: number;
}

// ---------------------------------------------------------------- hashing

/** Canonical JSON: keys sorted recursively (UTF-16 code unit order), no whitespace. */
export function canonicalJson(value: unknown): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new VerbatimError('BAD_REQUEST', `audit entry holds a non-finite number (${value})`);
      return JSON.stringify(value);
    case 'object': {
      if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
      const obj = value as Record<string, unknown>;
      const keys = Object.keys(obj)
        .filter((k) => obj[k] !== undefined)
        .sort();
      return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
    }
    default:
      throw new VerbatimError('BAD_REQUEST', `audit entry holds a ${typeof value}, which JSON cannot carry`);
  }
}

export function entryHash(prevHash: string, entry: AuditEntry): string {
  const body: AuditEntry = {
    seq: entry.seq,
    at: entry.at,
    actor_type: entry.actor_type,
    actor_id: entry.actor_id,
    action: entry.action,
    target_type: entry.target_type,
    target_id: entry.target_id,
    details: entry.details,
    client_address: entry.client_address,
  };
  return createHash('sha256').update(prevHash).update(canonicalJson(body)).digest('hex');
}

// ---------------------------------------------------------------- the log

interface RawRow {
  seq: number | string;
  at: string;
  actor_type: AuditActorType | null;
  actor_id: string | null;
  action: string;
  target_type: string | null;
  target_id: string | null;
  details: Record<string, unknown> | string;
  client_address: string | null;
  prev_hash: string;
  hash: string;
}

export class AuditLog implements AuditSink {
  constructor(private readonly db: Db) {}

  /** Appends one entry at the head of the chain. */
  async append(input: AuditEntryInput): Promise<{ seq: number; hash: string; at: string }> {
    const partial = normaliseEntry(input);
    return this.db.transaction().execute(async (trx) => {
      await sql`select pg_advisory_xact_lock(${sql.lit(APPEND_LOCK)})`.execute(trx);
      const head = await headOf(trx);
      const entry: AuditEntry = { ...partial, seq: (head?.seq ?? 0) + 1 };
      const prevHash = head?.hash ?? GENESIS_HASH;
      const hash = entryHash(prevHash, entry);
      await trx
        .insertInto('audit_log')
        .values({
          seq: entry.seq,
          at: entry.at,
          actor_type: entry.actor_type,
          actor_id: entry.actor_id,
          action: entry.action,
          target_type: entry.target_type,
          target_id: entry.target_id,
          details: JSON.stringify(entry.details),
          client_address: entry.client_address,
          prev_hash: prevHash,
          hash,
        })
        .execute();
      return { seq: entry.seq, hash, at: entry.at };
    });
  }

  async head(): Promise<AuditHead | null> {
    return headOf(this.db);
  }

  /** Entries in seq order (from afterSeq, exclusive), as stored. */
  async entries(opts: { afterSeq?: number; limit?: number } = {}): Promise<AuditRecord[]> {
    return (await this.page(opts.afterSeq ?? 0, opts.limit ?? PAGE_SIZE)).map(toRecord);
  }

  /** The stored hashes of these entries (those that exist), in seq order. */
  async hashesAt(seqs: readonly number[]): Promise<AuditHead[]> {
    if (seqs.length === 0) return [];
    const rows = await this.db.selectFrom('audit_log').select(['seq', 'hash']).where('seq', 'in', [...seqs]).orderBy('seq').execute();
    return rows.map((r) => ({ seq: Number(r.seq), hash: r.hash }));
  }

  /**
   * Recomputes the whole chain in seq order (pages of 1000) and names the first entry that does
   * not check out. The chain alone cannot show a truncated tail or a chain rewritten with
   * recomputed hashes: verifyAuditTrail (audit-verify.ts) holds it to the signed checkpoints.
   */
  async verify(opts: VerifyOptions = {}): Promise<VerifyResult> {
    const walk = await this.walk({ seq: 0, hash: GENESIS_HASH }, undefined, opts.pageSize ?? PAGE_SIZE);
    const head = walk.broken ? await this.head() : walk.last.seq === 0 ? null : walk.last;
    return { ok: walk.broken === undefined, checked: walk.checked, head, ...(walk.broken ? { firstBroken: walk.broken } : {}) };
  }

  /** verify(), throwing AUDIT_CHAIN_BROKEN on the first break. */
  async assertIntact(opts: VerifyOptions = {}): Promise<VerifyResult> {
    const res = await this.verify(opts);
    if (res.firstBroken) throw breakError(res.firstBroken);
    return res;
  }

  /** Verifies the entries after `start` (trusted, e.g. a checkpoint) up to untilSeq. */
  async verifyRange(start: AuditHead, untilSeq: number): Promise<{ checked: number; last: AuditHead; broken?: BrokenEntry }> {
    return this.walk(start, untilSeq, PAGE_SIZE);
  }

  private async page(afterSeq: number, limit: number, untilSeq?: number): Promise<RawRow[]> {
    let q = this.db
      .selectFrom('audit_log')
      .select(['seq', 'actor_type', 'actor_id', 'action', 'target_type', 'target_id', 'details', 'client_address', 'prev_hash', 'hash', AT_SQL.as('at')])
      .where('seq', '>', afterSeq);
    if (untilSeq !== undefined) q = q.where('seq', '<=', untilSeq);
    return (await q.orderBy('seq').limit(limit).execute());
  }

  /** Walks the chain from `start` (exclusive) in pages; stops at the first break. */
  private async walk(
    start: AuditHead,
    untilSeq: number | undefined,
    pageSize: number,
  ): Promise<{ checked: number; last: AuditHead; broken?: BrokenEntry }> {
    let last = start;
    let checked = 0;
    for (;;) {
      const rows = await this.page(last.seq, pageSize, untilSeq);
      for (const raw of rows) {
        const row = toRecord(raw);
        if (row.seq !== last.seq + 1) {
          return { checked, last, broken: { seq: row.seq, reason: 'seq-gap', message: `entry ${row.seq} follows entry ${last.seq}: ${row.seq > last.seq + 1 ? `entries ${last.seq + 1}..${row.seq - 1} are missing` : 'sequence out of order'}` } };
        }
        if (row.prev_hash !== last.hash) {
          return { checked, last, broken: { seq: row.seq, reason: 'prev-hash-mismatch', message: `entry ${row.seq} links to ${row.prev_hash} but entry ${last.seq} hashes to ${last.hash}` } };
        }
        const computed = entryHash(row.prev_hash, row);
        if (computed !== row.hash) {
          return { checked, last, broken: { seq: row.seq, reason: 'hash-mismatch', message: `entry ${row.seq} was altered: its content hashes to ${computed}, stored hash ${row.hash}` } };
        }
        last = { seq: row.seq, hash: row.hash };
        checked++;
      }
      if (rows.length < pageSize) return { checked, last };
    }
  }
}

function breakError(b: BrokenEntry): VerbatimError {
  return new VerbatimError('AUDIT_CHAIN_BROKEN', `audit trail broken at seq ${b.seq} (${b.reason}): ${b.message}`, {
    hint: 'The audit trail was tampered with outside Verbatim. Preserve the database and the checkpoints as evidence and restore from backup; `verbatim audit verify` names the entry.',
    details: b,
  });
}

async function headOf(db: Kysely<Database>): Promise<AuditHead | null> {
  const row = await db.selectFrom('audit_log').select(['seq', 'hash']).orderBy('seq', 'desc').limit(1).executeTakeFirst();
  return row ? { seq: Number(row.seq), hash: row.hash } : null;
}

function toRecord(raw: RawRow): AuditRecord {
  return {
    seq: Number(raw.seq),
    at: msIso(raw.at),
    actor_type: raw.actor_type,
    actor_id: raw.actor_id,
    action: raw.action,
    target_type: raw.target_type,
    target_id: raw.target_id,
    details: typeof raw.details === 'string' ? (JSON.parse(raw.details) as Record<string, unknown>) : raw.details,
    client_address: raw.client_address,
    prev_hash: raw.prev_hash,
    hash: raw.hash,
  };
}

/** '2024-01-02T03:04:05.678000Z' → '2024-01-02T03:04:05.678Z'; sub-millisecond digits are kept (they were never hashed). */
function msIso(us: string): string {
  return /\.\d{3}000Z$/.test(us) ? `${us.slice(0, -4)}Z` : us;
}

// eslint-disable-next-line no-control-regex -- NUL is exactly what it refuses
const BAD_TEXT = /[\u0000]|\p{Cs}/u;

function text(name: string, v: unknown, required: boolean): string | null {
  if (v === undefined || v === null) {
    if (required) throw new VerbatimError('BAD_REQUEST', `audit entry needs ${name}`);
    return null;
  }
  if (typeof v !== 'string' || (required && v.length === 0) || v.length > 4096 || BAD_TEXT.test(v)) {
    throw new VerbatimError('BAD_REQUEST', `audit entry ${name} must be ${required ? 'a non-empty' : 'a'} string of at most 4096 characters without NUL or lone surrogates`);
  }
  return v;
}

function checkJsonStrings(v: unknown): void {
  if (typeof v === 'string') {
    if (BAD_TEXT.test(v)) throw new VerbatimError('BAD_REQUEST', 'audit entry details hold a NUL character or a lone surrogate, which the database cannot store');
  } else if (Array.isArray(v)) v.forEach(checkJsonStrings);
  else if (v !== null && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      checkJsonStrings(k);
      checkJsonStrings(x);
    }
  }
}

function normaliseEntry(input: AuditEntryInput): Omit<AuditEntry, 'seq'> {
  const at = input.at ?? new Date();
  if (!(at instanceof Date) || Number.isNaN(at.getTime()) || at.getUTCFullYear() < 1000 || at.getUTCFullYear() > 9999) {
    throw new VerbatimError('BAD_REQUEST', 'audit entry time must be a valid Date between the years 1000 and 9999');
  }
  const actorType = input.actor?.type ?? 'anonymous';
  if (!(ACTOR_TYPES as readonly string[]).includes(actorType)) {
    throw new VerbatimError('BAD_REQUEST', `audit actor type must be one of ${ACTOR_TYPES.join(', ')}`);
  }
  const raw = input.details ?? {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new VerbatimError('BAD_REQUEST', 'audit entry details must be a JSON object');
  // Through JSON once, so what is hashed is exactly what the jsonb column gives back.
  const json = JSON.stringify(raw, (_k, v: unknown) => {
    if (typeof v === 'number' && !Number.isFinite(v)) throw new VerbatimError('BAD_REQUEST', 'audit entry details hold a non-finite number');
    if (typeof v === 'bigint') throw new VerbatimError('BAD_REQUEST', 'audit entry details hold a bigint; pass it as a string');
    return v;
  });
  if (Buffer.byteLength(json) > MAX_DETAILS_BYTES) throw new VerbatimError('BAD_REQUEST', `audit entry details exceed ${MAX_DETAILS_BYTES} bytes`);
  const details = JSON.parse(json) as Record<string, unknown>;
  checkJsonStrings(details);
  return {
    at: at.toISOString(),
    actor_type: actorType,
    actor_id: text('actor id', input.actor?.id, false),
    action: text('action', input.action, true)!,
    target_type: text('target type', input.target?.type, false),
    target_id: text('target id', input.target?.id, false),
    details,
    client_address: text('client address', input.clientAddress, false),
  };
}
