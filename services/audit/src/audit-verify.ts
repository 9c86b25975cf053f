import type { Db } from '../../../db/database.ts';
import { checkpointFileName, checkpointSeq, documentHash, parseCheckpoint, signatureValid, type CheckpointDocument, type CheckpointStore, type CheckpointVerifier } from './audit-checkpoints.ts';
import { AuditLog, type AuditHead, type BrokenEntry } from './audit-log.ts';

/**
 * Verification of the whole audit trail, as `verbatim audit verify` and POST /api/v1/audit/verify
 * run it: the hash chain recomputed, then held to every checkpoint outside the database (both
 * copies: AUDIT_CHECKPOINT_DIR and artifact storage; the database's index of them too). Each
 * finding has a stable kind:
 *
 *   entry_altered      an entry's content or link no longer hashes (edited in place)
 *   entry_missing      an entry inside the chain was deleted (a seq gap)
 *   tail_truncated     a checkpoint covers entries the chain no longer has
 *   chain_rewritten    the chain links up but differs from what a checkpoint signed (recomputed hashes)
 *   checkpoint_forged  a checkpoint copy is malformed, fails its signature, is signed by an unknown key,
 *                      differs from its other copy, or does not chain to the checkpoint before it
 *   checkpoint_missing a checkpoint copy was deleted (from the directory, storage, or the chain of checkpoints)
 */

export type FindingKind = 'entry_altered' | 'entry_missing' | 'tail_truncated' | 'chain_rewritten' | 'checkpoint_forged' | 'checkpoint_missing';

export interface Finding {
  kind: FindingKind;
  /** The entry, or the checkpoint's seq, it concerns. */
  seq: number;
  message: string;
  /** The checkpoint file it concerns. */
  checkpoint?: string;
}

export interface TrailVerifyResult {
  ok: boolean;
  /** Entries that checked out, from seq 1, before the chain's first break. */
  checked: number;
  head: AuditHead | null;
  /** Checkpoints with a valid signature the chain was compared with. */
  checkpoints: number;
  /** Whether any key was there to check signatures with. */
  signaturesVerified: boolean;
  /** The keys signatures were checked with (algorithm:key id). */
  keys: string[];
  /** Files of the first checkpoint format (no chain link) that were left out. */
  ignoredCheckpoints: number;
  findings: Finding[];
  /** The first finding by seq (what the console shows). */
  firstBroken?: { seq: number; reason: FindingKind; message: string };
}

export interface TrailVerifyOptions {
  /** Where the checkpoints are; without it only the chain itself is checked. */
  store?: CheckpointStore | undefined;
  verifiers: readonly CheckpointVerifier[];
  pageSize?: number;
}

