/**
 * Ties the audit entry a change writes to the admin API request that asked for it: the
 * request's id and the caller's address go into the entry, and `written` tells the request
 * audit that this request already has its one entry.
 */
export interface AuditContext {
  requestId: string;
  clientAddress: string | null;
  written: boolean;
}
