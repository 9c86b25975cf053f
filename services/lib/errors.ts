/**
 * One error class for the whole system. Every error carries a stable `code` that
 * clients, logs and tests match on, an HTTP status for the API layers, and a `hint`
 * that tells the operator or caller what to do about it.
 */
export const ErrorCodes = {
  CONFIG_INVALID: 500,
  BAD_REQUEST: 400,
  MESSAGE_MALFORMED: 400,
  MESSAGE_TOO_LARGE: 413,
  UNSUPPORTED_VERSION: 400,
  UNAUTHORIZED: 401,
  TOKEN_INVALID: 401,
  TOKEN_EXPIRED: 401,
  FORBIDDEN: 403,
  RECORDING_LOCKED: 403,
  NOT_JOINED: 409,
  ALREADY_JOINED: 409,
  ROOM_NOT_FOUND: 404,
  SESSION_NOT_FOUND: 404,
  ROOM_CLOSED: 410,
  ROOM_EXISTS: 409,
  TRANSPORT_NOT_FOUND: 404,
  PRODUCER_NOT_FOUND: 404,
  CONSUMER_NOT_FOUND: 404,
  CANNOT_CONSUME: 400,
  MAX_PUBLISHERS: 429,
  /** A receive-only participant of an allhands room tried to publish (raise a hand; a host may promote). */
  NOT_A_SPEAKER: 403,
  /** The request needs a host's join token (promoting a viewer). */
  NOT_HOST: 403,
  DRAINING: 503,
  /** A participant of a room whose origin is another host tried something only the origin does (publish, toggle recording). */
  NOT_ORIGIN: 409,
  /** The host-to-host link to a room's origin could not be made or was lost. */
  CASCADE_FAILED: 502,
  WORKER_DIED: 503,
  RECORDER_UNAVAILABLE: 503,
  /** A raw segment the manifest lists is neither on this host nor in storage yet: its upload is pending (retried). */
  UPLOAD_PENDING: 503,
  /** The SRTP key of a recording tap does not unwrap with this recorder's RECORDER_SECRET (or is not a key). */
  SRTP_KEY_INVALID: 400,
  DISK_FULL: 507,
  /** A session manifest that is missing, not JSON or not a verbatim-session v1 (lib/recording). */
  CORRUPT_MANIFEST: 422,
  /** A recorded track whose codec no depacketizer handles (lib/contracts/codecs.ts). */
  CODEC_UNSUPPORTED: 415,
  MODEL_MISSING: 424,
  MODEL_INVALID: 424,
  TRANSCRIBE_FAILED: 500,
  AUDIT_CHAIN_BROKEN: 409,
  CHECKPOINT_MISMATCH: 409,
  NOT_FOUND: 404,
  GONE: 410,
  CONFLICT: 409,
  RANGE_NOT_SATISFIABLE: 416,
  RATE_LIMITED: 429,
  DEMO_FAILED: 500,
  // The SFU against hostile or buggy clients (issue 12).
  LIMIT_EXCEEDED: 429,
  TOKEN_REUSED: 401,
  WRONG_DIRECTION: 400,
  KIND_MISMATCH: 400,
  DUPLICATE_STREAM: 409,
  ALREADY_CONNECTED: 409,
  PORTS_EXHAUSTED: 503,
  CONSENT_NOT_STORED: 503,
  // The supervised stages of npm start.
  DATABASE_UNAVAILABLE: 503,
  STAGE_FAILED: 503,
  INTERRUPTED: 503,
  // HTTP servers against hostile input (issue 12): refusals before routing, and evidence that cannot be written.
  /** A request's audit entry could not be written, so the request is not answered with its result. */
  AUDIT_UNAVAILABLE: 503,
  UNSUPPORTED_MEDIA_TYPE: 415,
  URI_TOO_LONG: 414,
  HEADERS_TOO_LARGE: 431,
  REQUEST_TIMEOUT: 408,
  /** A recording session that was sealed: it takes no more events or tracks. */
  SESSION_ENDED: 409,
  /** S3 Object Lock (retention until a date, or a legal hold) refuses to delete a stored object. */
  OBJECT_RETAINED: 409,
  /** The change would leave no enabled admin with a usable API key (services/audit key lifecycle). */
  LAST_ADMIN: 409,
  // Console sign-in through the organisation's OpenID Connect provider.
  /** SSO sign-in asked for, but no OIDC_ISSUER_URL is configured. */
  SSO_NOT_CONFIGURED: 404,
  /** The IdP signed the user in, but none of their groups maps to a role (OIDC_ROLE_MAP). */
  SSO_NO_ROLE: 403,
  /** The IdP could not be reached, refused the sign-in, or answered something that did not verify. */
  SSO_FAILED: 502,
  // Supervision (services/audit/src/supervision).
  /** A policy's lexicon entry does not parse (details: entry, position). */
  LEXICON_INVALID: 400,
  /** A policy's pattern is not a regular expression, or not one that runs in linear time (details: position). */
  PATTERN_INVALID: 400,
  /** A review decision without its reason. */
  REASON_REQUIRED: 400,
  /** A review item of a policy the reviewer is not a reviewer of, or assigned to someone else. */
  REVIEW_OUT_OF_SCOPE: 403,
  /** A decision on a review item that is already closed. */
  REVIEW_CLOSED: 409,
  /** Recording cannot be switched off while a regulated participant publishes (capture assurance). */
  RECORDING_REQUIRED: 409,
  // Encryption at rest (services/lib/crypto).
  /** A stored encrypted object does not authenticate: truncated, reordered, altered, or under another key. */
  CIPHERTEXT_INVALID: 422,
  /** The object's data key was destroyed (crypto-shredding by GDPR erasure): its media can no longer be read. */
  KEY_DESTROYED: 410,
  /** The master key cannot unwrap a data key (wrong VERBATIM_MASTER_KEY, or keys wrapped by another master). */
  MASTER_KEY_MISMATCH: 500,
  INTERNAL: 500,
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

export class VerbatimError extends Error {
  readonly code: ErrorCode;
  readonly hint?: string;
  readonly status: number;
  readonly details?: unknown;

  constructor(code: ErrorCode, message: string, opts: { hint?: string; details?: unknown; cause?: unknown } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = 'VerbatimError';
    this.code = code;
    this.status = ErrorCodes[code];
    if (opts.hint !== undefined) this.hint = opts.hint;
    if (opts.details !== undefined) this.details = opts.details;
  }

  toJSON(): { code: ErrorCode; message: string; hint?: string; details?: unknown } {
    return {
      code: this.code,
      message: this.message,
      ...(this.hint !== undefined ? { hint: this.hint } : {}),
      ...(this.details !== undefined ? { details: this.details } : {}),
    };
  }
}

/** Wraps anything thrown into a VerbatimError without leaking internals to clients. */
export function toVerbatimError(err: unknown): VerbatimError {
  if (err instanceof VerbatimError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new VerbatimError('INTERNAL', `internal error: ${message}`, { cause: err });
}

/** Start-up stopped on request (Ctrl-C, SIGTERM) before it finished: not a failure. */
export function interruptedError(): VerbatimError {
  return new VerbatimError('INTERRUPTED', 'start-up interrupted; everything started so far has been stopped', { hint: 'Start again when you are ready.' });
}
