import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { sql, type Kysely, type Transaction } from 'kysely';
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
 * whoever bypasses that is caught by verify(), and a truncated tail by the signed
 * checkpoints exported outside the database.
 */

type Db = Kysely<Database>;

export const GENESIS_HASH = '0'.repeat(64);
/** pg_advisory_xact_lock keys: one for appends, one for checkpoints ("VRBT" 0xA0D1 / 0xC4E0). */
const APPEND_LOCK = 0x5652_4254_a0d1;
const CHECKPOINT_LOCK = 0x5652_4254_c4e0;
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

export interface Checkpoint {
  seq: number;
  head_hash: string;
  /** ISO-8601 UTC with milliseconds, exactly as signed. */
  at: string;
  /** hex HMAC-SHA256(secret, `${seq}:${head_hash}:${at}`). */
  signature: string;
  storage_key?: string | null;
}

export type BreakReason = 'hash-mismatch' | 'prev-hash-mismatch' | 'seq-gap' | 'checkpoint-mismatch' | 'checkpoint-signature-invalid';

export interface BrokenEntry {
  /** The first entry (or, for checkpoint reasons, the checkpoint's seq) that does not check out. */
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
  /** Checkpoints compared against the chain. */
  checkpoints: number;
  /** Whether checkpoint signatures were checked (a signer was given). */
  signaturesVerified: boolean;
  firstBroken?: BrokenEntry;
}

export interface VerifyOptions {
  /** Checkpoints to hold the chain to (from the database, exported files, or both). */
  checkpoints?: readonly Checkpoint[];
  /** Checks checkpoint signatures; a checkpoint with a bad signature is reported and not trusted. */
  signer?: CheckpointSigner;
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

export function checkpointMessage(cp: Pick<Checkpoint, 'seq' | 'head_hash' | 'at'>): string {
  return `${cp.seq}:${cp.head_hash}:${cp.at}`;
}

// ---------------------------------------------------------------- signing and export

export interface CheckpointSigner {
  sign(message: string): string;
  verify(message: string, signature: string): boolean;
}

/** HMAC-SHA256 with a secret kept outside the database. */
export class HmacCheckpointSigner implements CheckpointSigner {
  private readonly key: Buffer;
  constructor(secret: string | Buffer) {
    this.key = typeof secret === 'string' ? Buffer.from(secret, 'utf8') : secret;
    if (this.key.length < 16) {
      throw new VerbatimError('CONFIG_INVALID', 'audit checkpoint secret must be at least 16 bytes', { hint: 'Set AUDIT_CHECKPOINT_SECRET to a long random value and keep it out of the database.' });
    }
  }
  sign(message: string): string {
    return createHmac('sha256', this.key).update(message).digest('hex');
  }
  verify(message: string, signature: string): boolean {
    const expected = Buffer.from(this.sign(message), 'hex');
    const given = /^[0-9a-f]{64}$/i.test(signature) ? Buffer.from(signature, 'hex') : Buffer.alloc(0);
    return given.length === expected.length && timingSafeEqual(given, expected);
  }
}

/** Where checkpoints are exported, outside the database (a truncation there cannot reach them). */
export interface CheckpointSink {
  /** Stores the checkpoint; returns the key it is stored under. */
  put(cp: Checkpoint): Promise<string>;
  list(): Promise<Checkpoint[]>;
}

const CHECKPOINT_FILE = /^audit-checkpoint-(\d{12})\.json$/;

/** One JSON file per checkpoint in a local directory (mount a WORM / remote volume here). */
export class LocalDirectoryCheckpointSink implements CheckpointSink {
  constructor(readonly dir: string) {}

  async put(cp: Checkpoint): Promise<string> {
    mkdirSync(this.dir, { recursive: true });
    const key = `audit-checkpoint-${String(cp.seq).padStart(12, '0')}.json`;
    const file = path.join(this.dir, key);
    const tmp = `${file}.${process.pid}.tmp`;
    const body = { version: 1, algorithm: 'HMAC-SHA256', seq: cp.seq, head_hash: cp.head_hash, at: cp.at, signature: cp.signature };
    writeFileSync(tmp, `${JSON.stringify(body, null, 2)}\n`, { mode: 0o444 });
    const fd = openSync(tmp, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
    try {
      const dfd = openSync(this.dir, 'r');
      try {
        fsyncSync(dfd);
      } finally {
        closeSync(dfd);
      }
    } catch {
      // directory fsync is best effort (not supported everywhere)
    }
    return key;
  }

  async list(): Promise<Checkpoint[]> {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const out: Checkpoint[] = [];
    for (const name of names.filter((n) => CHECKPOINT_FILE.test(n)).sort()) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(readFileSync(path.join(this.dir, name), 'utf8'));
      } catch (err) {
        throw new VerbatimError('CHECKPOINT_MISMATCH', `audit checkpoint file ${name} is unreadable: ${(err as Error).message}`, { hint: `Restore ${path.join(this.dir, name)} from its backup copy.` });
      }
      const p = parsed as Record<string, unknown>;
      if (typeof p.seq !== 'number' || !Number.isSafeInteger(p.seq) || typeof p.head_hash !== 'string' || typeof p.at !== 'string' || typeof p.signature !== 'string') {
        throw new VerbatimError('CHECKPOINT_MISMATCH', `audit checkpoint file ${name} is malformed`, { hint: `Restore ${path.join(this.dir, name)} from its backup copy.` });
      }
      out.push({ seq: p.seq, head_hash: p.head_hash, at: p.at, signature: p.signature, storage_key: name });
    }
    return out;
  }
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
  private readonly sink: CheckpointSink | undefined;

