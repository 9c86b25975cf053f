import { sql, type Kysely } from 'kysely';

/**
 * Supervision (services/audit/src/supervision): policies that flag what was said, and the
 * review queue their hits land in.
 *
 * - supervision_policies / supervision_policy_versions: a policy is a name and a chain of
 *   immutable versions; the newest version of an enabled policy is in force. A version keeps
 *   the definition as given (lexicon, detectors, patterns, scope, severity, sampling) and
 *   `compiled`: the lexicon as tsqueries, made by Postgres itself when the version was saved.
 * - identity_groups / identity_group_members: named groups of participant identities that a
 *   policy's scope (and capture assurance) can name.
 * - review_items: one per (policy, version, session, speaker, kind): hits of one policy
 *   version on one speaker in one session join one item; a 'sample' item (participant_id '')
 *   is a session drawn for random supervision. The unique key makes re-evaluation idempotent.
 *   state: open → escalated → closed, or open → closed; disposition/reason of the last decision.
 * - review_hits: each match (segment, rule, character span, matched words, snippet). They go
 *   with their transcript segment (erasure, retention): the item keeps the count and time of
 *   that (removed_hits, hits_removed_at), through a trigger; a transcript registered again
 *   replaces its segments, which is not a removal (its evaluation files the hits again).
 * - review_decisions / review_notes: every disposition (with the hold or export an escalation
 *   started) and note, kept in order.
 * - supervision_runs: a policy run over the stored transcripts (a BullMQ job), with progress.
 * - verbatim_lexicon: the english text search configuration without stop words, so a lexicon
 *   phrase like "text me" keeps its "me" (the english configuration drops it).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`create text search dictionary verbatim_english_nostop (template = snowball, language = english)`.execute(db);
  await sql`create text search configuration verbatim_lexicon (copy = english)`.execute(db);
  await sql`
    alter text search configuration verbatim_lexicon
      alter mapping for asciiword, word, numword, asciihword, hword, numhword, hword_asciipart, hword_part, hword_numpart
      with verbatim_english_nostop`.execute(db);

  await db.schema
    .createTable('supervision_policies')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull().unique())
    .addColumn('current_version', 'integer', (c) => c.notNull())
    .addColumn('enabled', 'boolean', (c) => c.notNull().defaultTo(true))
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema
    .createTable('supervision_policy_versions')
    .addColumn('policy_id', 'text', (c) => c.notNull().references('supervision_policies.id').onDelete('cascade'))
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('definition', 'jsonb', (c) => c.notNull())
    .addColumn('compiled', 'jsonb', (c) => c.notNull())
    .addColumn('severity', 'text', (c) => c.notNull().check(sql`severity in ('low', 'medium', 'high', 'critical')`))
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('supervision_policy_versions_pk', ['policy_id', 'version'])
    .execute();

  await db.schema
    .createTable('identity_groups')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('description', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema
    .createTable('identity_group_members')
    .addColumn('group_name', 'text', (c) => c.notNull().references('identity_groups.name').onDelete('cascade'))
    .addColumn('participant_id', 'text', (c) => c.notNull())
    .addColumn('added_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('identity_group_members_pk', ['group_name', 'participant_id'])
    .execute();
  await db.schema.createIndex('identity_group_members_participant_idx').on('identity_group_members').column('participant_id').execute();

  await db.schema
    .createTable('review_items')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('policy_id', 'text', (c) => c.notNull().references('supervision_policies.id').onDelete('cascade'))
    .addColumn('policy_version', 'integer', (c) => c.notNull())
    .addColumn('severity', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('hit', 'sample')`))
    .addColumn('session_id', 'text', (c) => c.notNull().references('recording_sessions.id').onDelete('cascade'))
    .addColumn('room_id', 'text', (c) => c.notNull())
    .addColumn('participant_id', 'text', (c) => c.notNull())
    .addColumn('speaker', 'text', (c) => c.notNull())
    .addColumn('start_seconds', 'double precision', (c) => c.notNull())
    .addColumn('end_seconds', 'double precision', (c) => c.notNull())
    .addColumn('spoken_at', 'timestamptz', (c) => c.notNull())
    .addColumn('hit_count', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('removed_hits', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('hits_removed_at', 'timestamptz')
    .addColumn('state', 'text', (c) => c.notNull().defaultTo('open').check(sql`state in ('open', 'escalated', 'closed')`))
    .addColumn('assignee', 'text')
    .addColumn('assigned_at', 'timestamptz')
    .addColumn('disposition', 'text', (c) => c.check(sql`disposition in ('no_issue', 'false_positive', 'escalated', 'violation')`))
    .addColumn('reason', 'text')
    .addColumn('decided_by', 'text')
    .addColumn('decided_at', 'timestamptz')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addUniqueConstraint('review_items_key', ['policy_id', 'policy_version', 'session_id', 'participant_id', 'kind'])
    .execute();
  // The queue's filters: newest first within a state, by policy, reviewer, room, date.
  await db.schema.createIndex('review_items_state_created_idx').on('review_items').columns(['state', 'created_at desc', 'id']).execute();
  await db.schema.createIndex('review_items_created_idx').on('review_items').columns(['created_at desc', 'id']).execute();
  await db.schema.createIndex('review_items_policy_idx').on('review_items').columns(['policy_id', 'state', 'created_at desc']).execute();
  await db.schema.createIndex('review_items_spoken_idx').on('review_items').columns(['spoken_at', 'state']).execute();
  await db.schema.createIndex('review_items_assignee_idx').on('review_items').columns(['assignee', 'created_at desc']).execute();
  await db.schema.createIndex('review_items_room_idx').on('review_items').columns(['room_id', 'created_at desc']).execute();
  await db.schema.createIndex('review_items_session_idx').on('review_items').column('session_id').execute();
  await db.schema.createIndex('review_items_decided_idx').on('review_items').column('decided_at').execute();

  await db.schema
    .createTable('review_hits')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('item_id', 'text', (c) => c.notNull().references('review_items.id').onDelete('cascade'))
    .addColumn('session_id', 'text', (c) => c.notNull())
    .addColumn('seq', 'integer', (c) => c.notNull())
    .addColumn('participant_id', 'text', (c) => c.notNull())
    .addColumn('rule', 'text', (c) => c.notNull())
    .addColumn('rule_kind', 'text', (c) => c.notNull().check(sql`rule_kind in ('lexicon', 'detector', 'pattern')`))
    .addColumn('label', 'text', (c) => c.notNull())
    .addColumn('matched', 'text', (c) => c.notNull())
    .addColumn('snippet', 'text', (c) => c.notNull())
    .addColumn('char_start', 'integer', (c) => c.notNull())
    .addColumn('char_end', 'integer', (c) => c.notNull())
    .addColumn('start_seconds', 'double precision', (c) => c.notNull())
    .addColumn('end_seconds', 'double precision', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addUniqueConstraint('review_hits_key', ['item_id', 'seq', 'rule', 'char_start'])
    .addForeignKeyConstraint('review_hits_segment_fk', ['session_id', 'seq'], 'transcript_segments', ['session_id', 'seq'], (c) => c.onDelete('cascade'))
    .execute();
  await db.schema.createIndex('review_hits_segment_idx').on('review_hits').columns(['session_id', 'seq']).execute();
  // A hit deleted with its segment is counted on its item, at commit: a segment that exists again
  // by then was replaced (a transcript registered again, whose evaluation files its hits anew),
  // not erased, and is not counted as removed.
  await sql`
    create function review_hit_removed() returns trigger language plpgsql set search_path from current as $$
    begin
      if exists (select 1 from transcript_segments where session_id = old.session_id and seq = old.seq) then
        update review_items set hit_count = greatest(hit_count - 1, 0), updated_at = now() where id = old.item_id;
      else
        update review_items set hit_count = greatest(hit_count - 1, 0), removed_hits = removed_hits + 1, hits_removed_at = now(), updated_at = now()
          where id = old.item_id;
      end if;
      return null;
    end
    $$`.execute(db);
  await sql`
    create constraint trigger review_hits_removed after delete on review_hits deferrable initially deferred
      for each row execute function review_hit_removed()`.execute(db);

  await db.schema
    .createTable('review_decisions')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('item_id', 'text', (c) => c.notNull().references('review_items.id').onDelete('cascade'))
    .addColumn('disposition', 'text', (c) => c.notNull().check(sql`disposition in ('no_issue', 'false_positive', 'escalated', 'violation')`))
    .addColumn('reason', 'text', (c) => c.notNull())
    .addColumn('decided_by', 'text', (c) => c.notNull())
    .addColumn('decided_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('hold_id', 'text')
    .addColumn('export_id', 'text')
    .execute();
  await db.schema.createIndex('review_decisions_item_idx').on('review_decisions').column('item_id').execute();
  await db.schema
    .createTable('review_notes')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('item_id', 'text', (c) => c.notNull().references('review_items.id').onDelete('cascade'))
    .addColumn('author', 'text', (c) => c.notNull())
    .addColumn('body', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema.createIndex('review_notes_item_idx').on('review_notes').column('item_id').execute();

  await db.schema
    .createTable('supervision_runs')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('policy_id', 'text', (c) => c.notNull().references('supervision_policies.id').onDelete('cascade'))
    .addColumn('policy_version', 'integer', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull().check(sql`status in ('queued', 'running', 'done', 'failed')`))
    .addColumn('sessions_total', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('sessions_done', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('items_touched', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('hits_found', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('requested_by', 'text', (c) => c.notNull())
    .addColumn('error_message', 'text')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('started_at', 'timestamptz')
    .addColumn('finished_at', 'timestamptz')
    .execute();
  await db.schema.createIndex('supervision_runs_policy_idx').on('supervision_runs').columns(['policy_id', 'created_at desc']).execute();
}
