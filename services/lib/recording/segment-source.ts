import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { SegmentEntry } from '../contracts/recording.ts';
import { VerbatimError } from '../errors.ts';
import { rawSegmentKey } from '../storage/artifact-keys.ts';
import type { ArtifactStorage } from '../storage/artifact-storage.ts';

/**
 * The one way to read a sealed raw segment: the recorder's local file while it is there, else its
 * copy in artifact storage (RECORDER_UPLOAD_RAW). The stored copy is looked for under the key the
 * manifest records, and under the segment's deterministic raw key when the manifest was read before
 * the upload was recorded in it (the recorder removes the local file only after both exist).
 */
export interface SegmentSource {
  /** The session directory on this host (may be gone, or hold only the manifest). */
  dir: string;
  room: string;
  session: string;
  /** Where uploaded raw segments are; without it only local files are read. */
  storage?: ArtifactStorage | undefined;
}

export type SegmentWhere = { from: 'local'; file: string; bytes: number } | { from: 'storage'; key: string; bytes: number };

type Entry = Pick<SegmentEntry, 'file' | 'bytes' | 'sha256' | 'stored'>;

/** Where the segment's bytes are and how many there are; undefined when neither copy exists. */
export async function locateSegment(src: SegmentSource, entry: Entry): Promise<SegmentWhere | undefined> {
  const file = path.join(src.dir, entry.file);
  const st = await stat(file).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined;
    throw err;
  });
  if (st?.isFile()) return { from: 'local', file, bytes: st.size };
  if (!src.storage) return undefined;
  for (const key of storedKeysOf(src, entry)) {
    const s = await src.storage.stat(key);
    if (s) return { from: 'storage', key, bytes: s.bytes };
  }
  return undefined;
}

/**
 * A segment found neither here nor in storage is still on its way, not gone, when this host does not
 * have the recorder's disk (its session directory is absent) and the manifest does not yet record the
 * upload: the recorder uploads sealed segments in the background.
 */
export function uploadPending(src: SegmentSource, entry: Pick<SegmentEntry, 'stored'>): boolean {
  return src.storage !== undefined && !entry.stored && !existsSync(src.dir);
}

/** The keys a segment's stored copy may be under: the manifest's record first, then the scheme's. */
export function storedKeysOf(src: Pick<SegmentSource, 'room' | 'session'>, entry: Pick<SegmentEntry, 'file' | 'stored'>): string[] {
  const scheme = rawSegmentKey(src.room, src.session, entry.file);
  return entry.stored && entry.stored.key !== scheme ? [entry.stored.key, scheme] : [scheme];
}

/** The segment's bytes as a stream (from `start` to the end when given: a ranged read of the stored copy). */
export async function openSegment(src: SegmentSource, entry: Entry, start = 0): Promise<Readable> {
  const where = await locateSegment(src, entry);
  if (!where) throw missingSegment(src, entry);
  if (where.from === 'local') return createReadStream(where.file, { start });
  if (start === 0) return src.storage!.getStream(where.key);
  return src.storage!.getRange(where.key, start, Math.max(start, where.bytes - 1));
}

/**
 * The whole segment, checked: its size and SHA-256 must be the manifest's, so a partial, replaced or
 * foreign copy is never read as the recording. A size mismatch is found before the bytes are read.
 */
export async function readSegment(src: SegmentSource, entry: Entry): Promise<Buffer> {
  try {
    return await readFrom(src, entry, await locateSegment(src, entry));
  } catch (err) {
    // The recorder removed the local file between the look and the read (its upload was recorded): read the copy.
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !src.storage) throw err;
    return readFrom(src, entry, await locateSegment(src, entry));
  }
}

async function readFrom(src: SegmentSource, entry: Entry, where: SegmentWhere | undefined): Promise<Buffer> {
  if (!where) throw missingSegment(src, entry);
  if (where.bytes !== entry.bytes) throw segmentMismatch(`segment ${entry.file} is ${where.bytes} bytes ${describe(where)}, the manifest says ${entry.bytes}`);
  const stream = where.from === 'local' ? createReadStream(where.file) : await src.storage!.getStream(where.key);
  const chunks: Buffer[] = [];
  const h = createHash('sha256');
  let n = 0;
  for await (const c of stream) {
    const b = c as Buffer;
    n += b.length;
    if (n > entry.bytes) {
      stream.destroy();
      throw segmentMismatch(`segment ${entry.file} ${describe(where)} is longer than the manifest's ${entry.bytes} bytes`);
    }
    h.update(b);
    chunks.push(b);
  }
  if (h.digest('hex') !== entry.sha256 || n !== entry.bytes) throw segmentMismatch(`segment ${entry.file} ${describe(where)} does not match its manifest SHA-256`);
  return Buffer.concat(chunks, n);
}

function describe(where: SegmentWhere): string {
  return where.from === 'local' ? 'on disk' : `in storage (${where.key})`;
}

/** details.reason tells a missing segment from a corrupt one, for callers that map them to their own codes. */
function missingSegment(src: SegmentSource, entry: Entry): VerbatimError {
  return new VerbatimError('NOT_FOUND', `segment ${entry.file} is missing: not in ${src.dir}${src.storage ? ` nor in storage (${storedKeysOf(src, entry).join(', ')})` : ''}`, {
    hint: src.storage ? 'The raw segment was deleted (retention, erasure) or never uploaded; check the recorder upload backlog.' : 'Give the reader artifact storage if raw segments are uploaded (RECORDER_UPLOAD_RAW).',
    details: { reason: 'missing', file: entry.file },
  });
}

function segmentMismatch(message: string): VerbatimError {
  return new VerbatimError('BAD_REQUEST', message, { hint: 'Run `verbatim recording verify <session dir>`; the raw files are kept for forensic recovery.', details: { reason: 'mismatch' } });
}

/** Whether an error from this module means the segment exists nowhere (vs. a copy that does not match). */
export function isMissingSegment(err: unknown): boolean {
  return err instanceof VerbatimError && (err.details as { reason?: string } | undefined)?.reason === 'missing';
}