  constructor(
    private readonly db: Db,
    opts: { checkpointSink?: CheckpointSink | undefined } = {},
  ) {
    this.sink = opts.checkpointSink;
  }

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

  /** Checkpoints recorded in the database, in seq order. */
  async listCheckpoints(): Promise<Checkpoint[]> {
    const rows = await this.db
      .selectFrom('audit_checkpoints')
      .select(['seq', 'head_hash', 'signature', 'storage_key', sql<string | null>`to_char(at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`.as('at')])
      .orderBy('seq')
      .execute();
    return rows.map((r) => ({ seq: Number(r.seq), head_hash: r.head_hash ?? '', at: r.at === null ? '' : msIso(r.at), signature: r.signature ?? '', storage_key: r.storage_key }));
  }

  /**
   * Recomputes the whole chain in seq order (pages of 1000) and names the first entry
   * that does not check out; with checkpoints, also that each checkpointed seq still has
   * the signed hash and that the chain is not shorter than the latest checkpoint.
   */
  async verify(opts: VerifyOptions = {}): Promise<VerifyResult> {
    const signer = opts.signer;
    const problems: BrokenEntry[] = [];
    const trusted = new Map<number, Checkpoint[]>();
    for (const cp of opts.checkpoints ?? []) {
      if (signer && !signer.verify(checkpointMessage(cp), cp.signature)) {
        problems.push({ seq: cp.seq, reason: 'checkpoint-signature-invalid', message: `checkpoint at seq ${cp.seq}${cp.storage_key ? ` (${cp.storage_key})` : ''} has an invalid signature: forged or altered` });
        continue;
      }
      if (!Number.isSafeInteger(cp.seq) || cp.seq < 1 || !/^[0-9a-f]{64}$/.test(cp.head_hash)) {
        problems.push({ seq: cp.seq, reason: 'checkpoint-mismatch', message: `checkpoint at seq ${cp.seq} is malformed` });
        continue;
      }
      trusted.set(cp.seq, [...(trusted.get(cp.seq) ?? []), cp]);
    }
    const walk = await this.walk({ seq: 0, hash: GENESIS_HASH }, undefined, opts.pageSize ?? PAGE_SIZE, (row) => {
      for (const cp of trusted.get(row.seq) ?? []) {
        if (cp.head_hash !== row.hash) {
          return { seq: cp.seq, reason: 'checkpoint-mismatch', message: `entry ${row.seq} has hash ${row.hash} but the checkpoint signed at ${cp.at} says ${cp.head_hash}: the chain was rewritten` };
        }
      }
      return undefined;
    });
    if (walk.broken) problems.unshift(walk.broken);
    else {
      const beyond = [...trusted.keys()].filter((s) => s > walk.last.seq).sort((a, b) => a - b)[0];
      if (beyond !== undefined) {
        const cp = trusted.get(beyond)![0]!;
        problems.push({ seq: cp.seq, reason: 'checkpoint-mismatch', message: `the chain ends at seq ${walk.last.seq} but a checkpoint signed at ${cp.at} covers seq ${cp.seq}: entries were removed from the tail` });
      }
    }
    // The first problem by seq; on a tie the chain's own break comes first.
    const firstBroken = problems.sort((a, b) => a.seq - b.seq)[0];
    const head = walk.broken ? await this.head() : walk.last.seq === 0 ? null : walk.last;
    return {
      ok: firstBroken === undefined,
      checked: walk.checked,
      head,
      checkpoints: [...trusted.values()].reduce((n, l) => n + l.length, 0),
      signaturesVerified: signer !== undefined,
      ...(firstBroken ? { firstBroken } : {}),
    };
  }

  /** verify(), throwing AUDIT_CHAIN_BROKEN or CHECKPOINT_MISMATCH on the first break. */
  async assertIntact(opts: VerifyOptions = {}): Promise<VerifyResult> {
    const res = await this.verify(opts);
    if (res.firstBroken) throw breakError(res.firstBroken);
    return res;
  }

