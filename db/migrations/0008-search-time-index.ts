import { sql, type Kysely } from 'kysely';

/**
 * Search at scale (services/audit/src/transcript-search.ts).
 *
 * - transcript_segments.spoken_at (session start + start_seconds) and room_id, kept by
 *   triggers from recording_sessions so every writer gets them without knowing.
 * - tsv gains key lexemes that no text or query can produce (the 'english' configuration
 *   lowercases every token; these have capitals): time buckets of 1, 8 and 64 days
 *   (`KA<day>`, `KB<day/8>`, `KC<day/64>`, days since 1970 UTC), `KP<md5(participant)>` and
 *   `KR<md5(room)>`. A search puts the user's query, its filters
 *   and a time window as separate conditions on the one GIN index; GIN intersects their
 *   posting lists (skipping through the long ones), so the table is read only for rows that
 *   match all of them: the newest matches of a common word without reading every match.
 *   Ranking (ts_rank_cd) only counts the query's lexemes, so the keys do not change ranks,
 *   and `tsv @@ websearch_to_tsquery(...)` still means what it did.
 * - btree (spoken_at): date filters and the searched span.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('transcript_segments').addColumn('spoken_at', 'timestamptz').execute();
  await db.schema.alterTable('transcript_segments').addColumn('room_id', 'text').execute();
  // The trigger functions name tables unqualified: `set search_path from current` pins the
  // schema they are created in (pg_restore, for one, runs with an empty search_path).
  await sql`
    create function transcript_segment_session_fields() returns trigger language plpgsql set search_path from current as $$
    begin
      select rs.started_at + new.start_seconds * interval '1 second', rs.room_id into new.spoken_at, new.room_id
        from recording_sessions rs where rs.id = new.session_id;
      return new;
    end
    $$`.execute(db);
  await sql`
    create trigger transcript_segments_session_fields before insert or update of session_id, start_seconds, spoken_at, room_id
      on transcript_segments for each row execute function transcript_segment_session_fields()`.execute(db);
  // A session's start and room are fixed once recorded, but if one is corrected its segments follow.
  await sql`
    create function recording_session_fields_moved() returns trigger language plpgsql set search_path from current as $$
    begin
      update transcript_segments set spoken_at = new.started_at + start_seconds * interval '1 second', room_id = new.room_id
        where session_id = new.id;
      return null;
    end
    $$`.execute(db);
  await sql`
    create trigger recording_sessions_fields_moved after update of started_at, room_id on recording_sessions
      for each row when (old.started_at is distinct from new.started_at or old.room_id is distinct from new.room_id)
      execute function recording_session_fields_moved()`.execute(db);
  await sql`
    update transcript_segments ts set spoken_at = rs.started_at + ts.start_seconds * interval '1 second', room_id = rs.room_id
      from recording_sessions rs where rs.id = ts.session_id`.execute(db);
  await sql`alter table transcript_segments alter column spoken_at set not null`.execute(db);
  await sql`alter table transcript_segments alter column room_id set not null`.execute(db);
  // One SELECT of one expression, so the planner can inline it. Immutable in fact: epoch
  // seconds do not depend on the time zone.
  await sql`
    create function transcript_search_keys(spoken_at timestamptz, participant_id text, room_id text) returns tsvector
      language sql immutable parallel safe as $$
      select array_to_tsvector(array[
        'KA' || floor(extract(epoch from spoken_at) / 86400)::bigint::text,
        'KB' || floor(extract(epoch from spoken_at) / (86400 * 8))::bigint::text,
        'KC' || floor(extract(epoch from spoken_at) / (86400 * 64))::bigint::text,
        'KP' || md5(participant_id),
        'KR' || md5(room_id)])
    $$`.execute(db);
  await sql`drop index transcript_segments_tsv_idx`.execute(db);
  await db.schema.alterTable('transcript_segments').dropColumn('tsv').execute();
  await db.schema
    .alterTable('transcript_segments')
    .addColumn('tsv', sql`tsvector`, (c) => c.generatedAlwaysAs(sql`to_tsvector('english', text) || transcript_search_keys(spoken_at, participant_id, room_id)`).stored())
    .execute();
  await sql`create index transcript_segments_tsv_idx on transcript_segments using gin (tsv)`.execute(db);
  await db.schema.createIndex('transcript_segments_spoken_at_idx').on('transcript_segments').column('spoken_at').execute();
}
