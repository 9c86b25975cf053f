import { VerbatimError, toVerbatimError } from '../errors.ts';

const JSON_HINT = 'Send a JSON body with Content-Type: application/json.';

/**
 * What a Fastify server answers for anything a handler or the framework threw: a VerbatimError
 * as it is; the framework's own refusals while reading the request (a body over the limit, a
 * body that is not JSON, a wrong content type, a URL that is not validly percent-encoded, a path
 * parameter over the length limit) each as a stable code; anything else as INTERNAL.
 */
export function frameworkError(err: unknown, bodyLimitBytes: number): VerbatimError {
  if (err instanceof VerbatimError) return err;
  const { statusCode, code } = err as { statusCode?: number; code?: string };
  if (statusCode === 413) return new VerbatimError('MESSAGE_TOO_LARGE', 'request body too large', { hint: `Bodies are limited to ${bodyLimitBytes / 1024} KiB.` });
  if (statusCode === 415 || code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
    return new VerbatimError('UNSUPPORTED_MEDIA_TYPE', 'unsupported Content-Type: this API reads JSON bodies only', { hint: JSON_HINT });
  }
  if (code === 'FST_ERR_BAD_URL') {
    return new VerbatimError('BAD_REQUEST', 'the URL is not validly percent-encoded', { hint: 'Percent-encode every path segment as UTF-8 (encodeURIComponent).' });
  }
  if (statusCode === 414 || code === 'FST_ERR_MAX_PARAM_LENGTH') {
    return new VerbatimError('URI_TOO_LONG', 'a path segment of the URL is too long', { hint: 'No id in this API is that long; check the URL.' });
  }
  if (statusCode !== undefined && statusCode >= 400 && statusCode < 500) {
    return new VerbatimError('BAD_REQUEST', (err as Error).message, { hint: JSON_HINT });
  }
  return toVerbatimError(err);
}
