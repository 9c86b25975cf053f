import http from 'node:http';
import net from 'node:net';
import fc from 'fast-check';

/**
 * Property-based fuzzing of Verbatim's HTTP servers: hostile strings and values, mutations of
 * valid JSON bodies, values generated from a route's JSON schema (its OpenAPI document), and a
 * client that sends exactly what it is given (any method token, a path as raw bytes, any header,
 * any body) or bytes that are not HTTP at all.
 */

export interface FuzzRequest {
  method: string;
  /** Sent as is: percent-encoding (valid or not) is the generator's business. */
  path: string;
  headers: Record<string, string>;
  body?: string;
}

export interface FuzzResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/** Sends a request exactly as given, on its own connection. */
export function send(baseUrl: string, r: FuzzRequest, timeoutMs = 15_000): Promise<FuzzResponse> {
  const u = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, method: r.method, path: r.path, headers: r.headers, agent: false, setHost: !('host' in r.headers), timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(r.body);
  });
}

/** Writes raw bytes on a fresh connection; resolves with the status and body of the answer (status 0: none before the close). */
export function sendBytes(baseUrl: string, bytes: Buffer | string, timeoutMs = 15_000): Promise<FuzzResponse> {
  const u = new URL(baseUrl);
  return new Promise((resolve) => {
    const socket = net.connect(Number(u.port), u.hostname, () => socket.write(bytes));
    const chunks: Buffer[] = [];
    const done = () => {
      clearTimeout(timer);
      const raw = Buffer.concat(chunks).toString('utf8');
      const head = raw.split('\r\n\r\n')[0] ?? '';
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
      const headers: http.IncomingHttpHeaders = {};
      for (const line of head.split('\r\n').slice(1)) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
      }
      resolve({ status, headers, text: raw.slice(head.length + 4) });
    };
    const timer = setTimeout(() => socket.destroy(), timeoutMs);
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('close', done);
    socket.on('error', () => {});
  });
}

/** The `{error: {code}}` of a refusal, or why there is none. */
export function refusalCode(res: FuzzResponse): { code?: string; problem?: string } {
  if (!/^application\/json/.test(String(res.headers['content-type'] ?? ''))) return { problem: `content-type ${String(res.headers['content-type'])}` };
  try {
    const code = (JSON.parse(res.text) as { error?: { code?: unknown } }).error?.code;
    return typeof code === 'string' && /^[A-Z][A-Z_]+$/.test(code) ? { code } : { problem: `no error code in ${res.text.slice(0, 120)}` };
  } catch {
    return { problem: `not JSON: ${res.text.slice(0, 120)}` };
  }
}

// ---------------------------------------------------------------- hostile input

const deep = (n: number): unknown => {
  let v: unknown = 'bottom';
  for (let i = 0; i < n; i++) v = i % 2 ? [v] : { a: v };
  return v;
};

/** Strings that have broken servers: NUL, lone surrogates, traversal, encodings, sizes, markup, injection. */
export const hostileString: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    '',
    ' ',
    '\u0000',
    'a\u0000b',
    '\ud800',
    'x\udfff',
    '\udc00\ud800',
    '😀',
    '\u202egnp.exe',
    '\u200b',
    '../../etc/passwd',
    '..',
    '.',
    '/',
    '\\..\\x',
    '%00',
    '%E0%A4%A',
    '%',
    '\r\nX-Injected: 1',
    '<script>alert(1)</script>',
    "' OR 1=1 --",
    '"; DROP TABLE audit_log; --',
    '${jndi:ldap://x}',
    '__proto__',
    'constructor',
    'prototype',
    'NaN',
    '-1',
    '1e309',
    '00000000-0000-0000-0000-000000000000',
    'x'.repeat(257),
    'x'.repeat(5000),
  ),
  fc.string({ maxLength: 40 }),
  fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)), maxLength: 20 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
);

/** JSON values a schema does not expect: wrong types, extremes, nesting, prototype keys. */
export const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  hostileString,
  fc.constantFrom<unknown>(
    null,
    true,
    0,
    -1,
    1.5,
    -0,
    1e308,
    2 ** 53 + 1,
    [],
    {},
    [null],
    deep(60),
    deep(3000),
    JSON.parse('{"__proto__":{"admin":true}}'),
    JSON.parse('{"constructor":{"prototype":{"admin":true}}}'),
    { toString: null, valueOf: null },
    'x'.repeat(70_000),
  ),
  fc.jsonValue({ maxDepth: 3 }),
);