export async function verifyAuditTrail(db: Db, opts: TrailVerifyOptions): Promise<TrailVerifyResult> {
  const log = new AuditLog(db);
  const chain = await log.verify(opts.pageSize ? { pageSize: opts.pageSize } : {});
  const findings: Finding[] = [];
  if (chain.firstBroken) findings.push(chainFinding(chain.firstBroken));
  const trusted: { name: string; doc: CheckpointDocument }[] = [];
  let ignored = 0;
  if (opts.store) {
    const { copies, indexed } = await settledCopies(db, opts.store);
    ignored = copies.ignored.length;
    const names = [...new Set([...copies.dir.keys(), ...(copies.storage?.keys() ?? []), ...indexed])].sort();
    for (const name of names) {
      const seq = checkpointSeq(name);
      const where = [
        ['directory', copies.dir.get(name)],
        ...(copies.storage ? [['storage', copies.storage.get(name)] as const] : []),
      ] as const;
      const valid: CheckpointDocument[] = [];
      for (const [place, bytes] of where) {
        if (!bytes) {
          findings.push({ kind: 'checkpoint_missing', seq, checkpoint: name, message: `checkpoint ${name} is missing from the ${place === 'directory' ? `directory ${opts.store.dir}` : 'artifact storage'} (${describePresence(name, copies, indexed)})` });
          continue;
        }
        const doc = parseCheckpoint(bytes);
        const problem = typeof doc === 'string' ? `is ${doc}` : doc.seq !== seq ? `claims seq ${doc.seq}` : !signatureValid(doc, opts.verifiers) ? signatureProblem(doc, opts.verifiers) : undefined;
        if (problem || typeof doc === 'string') findings.push({ kind: 'checkpoint_forged', seq, checkpoint: name, message: `the ${place} copy of checkpoint ${name} ${problem}` });
        else valid.push(doc);
      }
      if (valid.length === 2 && documentHash(valid[0]!) !== documentHash(valid[1]!)) {
        findings.push({ kind: 'checkpoint_forged', seq, checkpoint: name, message: `the directory and storage copies of checkpoint ${name} differ, though both are validly signed` });
      }
      if (valid[0]) trusted.push({ name, doc: valid[0] });
    }
    findings.push(...linkFindings(trusted));
    findings.push(...(await chainVsCheckpoints(log, chain.checked, trusted)));
  }
  findings.sort((a, b) => a.seq - b.seq);
  const first = findings[0];
  return {
    ok: findings.length === 0,
    checked: chain.checked,
    head: chain.head,
    checkpoints: trusted.length,
    signaturesVerified: opts.verifiers.length > 0,
    keys: opts.verifiers.map((v) => `${v.algorithm}:${v.keyId}`),
    ignoredCheckpoints: ignored,
    findings,
    ...(first ? { firstBroken: { seq: first.seq, reason: first.kind, message: first.message } } : {}),
  };
}

/**
 * The copies and the database's index, read so that a checkpoint being written while we look is not
 * taken for a deleted one. The writer puts the file, then the storage copy, then the index row: so the
 * index is read first (whatever it names is complete), and a copy newer than every indexed one that
 * lacks its other copy is re-read after a pause (it is the writer's work in progress, or it stays and
 * is reported).
 */
async function settledCopies(db: Db, store: CheckpointStore): Promise<{ copies: Awaited<ReturnType<CheckpointStore['read']>>; indexed: string[] }> {
  for (let attempt = 0; ; attempt++) {
    const rows = await db.selectFrom('audit_checkpoints').select('seq').execute();
    const copies = await store.read();
    const indexed = rows.map((r) => checkpointFileName(Number(r.seq))).filter((n) => !copies.ignored.includes(n));
    const newestIndexed = Math.max(0, ...rows.map((r) => Number(r.seq)));
    const inFlight = [...new Set([...copies.dir.keys(), ...(copies.storage?.keys() ?? [])])].some(
      (name) => checkpointSeq(name) > newestIndexed && !(copies.dir.has(name) && (!copies.storage || copies.storage.has(name))),
    );
    if (!inFlight || attempt >= 3) return { copies, indexed };
    await new Promise((r) => setTimeout(r, 500));
  }
}

function chainFinding(b: BrokenEntry): Finding {
  return { kind: b.reason === 'seq-gap' ? 'entry_missing' : 'entry_altered', seq: b.seq, message: b.message };
}

function describePresence(name: string, copies: { dir: Map<string, Buffer>; storage?: Map<string, Buffer> }, indexed: string[]): string {
  const at = [copies.dir.has(name) && 'the directory', copies.storage?.has(name) && 'storage', indexed.includes(name) && "the database's index"].filter(Boolean);
  return at.length ? `it is still in ${at.join(' and ')}` : 'it is named only by the checkpoint after it';
}

function signatureProblem(doc: CheckpointDocument, verifiers: readonly CheckpointVerifier[]): string {
  const key = verifiers.find((v) => v.algorithm === doc.algorithm && v.keyId === doc.key_id);
  if (key) return `has a signature that does not verify with ${doc.algorithm} key ${doc.key_id}: forged or altered`;
  const known = verifiers.map((v) => `${v.algorithm}:${v.keyId}`).join(', ') || 'none given';
  return `is signed by ${doc.algorithm} key ${doc.key_id}, which is not a trusted key (${known})`;
}

