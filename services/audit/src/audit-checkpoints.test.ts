import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../db/database.ts';
import { testBackends, type TestBackend } from '../../../testing/databases.ts';
import { loadConfig } from '../../lib/config.ts';
import { CHECKPOINT_PUBLIC_KEY_FILE, loadOrCreateCheckpointKey } from '../../lib/secrets.ts';
import { LocalArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { runAuditCommand } from './audit-cli.ts';
import {
  CHECKPOINT_STORAGE_PREFIX,
  CheckpointStore,
  documentHash,
  Ed25519CheckpointSigner,
  Ed25519CheckpointVerifier,
  HmacCheckpointSigner,
  parseCheckpoint,
  signedMessage,
  writeCheckpoint,
  type CheckpointDocument,
} from './audit-checkpoints.ts';
import { AuditLog } from './audit-log.ts';
import { verifyAuditTrail, type FindingKind } from './audit-verify.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-checkpoints-'));
const backends = await testBackends();
const opened: { backend: TestBackend; db: Db }[] = [];
afterAll(async () => {
  for (const { backend, db } of opened) {
    await db.destroy().catch(() => {});
    await backend.cleanup();
  }
  for (const b of backends) await b.cleanup();
  rmSync(tmp, { recursive: true, force: true });
});

let n = 0;
/** A database, a data dir with its key pair, and a checkpoint store (directory + local artifact storage). */
async function setup(name: TestBackend['name']) {
  const backend = (await testBackends()).find((b) => b.name === name)!;
  const db = await backend.open();
  opened.push({ backend, db });
  const dataDir = path.join(tmp, `data-${name}-${++n}`);
  const key = loadOrCreateCheckpointKey(dataDir);
  const signer = new Ed25519CheckpointSigner(key.privateKeyPem);
  const auditor = new Ed25519CheckpointVerifier(key.publicKeyPem);
  const dir = path.join(dataDir, 'audit-checkpoints');
  const storageDir = path.join(dataDir, 'artifacts');
  const store = new CheckpointStore(dir, new LocalArtifactStorage(storageDir));
  const log = new AuditLog(db);
  const fill = async (count: number) => {
    for (let i = 0; i < count; i++) await log.append({ action: 'test.entry', actor: { type: 'user', id: `u${i % 3}` }, details: { i } });
  };
  const verify = () => verifyAuditTrail(db, { store, verifiers: [auditor] });
  /** The distinct (kind, seq) findings: each copy of a checkpoint has its own finding. */
  const kinds = async () => [...new Set((await verify()).findings.map((f) => `${f.kind}@${f.seq}`))].map((k): [FindingKind, number] => [k.split('@')[0] as FindingKind, Number(k.split('@')[1])]);
  return { db, dataDir, signer, auditor, dir, storageDir, store, log, fill, verify, kinds };
}

/** As a superuser bypassing the append-only trigger. */
async function bypass(db: Db, statement: ReturnType<typeof sql>): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await sql`set local session_replication_role = replica`.execute(trx);
    await statement.execute(trx);
  });
}

/** Entries 1..30 with checkpoints at 10, 20 and 30. */
async function checkpointed(name: TestBackend['name']) {
  const s = await setup(name);
  for (let i = 0; i < 3; i++) {
    await s.fill(10);
    await writeCheckpoint(s.db, s.store, s.signer);
  }
  return s;
}

function rewrite(file: string, edit: (doc: Record<string, unknown>) => void): void {
  const doc = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  edit(doc);
  chmodSync(file, 0o644);
  writeFileSync(file, JSON.stringify(doc));
}

