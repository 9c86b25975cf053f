import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { USER_ROLES, type UserRole } from '../../db/schema.ts';
import { VerbatimError } from './errors.ts';
import { readToolchain } from './toolchain.ts';

/**
 * All settings of every service, one flat table keyed by the environment variable
 * that sets it. A JSON file named by VERBATIM_CONFIG may set the same keys; the
 * environment wins. Parsed and validated once at start-up; a bad value fails fast
 * naming the key. The README's configuration table is generated from this spec.
 */
const bool = z
  .union([z.boolean(), z.enum(['true', 'false', '1', '0', 'yes', 'no'])])
  .transform((v) => v === true || v === 'true' || v === '1' || v === 'yes');
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const optionalString = z
  .string()
  .optional()
  .transform((v) => (v === undefined || v === '' ? undefined : v));
const optionalUrl = optionalString.pipe(z.url({ protocol: /^https?$/ }).optional());

/** OIDC_ROLE_MAP "group=role,group=role" → pairs in priority order; throws a message naming the bad pair. */
export function parseRoleMap(text: string): { group: string; role: UserRole }[] {
  const pairs = text
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '');
  if (pairs.length === 0) throw new Error('needs at least one group=role pair');
  return pairs.map((pair) => {
    const i = pair.lastIndexOf('=');
    const group = pair.slice(0, i).trim();
    const role = pair.slice(i + 1).trim();
    if (i <= 0 || group === '') throw new Error(`"${pair}" is not group=role`);
    if (!(USER_ROLES as readonly string[]).includes(role)) throw new Error(`"${pair}": unknown role ${role} (roles: ${USER_ROLES.join(', ')})`);
    return { group, role: role as UserRole };
  });
}
const roleMap = optionalString.superRefine((v, ctx) => {
  if (v === undefined) return;
  try {
    parseRoleMap(v);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
  }
});