/** Each checkpoint names the one before it: a gap in that chain is a deleted checkpoint. */
function linkFindings(trusted: readonly { name: string; doc: CheckpointDocument }[]): Finding[] {
  const out: Finding[] = [];
  let before: CheckpointDocument | undefined;
  for (const { name, doc } of trusted) {
    const p = doc.prev;
    if (p === null) {
      // A new chain of checkpoints starts only with a new key (a rotation); otherwise its predecessors were cut off.
      if (before && before.key_id === doc.key_id) out.push({ kind: 'checkpoint_forged', seq: doc.seq, checkpoint: name, message: `checkpoint ${name} starts a new chain of checkpoints, though checkpoint seq ${before.seq} was signed with the same key` });
    } else if (!before || p.seq > before.seq) {
      out.push({ kind: 'checkpoint_missing', seq: p.seq, checkpoint: checkpointFileName(p.seq), message: `checkpoint ${name} follows checkpoint ${checkpointFileName(p.seq)}, which is gone from every copy` });
    } else if (p.seq < before.seq) {
      out.push({ kind: 'checkpoint_forged', seq: before.seq, checkpoint: checkpointFileName(before.seq), message: `checkpoint ${name} follows seq ${p.seq}, so checkpoint ${checkpointFileName(before.seq)} was not part of the chain of checkpoints` });
    } else if (p.sha256 !== documentHash(before)) {
      out.push({ kind: 'checkpoint_forged', seq: before.seq, checkpoint: checkpointFileName(before.seq), message: `checkpoint ${name} names a different checkpoint seq ${p.seq} than the one stored: it was replaced` });
    }
    before = doc;
  }
  return out;
}

/** Every signed head still in the chain, with the hash it was signed with. */
async function chainVsCheckpoints(log: AuditLog, chainChecked: number, trusted: readonly { name: string; doc: CheckpointDocument }[]): Promise<Finding[]> {
  const out: Finding[] = [];
  const head = await log.head();
  const rows = new Map((await log.hashesAt(trusted.map((t) => t.doc.seq))).map((r) => [r.seq, r.hash]));
  const end = head?.seq ?? 0;
  // The newest checkpoint beyond the chain's end shows how much of the tail is gone.
  const beyond = trusted.filter((t) => t.doc.seq > end).at(-1);
  if (beyond) {
    const { name, doc } = beyond;
    out.push({ kind: 'tail_truncated', seq: doc.seq, checkpoint: name, message: `the chain ends at seq ${end} but checkpoint ${name} signed at ${doc.at} covers seq ${doc.seq}: entries ${end + 1}..${doc.seq} (at least) were removed from the tail` });
  }
  for (const { name, doc } of trusted.filter((t) => t.doc.seq <= end)) {
    const hash = rows.get(doc.seq);
    if (hash === undefined) {
      out.push({ kind: 'entry_missing', seq: doc.seq, checkpoint: name, message: `entry ${doc.seq}, signed by checkpoint ${name}, was deleted` });
    } else if (hash !== doc.head_hash && chainChecked >= doc.seq) {
      // The chain links up through this entry, so it was recomputed: only the checkpoint shows it.
      out.push({ kind: 'chain_rewritten', seq: doc.seq, checkpoint: name, message: `entry ${doc.seq} hashes to ${hash} but checkpoint ${name} signed ${doc.head_hash} at ${doc.at}: the chain up to it was rewritten with recomputed hashes` });
    }
  }
  // One finding per kind and seq (a gap the chain walk found is not named twice).
  return out.filter((f) => f.kind !== 'entry_missing' || chainChecked >= f.seq);
}
