import type { ZodType } from 'zod';
import { VerbatimError } from '../errors.ts';

/**
 * The one way an HTTP server of Verbatim turns untrusted input (a body, a query, path
 * parameters, one parameter) into a typed value: the schema's output, or BAD_REQUEST naming
 * the offending fields. `what` names the input ("body", "query", "path", "room id") and
 * stands in for the field path of an issue about the input as a whole; `hint` says where
 * that server's API is described.
 */
export function parseOrBadRequest<T>(schema: ZodType<T>, value: unknown, what: string, hint: string): T {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  // A few issues are enough to fix a request; a huge invalid array would otherwise make a huge error.
  const issues = r.error.issues.slice(0, 5);
  const fields = issues.map((i) => i.path.join('.') || what);
  throw new VerbatimError('BAD_REQUEST', `invalid ${what}: ${issues.map((i, n) => `${fields[n]}: ${i.message}`).join('; ')}`, {
    hint,
    details: { in: what, fields },
  });
}