export const configSpec = {
  DATA_DIR: { schema: z.string().min(1), default: './data', doc: 'Root of every embedded-default state: the PostgreSQL cluster (DATA_DIR/postgres; as root, where DATA_DIR/postgres-location.json says), Redis, recordings, artifacts, secrets.' },
  LOG_LEVEL: { schema: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']), default: 'info', doc: 'pino log level.' },
  DATABASE_URL: { schema: optionalString, default: undefined, doc: 'Postgres URL (postgres://user@host:5432/db). Unset: a private PostgreSQL server on a unix socket, cluster in DATA_DIR (started by npm start for every stage; an older DATA_DIR/pglite is imported once).' },
  DATABASE_SCHEMA: { schema: optionalString, default: undefined, doc: 'Postgres schema for Verbatim tables (default: public).' },
  REDIS_URL: { schema: optionalString, default: undefined, doc: 'Redis URL for job queues. Unset: a private redis-server child process.' },
  SFU_HOST: { schema: z.string().min(1), default: '127.0.0.1', doc: 'Address the SFU HTTP/WebSocket server binds.' },
  SFU_PORT: { schema: int(0, 65535), default: 8080, doc: 'SFU HTTP/WebSocket port (0 = pick a free one).' },
  SFU_PUBLIC_URL: { schema: optionalString, default: undefined, doc: 'Base URL printed in join links (default http://SFU_HOST:SFU_PORT).' },
  SFU_API_SECRET: { schema: optionalString, default: undefined, doc: 'Admin API bearer secret (min 16 chars). Unset: generated once into DATA_DIR/secrets.json.' },
  SFU_TOKEN_SECRET: { schema: optionalString, default: undefined, doc: 'HMAC key for join tokens (min 16 chars). Unset: generated once into DATA_DIR/secrets.json.' },
  SFU_WORKERS: { schema: int(0, 256), default: 0, doc: 'mediasoup workers (0 = one per core).' },
  SFU_RTC_LISTEN_IP: { schema: z.string().min(1), default: '127.0.0.1', doc: 'IP mediasoup transports listen on.' },
  SFU_RTC_ANNOUNCED_IP: { schema: optionalString, default: undefined, doc: 'IP/hostname announced to clients (NAT, containers).' },
  SFU_RTC_MIN_PORT: { schema: int(1024, 65535), default: 40000, doc: 'Lowest RTC UDP/TCP port.' },
  SFU_RTC_MAX_PORT: { schema: int(1024, 65535), default: 49999, doc: 'Highest RTC UDP/TCP port.' },
  SFU_SESSION_TIMEOUT_MS: { schema: int(1000, 3_600_000), default: 30_000, doc: 'A signaling session silent this long is closed.' },
  SFU_RECLAIM_WINDOW_MS: { schema: int(0, 3_600_000), default: 15_000, doc: 'After a disconnect, the same identity may rejoin within this window and replace its old session.' },
  SFU_MAX_MESSAGE_BYTES: { schema: int(1024, 10_000_000), default: 65_536, doc: 'Largest signaling message accepted.' },
  SFU_TOKEN_TTL_MIN: { schema: int(1, 10_080), default: 60, doc: 'Default join token lifetime in minutes.' },
  SFU_MIN_FD_LIMIT: { schema: int(0, 10_000_000), default: 4096, doc: 'Start-up warns when the open-file limit (ulimit -n) is below this.' },
  // Per-participant limits: one participant must not exhaust what a whole SFU shares (RTC ports, worker CPU).
  SFU_MAX_TRANSPORTS_PER_PEER: { schema: int(1, 64), default: 4, doc: 'WebRTC transports one participant may hold at once (a browser uses 2); more are refused with LIMIT_EXCEEDED.' },
  SFU_MAX_PRODUCERS_PER_PEER: { schema: int(1, 64), default: 8, doc: 'Tracks one participant may publish at once; more are refused with LIMIT_EXCEEDED.' },
  SFU_MAX_CONSUMERS_PER_PEER: { schema: int(1, 100_000), default: 500, doc: 'Tracks one participant may receive at once; more are refused with LIMIT_EXCEEDED.' },
  SFU_SIGNALING_RATE_PER_SEC: { schema: int(1, 100_000), default: 50, doc: 'Signaling requests per second one connection may send on average (token bucket); over it a request is answered RATE_LIMITED.' },
  SFU_SIGNALING_BURST: { schema: int(1, 1_000_000), default: 200, doc: 'Token bucket size for signaling requests (a join with many producers sends a burst); a connection that collects this many refusals beyond the rate is closed (1008 RATE_LIMITED).' },
  SFU_QUALITY_SAMPLE_MS: { schema: int(0, 600_000), default: 5000, doc: "How often every participant's loss and RTT are sampled from mediasoup (room stats, /metrics); 0 = off." },
  SFU_QUALITY_LOSS_PCT: { schema: z.coerce.number().min(0).max(100), default: 5, doc: 'Packet loss (percent, up or down) over which a participant is logged and counted as poor.' },
  SFU_QUALITY_RTT_MS: { schema: int(0, 60_000), default: 300, doc: 'Round-trip time (ms) over which a participant is logged and counted as poor.' },
  SFU_TURN_URLS: {
    schema: optionalString,
    default: undefined,
    doc: 'TURN servers handed to participants with the join answer, comma-separated (e.g. turn:turn.example.org:3478?transport=udp,turns:turn.example.org:5349). Unset: no TURN.',
  },
  SFU_TURN_SECRET: { schema: optionalString, default: undefined, doc: "coturn's static-auth-secret (use-auth-secret): the SFU derives each participant's short-lived TURN credentials from it (min 16 chars; required with SFU_TURN_URLS)." },
  SFU_TURN_TTL_S: { schema: int(60, 604_800), default: 43_200, doc: "Lifetime of a participant's TURN credentials in seconds: it must outlast the longest meeting (coturn checks it on every allocation refresh)." },
  SFU_ROOM_WORKER_CONSUMERS: { schema: int(1, 1_000_000), default: 500, doc: "Consumers a room's router takes before the room spans another worker of the host: its producers are piped (pipeToRouter) to a router there and new viewers go to the least loaded router." },
  SFU_CLUSTER_SECRET: { schema: optionalString, default: undefined, doc: 'Shared secret of the SFU hosts of one cluster (min 16 chars) for their host-to-host control API. Unset: a single host, no room registry. Hosts of a cluster also share SFU_TOKEN_SECRET and the database.' },
  SFU_HOST_ID: { schema: optionalString, default: undefined, doc: "This host's id in the room registry (default: the machine's hostname and SFU_PORT)." },
  SFU_CLUSTER_URL: { schema: optionalString, default: undefined, doc: "Base URL other SFU hosts reach this host's control API at (default: the address the SFU listens on)." },
  SFU_HOST_CAPACITY: { schema: int(0, 1_000_000), default: 700, doc: 'Participants this host takes before join links send newcomers to another host of the cluster.' },
  SFU_HEARTBEAT_MS: { schema: int(200, 600_000), default: 5000, doc: 'How often a host writes its heartbeat into the room registry; one silent for 3 beats counts as dead.' },
  SFU_PIPE_LISTEN_IP: { schema: optionalString, default: undefined, doc: 'IP the host-to-host PipeTransports listen on (default SFU_RTC_LISTEN_IP).' },
  SFU_PIPE_ANNOUNCED_IP: { schema: optionalString, default: undefined, doc: 'IP other hosts send piped media to (default SFU_PIPE_LISTEN_IP).' },
  RECORDER_URL: { schema: optionalString, default: undefined, doc: 'Recorder control API the SFU taps recorded rooms to (http://host:port). Unset: recording is unavailable and recorded rooms show it.' },
  RECORDER_SECRET: { schema: optionalString, default: undefined, doc: 'Bearer secret between SFU and recorder (min 16 chars). Unset: generated into DATA_DIR/secrets.json.' },
  RECORDER_HOST: { schema: z.string().min(1), default: '127.0.0.1', doc: 'Address the recorder control API binds.' },
  RECORDER_PORT: { schema: int(0, 65535), default: 8090, doc: 'Recorder control API port.' },
  RECORDER_RTP_IP: { schema: z.string().min(1), default: '127.0.0.1', doc: 'Address the recorder receives RTP/RTCP on (told to the SFU).' },
  RECORDER_MIN_PORT: { schema: int(1024, 65535), default: 30000, doc: 'Lowest recorder UDP port (each track takes an RTP + RTCP pair).' },
  RECORDER_MAX_PORT: { schema: int(1024, 65535), default: 39999, doc: 'Highest recorder UDP port.' },
  RECORDER_WORKERS: { schema: int(1, 64), default: 1, doc: 'Recorder worker processes (each owns a share of the tracks and ports).' },
  RECORDINGS_DIR: { schema: optionalString, default: undefined, doc: 'Where raw RTP recordings go (local NVMe). Default DATA_DIR/recordings.' },
  RECORDER_FSYNC_INTERVAL_MS: { schema: int(10, 60_000), default: 1000, doc: 'fsync period of open track files: the most a crash can lose.' },
  RECORDER_MIN_FREE_MB: { schema: int(0, 10_000_000), default: 1024, doc: 'Below this much free disk new tracks are refused with DISK_FULL.' },
  RECORDER_MAX_PACKET_BYTES: { schema: int(64, 65_535), default: 1500, doc: 'Datagrams larger than this (MTU) are dropped and counted.' },
  RECORDER_TAP_SRTP: { schema: bool, default: true, doc: 'The SFU sends recorded media to the recorder as SRTP (AES_CM_128_HMAC_SHA1_80; its key wrapped under RECORDER_SECRET in the control request); the recorder decrypts and stores clear RTP. Off: clear RTP on the wire.' },
  RECORDER_SEGMENT_SECONDS: { schema: int(1, 86_400), default: 60, doc: 'Open track segments are sealed and a new one started after this long (a segment with no packets yet stays open).' },
  RECORDER_UPLOAD_RAW: { schema: z.enum(['on', 'off']).optional(), default: undefined, doc: 'on: each sealed raw segment is uploaded to artifact storage (raw key, SHA-256 read back), recorded in the manifest, then removed from RECORDINGS_DIR; transcode reads it from storage, so no host needs the recorder\'s disk. Unset: on when STORAGE_BACKEND=s3 (storage shared by every host), off with local storage (one host: a second copy on the same disk buys nothing).' },
  RECORDER_UPLOAD_RETRY_MS: { schema: int(100, 3_600_000), default: 5000, doc: 'First retry delay of a failed raw segment upload; doubles per attempt up to 60x this, and uploads retry until storage takes them.' },
  RECORDER_RX: { schema: z.enum(['native', 'node']).optional(), default: undefined, doc: 'Receive path of recorder workers: native (recorder-rx: packets never enter JavaScript) or node (dgram sockets in the worker). Unset: native when its binary is built, else node.' },
  RECORDER_RX_BIN: { schema: optionalString, default: undefined, doc: 'recorder-rx binary (set by npm scripts to the cached offline build of services/recorder/native).' },
  RECORDER_RX_DRAIN_MS: { schema: int(0, 50), default: 20, doc: 'recorder-rx wakes at most this often and drains every ready socket in batches: fewer wake-ups and syscalls per packet; packets wait at most this long in the kernel (well inside the 200 ms hand-off, and arrival times are the kernel\'s).' },
  RECORDER_ID: { schema: optionalString.pipe(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$/).optional()), default: undefined, doc: 'Name of this recorder in the pool registry (the recorders table). Unset: host name and control port.' },
  RECORDER_ADVERTISE_URL: { schema: optionalUrl, default: undefined, doc: 'Control API URL this recorder registers for SFUs to reach it (default http://RECORDER_HOST:port, which must then be reachable).' },
  RECORDER_CAPACITY: { schema: int(1, 1_000_000), default: 2000, doc: 'Tracks this recorder takes at most; SFUs place tracks on the least loaded recorder below its capacity.' },
  RECORDER_HEARTBEAT_MS: { schema: int(100, 10_000), default: 500, doc: 'How often a recorder writes its heartbeat and load to the registry.' },
  RECORDER_DEAD_AFTER_MS: { schema: int(200, 60_000), default: 1500, doc: 'SFU: a recorder whose heartbeat is older than this (or whose health check fails) is dead and its tracks are re-tapped to another.' },
  RECORDER_DISCOVERY: { schema: z.enum(['off', 'registry']), default: 'off', doc: 'SFU: registry = place tracks on every live recorder of the recorders table (each must prove RECORDER_SECRET); off = RECORDER_URL only (a pool of one).' },
  RECORDER_REPLICAS: { schema: int(1, 2), default: 1, doc: 'SFU: recorders each recorded producer is tapped to (2 = two copies on different recorders, merged by RTP sequence number at transcode).' },
  WHISPER_MODEL: { schema: z.string().min(1), default: 'base.en', doc: 'Whisper model: a known name (tiny.en, base.en, small.en, ...) looked up in WHISPER_MODELS_DIR, or a path to a ggml .bin file.' },
  WHISPER_MODELS_DIR: { schema: optionalString, default: undefined, doc: 'Where named Whisper models live (default DATA_DIR/models).' },
  WHISPER_THREADS: { schema: int(1, 256), default: 2, doc: 'CPU threads per transcription job.' },
  WHISPER_BEAM_SIZE: { schema: int(1, 16), default: 5, doc: "Whisper beam size (whisper-cli's default 5); 1 = greedy decoding, several times faster, slightly less accurate." },
  WHISPER_SHORT_AUDIO_CTX: { schema: bool, default: false, doc: "Encode a speech clip shorter than 30 s at its own length (whisper-cli --audio-ctx): about 5x less encoder CPU for short clips; may cost accuracy (Whisper was trained on 30 s windows)." },
  WHISPER_CLI_BIN: { schema: optionalString, default: undefined, doc: 'whisper-cli binary (set by npm scripts to the cached offline build).' },
  TRANSCODE_CONCURRENCY: { schema: int(1, 64), default: 1, doc: 'Jobs one transcode worker process runs at once.' },
  TRANSCODE_LOCK_MS: { schema: int(1000, 3_600_000), default: 60_000, doc: 'Job lock of a transcode worker: a crashed worker\'s job is taken over after this long.' },
  TRANSCODE_MAX_SESSION_HOURS: { schema: z.coerce.number().positive().max(168), default: 12, doc: 'Longest session transcode processes, by the wall-clock arrival of its packets (never by RTP timestamps); a longer one fails with SESSION_TOO_LARGE before any file is written.' },
  TRANSCODE_MAX_SESSION_BYTES: { schema: int(1024, Number.MAX_SAFE_INTEGER), default: 4_294_967_296, doc: 'Largest raw recording (all segment files of a session) transcode processes; its clock stage reads them into memory. Larger: SESSION_TOO_LARGE.' },
  STORAGE_BACKEND: { schema: z.enum(['local', 's3']), default: 'local', doc: 'Where artifacts go: a local directory or an S3 bucket.' },
  STORAGE_DIR: { schema: optionalString, default: undefined, doc: 'Local artifact directory (default DATA_DIR/artifacts).' },
  S3_ENDPOINT: { schema: optionalString, default: undefined, doc: 'S3 endpoint URL (MinIO, Ceph, AWS...).' },
  S3_REGION: { schema: z.string().min(1), default: 'us-east-1', doc: 'S3 region.' },
  S3_BUCKET: { schema: optionalString, default: undefined, doc: 'S3 bucket for artifacts.' },
  S3_ACCESS_KEY_ID: { schema: optionalString, default: undefined, doc: 'S3 access key id.' },
  S3_SECRET_ACCESS_KEY: { schema: optionalString, default: undefined, doc: 'S3 secret access key.' },
  S3_FORCE_PATH_STYLE: { schema: bool, default: true, doc: 'Path-style S3 URLs (needed by most self-hosted S3).' },
  ENCRYPTION_AT_REST: { schema: z.enum(['on', 'off']), default: 'on', doc: 'on: artifacts and uploaded raw segments are stored encrypted (AES-256-GCM in 64 KiB chunks) with a data key per participant per session, wrapped by the master key; GDPR erasure destroys the participant\'s keys (crypto-shredding, works on WORM storage). Objects stored encrypted are always decrypted on read, whatever this says. The local raw spool in RECORDINGS_DIR stays clear until uploaded.' },
  VERBATIM_MASTER_KEY: { schema: optionalString.pipe(z.string().refine((v) => Buffer.from(v, 'base64').length === 32, 'must be 32 bytes, base64').optional()), default: undefined, doc: 'Master key (32 bytes, base64) that wraps the data keys of encryption at rest; every host of a deployment (recorders, transcode, compliance) needs the same one. Unset: VERBATIM_MASTER_KEY_FILE, else generated once into DATA_DIR/master-key (0600). Rotate with `verbatim keys rotate-master`.' },
  VERBATIM_MASTER_KEY_FILE: { schema: optionalString, default: undefined, doc: 'File holding the master key (32 bytes, base64), read when VERBATIM_MASTER_KEY is unset; `verbatim keys rotate-master` rewrites it.' },
  AUDIT_HOST: { schema: z.string().min(1), default: '127.0.0.1', doc: 'Address the compliance API binds.' },
  AUDIT_PORT: { schema: int(0, 65535), default: 8070, doc: 'Compliance API port (0 = pick a free one).' },
  AUDIT_CHECKPOINT_ALGORITHM: { schema: z.enum(['Ed25519', 'HMAC-SHA256']), default: 'Ed25519', doc: 'How audit checkpoints are signed: Ed25519 with the key pair generated once into DATA_DIR/audit-checkpoint-key.pem/.pub (auditors verify with the public key alone), or HMAC-SHA256 with AUDIT_CHECKPOINT_SECRET (verifying needs the secret).' },
  AUDIT_CHECKPOINT_SECRET: { schema: optionalString, default: undefined, doc: 'HMAC key (min 16 chars) for AUDIT_CHECKPOINT_ALGORITHM=HMAC-SHA256; when set, HMAC-signed checkpoints are also verified.' },
  AUDIT_CHECKPOINT_DIR: { schema: optionalString, default: undefined, doc: 'Where signed audit checkpoints are written (default DATA_DIR/audit-checkpoints); a copy also goes to artifact storage under audit-checkpoints/.' },
  AUDIT_CHECKPOINT_INTERVAL_MS: { schema: int(0, 2_147_483_647).refine((v) => v === 0 || v >= 1000, 'must be 0 (only at shutdown) or at least 1000'), default: 60_000, doc: 'How often the head of the audit chain is checkpointed (BullMQ job scheduler: one writer however many compliance processes run); also at every stop of the compliance API. 0 = only at stop.' },
  AUDIT_CHECKPOINT_RETAIN_DAYS: { schema: int(1, 36_500), default: 2557, doc: 'With S3_OBJECT_LOCK: Object Lock retention of each checkpoint copy in the bucket (default 7 years).' },
  AUDIT_FAILED_AUTH_PER_MIN: { schema: int(0, 100_000), default: 10, doc: 'Failed API-key/session guesses per client address per minute before the compliance API answers RATE_LIMITED (0 = no limit).' },
  AUDIT_KEY_ROTATION_GRACE_HOURS: { schema: z.coerce.number().min(0).max(720), default: 24, doc: 'After POST /api/v1/keys/{id}/rotate the old API key stays valid this many hours, then is refused (a request may set its own graceHours; 0 = at once).' },
  AUDIT_PUBLIC_URL: { schema: optionalUrl, default: undefined, doc: 'Base URL browsers reach the compliance API and console at, behind a proxy (default http://AUDIT_HOST:AUDIT_PORT); the SSO redirect URL derives from it.' },
  OIDC_ISSUER_URL: { schema: optionalUrl, default: undefined, doc: 'OpenID Connect issuer for console sign-in (SSO; its /.well-known/openid-configuration is read at the first sign-in). Unset: API keys only. http:// only for a loopback host.' },
  OIDC_CLIENT_ID: { schema: optionalString, default: undefined, doc: 'The client id Verbatim is registered with at the IdP (needed with OIDC_ISSUER_URL).' },
  OIDC_CLIENT_SECRET: { schema: optionalString, default: undefined, doc: 'Its client secret (client_secret_basic). Unset, and no OIDC_CLIENT_SECRET_FILE: a public client (PKCE only).' },
  OIDC_CLIENT_SECRET_FILE: { schema: optionalString, default: undefined, doc: 'A file holding the client secret (instead of OIDC_CLIENT_SECRET), read at start-up.' },
  OIDC_REDIRECT_URL: { schema: optionalUrl, default: undefined, doc: 'Redirect URI registered at the IdP (default AUDIT_PUBLIC_URL/api/v1/sso/callback). Register AUDIT_PUBLIC_URL/console/signin as post-logout redirect and AUDIT_PUBLIC_URL/api/v1/sso/backchannel-logout as back-channel logout URI.' },
  OIDC_SCOPES: { schema: z.string().regex(/(^| )openid( |$)/, 'must include openid'), default: 'openid profile email', doc: 'Scopes requested at sign-in (add e.g. groups where the IdP releases the groups claim only for a scope).' },
  OIDC_GROUPS_CLAIM: { schema: z.string().min(1), default: 'groups', doc: 'ID token / userinfo claim holding the user\'s groups (a list of strings, or one string).' },
  OIDC_ROLE_MAP: { schema: roleMap, default: undefined, doc: 'Groups → roles, "group=role,...", e.g. "verbatim-admins=admin,compliance=compliance_officer,audit=auditor". The first pair whose group the user has decides the role, at every sign-in; no match: 403 SSO_NO_ROLE.' },
  RETENTION_SWEEP_INTERVAL_MS: { schema: int(0, 2_147_483_647).refine((v) => v === 0 || v >= 1000, 'must be 0 (off) or at least 1000'), default: 3_600_000, doc: 'How often the retention sweeper runs (BullMQ job scheduler; 0 = never, minimum 1000).' },
  S3_OBJECT_LOCK: { schema: z.enum(['off', 'GOVERNANCE', 'COMPLIANCE']), default: 'off', doc: 'The S3 bucket has Object Lock: uploads carry this retention mode until the retention policy expires, holds set the legal-hold flag; a delete the lock refuses fails with OBJECT_RETAINED. Tested against Ceph radosgw.' },
  STAGE_RESTART_MAX: { schema: int(0, 1000), default: 5, doc: 'npm start restarts a stage process that exits unexpectedly; after this many restarts within STAGE_RESTART_WINDOW_MS it gives up and stops everything (exit code 1).' },
  STAGE_RESTART_WINDOW_MS: { schema: int(1000, 86_400_000), default: 300_000, doc: 'Window in which STAGE_RESTART_MAX restarts of one stage are allowed.' },
  STAGE_RESTART_BACKOFF_MS: { schema: int(0, 600_000), default: 500, doc: 'Delay before restarting a crashed stage, doubled for each further crash in the window (at most 30 s).' },
  STAGE_STOP_GRACE_MS: { schema: int(100, 600_000), default: 20_000, doc: 'How long a stage may take to stop gracefully (SFU ends sessions, recorder seals) before it is killed.' },
  STAGE_READY_TIMEOUT_MS: { schema: int(1000, 3_600_000), default: 180_000, doc: 'How long a stage process may take to start before npm start gives up on it.' },
  MEDIASOUP_WORKER_BIN: { schema: optionalString, default: undefined, doc: 'mediasoup-worker binary (set by npm scripts to the offline build).' },
  RECONCILE_INTERVAL_MS: { schema: int(0, 2_147_483_647).refine((v) => v === 0 || v >= 1000, 'must be 0 (off) or at least 1000'), default: 86_400_000, doc: 'How often capture reconciliation runs, each run over the interval that ended an hour ago (time for processing; BullMQ job scheduler; 0 = only on demand, POST /api/v1/capture/reconciliations).' },
  RECONCILE_GAP_SECONDS: { schema: z.coerce.number().min(0).max(86_400), default: 5, doc: 'A pause in a recorded track, or a regulated participant\'s unrecorded time, longer than this is a reconciliation exception.' },
} as const satisfies Record<string, { schema: z.ZodType; default: unknown; doc: string }>;

