import { existsSync, renameSync } from 'node:fs';
import path from 'node:path';
import { copyAllRows, rowCounts } from '../../db/copy-database.ts';
import { openDatabase } from '../../db/database.ts';
import { AuditLog } from '../audit/index.ts';
import { VerbatimError } from '../lib/errors.ts';
import type { Logger } from '../lib/logger.ts';

export interface PgliteImport {
  rows: Record<string, number>;
  auditEntries: number;
  /** Where the PGlite directory was moved: kept as a backup, never read again. */
  backup: string;
}

/**
 * Earlier versions kept the embedded database in PGlite (DATA_DIR/pglite), which only one
 * process can open. On the first start with the embedded PostgreSQL, its data moves over
 * once: both are migrated to the current version, every row is copied, the counts and the
 * audit hash chain are checked on the copy (the same verification result, the same head),
 * and only then is DATA_DIR/pglite renamed to a backup. Anything short of that throws and
 * leaves DATA_DIR/pglite in place (the copy is one transaction: nothing half-copied stays).
 */
export async function importPgliteDataDir(dataDir: string, targetUrl: string, logger: Logger): Promise<PgliteImport | undefined> {
  const dir = path.join(dataDir, 'pglite');
  if (!existsSync(dir)) return undefined;
  logger.warn({ from: dir }, 'importing the PGlite database of an earlier version into the embedded PostgreSQL (once)');
  const source = await openDatabase({ pgliteDir: dir });
  let result: Omit<PgliteImport, 'backup'>;
  try {
    const target = await openDatabase({ url: targetUrl });
    try {
      const before = await new AuditLog(source).verify();
      const rows = await copyAllRows(source, target);
      const [sourceCounts, targetCounts] = [await rowCounts(source), await rowCounts(target)];
      const differing = Object.keys(sourceCounts).filter((t) => sourceCounts[t] !== targetCounts[t] || rows[t] !== sourceCounts[t]);
      if (differing.length > 0) {
        throw new VerbatimError('INTERNAL', `the copied database differs in ${differing.join(', ')}`, { hint: `Nothing was changed in ${dir}; report this with the log.`, details: { sourceCounts, targetCounts } });
      }
      const after = await new AuditLog(target).verify();
      const same = after.ok === before.ok && after.checked === before.checked && after.head?.hash === before.head?.hash && after.firstBroken?.seq === before.firstBroken?.seq;
      if (!same) {
        throw new VerbatimError('AUDIT_CHAIN_BROKEN', 'the audit trail does not verify the same after the copy', { hint: `Nothing was changed in ${dir}; report this with the log.`, details: { before, after } });
      }
      if (!before.ok) logger.error({ firstBroken: before.firstBroken }, 'the imported audit trail was already broken in PGlite; it is kept exactly as it was');
      result = { rows, auditEntries: after.checked };
    } finally {
      await target.destroy();
    }
  } finally {
    await source.destroy();
  }
  const backup = path.join(dataDir, `pglite.imported-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  renameSync(dir, backup);
  logger.warn({ backup, rows: result.rows, auditEntries: result.auditEntries }, 'PGlite database imported and verified; its directory is kept as a backup');
  return { ...result, backup };
}
