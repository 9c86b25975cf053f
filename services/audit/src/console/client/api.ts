/// <reference lib="dom" />

/**
 * The console's only way to data: the compliance API v1 with the session cookie set by
 * POST /api/v1/login. Mutating requests carry X-Verbatim-Csrf (the API refuses
 * cookie-authenticated writes without it: another site cannot set that header).
 */

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly hint?: string,
  ) {
    super(message);
  }
  /** 0 = the request never got an answer (network down, server gone). */
  get network(): boolean {
    return this.status === 0;
  }
}

/** Called on any 401: the session expired or was revoked; the app goes back to sign-in. */
let onUnauthorized: (e: ApiError) => void = () => {};
export function setUnauthorizedHandler(fn: (e: ApiError) => void): void {
  onUnauthorized = fn;
}

export async function api<T>(method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', path: string, body?: unknown, opts: { quiet401?: boolean } = {}): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (method !== 'GET') headers['x-verbatim-csrf'] = '1';
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(`/api/v1${path}`, { method, headers, credentials: 'same-origin', ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  } catch (err) {
    throw new ApiError(0, 'NETWORK', `Cannot reach the Verbatim server (${(err as Error).message}).`, 'Check your connection and that the compliance service is running, then retry.');
  }
  const text = await res.text();
  let json: unknown = undefined;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    // not JSON (a proxy's error page): reported below
  }
  if (!res.ok) {
    const e = (json as { error?: { code?: string; message?: string; hint?: string } } | undefined)?.error;
    const err = new ApiError(res.status, e?.code ?? `HTTP_${res.status}`, e?.message ?? `${res.status} ${res.statusText}`, e?.hint);
    if (res.status === 401 && !opts.quiet401) onUnauthorized(err);
    throw err;
  }
  return json as T;
}

export const qs = (params: Record<string, string | number | undefined | null>): string => {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') u.set(k, String(v));
  const s = u.toString();
  return s ? `?${s}` : '';
};

// ---------------------------------------------------------------- response shapes (see GET /docs/json)

export interface Me {
  user: { id: string; name: string };
  role: Role;
  permissions: string[];
  via?: 'session' | 'sso' | 'key';
  keyPrefix?: string;
}
export type Role = 'admin' | 'compliance_officer' | 'auditor';

// The API's own types (type-only imports are erased from the browser bundle).
export type { SearchHit, SearchResult } from '../../transcript-search.ts';

export interface Artifact {
  id?: string;
  key: string;
  kind: string;
  participant: string | null;
  contentType: string;
  bytes: number;
  sha256: string;
  durationSeconds: number | null;
  contentUrl?: string;
  state?: string;
}
export interface SessionSegment {
  segment: number;
  file: string;
  bytes: number;
  sha256: string;
  startedAt: string | null;
  endedAt: string | null;
  endReason: string;
  truncated: boolean;
}
export interface SessionDetails {
  session: string;
  room: string;
  /** One of the known states, or a newer one this console does not know yet. */
  status: 'recording' | 'sealed' | 'processing' | 'done' | 'failed' | (string & {});
  startedAt: string | null;
  endedAt: string | null;
  endReason: string | null;
  manifestSha256: string | null;
  transcriptStatus: string | null;
  progress: number;
  error: { code: string; message: string | null } | null;
  participants: { participant: string; name: string; consent: string; consentMethod: string | null }[];
  tracks: { track: string; participant: string; kind: 'audio' | 'video'; codec: unknown; segments: SessionSegment[] }[];
  artifacts: Artifact[];
  events?: { at: string; type: string; participant?: string; track?: string; details?: Record<string, unknown> }[];
  holds?: { id: string; caseId: string }[];
}
export interface TranscriptSegment {
  seq: number;
  participant: string;
  speaker: string;
  start: number;
  end: number;
  text: string;
  language: string;
}
export interface Transcript {
  session: string;
  room: string;
  transcriptStatus: string | null;
  /** Some spans are shown as [LABEL] (GET …/transcript?reveal=true shows them, audited). */
  redacted?: boolean;
  segments: TranscriptSegment[];
}
export interface ConsentEvent {
  id: number;
  room: string;
  session: string | null;
  participant: string;
  participantName: string;
  policy: string;
  decision: 'granted' | 'declined';
  method: string;
  clientInfo: unknown;
  at: string;
}
export type { AuditRecord as AuditEntry } from '../../audit-log.ts';
export type { TrailVerifyResult as VerifyResult } from '../../audit-verify.ts';
