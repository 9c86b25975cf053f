import { randomBytes } from 'node:crypto';
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
