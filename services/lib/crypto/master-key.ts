import { createHash, randomBytes } from 'node:crypto';
import { linkSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config.ts';
import { VerbatimError } from '../errors.ts';

export const MASTER_KEY_FILE = 'master-key';

/** The key that wraps every data key; its id (a hash prefix) is stored with each wrapped key. */
export interface MasterKey {
  id: string;
  key: Buffer;
}

export function masterKeyOf(key: Buffer): MasterKey {
  if (key.length !== 32) throw new VerbatimError('CONFIG_INVALID', `the master key is ${key.length} bytes, it must be 32`, { hint: 'Give 32 random bytes in base64 (openssl rand -base64 32).' });
  // The id names the key without revealing it: a hash under a fixed label, so it differs from any other use of the bytes.
  return { id: `mk_${createHash('sha256').update('verbatim master key id\0').update(key).digest('hex').slice(0, 16)}`, key };
}

export function parseMasterKey(text: string, where: string): MasterKey {
  const key = Buffer.from(text.trim(), 'base64');
  if (key.length !== 32) throw new VerbatimError('CONFIG_INVALID', `${where} does not hold a 32-byte base64 master key`, { hint: 'Give 32 random bytes in base64 (openssl rand -base64 32).' });
  return masterKeyOf(key);
}

type MasterKeyConfig = Pick<Config, 'DATA_DIR' | 'VERBATIM_MASTER_KEY' | 'VERBATIM_MASTER_KEY_FILE'>;

/** Where the master key lives when it is a file (configured, or the generated default); undefined when given inline. */
export function masterKeyPath(config: MasterKeyConfig): string | undefined {
  if (config.VERBATIM_MASTER_KEY) return undefined;
  return config.VERBATIM_MASTER_KEY_FILE ?? path.join(config.DATA_DIR, MASTER_KEY_FILE);
}

/**
 * VERBATIM_MASTER_KEY, else VERBATIM_MASTER_KEY_FILE (must exist), else DATA_DIR/master-key, generated
 * once (0600) like the other embedded-default secrets (secrets.ts).
 */
export function loadOrCreateMasterKey(config: MasterKeyConfig): MasterKey {
  if (config.VERBATIM_MASTER_KEY) return parseMasterKey(config.VERBATIM_MASTER_KEY, 'VERBATIM_MASTER_KEY');
  if (config.VERBATIM_MASTER_KEY_FILE) {
    let text: string;
    try {
      text = readFileSync(config.VERBATIM_MASTER_KEY_FILE, 'utf8');
    } catch (err) {
      throw new VerbatimError('CONFIG_INVALID', `VERBATIM_MASTER_KEY_FILE ${config.VERBATIM_MASTER_KEY_FILE} cannot be read: ${(err as Error).message}`, { hint: 'Point it at the file holding the master key, or unset it to use DATA_DIR/master-key.' });
    }
    return parseMasterKey(text, `VERBATIM_MASTER_KEY_FILE ${config.VERBATIM_MASTER_KEY_FILE}`);
  }
  const file = path.join(config.DATA_DIR, MASTER_KEY_FILE);
  try {
    return parseMasterKey(readFileSync(file, 'utf8'), file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  // Created without replacing: processes starting together agree on whichever key landed first.
  const mk = masterKeyOf(randomBytes(32));
  mkdirSync(config.DATA_DIR, { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${mk.key.toString('base64')}\n`, { mode: 0o600 });
  try {
    linkSync(tmp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return parseMasterKey(readFileSync(file, 'utf8'), file);
  } finally {
    rmSync(tmp, { force: true });
  }
  return mk;
}

/** Writes the key file atomically (0600). */
export function writeMasterKeyFile(file: string, mk: MasterKey): void {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(`${file}.tmp`, `${mk.key.toString('base64')}\n`, { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}
