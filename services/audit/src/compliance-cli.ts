import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { openConfiguredDatabase, type Db } from '../../../db/database.ts';
import { loadConfig, type Config } from '../../lib/config.ts';
import type { ArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { storageFromConfig } from '../../lib/storage/storage-from-config.ts';
import { AuditLog } from './audit-log.ts';
import { consentCsv, listConsentEvents, type ConsentEventView } from './consent-log.ts';
import { ErasureService, type ErasureRecord } from './erasure.ts';
import { ErasureJobs } from './erasure-jobs.ts';
import { pino } from 'pino';
import { LegalHolds, RetentionSweeper, type Actor, type HoldScope } from './retention.ts';
import { cliPrinter, reportCliError } from './cli-output.ts';

/**
 * Operator mirrors of the compliance API on the host (direct database access, audited as the
 * service `cli:<os user>`): `verbatim retention sweep [--dry-run]`, `verbatim erasure request|list`,
 * `verbatim holds list|place|release`; `--json` for machine output. Exit 0 ok, 1 refused, 2 usage.
 */
export const COMPLIANCE_USAGE = [
  'usage: verbatim retention sweep [--dry-run] [--json]',
  '       verbatim erasure request --participant <id> [--session <id>] --reason <text> [--json]',
  '       verbatim erasure list [--participant <id>] [--json]',
  '       verbatim holds list [--all] [--json]',
  '       verbatim holds place --case <id> --reason <text> --scope session|room|participant|query --value <v> [--json]',
  '       verbatim holds release <hold id> [--reason <text>] [--json]',
  '       verbatim consent list [--participant <id>] [--session <id>] [--room <id>] [--json | --csv]',
  '',
].join('\n');

export interface ComplianceCommandDeps {
  db?: Db;
  storage?: ArtifactStorage;
  config?: Config;
  env?: NodeJS.ProcessEnv;
  err?: (s: string) => void;
}

const OPTIONS = {
  json: { type: 'boolean' },
  'dry-run': { type: 'boolean' },
  all: { type: 'boolean' },
  participant: { type: 'string' },
  session: { type: 'string' },
  reason: { type: 'string' },
  case: { type: 'string' },
  scope: { type: 'string' },
  value: { type: 'string' },
  room: { type: 'string' },
  csv: { type: 'boolean' },
} as const;

/** `group` is the first word: retention, erasure, holds or consent. */
export async function runComplianceCommand(group: string, args: string[], out: (s: string) => void, deps: ComplianceCommandDeps = {}): Promise<number> {
  const err = deps.err ?? ((s: string) => process.stderr.write(s));
  const [sub, ...rest] = args;
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    err(`${(e as Error).message}\n${COMPLIANCE_USAGE}`);
    return 2;
  }
  const o = parsed.values;
  const known = `${group} ${sub ?? ''}`;
  const usage = (why: string) => {
    err(`${why}\n${COMPLIANCE_USAGE}`);
    return 2;
  };
  if (!['retention sweep', 'erasure request', 'erasure list', 'holds list', 'holds place', 'holds release', 'consent list'].includes(known)) return usage(`unknown command "verbatim ${known.trim()}"`);
  if (known === 'erasure request' && (!o.participant || !o.reason)) return usage('erasure request needs --participant and --reason');
  if (known === 'holds place' && (!o.case || !o.reason || !o.scope || !o.value)) return usage('holds place needs --case, --reason, --scope and --value');
  if (known === 'holds release' && parsed.positionals.length !== 1) return usage('holds release takes one hold id');

  const config = deps.config ?? loadConfig({ env: deps.env ?? process.env });
  const db = deps.db ?? (await openConfiguredDatabase(config));
  const audit = new AuditLog(db);
  const actor: Actor = { type: 'service', id: `cli:${os.userInfo().username}` };
  const print = cliPrinter(o.json, out);
  try {
    const storage = () => deps.storage ?? storageFromConfig(config, { db });
    switch (known) {
      case 'retention sweep': {
        const r = await new RetentionSweeper({ db, storage: storage(), audit, recordingsDir: config.RECORDINGS_DIR }).sweep({ dryRun: o['dry-run'] === true });
        const lines = (r.dryRun ? r.decisions : r.deleted).map((d) => `  ${d.sessionId} ${d.kind} (policy ${d.policy}, expired ${d.expiresAt.toISOString()})`);
        print(r, `${r.dryRun ? `would delete ${r.decisions.length}` : `deleted ${r.deleted.length}`} item group(s)${r.skippedHeld.length ? `, ${r.skippedHeld.length} skipped (held)` : ''}\n${lines.join('\n')}${lines.length ? '\n' : ''}`);
        return 0;
      }
      case 'erasure request': {
        // The request runs as a job on the erasure queue, like one made over the API: this waits for its outcome.
        const env = deps.env ?? process.env;
        const jobs = new ErasureJobs({
          db,
          storage: storage(),
          audit,
          recordingsDir: config.RECORDINGS_DIR,
          workDir: path.join(config.DATA_DIR, 'erasure-work'),
          // Warnings (e.g. no transcode worker to re-render a composite) on stderr: stdout is the command's output.
          logger: pino({ name: 'verbatim-erasure', level: config.LOG_LEVEL === 'silent' ? 'silent' : 'warn' }, pino.destination(2)),
          redisUrl: queueRedis(config),
          queuePrefix: env.VERBATIM_QUEUE_PREFIX,
        });
        try {
          const accepted = await jobs.request({ participant: o.participant!, session: o.session, reason: o.reason!, requestedBy: actor });
          await audit.append({ action: 'erasure.request', actor, target: { type: 'erasure_request', id: accepted.id }, details: { participant: accepted.participant, session: accepted.session, reason: accepted.reason, status: accepted.status, sessions: accepted.sessions, via: 'cli' } });
          // Without a compliance service consuming the queue, this process runs the request itself.
          if (accepted.status === 'pending' && !(await jobs.workersConnected())) await jobs.start();
          const r = await jobs.waitFor(accepted.id);
          print(r, describeErasure(r));
          return r.status === 'failed' ? 1 : 0;
        } finally {
          await jobs.close();
        }
      }
      case 'erasure list': {
        const service = new ErasureService({ db, storage: storage(), audit, recordingsDir: config.RECORDINGS_DIR, workDir: path.join(config.DATA_DIR, 'erasure-work') });
        const list = await service.list({ participant: o.participant });
        await audit.append({ action: 'erasure.list', actor, details: { participant: o.participant, returned: list.length, via: 'cli' } });
        print(list, list.map(describeErasure).join(''));
        return 0;
      }
      case 'holds list': {
        const holds = await new LegalHolds(db, audit).list({ includeReleased: o.all === true });
        await audit.append({ action: 'legal_hold.list', actor, details: { includeReleased: o.all === true, returned: holds.length, via: 'cli' } });
        print(holds, holds.map((h) => `${h.id}  case ${h.caseId}  ${h.scopeType}=${h.scopeValue}  ${h.releasedAt ? `released ${new Date(h.releasedAt).toISOString()}` : 'in force'}\n`).join(''));
        return 0;
      }
      case 'holds place': {
        if (!['session', 'room', 'participant', 'query'].includes(o.scope!)) return usage(`unknown scope "${o.scope}"`);
        const h = await new LegalHolds(db, audit).place({ caseId: o.case!, reason: o.reason!, scopeType: o.scope as HoldScope, scopeValue: o.value!, placedBy: actor });
        print(h, `placed hold ${h.id} (case ${h.caseId}, ${h.scopeType}=${h.scopeValue}${h.scopeType === 'query' ? `, ${h.frozenSessionIds.length} session(s) frozen` : ''})\n`);
        return 0;
      }
      case 'consent list': {
        // Every event, paged through, so the CSV is the whole log for the filter.
        const events: ConsentEventView[] = [];
        for (let after = 0; ; ) {
          const page = await listConsentEvents(db, { participant: o.participant, session: o.session, room: o.room, after, limit: 1000 });
          events.push(...page);
          if (page.length < 1000) break;
          after = page.at(-1)!.id;
        }
        await audit.append({ action: 'consent.view', actor, target: o.session ? { type: 'session', id: o.session } : o.participant ? { type: 'participant', id: o.participant } : { type: 'consent_log' }, details: { filters: { participant: o.participant, session: o.session, room: o.room }, returned: events.length, format: o.csv ? 'csv' : o.json ? 'json' : 'text', via: 'cli' } });
        if (o.csv) out(consentCsv(events));
        else print(events, events.map((e) => `${e.at}  ${e.room}  ${e.session ?? '-'}  ${e.participant}${e.participantName ? ` (${e.participantName})` : ''}  ${e.decision}  ${e.method}  policy ${e.policy}\n`).join(''));
        return 0;
      }
      case 'holds release': {
        const h = await new LegalHolds(db, audit).release(parsed.positionals[0]!, actor, o.reason);
        print(h, `released hold ${h.id} (case ${h.caseId}); retention applies again at the next sweep\n`);
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

/** REDIS_URL, else the Redis of an `npm start` running on this data dir (its socket). */
function queueRedis(config: Config): string | undefined {
  const sock = path.join(config.DATA_DIR, 'redis', 'redis.sock');
  return config.REDIS_URL ?? (existsSync(sock) ? `unix://${sock}` : undefined);
}

function describeErasure(r: ErasureRecord): string {
  const lines = r.outcome.map((x) => `  ${x.session}: ${x.state}${x.holds?.length ? ` by hold(s) ${x.holds.map((h) => `${h.id} (case ${h.caseId ?? '?'})`).join(', ')}` : ''}${x.composite ? `; composite ${x.composite}` : ''}${x.note ? ` — ${x.note}` : ''}`);
  if (r.error) lines.push(`  ${r.error.code}: ${r.error.message} (submit the same request again to resume it)`);
  else if (r.status === 'pending' || r.status === 'running') lines.push(`  ${r.progress.pct}%${r.progress.stage ? ` — ${r.progress.stage}` : ''}`);
  return `erasure ${r.id}: participant ${r.participant}, ${r.session ?? 'all sessions'}: ${r.status}\n${lines.join('\n')}${lines.length ? '\n' : ''}`;
}