/** JSON texts that are not what any route reads. */
export const hostileBodyText: fc.Arbitrary<string> = fc.constantFrom(
  '',
  '{',
  '}',
  'null',
  '[]',
  '"text"',
  '42',
  'true',
  '{"a":1}garbage',
  '{"a":1,"a":2}',
  '\u0000',
  '{"x":"\\u0000"}',
  '{"x":"\\ud800"}',
  '{"__proto__":{"admin":true}}',
  '{"constructor":{"prototype":{"admin":true}}}',
  '['.repeat(20_000) + ']'.repeat(20_000),
  JSON.stringify({ pad: 'x'.repeat(70_000) }),
  '\ufeff{}',
  '{"a":1e99999}',
);

/** A JSON object body with one of its fields replaced, removed or added, or the whole body replaced. */
export function mutatedBody(valid: fc.Arbitrary<unknown>): fc.Arbitrary<string> {
  const asObject = (v: unknown) => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {});
  return fc.oneof(
    { weight: 3, arbitrary: valid.map((v) => JSON.stringify(v)) },
    {
      weight: 4,
      arbitrary: fc.tuple(valid, fc.nat(), hostileValue).map(([v, i, bad]) => {
        const o = { ...asObject(v) };
        const keys = Object.keys(o);
        if (keys.length > 0) o[keys[i % keys.length]!] = bad;
        return JSON.stringify(o);
      }),
    },
    {
      weight: 1,
      arbitrary: fc.tuple(valid, fc.nat()).map(([v, i]) => {
        const o = { ...asObject(v) };
        const keys = Object.keys(o);
        if (keys.length > 0) delete o[keys[i % keys.length]!];
        return JSON.stringify(o);
      }),
    },
    { weight: 1, arbitrary: fc.tuple(valid, hostileString, hostileValue).map(([v, k, bad]) => JSON.stringify({ ...asObject(v), [k]: bad })) },
    { weight: 1, arbitrary: hostileValue.map((v) => JSON.stringify(v) ?? 'null') },
    { weight: 1, arbitrary: hostileBodyText },
  );
}

/** A path segment or query value as sent: valid-ish, hostile and percent-encoded, or raw bytes that are not valid encoding. */
export function hostileSegment(valid: fc.Arbitrary<string>): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 4, arbitrary: valid.map(encode) },
    { weight: 3, arbitrary: hostileString.map(encode) },
    { weight: 1, arbitrary: fc.constantFrom('..', '.', '..%2F..%2Fx', '%2e%2e', '%00', '%E0%A4%A', '%', '%zz', '%ED%A0%80', '%C0%AF', 'x'.repeat(1500), `a${'%41'.repeat(600)}`) },
  );
}

/** encodeURIComponent, also for lone surrogates (which it refuses): those are sent as their raw UTF-16 code unit in CESU-8. */
export function encode(s: string): string {
  return s.replace(/[\s\S]/gu, (c) => {
    const code = c.codePointAt(0)!;
    if (code >= 0xd800 && code <= 0xdfff) return `%${(0xe0 | (code >> 12)).toString(16).toUpperCase()}%${(0x80 | ((code >> 6) & 0x3f)).toString(16).toUpperCase()}%${(0x80 | (code & 0x3f)).toString(16).toUpperCase()}`;
    return encodeURIComponent(c);
  });
}