  /**
   * Signs the current head, exports it through the sink, and records it. The entries
   * since the last valid checkpoint are verified first: a broken chain is never signed.
   * Returns null for an empty log; an existing checkpoint of the same head is returned as is.
   */
  async checkpoint(signer: CheckpointSigner): Promise<Checkpoint | null> {
    const head = await this.head();
    if (!head) return null;
    const signed = [...(await this.listCheckpoints()), ...((await this.sink?.list()) ?? [])]
      .filter((cp) => signer.verify(checkpointMessage(cp), cp.signature))
      .sort((a, b) => a.seq - b.seq);
    const beyond = signed.find((cp) => cp.seq > head.seq);
    if (beyond) {
      throw breakError({ seq: beyond.seq, reason: 'checkpoint-mismatch', message: `the chain ends at seq ${head.seq} but a checkpoint signed at ${beyond.at} covers seq ${beyond.seq}: entries were removed from the tail` });
    }
    const previous = signed.at(-1);
    let start: AuditHead = { seq: 0, hash: GENESIS_HASH };
    if (previous) {
      const row = await this.db.selectFrom('audit_log').select(['seq', 'hash']).where('seq', '=', previous.seq).executeTakeFirst();
      if (!row || row.hash !== previous.head_hash) {
        throw breakError({ seq: previous.seq, reason: 'checkpoint-mismatch', message: `entry ${previous.seq} no longer has the hash its checkpoint signed` });
      }
      start = { seq: previous.seq, hash: previous.head_hash };
      if (previous.seq === head.seq) return previous;
    }
    const walk = await this.walk(start, head.seq, PAGE_SIZE);
    if (walk.broken) throw breakError(walk.broken);

    return this.db.transaction().execute(async (trx) => {
      await sql`select pg_advisory_xact_lock(${sql.lit(CHECKPOINT_LOCK)})`.execute(trx);
      const existing = await trx.selectFrom('audit_checkpoints').select('seq').where('seq', '=', head.seq).executeTakeFirst();
      if (existing) return (await this.listCheckpointsIn(trx)).find((c) => c.seq === head.seq)!;
      const at = new Date().toISOString();
      const cp: Checkpoint = { seq: head.seq, head_hash: head.hash, at, signature: signer.sign(checkpointMessage({ seq: head.seq, head_hash: head.hash, at })) };
      cp.storage_key = this.sink ? await this.sink.put(cp) : null;
      await trx.insertInto('audit_checkpoints').values({ seq: cp.seq, head_hash: cp.head_hash, at: cp.at, signature: cp.signature, storage_key: cp.storage_key }).execute();
      return cp;
    });
  }

  private async listCheckpointsIn(trx: Transaction<Database>): Promise<Checkpoint[]> {
    return new AuditLog(trx).listCheckpoints();
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
    extra?: (row: AuditHead) => BrokenEntry | undefined,
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
        const cur = { seq: row.seq, hash: row.hash };
        const bad = extra?.(cur);
        if (bad) return { checked, last, broken: bad };
        last = cur;
        checked++;
      }
      if (rows.length < pageSize) return { checked, last };
    }
  }
}

/** Runs checkpoint() every intervalMs (the timer does not keep the process alive). */
export function startCheckpointExporter(
  log: AuditLog,
  signer: CheckpointSigner,
  opts: { intervalMs: number; onCheckpoint?: (cp: Checkpoint) => void; onError?: (err: unknown) => void },
): { runNow(): Promise<Checkpoint | null>; stop(): Promise<void> } {
  let running: Promise<Checkpoint | null> | undefined;
  const runNow = (): Promise<Checkpoint | null> => {
    running ??= log
      .checkpoint(signer)
      .then((cp) => {
        if (cp) opts.onCheckpoint?.(cp);
        return cp;
      })
      .finally(() => {
        running = undefined;
      });
    return running;
  };
  const timer = setInterval(() => {
    runNow().catch((err: unknown) => opts.onError?.(err));
  }, opts.intervalMs);
  timer.unref();
  return {
    runNow,
    async stop() {
      clearInterval(timer);
      await running?.catch(() => {});
    },
  };
}

function breakError(b: BrokenEntry): VerbatimError {
  const checkpoint = b.reason === 'checkpoint-mismatch' || b.reason === 'checkpoint-signature-invalid';
  return new VerbatimError(checkpoint ? 'CHECKPOINT_MISMATCH' : 'AUDIT_CHAIN_BROKEN', `audit trail broken at seq ${b.seq} (${b.reason}): ${b.message}`, {
    hint: 'The audit trail was tampered with outside Verbatim. Preserve the database and the exported checkpoints as evidence and restore from backup; `verbatim audit verify` names the entry.',
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
