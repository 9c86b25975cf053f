import type { Config } from '../config.ts';
import { VerbatimError } from '../errors.ts';
import type { Db } from '../../../db/database.ts';
import { DataKeys } from '../crypto/data-keys.ts';
import { loadOrCreateMasterKey } from '../crypto/master-key.ts';
import { LocalArtifactStorage, type ArtifactStorage } from './artifact-storage.ts';
import { EncryptedArtifactStorage } from './encrypted-storage.ts';
import { S3ArtifactStorage, type S3ObjectLockOptions } from './s3-storage.ts';

type StorageConfig = Pick<
  Config,
  'STORAGE_BACKEND' | 'STORAGE_DIR' | 'S3_ENDPOINT' | 'S3_REGION' | 'S3_BUCKET' | 'S3_ACCESS_KEY_ID' | 'S3_SECRET_ACCESS_KEY' | 'S3_FORCE_PATH_STYLE'
>;

/**
 * The artifact storage the configuration names. STORAGE_BACKEND=s3 needs S3_BUCKET; with S3_ENDPOINT (a
 * self-hosted S3) it also needs S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY. Against AWS (no S3_ENDPOINT) the
 * keys may both be left unset to use the SDK's default credential chain (environment, profile, instance role);
 * setting only one of them is an error.
 */
export function storageFromConfig(
  config: StorageConfig & Partial<Pick<Config, 'S3_OBJECT_LOCK' | EncryptionConfigKeys>>,
  opts: {
    /** With S3_OBJECT_LOCK: each upload's retention end (services/audit objectLockRetention); unset = legal holds only. */
    retainUntil?: S3ObjectLockOptions['retainUntil'];
    /**
     * The database of the data keys: the storage then decrypts what is stored encrypted, and encrypts
     * uploads that name their key scope when ENCRYPTION_AT_REST=on (encrypted-storage.ts).
     */
    db?: Db;
  } = {},
): ArtifactStorage {
  const plain = plainStorageFromConfig(config, opts);
  if (!opts.db || config.DATA_DIR === undefined) return plain;
  const load = () => loadOrCreateMasterKey({ DATA_DIR: config.DATA_DIR!, VERBATIM_MASTER_KEY: config.VERBATIM_MASTER_KEY, VERBATIM_MASTER_KEY_FILE: config.VERBATIM_MASTER_KEY_FILE });
  return new EncryptedArtifactStorage(plain, new DataKeys(opts.db, load(), load), { encryptWrites: config.ENCRYPTION_AT_REST === 'on' });
}

type EncryptionConfigKeys = 'DATA_DIR' | 'ENCRYPTION_AT_REST' | 'VERBATIM_MASTER_KEY' | 'VERBATIM_MASTER_KEY_FILE';

function plainStorageFromConfig(config: StorageConfig & Partial<Pick<Config, 'S3_OBJECT_LOCK'>>, opts: { retainUntil?: S3ObjectLockOptions['retainUntil'] }): ArtifactStorage {
  if (config.STORAGE_BACKEND === 'local') return new LocalArtifactStorage(config.STORAGE_DIR);
  const missing = (key: string, why: string) =>
    new VerbatimError('CONFIG_INVALID', `STORAGE_BACKEND=s3 needs ${key}`, { hint: `Set ${key} (${why}), or use STORAGE_BACKEND=local.` });
  if (!config.S3_BUCKET) throw missing('S3_BUCKET', 'the bucket artifacts go to; it must already exist');
  const id = config.S3_ACCESS_KEY_ID;
  const secret = config.S3_SECRET_ACCESS_KEY;
  if (id === undefined && secret === undefined && config.S3_ENDPOINT) {
    throw missing('S3_ACCESS_KEY_ID', 'with S3_SECRET_ACCESS_KEY, the credentials of the self-hosted S3 at S3_ENDPOINT');
  }
  if (id === undefined && secret !== undefined) throw missing('S3_ACCESS_KEY_ID', 'S3_SECRET_ACCESS_KEY is set without it');
  if (id !== undefined && secret === undefined) throw missing('S3_SECRET_ACCESS_KEY', 'S3_ACCESS_KEY_ID is set without it');
  if (config.S3_ENDPOINT !== undefined && !URL.canParse(config.S3_ENDPOINT)) {
    throw new VerbatimError('CONFIG_INVALID', `S3_ENDPOINT=${JSON.stringify(config.S3_ENDPOINT)} is not a URL`, { hint: 'Use e.g. http://minio:9000 or https://s3.example.com.' });
  }
  return new S3ArtifactStorage({
    bucket: config.S3_BUCKET,
    region: config.S3_REGION,
    forcePathStyle: config.S3_FORCE_PATH_STYLE,
    ...(config.S3_OBJECT_LOCK && config.S3_OBJECT_LOCK !== 'off' ? { objectLock: { mode: config.S3_OBJECT_LOCK, retainUntil: opts.retainUntil ?? (() => undefined) } } : {}),
    ...(config.S3_ENDPOINT ? { endpoint: config.S3_ENDPOINT } : {}),
    ...(id !== undefined && secret !== undefined ? { credentials: { accessKeyId: id, secretAccessKey: secret } } : {}),
  });
}