/** Bytes that are not a request this server can read, with the path they claim (for the audit check). */
export const hostileBytes: fc.Arbitrary<{ bytes: string; path: string }> = fc.constantFrom(
  { bytes: '\u0000\u0001\u0002 garbage\r\n\r\n', path: '' },
  { bytes: 'FOO /api/v1/me HTTP/1.1\r\nHost: x\r\n\r\n', path: '/api/v1/me' },
  { bytes: 'GET /api/v1/me HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n', path: '/api/v1/me' },
  { bytes: 'GET /api/v1/me x HTTP/1.1\r\nHost: x\r\n\r\n', path: '/api/v1/me' },
  { bytes: 'GET /api/v1/me HTTP/1.1\r\nConnection: close\r\n\r\n', path: '/api/v1/me' },
  { bytes: `GET /api/v1/me?${'q'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`, path: '/api/v1/me' },
  { bytes: `GET /api/v1/me HTTP/1.1\r\nHost: x\r\nX-Pad: ${'p'.repeat(20_000)}\r\n\r\n`, path: '/api/v1/me' },
  { bytes: 'POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n', path: '/api/v1/login' },
  { bytes: 'POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}', path: '/api/v1/login' },
  { bytes: 'CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n', path: '127.0.0.1:22' },
  { bytes: 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', path: '*' },
  { bytes: 'GET /api/v1/me HTTP/1.0\r\n\r\n', path: '/api/v1/me' },
  { bytes: 'GET http://elsewhere.example/api/v1/me HTTP/1.1\r\nHost: elsewhere.example\r\nConnection: close\r\n\r\n', path: '/api/v1/me' },
);

// ---------------------------------------------------------------- from JSON schema

interface JsonSchema {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  enum?: unknown[];
  const?: unknown;
  pattern?: string;
  format?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minItems?: number;
  maxItems?: number;
}

/**
 * Values that satisfy a JSON schema (as z.toJSONSchema writes them), small: the near-valid starting
 * point of mutations. `known` names values that exist (seeded ids) by field name, so that some
 * requests reach real data instead of a 404.
 */
export function fromJsonSchema(s: JsonSchema | undefined, known: Record<string, readonly unknown[]> = {}, name?: string): fc.Arbitrary<unknown> {
  const generated = generate(s, known);
  // Only where the field is of that type (a name can mean an object in one schema, a string in another).
  const type = s && !s.anyOf && !s.oneOf ? (Array.isArray(s.type) ? s.type[0] : s.type) : undefined;
  const existing = name !== undefined ? known[name]?.filter((v) => type === undefined || (v === null ? type === 'null' : typeof v === type)) : undefined;
  return existing?.length ? fc.oneof({ weight: 1, arbitrary: generated }, { weight: 2, arbitrary: fc.constantFrom(...existing) }) : generated;
}

function generate(s: JsonSchema | undefined, known: Record<string, readonly unknown[]>): fc.Arbitrary<unknown> {
  if (!s) return fc.jsonValue({ maxDepth: 2 });
  if (s.const !== undefined) return fc.constant(s.const);
  if (s.enum) return fc.constantFrom(...s.enum);
  const alternatives = s.anyOf ?? s.oneOf;
  if (alternatives) return fc.oneof(...alternatives.map((a) => generate(a, known)));
  const type = Array.isArray(s.type) ? s.type[0] : s.type;
  switch (type) {
    case 'null':
      return fc.constant(null);
    case 'boolean':
      return fc.boolean();
    case 'integer':
    case 'number':
      return fc.integer({
        min: Math.max(s.minimum ?? (s.exclusiveMinimum !== undefined ? s.exclusiveMinimum + 1 : -1000), -1e9),
        max: Math.min(s.maximum ?? (s.exclusiveMaximum !== undefined ? s.exclusiveMaximum - 1 : 1000), 1e9),
      });
    case 'string':
      return stringFor(s);
    case 'array':
      return fc.array(generate(s.items, known), { minLength: s.minItems ?? 0, maxLength: Math.max(s.minItems ?? 0, Math.min(s.maxItems ?? 3, 3)) });
    case 'object': {
      const props = s.properties ?? {};
      const required = new Set(s.required ?? []);
      return fc.record(Object.fromEntries(Object.entries(props).map(([k, v]) => [k, fromJsonSchema(v, known, k)])), { requiredKeys: Object.keys(props).filter((k) => required.has(k)) });
    }
    default:
      return fc.jsonValue({ maxDepth: 2 });
  }
}

function stringFor(s: JsonSchema): fc.Arbitrary<string> {
  if (s.format === 'uuid') return fc.uuid();
  // Mostly plausible instants; sometimes anything the pattern allows (year 0000, odd offsets).
  if (s.format === 'date-time' && !s.pattern) return fc.date({ min: new Date('2000-01-01'), max: new Date('2099-12-31'), noInvalidDate: true }).map((d) => d.toISOString());
  if (s.format === 'date-time') return fc.oneof(stringFor({ format: 'date-time' }), stringFor({ pattern: s.pattern }));
  if (s.pattern) {
    const re = new RegExp(s.pattern);
    // fast-check cannot generate from lookaheads: generate without them and keep what the whole pattern accepts.
    const generating = new RegExp(s.pattern.replace(/\(\?[!=][^()]*\)/g, ''));
    return fc.stringMatching(generating).filter((x) => re.test(x) && x.length >= (s.minLength ?? 0) && x.length <= (s.maxLength ?? Infinity));
  }
  return fc.string({ minLength: s.minLength ?? 0, maxLength: Math.min(s.maxLength ?? 30, 30) }).filter((x) => x.length >= (s.minLength ?? 0));
}
