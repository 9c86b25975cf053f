import path from 'node:path';
import { openConfiguredDatabase, type Db } from '../../../db/database.ts';
import { loadConfig, type Config } from '../../lib/config.ts';
import { VerbatimError } from '../../lib/errors.ts';
import { AuditLog, HmacCheckpointSigner, LocalDirectoryCheckpointSink, type Checkpoint, type VerifyResult } from './audit-log.ts';

/**
 * `verbatim audit verify [--json]`: recomputes the whole audit chain and holds it to
 * every checkpoint, both those recorded in the database and those exported to
 * AUDIT_CHECKPOINT_DIR (default DATA_DIR/audit-checkpoints). Signatures are checked
 * with AUDIT_CHECKPOINT_SECRET when set. Exit 0 intact, 1 broken, 2 usage error.
 */
export const AUDIT_USAGE = ['usage: verbatim audit verify [--json]', ''].join('\n');

export interface AuditCommandDeps {
  /** An open database (tests); otherwise opened from the configuration. */
  db?: Db;
  config?: Config;
  env?: NodeJS.ProcessEnv;
}

export async function runAuditCommand(args: string[], out: (s: string) => void, deps: AuditCommandDeps = {}): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === 'help' || sub === '--help') {
    out(AUDIT_USAGE);
    return sub === undefined ? 2 : 0;
  }
  if (sub !== 'verify') {
    out(`unknown audit command "${sub}"\n${AUDIT_USAGE}`);
    return 2;
  }
  const unknown = rest.filter((a) => a !== '--json');
  if (unknown.length) {
    out(`unexpected argument(s) ${unknown.join(', ')} for "audit verify"\n${AUDIT_USAGE}`);
    return 2;
  }
  const json = rest.includes('--json');
  const env = deps.env ?? process.env;
  const config = deps.config ?? loadConfig({ env });
  const db = deps.db ?? (await openConfiguredDatabase(config));
  try {
    const secret = config.AUDIT_CHECKPOINT_SECRET;
    const signer = secret ? new HmacCheckpointSigner(secret) : undefined;
    const checkpointDir = path.resolve(config.AUDIT_CHECKPOINT_DIR ?? path.join(config.DATA_DIR, 'audit-checkpoints'));
    const log = new AuditLog(db);
    let exported: Checkpoint[];
    try {
      exported = await new LocalDirectoryCheckpointSink(checkpointDir).list();
    } catch (err) {
      if (!(err instanceof VerbatimError)) throw err;
      const res = { ok: false, error: err.toJSON() };
      out(json ? `${JSON.stringify(res, null, 2)}\n` : `BROKEN: ${err.message}\nfix: ${err.hint ?? ''}\n`);
      return 1;
    }
    const checkpoints = [...(await log.listCheckpoints()), ...exported];
    const res = await log.verify({ checkpoints, ...(signer ? { signer } : {}) });
    out(json ? `${JSON.stringify({ ...res, checkpointDir }, null, 2)}\n` : describe(res, checkpointDir));
    return res.ok ? 0 : 1;
  } finally {
    if (!deps.db) await db.destroy();
  }
}

function describe(res: VerifyResult, checkpointDir: string): string {
  const cps = res.checkpoints === 0
    ? `no checkpoints (none in the database or ${checkpointDir})`
    : `${res.checkpoints} checkpoint(s) ${res.signaturesVerified ? 'with valid signatures' : 'compared; signatures NOT verified (AUDIT_CHECKPOINT_SECRET unset)'}`;
  if (res.firstBroken) {
    const b = res.firstBroken;
    return [`BROKEN at seq ${b.seq}: ${b.reason}`, `  ${b.message}`, `  ${res.checked} entries checked out before it; head ${res.head ? `seq ${res.head.seq} ${res.head.hash}` : 'none'}`, ''].join('\n');
  }
  const head = res.head ? `head seq ${res.head.seq} hash ${res.head.hash}` : 'empty log';
  return `OK: audit chain intact, ${res.checked} entries, ${head}; ${cps}\n`;
}
