import { spawn } from 'node:child_process';
import { chmodSync, readdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { removeDataDir, tempDataDir } from '../../testing/data-dirs.ts';
import { launchStart, type Launched } from '../../testing/launcher.ts';
import { runningEmbeddedPostgres } from '../lib/embedded-postgres.ts';

/**
 * The anchored audit trail on a stack started like `npm start` (embedded PostgreSQL): tampering as
 * the database superuser (append-only trigger bypassed) or with the checkpoint files is named by
 * both `verbatim audit verify` (a separate process, the auditor's public key only) and
 * POST /api/v1/audit/verify.
 */
const dir = tempDataDir('verbatim-anchor-');
let launched: Launched | undefined;
let su: pg.Client | undefined;
afterAll(async () => {
  await su?.end().catch(() => {});
  launched?.killAll();
  removeDataDir(dir);
});

interface Finding {
  kind: string;
  seq: number;
  message: string;
}
interface Verified {
  ok: boolean;
  findings: Finding[];
}

function verbatim(args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('npm', ['run', '-s', 'verbatim', '--', ...args], { env: { ...process.env, DATA_DIR: dir, DATABASE_URL: '', REDIS_URL: '', LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, out }));
  });
}

describe('anchored audit trail against the npm start stack', () => {
  it('names a forged and a deleted checkpoint, a deleted entry, a chain rewritten with recomputed hashes and a truncated tail, in the CLI and the API', { timeout: 420_000 }, async () => {
    launched = launchStart(dir, { AUDIT_CHECKPOINT_INTERVAL_MS: '1000' });
    const banner = await launched.ready;
    const api = (p: string, key: string, init: RequestInit = {}) => fetch(`${banner.complianceUrl}/api/v1${p}`, { ...init, headers: { authorization: `Bearer ${key}`, ...(init.headers as Record<string, string> | undefined) } });
    const created = await api('/keys', banner.adminKey!, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'Bank auditor', role: 'auditor' }) });
    expect(created.status).toBe(201);
    const auditor = ((await created.json()) as { apiKey: string }).apiKey;
    for (let i = 0; i < 4; i++) expect((await api('/me', auditor)).status).toBe(200);

    su = new pg.Client({ connectionString: runningEmbeddedPostgres(dir)!.url });
    su.on('error', () => {}); // a stack stopped by a failed test ends the session
    await su.connect();
    const headSeq = async () => Number((await su!.query<{ m: string | null }>('select max(seq) as m from audit_log')).rows[0]!.m ?? 0);
    const cpDir = path.join(dir, 'audit-checkpoints');
    // The database's index row is written last (after the file and the storage copy): a checkpoint in it is complete.
    const newestCheckpoint = async () => Number((await su!.query<{ m: string | null }>('select max(seq) as m from audit_checkpoints')).rows[0]!.m ?? 0);
    /** Until the checkpointer (every second) has signed the current head. */
    const anchored = async () => {
      await expect.poll(async () => (await newestCheckpoint()) === (await headSeq()), { timeout: 30_000, interval: 250 }).toBe(true);
      expect(readdirSync(cpDir)).toContain(`audit-checkpoint-${String(await headSeq()).padStart(12, '0')}.json`);
      return headSeq();
    };
    const asSuperuser = async (statements: string, params: unknown[] = []) => {
      await su!.query('begin');
      await su!.query('set local session_replication_role = replica');
      await su!.query(statements, params);
      await su!.query('commit');
    };
    const keyFile = path.join(dir, 'auditor-copy.pub');
    const pub = await verbatim(['audit', 'public-key']);
    expect(pub.code).toBe(0);
    writeFileSync(keyFile, pub.out);
    // An empty JSON body is fine.
    const verifyApi = async (): Promise<Verified> => {
      const res = await api('/audit/verify', auditor, { method: 'POST', headers: { 'content-type': 'application/json' } });
      expect(res.status).toBe(200);
      return (await res.json()) as Verified;
    };
    const verifyCli = async (): Promise<{ code: number | null } & Verified> => {
      const r = await verbatim(['audit', 'verify', '--json', '--public-key', keyFile]);
      return { code: r.code, ...(JSON.parse(r.out) as Verified) };
    };
    /** Both name the finding (the CLI first: the API's own request is audited after it verified). */
    const bothName = async (kind: string, seq: number) => {
      const cli = await verifyCli();
      expect(cli.code, JSON.stringify(cli.findings)).toBe(1);
      expect(cli.findings.map((f) => [f.kind, f.seq]), JSON.stringify(cli.findings)).toContainEqual([kind, seq]);
      const viaApi = await verifyApi();
      expect(viaApi.ok).toBe(false);
      expect(viaApi.findings.map((f) => [f.kind, f.seq])).toContainEqual([kind, seq]);
    };
    const intact = async () => {
      const cli = await verifyCli();
      expect(cli, JSON.stringify(cli.findings)).toMatchObject({ code: 0, ok: true, findings: [] });
    };

    // npm start's capture reconciliation runs once at start and appends its audit entry a few seconds
    // in: wait for it, so no new checkpoint is signed while the steps below edit checkpoint files.
    await expect.poll(async () => Number((await su!.query<{ n: string }>("select count(*) as n from audit_log where action = 'reconciliation.run'")).rows[0]!.n), { timeout: 60_000, interval: 250 }).toBe(1);
    await anchored();
    await intact();
    expect((await verifyApi()).ok).toBe(true);

    // 1. A checkpoint file forged (its signed head changed).
    let head = await anchored();
    const file = path.join(cpDir, `audit-checkpoint-${String(head).padStart(12, '0')}.json`);
    const saved = readFileSync(file);
    chmodSync(file, 0o644);
    writeFileSync(file, saved.toString().replace(/"head_hash": "[0-9a-f]{64}"/, `"head_hash": "${'ab'.repeat(32)}"`));
    await bothName('checkpoint_forged', head);
    writeFileSync(file, saved);

    // 2. A checkpoint file deleted.
    unlinkSync(file);
    await bothName('checkpoint_missing', head);
    writeFileSync(file, saved);
    await intact();

    // 3. An entry in the middle deleted.
    const middle = 3;
    const row = (await su.query<{ j: unknown }>('select json_agg(a) as j from audit_log a where seq = $1', [middle])).rows[0]!.j;
    await asSuperuser('delete from audit_log where seq = $1', [middle]);
    await bothName('entry_missing', middle + 1);
    await asSuperuser('insert into audit_log select * from json_populate_recordset(null::audit_log, $1::json)', [JSON.stringify(row)]);
    await intact();

    // 4. The chain rewritten from two entries before a signed head, with recomputed hashes (Verbatim's own appends do the hashing).
    head = await anchored();
    const from = head - 2;
    const original = (await su.query<{ j: unknown }>('select json_agg(a order by seq) as j from audit_log a where seq >= $1', [from])).rows[0]!.j;
    await asSuperuser('delete from audit_log where seq >= $1', [from]);
    while ((await headSeq()) < head) expect((await api('/me', auditor)).status).toBe(200);
    await bothName('chain_rewritten', head);
    await asSuperuser('delete from audit_log where seq >= $1; ', [from]);
    await asSuperuser('insert into audit_log select * from json_populate_recordset(null::audit_log, $1::json)', [JSON.stringify(original)]);
    await intact();

    // 5. The tail truncated (the issue's `DELETE ... WHERE seq >= max - 2`).
    head = await anchored();
    await asSuperuser('delete from audit_log where seq >= $1', [head - 2]);
    await bothName('tail_truncated', head);

    // Our superuser session goes before the stack stops its PostgreSQL.
    await su.end();
    su = undefined;
    launched.interrupt();
    expect(await launched.exited).toBe(0);
  });
});
