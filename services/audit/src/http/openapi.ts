import { z } from 'zod';
import { CSRF_HEADER, ROLES, SESSION_COOKIE, can, type Permission } from '../auth.ts';
import type { AnyRoute } from './route-table.ts';

/** The OpenAPI 3.1 document of the route table (GET /docs/json), and a readable page of it (GET /docs). */
export function openApiDocument(table: readonly AnyRoute[]): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  const errorResponse = (description: string) => ({ description, content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } });
  for (const r of table) {
    const path = `/api/v1${r.url.replace(/:(\w+)/g, '{$1}')}`;
    const parameters: unknown[] = [];
    for (const [where, schema] of [['path', r.params], ['query', r.query]] as const) {
      if (!schema) continue;
      const js = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as { properties?: Record<string, unknown>; required?: string[] };
      for (const [name, s] of Object.entries(js.properties ?? {})) {
        parameters.push({ name, in: where, required: where === 'path' || (js.required ?? []).includes(name), schema: s });
      }
    }
    paths[path] ??= {};
    paths[path][r.method.toLowerCase()] = {
      summary: r.summary,
      description: `${
        r.auth === 'none'
          ? 'No credential needed.'
          : r.permissions.length === 0
            ? 'Any signed-in role.'
            : `Needs permission ${r.permissions.join(' or ')} (roles: ${ROLES.filter((role) => r.permissions.some((p) => rolesWith(p).includes(role))).join(', ')}).`
      } Audited as \`${r.action}\`.`,
      operationId: `${r.method.toLowerCase()}${r.url.replace(/:(\w+)/g, 'By_$1').replace(/[/_-](\w)/g, (_m, c: string) => c.toUpperCase())}`,
      security: r.auth === 'none' ? [] : [{ apiKey: [] }, { sessionCookie: [] }],
      parameters,
      ...(r.body ? { requestBody: { required: true, content: { [r.bodyType ?? 'application/json']: { schema: z.toJSONSchema(r.body, { io: 'input', unrepresentable: 'any' }) } } } } : {}),
      responses: {
        [String(r.status ?? 200)]: { description: 'OK' },
        '400': errorResponse('BAD_REQUEST: invalid parameters or body'),
        '401': errorResponse('UNAUTHORIZED: missing, malformed, unknown, forged, revoked or expired key'),
        '403': errorResponse("FORBIDDEN: the key's role lacks the permission (or a cookie-authenticated change lacks the CSRF header)"),
        '429': errorResponse('RATE_LIMITED: too many failed credential guesses from this address (Retry-After)'),
        ...(r.params ? { '414': errorResponse('URI_TOO_LONG: a path segment or the request line is too long') } : {}),
        ...(r.body ? { '413': errorResponse('MESSAGE_TOO_LARGE: body over 64 KiB'), '415': errorResponse(`UNSUPPORTED_MEDIA_TYPE: the body is not ${r.bodyType ?? 'application/json'}`) } : {}),
        '431': errorResponse('HEADERS_TOO_LARGE: request line and headers over 16 KiB'),
        '503': errorResponse("AUDIT_UNAVAILABLE: the request's audit entry could not be written, so its result is not given (Retry-After)"),
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Verbatim compliance API', version: '1' },
    components: {
      securitySchemes: {
        apiKey: { type: 'http', scheme: 'bearer', description: 'API key vb_<prefix>_<secret>' },
        sessionCookie: { type: 'apiKey', in: 'cookie', name: SESSION_COOKIE, description: `Console session from POST /api/v1/login; mutating requests also send ${CSRF_HEADER}: 1.` },
      },
      schemas: {
        Error: {
          type: 'object',
          required: ['error'],
          properties: { error: { type: 'object', required: ['code', 'message'], properties: { code: { type: 'string' }, message: { type: 'string' }, hint: { type: 'string' }, details: {} } } },
        },
      },
    },
    paths,
  };
}

function rolesWith(p: Permission): string[] {
  return ROLES.filter((r) => can(r, p));
}

export function docsPage(doc: Record<string, unknown>): string {
  const rows: string[] = [];
  for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, { summary: string; description: string }>>)) {
    for (const [method, op] of Object.entries(ops)) {
      rows.push(`<tr><td><code>${method.toUpperCase()}</code></td><td><code>${escapeHtml(path)}</code></td><td>${escapeHtml(op.summary)}<br><small>${escapeHtml(op.description)}</small></td></tr>`);
    }
  }
  return `<!doctype html><html><head><meta charset="utf-8"><title>Verbatim compliance API</title>
<style>body{font:14px system-ui,sans-serif;margin:2em}td{padding:.4em;border-bottom:1px solid #ddd;vertical-align:top}</style></head>
<body><h1>Verbatim compliance API v1</h1><p>Send <code>Authorization: Bearer vb_&lt;prefix&gt;_&lt;secret&gt;</code>. Machine-readable: <a href="/docs/json">OpenAPI 3.1 (JSON)</a>.</p>
<table>${rows.join('')}</table></body></html>`;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}
