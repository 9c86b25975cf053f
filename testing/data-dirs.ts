import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { removeEmbeddedPostgres } from '../services/lib/embedded-postgres.ts';

/** A fresh DATA_DIR for a test (mode 0700, as mkdtemp makes it). */
export function tempDataDir(prefix = 'verbatim-data-'): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

/**
 * Removes a test's DATA_DIR, and its embedded PostgreSQL cluster when that lives outside it
 * (as root, a 0700 data dir is out of the postgres user's reach: see embedded-postgres.ts).
 * Call it once nothing runs on the data dir any more.
 */
export function removeDataDir(dir: string): void {
  removeEmbeddedPostgres(dir);
  rmSync(dir, { recursive: true, force: true });
}
