import type { ColumnType, Generated, JSONColumnType } from 'kysely';
import type { RoomFlags } from '../services/lib/contracts/room.ts';
import type { LiveSegmentsTable, LiveSessionEventsTable, LiveSessionParticipantsTable, LiveSessionTracksTable, LiveTrackPlacementsTable, RecordersTable, RoomOriginsTable, SfuHostsTable } from './schema-cluster.ts';

/** A timestamptz with a database default: optional on insert. */
export type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;

export interface RoomsTable {
  id: string;
  name: string;
  flags: JSONColumnType<RoomFlags, string, string>;
  /** scrypt hash of the room secret that unlocks a lockRecord room's recording toggle. */
  secret_hash: string;
  recording: Generated<boolean>;
  created_at: Timestamp;
  updated_at: Timestamp;
  closed_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface ConsentEventsTable {
  id: Generated<number>;
  room_id: string;
  session_id: string | null;
  participant_id: string;
  participant_name: string;
  policy: string;
  decision: 'granted' | 'declined';
  method: 'click' | 'announcement' | 'pre-accepted';
  client_info: JSONColumnType<Record<string, unknown>, string, string>;
  created_at: Timestamp;
}

export type SessionStatus = 'recording' | 'sealed' | 'processing' | 'done' | 'failed';

export interface RecordingSessionsTable {
  id: string;
  room_id: string;
  started_at: ColumnType<Date, Date | string, Date | string>;
  ended_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  end_reason: string | null;
  status: SessionStatus;
  manifest_path: string | null;
  manifest_sha256: string | null;
  error_code: string | null;
  error_message: string | null;
  progress: ColumnType<number, number | undefined, number>;
  /** done | skipped | MODEL_MISSING ... (why there is no transcript). */
  transcript_status: string | null;
  /** Retention policy the session was recorded under (migration 0006); NULL = the room's retentionPolicy flag. */
  retention_policy: ColumnType<string | null, string | null | undefined, string | null>;
  retention_tags: ColumnType<string[], string | undefined, string>;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface ArtifactsTable {
  session_id: string;
  key: string;
  kind: string;
  participant_id: string | null;
  content_type: string;
  bytes: number;
  sha256: string;
  storage: string;
  duration_seconds: number | null;
  created_at: Timestamp;
  /** The data key the stored object is encrypted with; null: stored in clear (migration 0019). */
  key_id: ColumnType<string | null, string | null | undefined, string | null>;
}

/** Data keys for encryption at rest, wrapped by the master key; wrapped_key null once destroyed (migration 0019). */
export interface DataKeysTable {
  id: string;
  session_id: string;
  /** null: the session-wide key (composite, transcripts). */
  participant_id: string | null;
  wrapped_key: Buffer | null;
  master_key_id: string;
  created_at: Timestamp;
  destroyed_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface TranscriptSegmentsTable {
  session_id: string;
  seq: number;
  participant_id: string;
  speaker: string;
  start_seconds: number;
  end_seconds: number;
  text: string;
  language: string;
  /** Session start + start_seconds, kept by a trigger (migration 0008): never written directly. */
  spoken_at: ColumnType<Date, never, never>;
  /** The session's room, kept by the same trigger. */
  room_id: ColumnType<string, never, never>;
  /** whisper.cpp's token timestamps in session seconds (migration 0017); NULL when the transcriber gave none. */
  words: ColumnType<TranscriptWord[] | null, string | null | undefined, string | null>;
}

/** One word (whisper.cpp token run) of a transcript segment, in session seconds. */
export interface TranscriptWord {
  text: string;
  start: number;
  end: number;
}

export interface SessionParticipantsTable {
  session_id: string;
  participant_id: string;
  name: string;
  consent_decision: string;
  consent_method: string | null;
}

export interface TracksTable {
  session_id: string;
  track_id: string;
  participant_id: string;
  kind: 'audio' | 'video';
  codec: JSONColumnType<Record<string, unknown>, string, string>;
}

export interface TrackSegmentsTable {
  session_id: string;
  track_id: string;
  segment: number;
  file: string;
  ssrc: number;
  bytes: number;
  sha256: string;
  rtp_packets: number;
  rtcp_packets: number;
  started_at: ColumnType<Date, Date | string, Date | string>;
  ended_at: ColumnType<Date, Date | string, Date | string>;
  end_reason: string;
  truncated: boolean;
  /** The raw segment's key in artifact storage once uploaded and checked (migration 0015). */
  stored_key: ColumnType<string | null, string | null | undefined, string | null>;
  stored_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  /** The data key the stored copy is encrypted with; null: stored in clear (migration 0019). */
  key_id: ColumnType<string | null, string | null | undefined, string | null>;
}

/** The sealed session's timeline, one row per manifest event in manifest order (migration 0010). */
export interface SessionEventsTable {
  session_id: string;
  ordinal: number;
  at: ColumnType<Date, Date | string, Date | string>;
  type: string;
  participant_id: string | null;
  track_id: string | null;
  details: JSONColumnType<Record<string, unknown>, string, string>;
}

export type { AuditActorType } from '../services/lib/audit-sink.ts';
import type { AuditActorType } from '../services/lib/audit-sink.ts';

/** The hash-chained audit trail (append-only; see services/audit). */
export interface AuditLogTable {
  seq: number;
  at: ColumnType<Date, string, never>;
  actor_type: AuditActorType | null;
  actor_id: string | null;
  action: string;
  target_type: string | null;
  target_id: string | null;
  details: JSONColumnType<Record<string, unknown>, string, never>;
  client_address: string | null;
  prev_hash: string;
  hash: string;
}

/** Signed heads of the audit chain (also exported outside the database). */
export interface AuditCheckpointsTable {
  seq: number;
  head_hash: string | null;
  at: ColumnType<Date | null, string | null, never>;
  signature: string | null;
  storage_key: string | null;
}

/** The roles of the compliance API (services/audit/src/auth.ts gives each its permissions). */
export const USER_ROLES = ['admin', 'compliance_officer', 'auditor'] as const;
export type UserRole = (typeof USER_ROLES)[number];

/** Users of the compliance API (migration 0005). */
export interface UsersTable {
  id: string;
  name: string;
  role: UserRole;
  created_at: Timestamp;
  disabled_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  /** The OpenID Connect identity (iss, sub) of a user provisioned by SSO (migration 0012). */
  external_issuer: ColumnType<string | null, string | null | undefined, string | null>;
  external_subject: ColumnType<string | null, string | null | undefined, string | null>;
}

/** API keys `vb_<prefix>_<secret>`: the prefix for lookup, an scrypt hash of the whole key. */
export interface ApiKeysTable {
  id: string;
  user_id: string;
  prefix: string;
  hash: string;
  created_at: Timestamp;
  expires_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  /** When the key stops being accepted; in the future while a rotated key's grace period runs (migration 0012). */
  revoked_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  last_used_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  /** The key this one replaced by rotation (migration 0012). */
  rotated_from: ColumnType<string | null, string | null | undefined, string | null>;
}

export type RetentionKind = 'media' | 'transcript' | 'raw';

/** Retention policies (migration 0006): days after a session ends, per kind; NULL = keep forever. */
export interface RetentionPoliciesTable {
  name: string;
  scope: 'default' | 'room' | 'tag';
  media_days: number | null;
  transcript_days: number | null;
  raw_days: number | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}

/** Legal holds (migration 0006): released_at NULL = in force. */
export interface LegalHoldsTable {
  id: string;
  case_id: string;
  reason: string;
  scope_type: 'session' | 'room' | 'participant' | 'query';
  scope_value: string;
  frozen_session_ids: ColumnType<string[], string | undefined, string>;
  placed_by: string;
  placed_at: Timestamp;
  released_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  released_by: string | null;
}

/** What retention deleted (migration 0006). */
export interface TombstonesTable {
  id: Generated<number>;
  session_id: string;
  kind: RetentionKind;
  item: string;
  deleted_at: Timestamp;
  reason: string;
  policy: string | null;
  /** The erasure request that deleted it (migration 0007); NULL = retention. */
  erasure_request: ColumnType<string | null, string | null | undefined, string | null>;
}

/** Signed-in browsers of the compliance console (migration 0007). */
export interface ConsoleSessionsTable {
  id: string;
  /** The API key the session was opened with; NULL for an SSO session (migration 0012). */
  key_id: ColumnType<string | null, string | null | undefined, string | null>;
  user_id: string;
  created_at: Timestamp;
  expires_at: ColumnType<Date, Date | string, Date | string>;
  ended_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  client_address: string | null;
  method: ColumnType<'key' | 'sso', 'key' | 'sso' | undefined, 'key' | 'sso'>;
  idp_issuer: ColumnType<string | null, string | null | undefined, string | null>;
  idp_subject: ColumnType<string | null, string | null | undefined, string | null>;
  idp_sid: ColumnType<string | null, string | null | undefined, string | null>;
  /** Sent back to the IdP as id_token_hint at sign-out. */
  id_token: ColumnType<string | null, string | null | undefined, string | null>;
}

export type ErasureStatus = 'pending' | 'running' | 'completed' | 'restricted' | 'partial' | 'failed';

/** GDPR Art. 17 erasure requests (migration 0007; run as background jobs since 0011). */
export interface ErasureRequestsTable {
  id: string;
  participant_id: string;
  /** NULL = every session of the participant. */
  session_id: string | null;
  reason: string;
  status: ErasureStatus;
  holds: ColumnType<string[], string | undefined, string>;
  outcome: ColumnType<unknown[], string | undefined, string>;
  requested_by: string;
  requested_at: Timestamp;
  completed_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  /** The sessions it covers, each with the step reached (services/audit/src/erasure-jobs.ts). */
  sessions: ColumnType<unknown[], string | undefined, string>;
  progress: ColumnType<number, number | undefined, number>;
  stage: ColumnType<string | null, string | null | undefined, string | null>;
  error_code: ColumnType<string | null, string | null | undefined, string | null>;
  error_message: ColumnType<string | null, string | null | undefined, string | null>;
}

export type ExportStatus = 'running' | 'done' | 'failed';

/** E-discovery exports requested through the API (migration 0009). */
export interface ExportsTable {
  id: string;
  selection: ColumnType<unknown, string, string>;
  status: ExportStatus;
  requested_by: string;
  files_done: ColumnType<number, number | undefined, number>;
  files_total: ColumnType<number, number | undefined, number>;
  bytes_done: ColumnType<number, number | undefined, number>;
  bytes_total: ColumnType<number, number | undefined, number>;
  file: string | null;
  bytes: ColumnType<number | null, number | null | undefined, number | null>;
  manifest_sha256: string | null;
  session_ids: ColumnType<string[], string | undefined, string>;
  error_code: string | null;
  error_message: string | null;
  created_at: Timestamp;
  finished_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export type ReviewSeverity = 'low' | 'medium' | 'high' | 'critical';
export type ReviewDisposition = 'no_issue' | 'false_positive' | 'escalated' | 'violation';
export type ReviewState = 'open' | 'escalated' | 'closed';

/** Supervision policies (migration 0016): the newest version of an enabled policy is in force. */
export interface SupervisionPoliciesTable {
  id: string;
  name: string;
  current_version: number;
  enabled: Generated<boolean>;
  created_by: string;
  created_at: Timestamp;
  updated_at: Timestamp;
}

/** Immutable versions of a policy: the definition as given and its lexicon compiled to tsqueries. */
export interface SupervisionPolicyVersionsTable {
  policy_id: string;
  version: number;
  definition: ColumnType<unknown, string, string>;
  compiled: ColumnType<unknown, string, string>;
  severity: ReviewSeverity;
  created_by: string;
  created_at: Timestamp;
}

/** Named groups of participant identities (migration 0016). */
export interface IdentityGroupsTable {
  name: string;
  description: ColumnType<string, string | undefined, string>;
  created_at: Timestamp;
}

export interface IdentityGroupMembersTable {
  group_name: string;
  participant_id: string;
  added_at: Timestamp;
}

/** The review queue (migration 0016): one item per policy version, session, speaker and kind. */
export interface ReviewItemsTable {
  id: string;
  policy_id: string;
  policy_version: number;
  severity: ReviewSeverity;
  kind: 'hit' | 'sample';
  session_id: string;
  room_id: string;
  /** '' for a sample item (the session as a whole). */
  participant_id: string;
  speaker: string;
  start_seconds: number;
  end_seconds: number;
  spoken_at: ColumnType<Date, Date | string, Date | string>;
  hit_count: ColumnType<number, number | undefined, number>;
  /** Hits that went with their erased transcript segment (erasure, retention); kept by a trigger. */
  removed_hits: ColumnType<number, number | undefined, number>;
  hits_removed_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  state: ColumnType<ReviewState, ReviewState | undefined, ReviewState>;
  assignee: ColumnType<string | null, string | null | undefined, string | null>;
  assigned_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  disposition: ColumnType<ReviewDisposition | null, ReviewDisposition | null | undefined, ReviewDisposition | null>;
  reason: ColumnType<string | null, string | null | undefined, string | null>;
  decided_by: ColumnType<string | null, string | null | undefined, string | null>;
  decided_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  created_at: Timestamp;
  updated_at: Timestamp;
}

/** One match of a policy rule in a transcript segment; deleted with the segment. */
export interface ReviewHitsTable {
  id: Generated<number>;
  item_id: string;
  session_id: string;
  seq: number;
  participant_id: string;
  /** 'lexicon:<entry>', 'detector:<name>' or 'pattern:<name>'. */
  rule: string;
  rule_kind: 'lexicon' | 'detector' | 'pattern';
  /** What a redacted view shows instead (detectors: e.g. 'CARD NUMBER'). */
  label: string;
  matched: string;
  snippet: string;
  /** The match's characters in the segment's text [char_start, char_end). */
  char_start: number;
  char_end: number;
  start_seconds: number;
  end_seconds: number;
  created_at: Timestamp;
}

export interface ReviewDecisionsTable {
  id: Generated<number>;
  item_id: string;
  disposition: ReviewDisposition;
  reason: string;
  decided_by: string;
  decided_at: Timestamp;
  hold_id: string | null;
  export_id: string | null;
}

export interface ReviewNotesTable {
  id: Generated<number>;
  item_id: string;
  author: string;
  body: string;
  created_at: Timestamp;
}

/** A policy version run over the stored transcripts (a BullMQ job), with its progress. */
export interface SupervisionRunsTable {
  id: string;
  policy_id: string;
  policy_version: number;
  status: 'queued' | 'running' | 'done' | 'failed';
  sessions_total: ColumnType<number, number | undefined, number>;
  sessions_done: ColumnType<number, number | undefined, number>;
  items_touched: ColumnType<number, number | undefined, number>;
  hits_found: ColumnType<number, number | undefined, number>;
  requested_by: string;
  error_message: ColumnType<string | null, string | null | undefined, string | null>;
  created_at: Timestamp;
  started_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  finished_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

/** Identities and groups (identity_groups) recorded in every room they join (migration 0017). */
export interface RegulatedSubjectsTable {
  kind: 'identity' | 'group';
  value: string;
  reason: string;
  added_by: string;
  added_at: Timestamp;
}

/** The SFU's record of a regulated identity in a room (migration 0017). */
export interface RegulatedAttendanceTable {
  id: Generated<number>;
  room_id: string;
  participant_id: string;
  participant_name: string;
  joined_at: ColumnType<Date, Date | string, Date | string>;
  left_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  first_produced_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export type ReconciliationExceptionKind = 'joined_not_recorded' | 'recorder_gap' | 'not_transcribed' | 'hash_mismatch' | 'artifact_missing';

export interface ReconciliationRunsTable {
  id: string;
  window_from: ColumnType<Date, Date | string, Date | string>;
  window_to: ColumnType<Date, Date | string, Date | string>;
  requested_by: string;
  status: 'running' | 'done' | 'failed';
  summary: ColumnType<Record<string, unknown>, string | undefined, string>;
  error_message: string | null;
  started_at: Timestamp;
  finished_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface ReconciliationExceptionsTable {
  run_id: string;
  ordinal: number;
  kind: ReconciliationExceptionKind;
  room_id: string | null;
  session_id: string | null;
  participant_id: string | null;
  track_id: string | null;
  artifact_key: string | null;
  from_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  to_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  details: ColumnType<Record<string, unknown>, string | undefined, string>;
}

/** Spans of a transcript segment shown as a label to roles without redaction.reveal (migration 0017). */
export interface RedactionSpansTable {
  id: string;
  session_id: string;
  seq: number;
  char_start: number;
  char_end: number;
  start_seconds: number;
  end_seconds: number;
  label: string;
  source: 'detector' | 'officer';
  created_by: string;
  created_at: Timestamp;
}

/** The key pseudonyms are made with (migration 0017). */
export interface PseudonymKeysTable {
  name: string;
  key: string;
  created_at: Timestamp;
}

/** Which reviewer revealed which speaker of a pseudonymised policy (migration 0017). */
export interface PseudonymRevealsTable {
  policy_id: string;
  participant_id: string;
  revealed_to: string;
  revealed_at: Timestamp;
}

export interface Database {
  rooms: RoomsTable;
  consent_events: ConsentEventsTable;
  recording_sessions: RecordingSessionsTable;
  session_participants: SessionParticipantsTable;
  tracks: TracksTable;
  track_segments: TrackSegmentsTable;
  session_events: SessionEventsTable;
  artifacts: ArtifactsTable;
  data_keys: DataKeysTable;
  transcript_segments: TranscriptSegmentsTable;
  audit_log: AuditLogTable;
  audit_checkpoints: AuditCheckpointsTable;
  users: UsersTable;
  api_keys: ApiKeysTable;
  retention_policies: RetentionPoliciesTable;
  legal_holds: LegalHoldsTable;
  tombstones: TombstonesTable;
  console_sessions: ConsoleSessionsTable;
  erasure_requests: ErasureRequestsTable;
  exports: ExportsTable;
  recorders: RecordersTable;
  live_session_participants: LiveSessionParticipantsTable;
  live_session_tracks: LiveSessionTracksTable;
  live_track_placements: LiveTrackPlacementsTable;
  live_segments: LiveSegmentsTable;
  live_session_events: LiveSessionEventsTable;
  supervision_policies: SupervisionPoliciesTable;
  supervision_policy_versions: SupervisionPolicyVersionsTable;
  identity_groups: IdentityGroupsTable;
  identity_group_members: IdentityGroupMembersTable;
  review_items: ReviewItemsTable;
  review_hits: ReviewHitsTable;
  review_decisions: ReviewDecisionsTable;
  review_notes: ReviewNotesTable;
  supervision_runs: SupervisionRunsTable;
  sfu_hosts: SfuHostsTable;
  room_origins: RoomOriginsTable;
  regulated_subjects: RegulatedSubjectsTable;
  regulated_attendance: RegulatedAttendanceTable;
  reconciliation_runs: ReconciliationRunsTable;
  reconciliation_exceptions: ReconciliationExceptionsTable;
  redaction_spans: RedactionSpansTable;
  pseudonym_keys: PseudonymKeysTable;
  pseudonym_reveals: PseudonymRevealsTable;
}

