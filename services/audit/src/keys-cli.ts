import { randomBytes } from 'node:crypto';
import { readFileSync, renameSync, rmSync } from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { openConfiguredDatabase, type Db } from '../../../db/database.ts';
import { loadConfig, type Config } from '../../lib/config.ts';
import { DataKeys } from '../../lib/crypto/data-keys.ts';
import { loadOrCreateMasterKey, masterKeyOf, masterKeyPath, parseMasterKey, writeMasterKeyFile, type MasterKey } from '../../lib/crypto/master-key.ts';
import { VerbatimError } from '../../lib/errors.ts';
import { AuditLog } from './audit-log.ts';
import { createUserWithKey, findKey, listUsers, revokeKey, type UserView } from './key-lifecycle.ts';
import { cliPrinter, reportCliError } from './cli-output.ts';

/**
 * `verbatim keys list|revoke|create-admin` on the host, straight against the configured database
 * (or the embedded PostgreSQL of DATA_DIR): the way back in when every admin key is lost, and a
 * revocation that needs no working admin key. Audited as the service `cli:<os user>`, with the same
 * before/after details as the API. Exit 0 ok, 1 refused, 2 usage.
 */
export const KEYS_USAGE = [
  'usage: verbatim keys list [--json]',
  '       verbatim keys revoke <key prefix | key id> [--reason <text>] [--json]',
  '       verbatim keys create-admin [--name <name>] [--expires <ISO date-time>] [--json]',
  '       verbatim keys rotate-master [--new-key-file <file>] [--json]',
  '',
].join('\n');

export interface KeysCommandDeps {
  db?: Db;
  config?: Config;
  env?: NodeJS.ProcessEnv;
  err?: (s: string) => void;
}

const OPTIONS = {
  json: { type: 'boolean' },
  reason: { type: 'string' },
  name: { type: 'string' },
  expires: { type: 'string' },
  'new-key-file': { type: 'string' },
} as const;

export async function runKeysCommand(args: string[], out: (s: string) => void, deps: KeysCommandDeps = {}): Promise<number> {
  const err = deps.err ?? ((s: string) => process.stderr.write(s));
  const usage = (why: string) => {
    err(`${why}\n${KEYS_USAGE}`);
    return 2;
  };
  const [sub, ...rest] = args;
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    return usage((e as Error).message);
  }
  const o = parsed.values;
  if (sub !== 'list' && sub !== 'revoke' && sub !== 'create-admin' && sub !== 'rotate-master') return usage(`unknown command "verbatim keys${sub ? ` ${sub}` : ''}"`);
  if (sub === 'revoke' ? parsed.positionals.length !== 1 : parsed.positionals.length !== 0) return usage(sub === 'revoke' ? 'keys revoke takes one key prefix or id' : `unexpected argument(s) ${parsed.positionals.join(' ')}`);
  let expiresAt: Date | null = null;
  if (o.expires !== undefined) {
    expiresAt = new Date(o.expires);
    if (Number.isNaN(expiresAt.getTime()) || expiresAt.getTime() <= Date.now()) return usage(`--expires "${o.expires}" is not a future date-time`);
  }

  const config = deps.config ?? loadConfig({ env: deps.env ?? process.env });
  const db = deps.db ?? (await openConfiguredDatabase(config));
  const audit = new AuditLog(db);
  const actor = { type: 'service' as const, id: `cli:${os.userInfo().username}` };
  const print = cliPrinter(o.json, out);
  try {
    switch (sub) {
      case 'list': {
        const users = await listUsers(db);
        await audit.append({ action: 'user.list', actor, target: { type: 'users' }, details: { returned: users.length, via: 'cli' } });
        print({ users }, users.map(describeUser).join(''));
        return 0;
      }
      case 'revoke': {
        const key = await findKey(db, parsed.positionals[0]!);
        const r = await revokeKey(db, key.id);
        await audit.append({ action: 'key.revoke', actor, target: { type: 'api_key', id: key.id }, details: { keyPrefix: key.prefix, userId: key.userId, before: r.before, after: r.after, sessionsEnded: r.sessionsEnded, reason: o.reason, via: 'cli' } });
        print({ key: r.after, sessionsEnded: r.sessionsEnded }, `revoked key ${key.prefix}${r.sessionsEnded ? `; ended ${r.sessionsEnded} console session(s)` : ''}\n`);
        return 0;
      }
      case 'rotate-master': {
        const r = await rotateMasterKey(db, config, o['new-key-file']);
        await audit.append({ action: 'master-key.rotate', actor, target: { type: 'master_key', id: r.to }, details: { from: r.from, to: r.to, rewrapped: r.rewrapped, keyFile: r.keyFile ?? null, via: 'cli' } });
        print(
          r,
          `master key rotated: ${r.from} → ${r.to}; ${r.rewrapped} data key(s) re-wrapped, no media touched\n${r.keyFile ? `new key written to ${r.keyFile}\n` : 'set VERBATIM_MASTER_KEY to the new key (the --new-key-file contents) on every host, then restart\n'}`,
        );
        return 0;
      }
      case 'create-admin': {
        const name = o.name ?? 'admin';
        const created = await createUserWithKey(db, { name, role: 'admin', expiresAt });
        await audit.append({ action: 'key.create', actor, target: { type: 'api_key', id: created.key.id }, details: { userId: created.user.id, name, role: 'admin', keyPrefix: created.key.prefix, expiresAt: created.key.expiresAt, via: 'cli' } });
        print(created, `created admin "${name}" (${created.user.id})\nAPI key: ${created.apiKey}\n(shown once: keep it; sign in to the console or send it as "Authorization: Bearer <key>")\n`);
        return 0;
      }
    }
    return 2;
  } catch (e) {
    return reportCliError(e, o.json, out, err);
  } finally {
    if (!deps.db) await db.destroy();
  }
}

