import os from 'node:os';
import path from 'node:path';
import { openConfiguredDatabase, type Db } from '../../../db/database.ts';
import { loadConfig, type Config } from '../../lib/config.ts';
import { VerbatimError } from '../../lib/errors.ts';
import type { ArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { storageFromConfig } from '../../lib/storage/storage-from-config.ts';
import { AuditLog } from './audit-log.ts';
import { exportArchive, verifyArchive, type ExportProgress, type ExportSelection } from './export.ts';

/**
 * `verbatim export create --session <id>... | --hold <id> --out <file.tar>`: writes an
 * e-discovery archive (progress on stderr) and records it in the audit trail.
 * `verbatim export verify <archive> [--json]`: recomputes every file's SHA-256 against the
 * archive's manifest. Exit 0 ok, 1 problems, 2 usage error.
 */
export const EXPORT_USAGE = [
  'usage: verbatim export create (--session <id>... | --hold <id> | --query <text>) --out <file.tar>',
  '       verbatim export verify <archive.tar> [--json]',
  '',
].join('\n');

export interface ExportCommandDeps {
  db?: Db;
  storage?: ArtifactStorage;
  config?: Config;
  env?: NodeJS.ProcessEnv;
  /** Progress and diagnostics (stderr). */
  err?: (s: string) => void;
}

export async function runExportCommand(args: string[], out: (s: string) => void, deps: ExportCommandDeps = {}): Promise<number> {
  const err = deps.err ?? ((s: string) => process.stderr.write(s));
  const [sub, ...rest] = args;
  if (sub === undefined || sub === 'help' || sub === '--help') {
    out(EXPORT_USAGE);
    return sub === undefined ? 2 : 0;
  }
  if (sub === 'verify') return verify(rest, out, err);
  if (sub === 'create') return create(rest, out, err, deps);
  err(`unknown export command "${sub}"\n${EXPORT_USAGE}`);
  return 2;
}

async function verify(rest: string[], out: (s: string) => void, err: (s: string) => void): Promise<number> {
  const json = rest.includes('--json');
  const positional = rest.filter((a) => a !== '--json');
  if (positional.length !== 1 || positional[0]!.startsWith('--')) {
    err(`export verify takes one archive path\n${EXPORT_USAGE}`);
    return 2;
  }
  const archive = positional[0]!;
  let res;
  try {
    res = await verifyArchive(archive);
  } catch (e) {
    if (!(e instanceof VerbatimError)) throw e;
    err(`error ${e.code}: ${e.message}\n`);
    return 2;
  }
  if (json) {
    const { manifest, ...rest2 } = res;
    out(`${JSON.stringify({ ...rest2, exportId: manifest?.exportId ?? null, createdAt: manifest?.createdAt ?? null }, null, 2)}\n`);
  } else if (res.ok) {
    out(`OK: ${res.files} file(s) match the manifest; manifest sha256 ${res.manifestSha256} (compare with the export.create audit entry)\n`);
  } else {
    out(`PROBLEMS: ${res.problems.length}\n${res.problems.map((p) => `  ${p.code} ${p.path}: ${p.message}`).join('\n')}\n`);
  }
  return res.ok ? 0 : 1;
}

function progressBar(err: (s: string) => void): (p: ExportProgress) => void {
  return (p) => {
    const frac = p.bytesTotal === 0 ? p.filesDone / p.filesTotal : p.bytesDone / p.bytesTotal;
    const pct = Math.floor(frac * 100);
    const width = 30;
    const filled = Math.round(frac * width);
    err(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(pct).padStart(3)}% ${p.filesDone}/${p.filesTotal} files`);
    if (p.filesDone === p.filesTotal) err('\n');
  };
}

async function create(rest: string[], out: (s: string) => void, err: (s: string) => void, deps: ExportCommandDeps): Promise<number> {
  const sessions: string[] = [];
  let hold: string | undefined;
  let query: string | undefined;
  let file: string | undefined;
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    const v = rest[i + 1];
    if ((a === '--session' || a === '--hold' || a === '--query' || a === '--out') && (v === undefined || v.startsWith('--'))) {
      err(`${a} needs a value\n${EXPORT_USAGE}`);
      return 2;
    }
    if (a === '--session') sessions.push(v!);
    else if (a === '--hold') {
      if (hold !== undefined) {
        err(`--hold given twice\n${EXPORT_USAGE}`);
        return 2;
      }
      hold = v!;
    } else if (a === '--query') query = v!;
    else if (a === '--out') file = v!;
    else {
      err(`unexpected argument "${a}" for "export create"\n${EXPORT_USAGE}`);
      return 2;
    }
    i++;
  }
  if (!file || [sessions.length > 0, hold !== undefined, query !== undefined].filter(Boolean).length !== 1) {
    err(`export create needs --out and one of --session <id>..., --hold <id> or --query <text>\n${EXPORT_USAGE}`);
    return 2;
  }
  const selection: ExportSelection = hold !== undefined ? { holdId: hold } : query !== undefined ? { query } : { sessionIds: sessions };
  const config = deps.config ?? loadConfig({ env: deps.env ?? process.env });
  const db = deps.db ?? (await openConfiguredDatabase(config));
  try {
    const storage = deps.storage ?? storageFromConfig(config, { db });
    const user = (() => {
      try {
        return os.userInfo().username;
      } catch {
        return 'unknown';
      }
    })();
    const res = await exportArchive({ db, storage, auditLog: new AuditLog(db), selection, out: path.resolve(file), actor: { type: 'service', id: `cli:${user}` }, onProgress: progressBar(err) });
    out(`exported ${res.sessionIds.length} session(s), ${res.files} file(s), ${res.bytes} bytes to ${res.path}\nmanifest sha256 ${res.manifestSha256}; audit entry seq ${res.audit.seq}\n`);
    return 0;
  } finally {
    if (!deps.db) await db.destroy();
  }
}
