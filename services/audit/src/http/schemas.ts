import { z } from 'zod';
import { storableText } from '../../../lib/contracts/storable-text.ts';

/** Request schemas that several route files use; a schema only one route uses lives next to it. */

/** Free text of 1..max characters, without NUL or lone surrogates (Postgres text refuses both). */
export const text = storableText;
/** A query-string integer in [min, max]. */
export const intParam = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d{1,9}$/, 'must be a non-negative integer')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));
/** An ISO-8601 instant with an offset, or a date (UTC day). */
export const instant = z.union([z.iso.datetime({ offset: true }), z.iso.date()]);

/** Recording session ids (the console checks its deep links with the same pattern). */
export const SESSION_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;
export const SessionIdSchema = z.string().regex(SESSION_ID_RE, 'session id: 1-128 chars of A-Z a-z 0-9 _ . : -');
export const ParticipantIdSchema = text(200);

export const EmptyQuerySchema = z.object({}).strict();
export const SessionParamsSchema = z.object({ id: SessionIdSchema }).strict();
/** Holds, erasure requests and exports are all addressed by a UUID. */
export const UuidParamsSchema = z.object({ id: z.uuid() }).strict();
