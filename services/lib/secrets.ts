import { createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync, renameSync } from 'node:fs';
import path from 'node:path';

export interface Secrets {
  apiSecret: string;
  tokenSecret: string;
  recorderSecret: string;
}

/**
 * Embedded default: secrets generated once and kept in DATA_DIR/secrets.json (mode 0600),
 * so a restart keeps issued tokens valid and the admin key stable. Configured secrets win.
 */
export function loadOrCreateSecrets(dataDir: string, given: { apiSecret?: string | undefined; tokenSecret?: string | undefined; recorderSecret?: string | undefined }): Secrets {
  const file = path.join(dataDir, 'secrets.json');
  let stored: Partial<Secrets> = {};
  try {
    stored = JSON.parse(readFileSync(file, 'utf8')) as Partial<Secrets>;
  } catch {
    // absent on first start
  }
  const persisted: Secrets = {
    apiSecret: stored.apiSecret ?? randomBytes(24).toString('base64url'),
    tokenSecret: stored.tokenSecret ?? randomBytes(32).toString('base64url'),
    recorderSecret: stored.recorderSecret ?? randomBytes(24).toString('base64url'),
  };
  const keys = ['apiSecret', 'tokenSecret', 'recorderSecret'] as const;
  if (keys.some((k) => given[k] === undefined && stored[k] === undefined)) {
    mkdirSync(dataDir, { recursive: true });
    const tmp = `${file}.tmp`;
    writeFileSync(tmp, JSON.stringify(persisted, null, 2), { mode: 0o600 });
    renameSync(tmp, file);
  }
  return {
    apiSecret: given.apiSecret ?? persisted.apiSecret,
    tokenSecret: given.tokenSecret ?? persisted.tokenSecret,
    recorderSecret: given.recorderSecret ?? persisted.recorderSecret,
  };
}

export const CHECKPOINT_KEY_FILE = 'audit-checkpoint-key.pem';
export const CHECKPOINT_PUBLIC_KEY_FILE = 'audit-checkpoint-key.pub';

/**
 * The Ed25519 key pair that signs audit checkpoints, generated once like the secrets above:
 * DATA_DIR/audit-checkpoint-key.pem (private, 0600) and DATA_DIR/audit-checkpoint-key.pub
 * (public, PEM) for auditors, who verify with it and need no secret.
 */
export function loadOrCreateCheckpointKey(dataDir: string): { privateKeyPem: string; publicKeyPem: string } {
  const priv = path.join(dataDir, CHECKPOINT_KEY_FILE);
  const pub = path.join(dataDir, CHECKPOINT_PUBLIC_KEY_FILE);
  let privateKeyPem: string;
  try {
    privateKeyPem = readFileSync(priv, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    mkdirSync(dataDir, { recursive: true });
    const pair = generateKeyPairSync('ed25519');
    privateKeyPem = String(pair.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    writeFileSync(`${priv}.tmp`, privateKeyPem, { mode: 0o600 });
    renameSync(`${priv}.tmp`, priv);
  }
  // The public half always follows from the private key (a deleted .pub is rewritten, never a new pair).
  const publicKeyPem = String(createPublicKey(privateKeyPem).export({ type: 'spki', format: 'pem' }));
  let onDisk: string | undefined;
  try {
    onDisk = readFileSync(pub, 'utf8');
  } catch {
    // written below
  }
  if (onDisk !== publicKeyPem) {
    writeFileSync(`${pub}.tmp`, publicKeyPem, { mode: 0o644 });
    renameSync(`${pub}.tmp`, pub);
  }
  return { privateKeyPem, publicKeyPem };
}