/**
 * Re-wraps every data key under a new master key (given in a file, or generated) without touching
 * media. With a key file (VERBATIM_MASTER_KEY_FILE or DATA_DIR/master-key) the new key is staged
 * next to it, the data keys re-wrapped in one transaction, then the file replaced; running processes
 * re-read the file when they meet a key wrapped by the new master. With VERBATIM_MASTER_KEY given
 * inline the new key must come from --new-key-file, and the operator sets it.
 */
export async function rotateMasterKey(db: Db, config: Config, newKeyFile?: string): Promise<{ from: string; to: string; rewrapped: number; keyFile?: string }> {
  const current = loadOrCreateMasterKey(config);
  const file = masterKeyPath(config);
  if (!file && !newKeyFile) {
    throw new VerbatimError('BAD_REQUEST', 'VERBATIM_MASTER_KEY is set inline: give the new master key with --new-key-file', { hint: 'openssl rand -base64 32 > new.key; verbatim keys rotate-master --new-key-file new.key; then set VERBATIM_MASTER_KEY to it.' });
  }
  let next: MasterKey;
  try {
    next = newKeyFile ? parseMasterKey(readFileSync(newKeyFile, 'utf8'), newKeyFile) : masterKeyOf(randomBytes(32));
  } catch (e) {
    if (e instanceof VerbatimError) throw e;
    throw new VerbatimError('BAD_REQUEST', `cannot read --new-key-file ${newKeyFile}: ${(e as Error).message}`, { hint: 'Give a file holding 32 random bytes in base64.' });
  }
  if (next.id === current.id) throw new VerbatimError('BAD_REQUEST', `the new master key is the current one (${current.id})`, { hint: 'Give a different key.' });
  const staged = file ? `${file}.next` : undefined;
  if (file && staged) writeMasterKeyFile(staged, next);
  try {
    const r = await new DataKeys(db, current).rewrapAll(next);
    if (file && staged) renameSync(staged, file);
    return { ...r, ...(file ? { keyFile: file } : {}) };
  } catch (e) {
    if (staged) rmSync(staged, { force: true });
    throw e;
  }
}

const day = (s: string | null) => (s ? s.slice(0, 16).replace('T', ' ') : '-');

function describeUser(u: UserView): string {
  const keys = u.keys.map((k) => `    ${k.prefix}  ${k.state.padEnd(8)}  created ${day(k.createdAt)}  last used ${day(k.lastUsedAt)}  expires ${day(k.expiresAt)}${k.state === 'rotating' ? `  refused from ${day(k.revokedAt)}` : ''}\n`);
  return `${u.name}  ${u.role}  ${u.state}  ${u.id}\n${keys.join('') || '    (no keys)\n'}`;
}
