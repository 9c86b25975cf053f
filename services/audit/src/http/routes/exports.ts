import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { z } from 'zod';
import { VerbatimError } from '../../../../lib/errors.ts';
import { defineRoute, type AnyRoute, type RouteContext } from '../route-table.ts';
import { EmptyQuerySchema, SessionIdSchema, UuidParamsSchema, text } from '../schemas.ts';

const Redacted = z.boolean().optional().describe('Redacted: transcripts show [LABEL] for detector hits and marked spans, the media a tone over them (files that cannot be toned exactly are withheld, listed in the manifest).');
export const ExportBodySchema = z
  .union([
    z.object({ holdId: z.uuid().describe("A legal hold: its sessions (a query hold's frozen list)."), redacted: Redacted }).strict(),
    z.object({ sessionIds: z.array(SessionIdSchema).min(1).max(1000).describe('These sessions.'), redacted: Redacted }).strict(),
    z.object({ query: text(500).describe('Every session whose transcript matches (websearch syntax), resolved now.'), redacted: Redacted }).strict(),
  ])
  .describe('Exactly one of holdId, sessionIds or query.');

/** E-discovery exports: started here, built in the background by ExportJobs, downloaded when done. */
export function exportRoutes({ exports: exportJobs }: RouteContext): AnyRoute[] {
  return [
    defineRoute({
      method: 'POST',
      url: '/exports',
      permissions: ['recordings.export'],
      action: 'export.request',
      summary:
        'Start an e-discovery export (a legal hold, sessions, or a transcript query): a tar with media, transcripts (JSON/VTT/TXT), consent records, the audit extract and a SHA-256 manifest. Built in the background: poll GET /exports/{id} for progress, then download /exports/{id}/archive. `verbatim export verify` checks the archive.',
      query: EmptyQuerySchema,
      body: ExportBodySchema,
      status: 202,
      async handler({ principal, body }) {
        const record = await exportJobs().start(body, { type: 'user', id: principal.userId });
        return { response: { ...record, statusUrl: `/api/v1/exports/${record.id}` }, audit: { target: { type: 'export', id: record.id }, details: { selection: body } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/exports',
      permissions: ['recordings.export'],
      action: 'export.list',
      summary: 'Exports, newest first, with status and progress.',
      query: EmptyQuerySchema,
      async handler() {
        const list = await exportJobs().list();
        return { response: { exports: list }, audit: { target: { type: 'exports' }, details: { returned: list.length } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/exports/:id',
      permissions: ['recordings.export'],
      action: 'export.view',
      summary: "An export's status and progress (files and bytes written so far), its sessions and manifest SHA-256 once done.",
      query: EmptyQuerySchema,
      params: UuidParamsSchema,
      async handler({ params }) {
        const record = await exportJobs().get(params.id);
        if (!record) throw new VerbatimError('NOT_FOUND', `no export ${params.id}`, { hint: 'List exports with GET /api/v1/exports.' });
        return { response: record, audit: { target: { type: 'export', id: record.id }, details: { status: record.status, pct: record.progress.pct } } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/exports/:id/archive',
      permissions: ['recordings.export'],
      action: 'export.download',
      summary: 'The finished archive (application/x-tar). Still running: 409 with progress; failed: 410.',
      query: EmptyQuerySchema,
      params: UuidParamsSchema,
      async handler({ params }) {
        const { file, record } = await exportJobs().archivePath(params.id);
        const size = (await stat(file)).size;
        return {
          response: createReadStream(file),
          headers: {
            'content-type': 'application/x-tar',
            'content-length': String(size),
            'cache-control': 'private, no-store',
            'x-content-type-options': 'nosniff',
            'content-disposition': `attachment; filename="verbatim-export-${record.id}.tar"`,
          },
          audit: { target: { type: 'export', id: record.id }, details: { bytes: size, manifestSha256: record.manifestSha256, sessions: record.sessionIds } },
        };
      },
    }),
  ];
}
