import { sql, type Kysely } from 'kysely';

/**
 * Erasure requests run as background jobs (services/audit/src/erasure-jobs.ts): the request is
 * answered at once and the work (deletions, transcript rebuild, composite re-render by a
 * transcode job) runs on the erasure queue, resuming where it was after a restart.
 *
 * - status gains 'running' (pending → running → completed | restricted | partial | failed).
 * - sessions: the sessions the request covers, fixed when it is accepted, each with the step
 *   it has reached and what that step recorded (written in the same transaction as the step's
 *   own effects, so a resumed job neither repeats nor skips a step).
 * - progress / stage: how far it is (0-100) and what it is doing, for clients that poll.
 * - error_code / error_message: the job failed for good (ERASURE_FAILED); submitting the same
 *   request again resumes it.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('erasure_requests').dropConstraint('erasure_requests_status_check').execute();
  await db.schema
    .alterTable('erasure_requests')
    .addCheckConstraint('erasure_requests_status_check', sql`status in ('pending', 'running', 'completed', 'restricted', 'partial', 'failed')`)
    .execute();
  await db.schema
    .alterTable('erasure_requests')
    .addColumn('sessions', 'jsonb', (c) => c.notNull().defaultTo(sql`'[]'::jsonb`))
    .addColumn('progress', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('stage', 'text')
    .addColumn('error_code', 'text')
    .addColumn('error_message', 'text')
    .execute();
  // Requests accepted before this migration ran to completion inside their HTTP request.
  await db.updateTable('erasure_requests').set({ progress: 100 }).where('status', '!=', 'pending').execute();
}
