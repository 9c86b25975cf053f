import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { VerbatimError } from '../errors.ts';
import { frameworkError } from './framework-error.ts';
import { parseOrBadRequest } from './parse-or-bad-request.ts';

function thrown(fn: () => unknown): VerbatimError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(VerbatimError);
    return err as VerbatimError;
  }
  throw new Error('expected a throw');
}

describe('parseOrBadRequest', () => {
  const Body = z.object({ name: z.string().min(1), tracks: z.array(z.object({ kind: z.enum(['audio', 'video']) })) }).strict();

  it('returns the parsed value (with transforms applied)', () => {
    expect(parseOrBadRequest(z.string().transform(Number), '42', 'query', 'hint')).toBe(42);
    expect(parseOrBadRequest(Body, { name: 'a', tracks: [{ kind: 'audio' }] }, 'body', 'hint')).toEqual({ name: 'a', tracks: [{ kind: 'audio' }] });
  });

  it('refuses with BAD_REQUEST naming each field by its path, the input, and the hint', () => {
    const e = thrown(() => parseOrBadRequest(Body, { name: '', tracks: [{ kind: 'screen' }] }, 'body', 'See the docs.'));
    expect(e.code).toBe('BAD_REQUEST');
    expect(e.status).toBe(400);
    expect(e.message).toMatch(/^invalid body: name: .+; tracks\.0\.kind: .+/);
    expect(e.hint).toBe('See the docs.');
    expect(e.details).toEqual({ in: 'body', fields: ['name', 'tracks.0.kind'] });
  });

  it('names the input itself for an issue about the whole value', () => {
    const e = thrown(() => parseOrBadRequest(z.string().regex(/^[a-z]+$/, 'lower-case letters'), 'A/B', 'room id', 'h'));
    expect(e.message).toBe('invalid room id: room id: lower-case letters');
    expect(e.details).toEqual({ in: 'room id', fields: ['room id'] });
  });

  it('reports at most five issues', () => {
    const e = thrown(() => parseOrBadRequest(z.array(z.number()), ['a', 'b', 'c', 'd', 'e', 'f', 'g'], 'body', 'h'));
    expect((e.details as { fields: string[] }).fields).toEqual(['0', '1', '2', '3', '4']);
  });
});

describe('frameworkError', () => {
  it('passes VerbatimErrors through, maps a 413 to MESSAGE_TOO_LARGE and other 4xx to BAD_REQUEST, anything else to INTERNAL', () => {
    const own = new VerbatimError('ROOM_NOT_FOUND', 'x');
    expect(frameworkError(own, 1024)).toBe(own);
    const big = frameworkError(Object.assign(new Error('Request body is too large'), { statusCode: 413 }), 64 * 1024);
    expect([big.code, big.status, big.hint]).toEqual(['MESSAGE_TOO_LARGE', 413, 'Bodies are limited to 64 KiB.']);
    const json = frameworkError(Object.assign(new Error("Body is not valid JSON but content-type is set to 'application/json'"), { statusCode: 400 }), 1024);
    expect([json.code, json.message]).toEqual(['BAD_REQUEST', "Body is not valid JSON but content-type is set to 'application/json'"]);
    const crash = frameworkError(new TypeError('boom'), 1024);
    expect([crash.code, crash.status, crash.message]).toEqual(['INTERNAL', 500, 'internal error: boom']);
  });
});
