import type { FastifyInstance } from 'fastify';
import type { Kysely } from 'kysely';
import type { Database } from '../../../../db/schema.ts';
import type { Logger } from '../../../lib/logger.ts';
import type { ArtifactStorage } from '../../../lib/storage/artifact-storage.ts';
import type { CheckpointStore, CheckpointVerifier } from '../audit-checkpoints.ts';
import type { SsoOptions } from '../sso.ts';

export interface AuditServerOptions {
  db: Kysely<Database>;
  host?: string;
  port?: number;
  logger: Logger;
  /** Where POST /api/v1/audit/verify finds the checkpoints, and the keys it checks them with. Unset: the chain alone. */
  checkpoints?: { store: CheckpointStore; verifiers: readonly CheckpointVerifier[] };
  /** Trust X-Forwarded-For (behind a reverse proxy) for the audited client address. */
  trustProxy?: boolean;
  now?: () => Date;
  /** HMAC key of console session cookies (>= 16 bytes). Unset: a random one per process (sign-ins end at restart). */
  sessionSecret?: string | Buffer;
  /** Console session lifetime (default 8 h). */
  sessionTtlMs?: number;
  /** Failed credential guesses per client address per minute before RATE_LIMITED (default 10; 0 = no limit). */
  failedAuthPerMinute?: number;
  /** Artifact storage: media playback (GET .../artifacts/:artifactId/content) and erasure need it. */
  storage?: ArtifactStorage;
  /** Erasure (with storage): the recorder's RECORDINGS_DIR, and scratch space. */
  recordingsDir?: string;
  workDir?: string;
  /**
   * The job queues' Redis: erasure requests run as jobs on the `erasure` queue (a worker runs in
   * this process) and have composites re-rendered by the transcode workers on the same Redis.
   */
  redisUrl?: string;
  queuePrefix?: string;
  /** How long a rotated API key stays valid (hours; default 24, AUDIT_KEY_ROTATION_GRACE_HOURS). */
  keyRotationGraceHours?: number;
  /** Where e-discovery archives requested over the API are built and kept (with storage). */
  exportsDir?: string;
  /** Console sign-in through an OpenID Connect provider (OIDC_* settings); unset: API keys only. */
  sso?: SsoOptions;
  /** RECONCILE_GAP_SECONDS for reconciliations run on demand (default 5). */
  reconcileGapSeconds?: number;
  /** RECORDER_DEAD_AFTER_MS: a recorder whose heartbeat is older shows as not answering (default 1500). */
  recorderDeadAfterMs?: number;
}

export interface AuditServer {
  app: FastifyInstance;
  url: string;
  close(): Promise<void>;
}
