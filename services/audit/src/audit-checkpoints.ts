import { createHash, createHmac, createPrivateKey, createPublicKey, sign as cryptoSign, timingSafeEqual, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { sql } from 'kysely';
import { z } from 'zod';
import type { Db } from '../../../db/database.ts';
import { VerbatimError } from '../../lib/errors.ts';
import type { ArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { AuditLog, canonicalJson, GENESIS_HASH, type AuditHead } from './audit-log.ts';

/**
 * Signed checkpoints of the audit chain's head, kept outside the database so that a truncated,
 * rewritten or re-hashed chain is caught. A checkpoint is a small self-describing JSON document:
 *
 *   { version: 2, seq, head_hash, at, prev: { seq, sha256 } | null, algorithm, key_id, signature }
 *
 * signed over canonicalJson of every field but `signature` (Ed25519 by default, HMAC-SHA256 where
 * AUDIT_CHECKPOINT_SECRET asks for it). `prev` names the previous checkpoint by seq and the SHA-256
 * of its canonical document, so the checkpoints form a chain of their own and a deleted one shows.
 * Each is written to AUDIT_CHECKPOINT_DIR as audit-checkpoint-<seq, 12 digits>.json and to
 * artifact storage under audit-checkpoints/ (Object Lock retention where the bucket has it).
 */

export const CHECKPOINT_VERSION = 2;
export const CHECKPOINT_STORAGE_PREFIX = 'audit-checkpoints/';
const CHECKPOINT_LOCK = 0x5652_4254_c4e0;
const FILE_RE = /^audit-checkpoint-(\d{12})\.json$/;

export type CheckpointAlgorithm = 'Ed25519' | 'HMAC-SHA256';

const HexHash = z.string().regex(/^[0-9a-f]{64}$/);
export const CheckpointDocumentSchema = z
  .object({
    version: z.literal(CHECKPOINT_VERSION),
    seq: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
    head_hash: HexHash,
    at: z.iso.datetime(),
    prev: z.object({ seq: z.number().int().min(1), sha256: HexHash }).strict().nullable(),
    algorithm: z.enum(['Ed25519', 'HMAC-SHA256']),
    key_id: z.string().regex(/^[0-9a-f]{16}$/),
    signature: z.string().min(1).max(512),
  })
  .strict();
export type CheckpointDocument = z.infer<typeof CheckpointDocumentSchema>;

export interface CheckpointVerifier {
  readonly algorithm: CheckpointAlgorithm;
  readonly keyId: string;
  verify(message: string, signature: string): boolean;
}
export interface CheckpointSigner extends CheckpointVerifier {
  sign(message: string): string;
}

/** The key id: the first 16 hex digits of SHA-256 over the public key (SPKI DER). */
export function ed25519KeyId(publicKey: KeyObject): string {
  return createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16);
}

/** Verifies Ed25519 checkpoints with a public key alone (PEM): what an auditor holds. */
export class Ed25519CheckpointVerifier implements CheckpointVerifier {
  readonly algorithm = 'Ed25519';
  readonly keyId: string;
  protected readonly publicKey: KeyObject;
  constructor(publicKeyPem: string) {
    try {
      this.publicKey = createPublicKey(publicKeyPem);
    } catch (err) {
      throw new VerbatimError('CONFIG_INVALID', `the audit checkpoint public key is not a PEM public key: ${(err as Error).message}`, { hint: 'Pass the audit-checkpoint-key.pub written in DATA_DIR (or printed by `verbatim audit public-key`).' });
    }
    if (this.publicKey.asymmetricKeyType !== 'ed25519') {
      throw new VerbatimError('CONFIG_INVALID', `the audit checkpoint public key is ${this.publicKey.asymmetricKeyType ?? 'not asymmetric'}, not Ed25519`, { hint: 'Pass the audit-checkpoint-key.pub written in DATA_DIR.' });
    }
    this.keyId = ed25519KeyId(this.publicKey);
  }
  verify(message: string, signature: string): boolean {
    const sig = Buffer.from(signature, 'base64');
    return sig.length === 64 && cryptoVerify(null, Buffer.from(message), this.publicKey, sig);
  }
}

export class Ed25519CheckpointSigner extends Ed25519CheckpointVerifier implements CheckpointSigner {
  private readonly privateKey: KeyObject;
  constructor(privateKeyPem: string) {
    const privateKey = createPrivateKey(privateKeyPem);
    super(String(createPublicKey(privateKey).export({ type: 'spki', format: 'pem' })));
    this.privateKey = privateKey;
  }
  sign(message: string): string {
    return cryptoSign(null, Buffer.from(message), this.privateKey).toString('base64');
  }
}

/** HMAC-SHA256 with a secret kept outside the database (AUDIT_CHECKPOINT_SECRET); verifying needs the secret. */
export class HmacCheckpointSigner implements CheckpointSigner {
  readonly algorithm = 'HMAC-SHA256';
  readonly keyId: string;
  private readonly key: Buffer;
  constructor(secret: string | Buffer) {
    this.key = typeof secret === 'string' ? Buffer.from(secret, 'utf8') : secret;
    if (this.key.length < 16) {
      throw new VerbatimError('CONFIG_INVALID', 'audit checkpoint secret must be at least 16 bytes', { hint: 'Set AUDIT_CHECKPOINT_SECRET to a long random value and keep it out of the database.' });
    }
    // Derived, so the id names the key without revealing it.
    this.keyId = createHmac('sha256', this.key).update('verbatim audit checkpoint key id').digest('hex').slice(0, 16);
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

/** What is signed: every field but the signature, canonical JSON. */
export function signedMessage(doc: Omit<CheckpointDocument, 'signature'>): string {
  const { signature: _omit, ...body } = doc as CheckpointDocument;
  return canonicalJson(body);
}

/** The SHA-256 a later checkpoint's `prev` names: over the whole canonical document, signature included. */
export function documentHash(doc: CheckpointDocument): string {
  return createHash('sha256').update(canonicalJson(doc)).digest('hex');
}

export function checkpointFileName(seq: number): string {
  return `audit-checkpoint-${String(seq).padStart(12, '0')}.json`;
}

/** The seq a checkpoint file name stands for (names are only ever listed through FILE_RE). */
export function checkpointSeq(name: string): number {
  return Number(FILE_RE.exec(name)![1]);
}

/** Parses a checkpoint's bytes; a string names what is wrong with them. */
export function parseCheckpoint(bytes: Buffer): CheckpointDocument | string {
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    return `not JSON (${(err as Error).message})`;
  }
  const parsed = CheckpointDocumentSchema.safeParse(raw);
  return parsed.success ? parsed.data : `malformed (${parsed.error.issues.map((i) => `${i.path.join('.') || 'document'}: ${i.message}`).join('; ')})`;
}

/** Whether one of the verifiers (by algorithm and key id) accepts the checkpoint's signature. */
export function signatureValid(doc: CheckpointDocument, verifiers: readonly CheckpointVerifier[]): boolean {
  const v = verifiers.find((x) => x.algorithm === doc.algorithm && x.keyId === doc.key_id);
  return v !== undefined && v.verify(signedMessage(doc), doc.signature);
}

/** Raw copies of the checkpoints, by file name: the directory's and the storage's (absent: no storage). */
export interface CheckpointCopies {
  dir: Map<string, Buffer>;
  storage?: Map<string, Buffer>;
  /** Files in the directory that are not checkpoints of this version (an earlier format), left alone. */
  ignored: string[];
}

/** Where checkpoints live outside the database: AUDIT_CHECKPOINT_DIR and, if given, artifact storage. */
export class CheckpointStore {
  constructor(
    readonly dir: string,
    readonly storage?: ArtifactStorage,
  ) {}

  async write(doc: CheckpointDocument): Promise<string> {
    const name = checkpointFileName(doc.seq);
    const body = Buffer.from(`${JSON.stringify(doc, null, 2)}\n`);
    mkdirSync(this.dir, { recursive: true });
    const file = path.join(this.dir, name);
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, body, { mode: 0o444 });
    fsyncPath(tmp);
    renameSync(tmp, file);
    fsyncPath(this.dir);
    if (this.storage) await this.storage.put(`${CHECKPOINT_STORAGE_PREFIX}${name}`, file, 'application/json');
    return name;
  }

  async read(): Promise<CheckpointCopies> {
    const dir = new Map<string, Buffer>();
    const ignored: string[] = [];
    let names: string[] = [];
    try {
      names = readdirSync(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    for (const name of names.sort()) {
      if (!FILE_RE.test(name)) continue;
      const bytes = readFileSync(path.join(this.dir, name));
      // A checkpoint of the first format (HMAC over "seq:hash:at", no chain link) is not held to this one.
      if (isFirstFormat(bytes)) ignored.push(name);
      else dir.set(name, bytes);
    }
    if (!this.storage) return { dir, ignored };
    const storage = new Map<string, Buffer>();
    for (const key of await this.storage.list(CHECKPOINT_STORAGE_PREFIX)) {
      const name = key.slice(CHECKPOINT_STORAGE_PREFIX.length);
      if (!FILE_RE.test(name)) continue;
      const bytes = await this.readStorageCopy(name);
      if (bytes) storage.set(name, bytes);
    }
    return { dir, storage, ignored };
  }

  /**
   * The newest checkpoint whose signature holds (what the writer links to), without reading them
   * all: the directory's names and the given ones (the database's index) newest first, each from
   * the directory or, where it is gone there, from storage.
   */
  async newest(verifiers: readonly CheckpointVerifier[], known: readonly string[] = []): Promise<CheckpointDocument | undefined> {
    let names: string[] = [];
    try {
      names = readdirSync(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const candidates = [...new Set([...names, ...known])].filter((n) => FILE_RE.test(n)).sort().reverse();
    for (const name of candidates) {
      for (const bytes of [await this.readDirCopy(name), await this.readStorageCopy(name)]) {
        if (!bytes) continue;
        const doc = parseCheckpoint(bytes);
        if (typeof doc !== 'string' && signatureValid(doc, verifiers)) return doc;
      }
    }
    return undefined;
  }

  private async readDirCopy(name: string): Promise<Buffer | undefined> {
    try {
      return readFileSync(path.join(this.dir, name));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  private async readStorageCopy(name: string): Promise<Buffer | undefined> {
    const key = `${CHECKPOINT_STORAGE_PREFIX}${name}`;
    if (!this.storage || !(await this.storage.exists(key))) return undefined;
    const chunks: Buffer[] = [];
    for await (const c of await this.storage.getStream(key)) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }
}

function isFirstFormat(bytes: Buffer): boolean {
  try {
    const v = (JSON.parse(bytes.toString('utf8')) as { version?: unknown }).version;
    return v === 1;
  } catch {
    return false;
  }
}

function fsyncPath(p: string): void {
  try {
    const fd = openSync(p, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // directory fsync is best effort (not supported everywhere)
  }
}

function tamperError(message: string): VerbatimError {
  return new VerbatimError('CHECKPOINT_MISMATCH', message, {
    hint: 'The audit trail was tampered with outside Verbatim: no checkpoint is signed over it. Preserve the database and the checkpoints as evidence; `verbatim audit verify` names every finding.',
  });
}

/**
 * Signs the chain's head into a new checkpoint (linked to the newest one), writes it to the
 * directory and storage, and records it in the database. The entries since the newest checkpoint
 * are verified first, and a chain shorter than it or no longer holding its hash is refused: a
 * tampered chain is never signed. Returns the newest checkpoint unchanged when it already covers
 * the head, null for an empty log. Serialized across processes by an advisory lock.
 */
export async function writeCheckpoint(db: Db, store: CheckpointStore, signer: CheckpointSigner): Promise<CheckpointDocument | null> {
  return db.transaction().execute(async (trx) => {
    await sql`select pg_advisory_xact_lock(${sql.lit(CHECKPOINT_LOCK)})`.execute(trx);
    const log = new AuditLog(trx);
    const head = await log.head();
    if (!head) return null;
    const indexed = await trx.selectFrom('audit_checkpoints').select('seq').orderBy('seq', 'desc').limit(3).execute();
    const prev = await store.newest([signer], indexed.map((r) => checkpointFileName(Number(r.seq))));
    let start: AuditHead = { seq: 0, hash: GENESIS_HASH };
    if (prev) {
      if (prev.seq > head.seq) throw tamperError(`the audit chain ends at seq ${head.seq} but the checkpoint of ${prev.at} covers seq ${prev.seq}: entries were removed from the tail`);
      const [row] = await log.hashesAt([prev.seq]);
      if (row?.hash !== prev.head_hash) throw tamperError(`audit entry ${prev.seq} no longer has the hash its checkpoint of ${prev.at} signed: the chain was rewritten`);
      if (prev.seq === head.seq) return prev;
      start = { seq: prev.seq, hash: prev.head_hash };
    }
    const walk = await log.verifyRange(start, head.seq);
    if (walk.broken) throw tamperError(`audit trail broken at seq ${walk.broken.seq} (${walk.broken.reason}): ${walk.broken.message}`);
    const body: Omit<CheckpointDocument, 'signature'> = {
      version: CHECKPOINT_VERSION,
      seq: head.seq,
      head_hash: head.hash,
      at: new Date().toISOString(),
      prev: prev ? { seq: prev.seq, sha256: documentHash(prev) } : null,
      algorithm: signer.algorithm,
      key_id: signer.keyId,
    };
    const doc: CheckpointDocument = { ...body, signature: signer.sign(signedMessage(body)) };
    const name = await store.write(doc);
    // The database's row is an index of what was written (a deleted file shows against it); the table is append-only.
    await trx
      .insertInto('audit_checkpoints')
      .values({ seq: doc.seq, head_hash: doc.head_hash, at: doc.at, signature: doc.signature, storage_key: name })
      .onConflict((oc) => oc.column('seq').doNothing())
      .execute();
    return doc;
  });
}
