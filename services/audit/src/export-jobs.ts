import { randomUUID } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Db } from '../../../db/database.ts';
import { toVerbatimError, VerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import type { ArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import type { AuditEntryInput, AuditLog } from './audit-log.ts';
import { checkExportSelection, exportArchive, type ExportProgress, type ExportSelection } from './export.ts';

/**
 * E-discovery exports requested over the API. An archive can take minutes (it streams every
 * selected artifact from storage), so the request only starts it: the archive is built in this
 * process in the background, its progress is written to the `exports` row (throttled) for
 * clients to poll, and the finished archive is served from `dir`. One export at a time per
 * process keeps storage reads from starving playback; later requests wait their turn.
 */

export interface ExportRecord {
  id: string;
  status: 'running' | 'done' | 'failed';
  selection: ExportSelection;
  requestedBy: string;
  progress: { filesDone: number; filesTotal: number; bytesDone: number; bytesTotal: number; pct: number };
  sessionIds: string[];
  bytes: number | null;
  manifestSha256: string | null;
  error: { code: string; message: string } | null;
  createdAt: string;
  finishedAt: string | null;
}

export interface ExportJobsOptions {
  db: Db;
  storage: ArtifactStorage;
  auditLog: AuditLog;
  /** Where finished archives are kept (DATA_DIR/exports). */
  dir: string;
  logger: Logger;
  /** Minimum time between progress writes to the db. */
  progressEveryMs?: number;
}

export class ExportJobs {
  private queue: Promise<unknown> = Promise.resolve();
  private recovered = false;

  constructor(private readonly opts: ExportJobsOptions) {}

  /** Exports left 'running' by a process that died can never finish: say so instead of spinning forever. */
  async recoverInterrupted(): Promise<number> {
    if (this.recovered) return 0;
    this.recovered = true;
    const r = await this.opts.db
      .updateTable('exports')
      .set({ status: 'failed', error_code: 'EXPORT_INTERRUPTED', error_message: 'the compliance service stopped while this export was being built; request it again', finished_at: new Date() })
      .where('status', '=', 'running')
      .executeTakeFirst();
    return Number(r.numUpdatedRows);
  }

  /** Records the request and starts building; resolves as soon as the row exists. */
  async start(selection: ExportSelection, actor: NonNullable<AuditEntryInput['actor']>): Promise<ExportRecord> {
    // An unknown hold or session is refused now (404), not accepted and failed in the background.
    await checkExportSelection(this.opts.db, selection);
    await this.recoverInterrupted();
    const id = randomUUID();
    await this.opts.db
      .insertInto('exports')
      .values({ id, selection: JSON.stringify(selection), status: 'running', requested_by: `${actor.type}:${actor.id}` })
      .execute();
    this.queue = this.queue.then(() => this.build(id, selection, actor));
    return (await this.get(id))!;
  }

  async get(id: string): Promise<ExportRecord | null> {
    const r = await this.opts.db.selectFrom('exports').selectAll().where('id', '=', id).executeTakeFirst();
    return r ? toRecord(r) : null;
  }

  async list(limit = 50): Promise<ExportRecord[]> {
    const rows = await this.opts.db.selectFrom('exports').selectAll().orderBy('created_at', 'desc').orderBy('id').limit(limit).execute();
    return rows.map(toRecord);
  }

  /** The finished archive's path, or an error that names the export's state. */
  async archivePath(id: string): Promise<{ file: string; record: ExportRecord }> {
    const r = await this.opts.db.selectFrom('exports').selectAll().where('id', '=', id).executeTakeFirst();
    if (!r) throw new VerbatimError('NOT_FOUND', `no export ${id}`, { hint: 'List exports with GET /api/v1/exports.' });
    const record = toRecord(r);
    if (record.status === 'running') throw new VerbatimError('CONFLICT', `export ${id} is still being built (${record.progress.pct}%)`, { hint: `Poll GET /api/v1/exports/${id} until its status is done.`, details: { state: 'running', progress: record.progress } });
    if (record.status === 'failed' || !r.file) throw new VerbatimError('GONE', `export ${id} failed: ${record.error?.message ?? 'no archive'}`, { hint: 'Request the export again.', details: { state: 'failed', error: record.error } });
    return { file: path.join(this.opts.dir, r.file), record };
  }

  private async build(id: string, selection: ExportSelection, actor: NonNullable<AuditEntryInput['actor']>): Promise<void> {
    const { db, logger } = this.opts;
    const log = logger.child({ export: id });
    const file = `${id}.tar`;
    const every = this.opts.progressEveryMs ?? 500;
    let lastWrite = 0;
    let pending: Promise<unknown> = Promise.resolve();
    const onProgress = (p: ExportProgress) => {
      const now = Date.now();
      if (now - lastWrite < every && p.filesDone < p.filesTotal) return;
      lastWrite = now;
      // Progress writes are chained so an older one never lands after a newer one.
      pending = pending.then(() =>
        db.updateTable('exports').set({ files_done: p.filesDone, files_total: p.filesTotal, bytes_done: p.bytesDone, bytes_total: p.bytesTotal }).where('id', '=', id).where('status', '=', 'running').execute(),
      );
    };
    try {
      await mkdir(this.opts.dir, { recursive: true });
      const res = await exportArchive({ db, storage: this.opts.storage, auditLog: this.opts.auditLog, selection, out: path.join(this.opts.dir, file), actor, onProgress, exportId: id });
      await pending;
      await db
        .updateTable('exports')
        .set({ status: 'done', file, bytes: res.bytes, manifest_sha256: res.manifestSha256, session_ids: JSON.stringify(res.sessionIds), files_done: res.files, files_total: res.files, finished_at: new Date() })
        .where('id', '=', id)
        .execute();
      log.info({ sessions: res.sessionIds.length, files: res.files, bytes: res.bytes }, 'export built');
    } catch (err) {
      await pending.catch(() => {});
      const e = toVerbatimError(err);
      log.warn({ err, code: e.code }, 'export failed');
      // Never reject: the queue chains every later export behind this one.
      try {
        await rm(path.join(this.opts.dir, file), { force: true });
        await db.updateTable('exports').set({ status: 'failed', error_code: e.code, error_message: e.message, finished_at: new Date() }).where('id', '=', id).execute();
      } catch (err2) {
        log.error({ err: err2 }, 'could not record the failed export (it is marked failed at the next start)');
      }
    }
  }
}

function parseJson<T>(v: unknown): T {
  return (typeof v === 'string' ? JSON.parse(v) : v) as T;
}

function toRecord(r: {
  id: string;
  status: 'running' | 'done' | 'failed';
  selection: unknown;
  requested_by: string;
  files_done: number;
  files_total: number;
  bytes_done: number;
  bytes_total: number;
  bytes: number | null;
  manifest_sha256: string | null;
  session_ids: unknown;
  error_code: string | null;
  error_message: string | null;
  created_at: Date | string;
  finished_at: Date | string | null;
}): ExportRecord {
  const bytesDone = Number(r.bytes_done);
  const bytesTotal = Number(r.bytes_total);
  const filesDone = Number(r.files_done);
  const filesTotal = Number(r.files_total);
  const pct = r.status === 'done' ? 100 : bytesTotal > 0 ? Math.floor((bytesDone / bytesTotal) * 100) : filesTotal > 0 ? Math.floor((filesDone / filesTotal) * 100) : 0;
  return {
    id: r.id,
    status: r.status,
    selection: parseJson<ExportSelection>(r.selection),
    requestedBy: r.requested_by,
    progress: { filesDone, filesTotal, bytesDone, bytesTotal, pct },
    sessionIds: parseJson<string[]>(r.session_ids),
    bytes: r.bytes === null ? null : Number(r.bytes),
    manifestSha256: r.manifest_sha256,
    error: r.error_code ? { code: r.error_code, message: r.error_message ?? '' } : null,
    createdAt: new Date(r.created_at).toISOString(),
    finishedAt: r.finished_at === null ? null : new Date(r.finished_at).toISOString(),
  };
}
