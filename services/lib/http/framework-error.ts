import { VerbatimError, toVerbatimError } from '../errors.ts';

/**
 * What a Fastify server answers for anything a handler or the framework threw: a VerbatimError
 * as it is; the framework's own refusals while reading the request (a body over the limit, a
 * body that is not JSON, a wrong content type) as MESSAGE_TOO_LARGE / BAD_REQUEST; anything
 * else as INTERNAL.
 */
export function frameworkError(err: unknown, bodyLimitBytes: number): VerbatimError {
  if (err instanceof VerbatimError) return err;
  const statusCode = (err as { statusCode?: number }).statusCode;
  if (statusCode === 413) return new VerbatimError('MESSAGE_TOO_LARGE', 'request body too large', { hint: `Bodies are limited to ${bodyLimitBytes / 1024} KiB.` });
  if (statusCode !== undefined && statusCode >= 400 && statusCode < 500) {
    return new VerbatimError('BAD_REQUEST', (err as Error).message, { hint: 'Send a JSON body with Content-Type: application/json.' });
  }
  return toVerbatimError(err);
}
