import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { openDatabase, type Db } from '../../db/database.ts';
import { DataKeys } from '../../services/lib/crypto/data-keys.ts';
import { masterKeyOf } from '../../services/lib/crypto/master-key.ts';
import type { ArtifactStorage } from '../../services/lib/storage/artifact-storage.ts';
import { EncryptedArtifactStorage } from '../../services/lib/storage/encrypted-storage.ts';

/**
 * encrypt_overhead_pct (issue 10 item 4), shared by the recorder and transcode suites: the same
 * storage work through the product's encrypting storage (encrypted-storage.ts: AES-256-GCM envelope,
 * data key per participant from a database) and without it; only this process's CPU counts, where
 * the encryption runs.
 */
export interface EncryptedBenchStorage {
  storage: EncryptedArtifactStorage;
  db: Db;
  close(): Promise<void>;
}

/** `inner` behind encryption at rest, data keys in an in-process PGlite (as npm start's embedded default is a local database). */
export async function encryptedBenchStorage(inner: ArtifactStorage): Promise<EncryptedBenchStorage> {
  const db = await openDatabase({});
  const storage = new EncryptedArtifactStorage(inner, new DataKeys(db, masterKeyOf(randomBytes(32))), { encryptWrites: true });
  return { storage, db, close: () => db.destroy() };
}

/** CPU-s of storing each file (under the scope's key when the storage encrypts) and reading it back whole. */
export async function roundTripCpuS(storage: ArtifactStorage, files: string[], prefix: string): Promise<number> {
  const cpu0 = process.cpuUsage();
  for (const f of files) {
    const key = `${prefix}/${path.basename(f)}`;
    await storage.put(key, f, 'application/octet-stream', { encryptFor: { session: 'bench', participant: 'p1' } });
    for await (const _ of await storage.getStream(key)) {
      // drained: a reader gets every byte decrypted and authenticated
    }
  }
  const c = process.cpuUsage(cpu0);
  return (c.user + c.system) / 1e6;
}

/** The overhead in % and its inputs, from alternating plain/encrypted runs (best of `runs` each, so noise does not count as cost). */
export async function measureEncryptOverhead(plain: ArtifactStorage, files: string[], runs: number, baseCpuS?: (plainCpuS: number) => number): Promise<{ pct: number; plainCpuS: number; encryptedCpuS: number; denominatorCpuS: number }> {
  const enc = await encryptedBenchStorage(plain);
  try {
    await roundTripCpuS(enc.storage, files.slice(0, 1), 'warm-enc');
    await roundTripCpuS(plain, files.slice(0, 1), 'warm-plain');
    let p = Number.POSITIVE_INFINITY;
    let e = Number.POSITIVE_INFINITY;
    for (let i = 0; i < runs; i++) {
      p = Math.min(p, await roundTripCpuS(plain, files, `plain-${i}`));
      e = Math.min(e, await roundTripCpuS(enc.storage, files, `enc-${i}`));
    }
    const denominatorCpuS = baseCpuS ? baseCpuS(p) : p;
    return { pct: ((e - p) / denominatorCpuS) * 100, plainCpuS: p, encryptedCpuS: e, denominatorCpuS };
  } finally {
    await enc.close();
  }
}
