import { openConfiguredDatabase, type Db } from '../../../db/database.ts';
import { loadConfig, type Config } from '../../lib/config.ts';
import { VerbatimError } from '../../lib/errors.ts';
import { loadOrCreateCheckpointKey } from '../../lib/secrets.ts';
import { verifyAuditTrail, type TrailVerifyResult } from './audit-verify.ts';
import { checkpointDir, checkpointStoreFromConfig, checkpointVerifiersFromConfig } from './checkpoint-setup.ts';

/**
 * `verbatim audit verify [--json] [--public-key <file>]`: recomputes the whole audit chain and
 * holds it to every signed checkpoint, in AUDIT_CHECKPOINT_DIR (default DATA_DIR/audit-checkpoints)
 * and in artifact storage; signatures are checked with the given public key (an auditor's own
 * copy; no secret needed), else DATA_DIR/audit-checkpoint-key.pub, and AUDIT_CHECKPOINT_SECRET
 * when set. Exit 0 intact, 1 a finding, 2 usage error.
 * `verbatim audit public-key`: prints the Ed25519 public key (PEM) to give to auditors.
 */
export const AUDIT_USAGE = ['usage: verbatim audit verify [--json] [--public-key <file.pub>]', '       verbatim audit public-key', ''].join('\n');

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
  const env = deps.env ?? process.env;
  if (sub === 'public-key' && rest.length === 0) {
    const config = deps.config ?? loadConfig({ env });
    out(loadOrCreateCheckpointKey(config.DATA_DIR).publicKeyPem);
    return 0;
  }
  if (sub !== 'verify') {
    out(`unknown audit command "${[sub, ...rest].join(' ')}"\n${AUDIT_USAGE}`);
    return 2;
  }
  let json = false;
  let publicKeyFile: string | undefined;
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    if (a === '--json') json = true;
    else if (a === '--public-key' && rest[i + 1] !== undefined) publicKeyFile = rest[++i];
    else {
      out(`unexpected argument ${a} for "audit verify"\n${AUDIT_USAGE}`);
      return 2;
    }
  }
  const config = deps.config ?? loadConfig({ env });
  let verifiers;
  try {
    verifiers = checkpointVerifiersFromConfig(config, { publicKeyFile });
  } catch (err) {
    if (!(err instanceof VerbatimError)) throw err;
    out(`${err.message}\nfix: ${err.hint ?? ''}\n`);
    return 2;
  }
  const db = deps.db ?? (await openConfiguredDatabase(config));
  try {
    const res = await verifyAuditTrail(db, { store: checkpointStoreFromConfig(config, db), verifiers });
    const dir = checkpointDir(config);
    out(json ? `${JSON.stringify({ ...res, checkpointDir: dir }, null, 2)}\n` : describe(res, dir));
    return res.ok ? 0 : 1;
  } finally {
    if (!deps.db) await db.destroy();
  }
}

function describe(res: TrailVerifyResult, dir: string): string {
  const keys = res.keys.length ? `key(s) ${res.keys.join(', ')}` : 'NO key (pass --public-key)';
  const cps = res.checkpoints === 0 ? `no checkpoints (none in ${dir} or storage)` : `${res.checkpoints} signed checkpoint(s) checked with ${keys}`;
  const head = res.head ? `head seq ${res.head.seq} hash ${res.head.hash}` : 'empty log';
  if (res.findings.length > 0) {
    return [`BROKEN: ${res.findings.length} finding(s)`, ...res.findings.map((f) => `  ${f.kind} at seq ${f.seq}: ${f.message}`), `  ${res.checked} entries checked out before the chain's first break; ${head}; ${cps}`, ''].join('\n');
  }
  return `OK: audit chain intact, ${res.checked} entries, ${head}; ${cps}${res.ignoredCheckpoints ? `; ${res.ignoredCheckpoints} checkpoint(s) of the first format left out` : ''}\n`;
}