describe.each(backends)('audit checkpoints ($name)', (backend) => {
  const skip = !backend.available;

  it.skipIf(skip)('writes a signed, chained, self-describing checkpoint to the directory and storage, verifiable with the public key alone', async () => {
    const s = await setup(backend.name);
    expect(await writeCheckpoint(s.db, s.store, s.signer)).toBeNull();
    await s.fill(5);
    const first = (await writeCheckpoint(s.db, s.store, s.signer))!;
    expect(first).toMatchObject({ version: 2, seq: 5, head_hash: (await s.log.head())!.hash, prev: null, algorithm: 'Ed25519', key_id: s.auditor.keyId });
    // Nothing new to sign: the same checkpoint, no second file.
    expect(await writeCheckpoint(s.db, s.store, s.signer)).toEqual(first);
    await s.fill(3);
    const second = (await writeCheckpoint(s.db, s.store, s.signer))!;
    expect(second.prev).toEqual({ seq: 5, sha256: documentHash(first) });
    expect(readdirSync(s.dir)).toEqual(['audit-checkpoint-000000000005.json', 'audit-checkpoint-000000000008.json']);
    const onDisk = parseCheckpoint(readFileSync(path.join(s.dir, 'audit-checkpoint-000000000008.json')));
    expect(onDisk).toEqual(second);
    expect(readFileSync(path.join(s.storageDir, CHECKPOINT_STORAGE_PREFIX, 'audit-checkpoint-000000000008.json'))).toEqual(readFileSync(path.join(s.dir, 'audit-checkpoint-000000000008.json')));
    // The auditor's key is the PEM in DATA_DIR; it checks the signature with no secret.
    const pub = readFileSync(path.join(s.dataDir, CHECKPOINT_PUBLIC_KEY_FILE), 'utf8');
    expect(pub).toMatch(/^-----BEGIN PUBLIC KEY-----/);
    expect(new Ed25519CheckpointVerifier(pub).verify(signedMessage(second), second.signature)).toBe(true);
    expect(new Ed25519CheckpointVerifier(pub).verify(signedMessage({ ...second, seq: 9 }), second.signature)).toBe(false);
    // The key pair is made once.
    expect(loadOrCreateCheckpointKey(s.dataDir).publicKeyPem).toBe(pub);
    expect(await s.verify()).toMatchObject({ ok: true, checked: 8, checkpoints: 2, findings: [], signaturesVerified: true });
  });

  it.skipIf(skip)('a checkpoint being written while verify reads is not taken for a deleted one; one that stays half-written is', async () => {
    const s = await setup(backend.name);
    await s.fill(4);
    await writeCheckpoint(s.db, s.store, s.signer);
    // Storage that takes its time: the directory's copy exists, the storage copy and the index row not yet.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const slow = new (class extends LocalArtifactStorage {
      override async put(...args: Parameters<LocalArtifactStorage['put']>) {
        await held;
        return super.put(...args);
      }
    })(s.storageDir);
    await s.fill(2);
    const writing = writeCheckpoint(s.db, new CheckpointStore(s.dir, slow), s.signer);
    await expect.poll(() => readdirSync(s.dir)).toContain('audit-checkpoint-000000000006.json');
    const verifying = s.verify();
    setTimeout(release, 300);
    await writing;
    expect(await verifying).toMatchObject({ ok: true, checkpoints: 2, findings: [] });
    // A storage copy that never comes is reported (after the pause).
    unlinkSync(path.join(s.storageDir, CHECKPOINT_STORAGE_PREFIX, 'audit-checkpoint-000000000006.json'));
    expect(await s.kinds()).toEqual([['checkpoint_missing', 6]]);
  });

  it.skipIf(skip)('names a truncated tail, a deleted entry, an altered entry and a chain rewritten with recomputed hashes', async () => {
    const a = await checkpointed(backend.name);
    await bypass(a.db, sql`delete from audit_log where seq >= 28`);
    expect((await a.log.verify()).ok).toBe(true); // the chain alone cannot tell
    expect(await a.kinds()).toEqual([['tail_truncated', 30]]);
    // No checkpoint is signed over it afterwards.
    await a.fill(1);
    await expect(writeCheckpoint(a.db, a.store, a.signer)).rejects.toMatchObject({ code: 'CHECKPOINT_MISMATCH' });

    const b = await checkpointed(backend.name);
    await bypass(b.db, sql`delete from audit_log where seq = 14`);
    expect(await b.kinds()).toEqual([['entry_missing', 15]]);

    const c = await checkpointed(backend.name);
    await bypass(c.db, sql`update audit_log set actor_id = 'mallory' where seq = 7`);
    expect(await c.kinds()).toEqual([['entry_altered', 7]]);

    const d = await checkpointed(backend.name);
    await bypass(d.db, sql`delete from audit_log where seq >= 15`);
    await d.fill(16); // a valid chain of 30 again, from entry 15 on with new content and recomputed hashes
    expect((await d.log.verify())).toMatchObject({ ok: true, checked: 30 });
    const res = await d.verify();
    expect(res.findings.map((f) => [f.kind, f.seq])).toEqual([['chain_rewritten', 20], ['chain_rewritten', 30]]);
    expect(res.firstBroken).toMatchObject({ seq: 20, reason: 'chain_rewritten' });
  });

  it.skipIf(skip)('names a forged, re-signed, deleted or replaced checkpoint', async () => {
    const s = await checkpointed(backend.name);
    const file = (seq: number) => path.join(s.dir, `audit-checkpoint-${String(seq).padStart(12, '0')}.json`);
    const stored = (seq: number) => path.join(s.storageDir, CHECKPOINT_STORAGE_PREFIX, `audit-checkpoint-${String(seq).padStart(12, '0')}.json`);
    const saved = readFileSync(file(20));
    const restore = () => {
      chmodSync(file(20), 0o644);
      writeFileSync(file(20), saved);
      expect(readFileSync(stored(20))).toEqual(saved);
    };
    expect(await s.kinds()).toEqual([]);

    // An edited hash, in the directory copy.
    rewrite(file(20), (d) => (d.head_hash = 'ab'.repeat(32)));
    expect(await s.kinds()).toEqual([['checkpoint_forged', 20]]);
    restore();
    // Re-signed with another Ed25519 key (as someone without our private key would).
    const other = new Ed25519CheckpointSigner(String(generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' })));
    rewrite(file(20), (d) => {
      const doc = { ...(d as unknown as CheckpointDocument), head_hash: 'cd'.repeat(32), key_id: other.keyId };
      Object.assign(d, doc, { signature: other.sign(signedMessage(doc)) });
    });
    const forged = await s.verify();
    expect(forged.findings.map((f) => [f.kind, f.seq])).toEqual([['checkpoint_forged', 20]]);
    expect(forged.findings[0]!.message).toMatch(/not a trusted key/);
    restore();
    // Malformed.
    chmodSync(file(20), 0o644);
    writeFileSync(file(20), '{"version":2,');
    expect(await s.kinds()).toEqual([['checkpoint_forged', 20]]);
    restore();
    // Deleted from the directory: storage still has it.
    unlinkSync(file(20));
    expect(await s.kinds()).toEqual([['checkpoint_missing', 20]]);
    // Deleted from both copies: the checkpoint after it names it.
    unlinkSync(stored(20));
    const gone = await s.verify();
    expect(gone.findings.map((f) => f.kind)).toEqual(['checkpoint_missing', 'checkpoint_missing', 'checkpoint_missing']);
    expect(gone.findings.map((f) => f.message).join('\n')).toMatch(/follows checkpoint audit-checkpoint-000000000020.json, which is gone from every copy/);
    writeFileSync(file(20), saved);
    writeFileSync(stored(20), saved);
    // The newest, deleted from the directory (with its entries): storage and the database's index still name it.
    unlinkSync(file(30));
    await bypass(s.db, sql`delete from audit_log where seq > 25`);
    expect((await s.kinds()).map(([k]) => k).sort()).toEqual(['checkpoint_missing', 'tail_truncated']);
  });

  it.skipIf(skip)('the writer links to the newest valid checkpoint wherever a copy of it is left, and never signs over a chain that lost what it covered', async () => {
    const s = await checkpointed(backend.name);
    const newestFile = path.join(s.dir, 'audit-checkpoint-000000000030.json');
    const saved = readFileSync(newestFile);
    unlinkSync(newestFile);
    await s.fill(2);
    const next = (await writeCheckpoint(s.db, s.store, s.signer))!;
    expect(next.prev).toEqual({ seq: 30, sha256: documentHash(parseCheckpoint(saved) as CheckpointDocument) });
    writeFileSync(newestFile, saved);
    expect(await s.kinds()).toEqual([]);

    // The tail truncated and refilled, the newest checkpoint deleted from the directory: its storage copy still refuses.
    const t = await checkpointed(backend.name);
    unlinkSync(path.join(t.dir, 'audit-checkpoint-000000000030.json'));
    await bypass(t.db, sql`delete from audit_log where seq > 25`);
    await t.fill(10);
    await expect(writeCheckpoint(t.db, t.store, t.signer)).rejects.toMatchObject({ code: 'CHECKPOINT_MISMATCH' });
    expect((await t.kinds()).map(([k]) => k)).toEqual(expect.arrayContaining(['checkpoint_missing', 'chain_rewritten']));
  });

  it.skipIf(skip)('signs with HMAC-SHA256 when asked to, verified only with the secret', async () => {
    const s = await setup(backend.name);
    const hmac = new HmacCheckpointSigner('an-hmac-secret-of-enough-length');
    await s.fill(4);
    expect(await writeCheckpoint(s.db, s.store, hmac)).toMatchObject({ algorithm: 'HMAC-SHA256', key_id: hmac.keyId, seq: 4 });
    expect((await verifyAuditTrail(s.db, { store: s.store, verifiers: [s.auditor, hmac] })).ok).toBe(true);
    expect((await s.kinds())).toEqual([['checkpoint_forged', 4]]);
  });

  it.skipIf(skip)('`verbatim audit verify` with only the public key names every finding and exits 1; `audit public-key` prints it', async () => {
    const s = await checkpointed(backend.name);
    const config = loadConfig({ env: {}, overrides: { DATA_DIR: s.dataDir } });
    const run = async (args: string[]) => {
      let text = '';
      const code = await runAuditCommand(args, (t) => (text += t), { db: s.db, config, env: {} });
      return { code, text };
    };
    const pubKey = await run(['public-key']);
    expect(pubKey.code).toBe(0);
    const auditorCopy = path.join(tmp, `auditor-${backend.name}.pub`);
    writeFileSync(auditorCopy, pubKey.text);
    const ok = await run(['verify', '--public-key', auditorCopy]);
    expect(ok.code).toBe(0);
    expect(ok.text).toMatch(/^OK: audit chain intact, 30 entries, head seq 30 hash [0-9a-f]{64}; 3 signed checkpoint\(s\) checked with key\(s\) Ed25519:[0-9a-f]{16}/);
    expect((await run(['verify', '--public-key'])).code).toBe(2);
    expect((await run(['verify', '--public-key', path.join(tmp, 'nope.pub')])).code).toBe(2);
    expect((await run(['frobnicate'])).code).toBe(2);

    await bypass(s.db, sql`delete from audit_log where seq >= 29`);
    const broken = await run(['verify', '--public-key', auditorCopy]);
    expect(broken.code).toBe(1);
    expect(broken.text).toMatch(/^BROKEN: 1 finding\(s\)\n {2}tail_truncated at seq 30: the chain ends at seq 28/);
    expect(JSON.parse((await run(['verify', '--json'])).text)).toMatchObject({ ok: false, findings: [{ kind: 'tail_truncated', seq: 30 }] });
  });
});
