/**
 * Where a stage records what it did for the audit trail. The compliance service owns the
 * hash-chained writer (services/audit AuditLog implements this); other stages get one
 * injected by whoever starts them, so no stage imports the audit service.
 */
export type AuditActorType = 'user' | 'api_key' | 'service' | 'anonymous';

export interface AuditEntryInput {
  action: string;
  actor?: { type: AuditActorType; id?: string | null | undefined } | undefined;
  target?: { type: string; id?: string | null | undefined } | undefined;
  /** Any JSON object; normalised through JSON (undefined dropped, Dates as strings) before hashing. */
  details?: Record<string, unknown> | undefined;
  clientAddress?: string | null | undefined;
  /** When it happened (default now); kept at millisecond precision. */
  at?: Date | undefined;
}

export interface AuditSink {
  /** Resolves once the entry is durably in the trail; rejects when it could not be written. */
  append(entry: AuditEntryInput): Promise<unknown>;
}
