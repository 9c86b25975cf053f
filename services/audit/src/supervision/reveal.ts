import { z } from 'zod';
import { authorize, type Principal } from '../auth.ts';

/** `?reveal=true`: show redacted spans in clear. */
export const RevealQuerySchema = z.object({ reveal: z.enum(['true', 'false']).optional().describe('true: redacted spans in clear (redaction.reveal; audited).') }).strict();

/**
 * Whether a request reveals redacted spans: only when it asks to, and only with
 * redaction.reveal (FORBIDDEN otherwise, never a silent fallback to the redacted view).
 */
export function revealing(principal: Principal, query: { reveal?: 'true' | 'false' | undefined }): boolean {
  if (query.reveal !== 'true') return false;
  authorize(principal, 'redaction.reveal');
  return true;
}
