import { STATUS_CODES, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { toStorable } from '../contracts/storable-text.ts';
import { VerbatimError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { frameworkError } from './framework-error.ts';

/**
 * One way for every HTTP server of Verbatim to refuse a request, wherever it is refused: by a
 * handler or hook (setErrorHandler), for want of a route (setNotFoundHandler), by the router
 * before routing (frameworkErrors: a URL that is not validly percent-encoded, a path parameter
 * over maxParamLength), by Node's HTTP parser before Fastify sees anything (clientErrorHandler:
 * headers or a request line over maxHeaderSize, bytes that are not HTTP, a timeout), or as a
 * CONNECT. Each refusal is recorded by the server's policy (its audit entry) before it is
 * answered, and answered as `{error: {code, message, hint?, details?}}` with a stable code.
 */

/** The size limit of a request line plus headers (Node's default, stated so the answer can say it). */
export const MAX_HEADER_BYTES = 16 * 1024;
/** A request line longer than this in a header overflow was an overlong URL (414), else the headers were (431). */
const LONG_REQUEST_LINE = 8 * 1024;

/** A refused request, as far as the server got before refusing it. */
export interface RefusedRequest {
  /** Fastify's request, when it made one (routed, unrouted, bad URL); absent when Node refused the bytes or for CONNECT. */
  req?: FastifyRequest;
  /** '' when the bytes did not get as far as a method. */
  method: string;
  /** The route's pattern when one matched, else the path as sent (no query), storable and bounded. */
  route: string;
  clientAddress: string | null;
}

export interface RefusalPolicy {
  bodyLimit: number;
  /** The longest path parameter (as sent, percent-encoded) before 414 URI_TOO_LONG. */
  maxParamLength: number;
  /** Where the server's API is described: the hint of a 404. */
  hint: string;
  logger: Logger;
  /**
   * Records the refusal (its audit entry) before it is answered. Resolves to what is answered:
   * the refusal itself, or another error when the server will not answer without its evidence.
   */
  record(r: RefusedRequest, e: VerbatimError): Promise<VerbatimError>;
}

/**
 * A Fastify app whose every refusal goes through `policy`: JSON bodies only (no text/plain
 * parser), path parameters and headers bounded, every framework and parser refusal answered
 * with a code and recorded. Routes are added by the caller.
 */
export function refusingFastify(policy: RefusalPolicy, opts: { trustProxy?: boolean } = {}): FastifyInstance {
  const answer = (socket: Duplex, r: RefusedRequest, e: VerbatimError) =>
    policy.record(r, e).then(
      (final) => writeRaw(socket, final, r.method),
      (err: unknown) => {
        policy.logger.error({ err, code: e.code }, 'could not record a refused request');
        writeRaw(socket, e, r.method);
      },
    );
  const refusedSockets = new WeakSet<Duplex>();
  const app = Fastify({
    logger: false,
    bodyLimit: policy.bodyLimit,
    trustProxy: opts.trustProxy ?? false,
    routerOptions: { maxParamLength: policy.maxParamLength },
    // A request without Host is refused by Node itself (a bare 400) unless Fastify is let to see it.
    http: { maxHeaderSize: MAX_HEADER_BYTES, requireHostHeader: false },
    frameworkErrors: (err, req, reply) => void refuse(req, reply, frameworkError(err, policy.bodyLimit)),
    clientErrorHandler(error, socket) {
      // One refusal per connection: the rest of what the client sends (a body behind oversized
      // headers) is not parsed into further "requests" while the answer is being recorded.
      if (refusedSockets.has(socket)) return;
      refusedSockets.add(socket);
      socket.pause();
      // Node's parser errors carry the bytes it refused (Fastify's type for them is out of date).
      const err = error as unknown as NodeJS.ErrnoException & { rawPacket?: Buffer };
      const e = parserRefusal(err);
      if (!e) return void socket.destroy();
      const line = requestLine(err.rawPacket);
      void answer(socket, { method: line.method, route: toStorable(line.path, 300), clientAddress: socket.remoteAddress ?? null }, e);
    },
  });
  app.removeContentTypeParser('text/plain');
  // Without a listener Node drops a CONNECT without a word; it is a request like any other.
  app.server.on('connect', (req: IncomingMessage, socket: Duplex) => {
    socket.on('error', () => {});
    const e = new VerbatimError('BAD_REQUEST', 'CONNECT is not supported: this is not a proxy', { hint: policy.hint });
    void answer(socket, { method: 'CONNECT', route: toStorable(req.url ?? '', 300), clientAddress: req.socket.remoteAddress ?? null }, e);
  });

  async function refuse(req: FastifyRequest, reply: FastifyReply, e: VerbatimError): Promise<FastifyReply | undefined> {
    if (e.code === 'INTERNAL') policy.logger.error({ err: e.cause ?? e, method: req.method, route: routeOf(req) }, 'request failed');
    let final = e;
    try {
      final = await policy.record({ req, method: req.method, route: routeOf(req), clientAddress: req.ip ?? null }, e);
    } catch (err) {
      policy.logger.error({ err, code: e.code }, 'could not record a refused request');
    }
    if (reply.sent) return undefined;
    return reply.status(final.status).headers(refusalHeaders(final)).send({ error: final.toJSON() });
  }
  app.setErrorHandler((err, req, reply) => refuse(req, reply, frameworkError(err, policy.bodyLimit)));
  app.setNotFoundHandler((req, reply) => refuse(req, reply, new VerbatimError('NOT_FOUND', `no route ${req.method} ${toStorable(pathOf(req.url), 200)}`, { hint: policy.hint })));
  return app;
}

/** Headers a refusal's code implies (when to retry, what range there is). */
export function refusalHeaders(e: VerbatimError): Record<string, string> {
  const d = (e.details ?? {}) as { retryAfterSeconds?: number; size?: number };
  if (e.code === 'RANGE_NOT_SATISFIABLE') return { 'content-range': `bytes */${d.size ?? 0}` };
  if (e.code === 'RATE_LIMITED' || e.code === 'AUDIT_UNAVAILABLE') return { 'retry-after': String(d.retryAfterSeconds ?? (e.code === 'RATE_LIMITED' ? 60 : 5)) };
  return {};
}

/** The route pattern when one matched, else the path as sent (no query): storable, bounded. */
export function routeOf(req: FastifyRequest): string {
  let pattern: string | undefined;
  try {
    pattern = req.routeOptions?.url;
  } catch {
    pattern = undefined;
  }
  return toStorable(pattern ?? pathOf(req.url), 300);
}

const pathOf = (url: string | undefined) => (url ?? '').split('?')[0]!;

/** What Node's HTTP parser refused, as a refusal; null when no one is left to answer or record (a reset). */
function parserRefusal(err: NodeJS.ErrnoException & { rawPacket?: Buffer }): VerbatimError | null {
  if (err.code === 'ECONNRESET' || err.code === 'EPIPE') return null;
  if (err.code === 'HPE_HEADER_OVERFLOW') {
    const line = requestLine(err.rawPacket);
    return line.length > LONG_REQUEST_LINE
      ? new VerbatimError('URI_TOO_LONG', 'the request line is too long', { hint: `The request line and headers are limited to ${MAX_HEADER_BYTES / 1024} KiB; no URL of this API is that long.` })
      : new VerbatimError('HEADERS_TOO_LARGE', 'the request headers are too large', { hint: `The request line and headers are limited to ${MAX_HEADER_BYTES / 1024} KiB in all.` });
  }
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') return new VerbatimError('REQUEST_TIMEOUT', 'the request did not arrive in time', { hint: 'Send the whole request at once.' });
  return new VerbatimError('BAD_REQUEST', `malformed HTTP request: ${toStorable(err.message, 200)}`, { hint: 'Send HTTP/1.1 with a valid method, path and headers.', details: { parser: err.code ?? 'unknown' } });
}

/** The method and path of what the parser refused, as far as its bytes show them. */
function requestLine(packet: Buffer | undefined): { method: string; path: string; length: number } {
  const text = packet ? packet.toString('latin1', 0, Math.min(packet.length, MAX_HEADER_BYTES * 2)) : '';
  const eol = text.indexOf('\r\n');
  const line = eol < 0 ? text : text.slice(0, eol);
  const m = /^([A-Z]{1,20}) (\S+)/.exec(line);
  // No end of line in what overflowed: the request line alone was too long.
  return { method: m?.[1] ?? '', path: pathOf(m?.[2]), length: packet && eol < 0 ? Math.max(line.length, LONG_REQUEST_LINE + 1) : line.length };
}

/** Answers on the bare socket (there is no response object) and closes it once written; the answer to a HEAD has no body. */
function writeRaw(socket: Duplex, e: VerbatimError, method: string): void {
  if (socket.destroyed || !socket.writable) return void socket.destroy();
  const body = JSON.stringify({ error: e.toJSON() });
  const headers = Object.entries({ 'content-type': 'application/json; charset=utf-8', 'content-length': String(Buffer.byteLength(body)), connection: 'close', ...refusalHeaders(e) })
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  socket.end(`HTTP/1.1 ${e.status} ${STATUS_CODES[e.status] ?? 'Error'}\r\n${headers}\r\n${method === 'HEAD' ? '' : body}`, () => socket.destroy());
}
