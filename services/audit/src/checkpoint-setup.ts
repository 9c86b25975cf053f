import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Db } from '../../../db/database.ts';
import type { Config } from '../../lib/config.ts';
import { VerbatimError } from '../../lib/errors.ts';
import { CHECKPOINT_PUBLIC_KEY_FILE, loadOrCreateCheckpointKey } from '../../lib/secrets.ts';
import type { ArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { storageFromConfig } from '../../lib/storage/storage-from-config.ts';
import { CHECKPOINT_STORAGE_PREFIX, CheckpointStore, Ed25519CheckpointSigner, Ed25519CheckpointVerifier, HmacCheckpointSigner, type CheckpointSigner, type CheckpointVerifier } from './audit-checkpoints.ts';
import { objectLockRetention } from './object-lock.ts';
import { DAY_MS } from './retention.ts';

/** Checkpoints from the configuration: where they go, who signs them, whom verify trusts. */

type CheckpointConfig = Pick<Config, 'DATA_DIR' | 'AUDIT_CHECKPOINT_DIR' | 'AUDIT_CHECKPOINT_ALGORITHM' | 'AUDIT_CHECKPOINT_SECRET' | 'AUDIT_CHECKPOINT_RETAIN_DAYS'>;

export function checkpointDir(config: Pick<Config, 'DATA_DIR' | 'AUDIT_CHECKPOINT_DIR'>): string {
  return path.resolve(config.AUDIT_CHECKPOINT_DIR ?? path.join(config.DATA_DIR, 'audit-checkpoints'));
}

/** Object Lock retention of an upload: checkpoints for AUDIT_CHECKPOINT_RETAIN_DAYS, artifacts by their retention policy. */
export function artifactRetention(config: Pick<Config, 'AUDIT_CHECKPOINT_RETAIN_DAYS'>, db: Db): (key: string) => Promise<Date | undefined> {
  const artifacts = objectLockRetention(db);
  return async (key) => (key.startsWith(CHECKPOINT_STORAGE_PREFIX) ? new Date(Date.now() + config.AUDIT_CHECKPOINT_RETAIN_DAYS * DAY_MS) : artifacts(key));
}

/** The directory and the configured artifact storage (with its Object Lock retention). */
export function checkpointStoreFromConfig(config: CheckpointConfig & Parameters<typeof storageFromConfig>[0], db: Db, storage?: ArtifactStorage): CheckpointStore {
  return new CheckpointStore(checkpointDir(config), storage ?? storageFromConfig(config, { retainUntil: artifactRetention(config, db) }));
}

/** The signer the writer uses: the Ed25519 key pair in DATA_DIR (made once), or HMAC with the secret. */
export function checkpointSignerFromConfig(config: CheckpointConfig): CheckpointSigner {
  if (config.AUDIT_CHECKPOINT_ALGORITHM === 'HMAC-SHA256') {
    if (!config.AUDIT_CHECKPOINT_SECRET) {
      throw new VerbatimError('CONFIG_INVALID', 'AUDIT_CHECKPOINT_ALGORITHM=HMAC-SHA256 needs AUDIT_CHECKPOINT_SECRET', { hint: 'Set AUDIT_CHECKPOINT_SECRET to a long random value kept out of the database, or use the default Ed25519.' });
    }
    return new HmacCheckpointSigner(config.AUDIT_CHECKPOINT_SECRET);
  }
  return new Ed25519CheckpointSigner(loadOrCreateCheckpointKey(config.DATA_DIR).privateKeyPem);
}

/**
 * The keys verify trusts: the given public key (an auditor's own copy), else DATA_DIR's
 * audit-checkpoint-key.pub; and the HMAC secret when set. Never generates a key.
 */
export function checkpointVerifiersFromConfig(config: CheckpointConfig, opts: { publicKeyFile?: string | undefined } = {}): CheckpointVerifier[] {
  const out: CheckpointVerifier[] = [];
  const file = opts.publicKeyFile ?? path.join(config.DATA_DIR, CHECKPOINT_PUBLIC_KEY_FILE);
  let pem: string | undefined;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (err) {
    if (opts.publicKeyFile !== undefined || (err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new VerbatimError('CONFIG_INVALID', `cannot read the audit checkpoint public key ${file}: ${(err as Error).message}`, { hint: 'Pass the PEM file `verbatim audit public-key` printed (DATA_DIR/audit-checkpoint-key.pub).' });
    }
  }
  if (pem !== undefined) out.push(new Ed25519CheckpointVerifier(pem));
  if (config.AUDIT_CHECKPOINT_SECRET) out.push(new HmacCheckpointSigner(config.AUDIT_CHECKPOINT_SECRET));
  return out;
}