type Spec = typeof configSpec;
type RawConfig = { -readonly [K in keyof Spec]: z.output<Spec[K]['schema']> };
/** Settings whose default derives from another (RECORDINGS_DIR from DATA_DIR) are always set after loading. */
export type Config = Omit<RawConfig, 'RECORDINGS_DIR' | 'WHISPER_MODELS_DIR' | 'STORAGE_DIR'> & { RECORDINGS_DIR: string; WHISPER_MODELS_DIR: string; STORAGE_DIR: string };
export type ConfigKey = keyof Spec;

export interface LoadConfigOptions {
  env?: NodeJS.ProcessEnv;
  /** Overrides applied after env (tests, embedded launcher). */
  overrides?: Partial<Record<ConfigKey, unknown>>;
}

export function loadConfig(opts: LoadConfigOptions = {}): Config {
  const env = opts.env ?? process.env;
  let fileValues: Record<string, unknown> = {};
  const file = env.VERBATIM_CONFIG;
  if (file) {
    try {
      fileValues = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new VerbatimError('CONFIG_INVALID', `cannot read config file ${file}: ${(err as Error).message}`, {
        hint: 'VERBATIM_CONFIG must name a readable JSON object whose keys are the configuration variables.',
      });
    }
    const unknownKeys = Object.keys(fileValues).filter((k) => !(k in configSpec));
    if (unknownKeys.length > 0) {
      throw new VerbatimError('CONFIG_INVALID', `unknown config key(s) in ${file}: ${unknownKeys.join(', ')}`, {
        hint: `Valid keys: ${Object.keys(configSpec).join(', ')}`,
      });
    }
  }
  const out: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const [key, spec] of Object.entries(configSpec) as [ConfigKey, Spec[ConfigKey]][]) {
    const raw = opts.overrides && key in opts.overrides ? opts.overrides[key] : env[key] !== undefined ? env[key] : key in fileValues ? fileValues[key] : spec.default;
    const parsed = (spec.schema as z.ZodType).safeParse(raw);
    if (!parsed.success) {
      problems.push(`${key}=${JSON.stringify(raw)}: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
    } else {
      out[key] = parsed.data;
    }
  }
  const cfg = out as Config;
  if (problems.length === 0 && cfg.SFU_RTC_MIN_PORT > cfg.SFU_RTC_MAX_PORT) {
    problems.push(`SFU_RTC_MIN_PORT=${cfg.SFU_RTC_MIN_PORT}: must not exceed SFU_RTC_MAX_PORT=${cfg.SFU_RTC_MAX_PORT}`);
  }
  if (problems.length === 0 && cfg.RECORDER_MIN_PORT + 1 > cfg.RECORDER_MAX_PORT) {
    problems.push(`RECORDER_MIN_PORT=${cfg.RECORDER_MIN_PORT}: must be below RECORDER_MAX_PORT=${cfg.RECORDER_MAX_PORT}`);
  }
  if (problems.length === 0 && cfg.SFU_TURN_URLS !== undefined) {
    const bad = cfg.SFU_TURN_URLS.split(',').map((u) => u.trim()).filter((u) => !/^turns?:[^\s/?#]+(:\d{1,5})?(\?transport=(udp|tcp))?$/.test(u));
    if (bad.length > 0) problems.push(`SFU_TURN_URLS: ${bad.map((u) => JSON.stringify(u)).join(', ')} is not a turn: or turns: URL (turn:host:port?transport=udp)`);
    if (cfg.SFU_TURN_SECRET === undefined) problems.push('SFU_TURN_SECRET: required with SFU_TURN_URLS (the static-auth-secret of coturn)');
  }
  for (const key of ['SFU_API_SECRET', 'SFU_TOKEN_SECRET', 'RECORDER_SECRET', 'AUDIT_CHECKPOINT_SECRET', 'SFU_TURN_SECRET', 'SFU_CLUSTER_SECRET'] as const) {
    const v = cfg[key];
    if (v !== undefined && v.length < 16) problems.push(`${key}: must be at least 16 characters`);
  }
  if (problems.length === 0 && cfg.OIDC_ISSUER_URL !== undefined) {
    if (cfg.OIDC_CLIENT_ID === undefined) problems.push('OIDC_CLIENT_ID: needed with OIDC_ISSUER_URL');
    if (cfg.OIDC_ROLE_MAP === undefined) problems.push('OIDC_ROLE_MAP: needed with OIDC_ISSUER_URL (no group would grant a role)');
    if (cfg.OIDC_CLIENT_SECRET !== undefined && cfg.OIDC_CLIENT_SECRET_FILE !== undefined) problems.push('OIDC_CLIENT_SECRET_FILE: set either it or OIDC_CLIENT_SECRET, not both');
    const issuer = new URL(cfg.OIDC_ISSUER_URL);
    if (issuer.protocol === 'http:' && !isLoopbackHost(issuer.hostname)) problems.push(`OIDC_ISSUER_URL=${cfg.OIDC_ISSUER_URL}: must be https:// (http:// only for a loopback host)`);
  }
  if (problems.length > 0) {
    throw new VerbatimError('CONFIG_INVALID', `invalid configuration: ${problems.join(' | ')}`, {
      hint: 'Fix the named variable(s) in the environment or the VERBATIM_CONFIG file; see the configuration table in README.md.',
      details: problems,
    });
  }
  cfg.DATA_DIR = path.resolve(cfg.DATA_DIR);
  cfg.RECORDINGS_DIR = path.resolve(cfg.RECORDINGS_DIR ?? path.join(cfg.DATA_DIR, 'recordings'));
  if (cfg.SFU_WORKERS === 0) cfg.SFU_WORKERS = Math.max(1, os.availableParallelism());
  const toolchain = readToolchain();
  cfg.MEDIASOUP_WORKER_BIN ??= toolchain.mediasoupWorkerBin;
  cfg.WHISPER_CLI_BIN ??= toolchain.whisperCliBin;
  cfg.RECORDER_RX_BIN ??= toolchain.recorderRxBin;
  const rxBuilt = cfg.RECORDER_RX_BIN !== undefined && existsSync(cfg.RECORDER_RX_BIN);
  if (cfg.RECORDER_RX === 'native' && !rxBuilt) {
    throw new VerbatimError('CONFIG_INVALID', `RECORDER_RX=native but the recorder-rx binary ${cfg.RECORDER_RX_BIN ?? '(not built)'} does not exist`, {
      hint: 'Run `bash scripts/setup.sh` (it builds services/recorder/native), set RECORDER_RX_BIN, or set RECORDER_RX=node.',
    });
  }
  cfg.RECORDER_RX ??= rxBuilt ? 'native' : 'node';
  cfg.RECORDER_UPLOAD_RAW ??= cfg.STORAGE_BACKEND === 's3' ? 'on' : 'off';
  cfg.WHISPER_MODELS_DIR = path.resolve(cfg.WHISPER_MODELS_DIR ?? path.join(cfg.DATA_DIR, 'models'));
  cfg.STORAGE_DIR = path.resolve(cfg.STORAGE_DIR ?? path.join(cfg.DATA_DIR, 'artifacts'));
  return cfg;
}

/** 127.0.0.0/8, ::1 and localhost: the only hosts plain http:// to an IdP is accepted for (tests, a local IdP). */
export function isLoopbackHost(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || hostname === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname);
}

/** Markdown table of every setting, for the README. */
export function configTable(): string {
  const rows = Object.entries(configSpec).map(([k, s]) => `| \`${k}\` | ${s.default === undefined ? '—' : `\`${String(s.default)}\``} | ${s.doc} |`);
  return ['| Variable | Default | Meaning |', '| --- | --- | --- |', ...rows].join('\n');
}

/**
 * A loaded configuration as environment variables: what the launcher hands each stage
 * process, so the stage's own loadConfig() sees exactly what the launcher validated
 * (overrides, VERBATIM_CONFIG and derived defaults included).
 */
export function configToEnv(config: Config): Record<ConfigKey, string> {
  const env = {} as Record<ConfigKey, string>;
  for (const key of Object.keys(configSpec) as ConfigKey[]) {
    const v = (config as Record<ConfigKey, unknown>)[key];
    env[key] = v === undefined ? '' : typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' ? String(v) : JSON.stringify(v);
  }
  return env;
}
